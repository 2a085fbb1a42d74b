"""Issue 14, must show: ``GET /metrics`` over real HTTP after a deployment and a rollback finds
each series with its labels and values (prometheus-client exposition, parsed)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from azure.core.exceptions import HttpResponseError
from prometheus_client.parser import text_string_to_metric_families

from procedures.clock import FixedClock
from procedures.errors import StepFailure
from procedures.log_context import notify
from procedures.model import DeploymentState, ProcedureKind
from procedures.platforms.azure.errors import AzureCalls
from procedures.playbook import Playbook, Step, StepContext, StepResult
from tests.bot.run_helpers import press
from tests.fakes.bot_harness import BotHarness


class _Throttled(HttpResponseError):
    status_code = 429

    def __init__(self) -> None:
        super().__init__(message="Too many requests")
        self.status_code = 429


class _Steps:
    """``work`` (undoable, one throttled then one good Azure read) and ``monitor`` (one check;
    fails for the deployment in ``failing``)."""

    def __init__(self) -> None:
        self.failing: set[int] = set()
        self.undone: list[int] = []

    def work(self, ctx: StepContext) -> StepResult:
        calls = AzureCalls("Azure Front Door", attempts=2, sleep=lambda _s: None)
        tries = iter([_Throttled(), None])

        def read() -> str:
            error = next(tries)
            if error is not None:
                raise error
            return "route"

        calls.call("read route qlp-route-of-someone", read)
        return {"ok": True}

    def undo(self, ctx: StepContext) -> None:
        self.undone.append(ctx.deployment_id)

    def monitor(self, ctx: StepContext) -> StepResult:
        bad = ctx.deployment_id in self.failing
        notify("monitoring_check", environment=ctx.environment_name,
               result="failed" if bad else "ok")
        if bad:
            notify("monitoring_warning", environment=ctx.environment_name, reason="errors")
            raise StepFailure("monitoring: errors above the threshold")
        return {"checks": 1}


@pytest.fixture
def steps(bot: BotHarness) -> Iterator[_Steps]:
    steps = _Steps()
    bot.services.engine.playbooks = {kind: Playbook(kind, "Two steps", (
        Step("work", "Work", steps.work, undo=steps.undo),
        Step("monitor", "Monitor", steps.monitor))) for kind in ProcedureKind}
    bot.services.start_worker()
    yield steps


def _samples(bot: BotHarness) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    response = bot.http.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    found: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found


def _value(samples: dict[Any, float], metric: str, /, **labels: str) -> float:
    key = (metric, frozenset(labels.items()))
    assert key in samples, f"{metric}{labels} not scraped; have: " + ", ".join(
        sorted(f"{n}{dict(lab)}" for n, lab in samples if n == metric))
    return samples[key]


def _deploy(bot: BotHarness, version: str, number: int) -> None:
    answer = bot.command(f"deploy {version}").text
    assert f"#{number} requested" in answer, answer
    press(bot, number, "U0LEAD1")
    bot.wait_for(lambda: bot.services.deployments.get(number).state.terminal,
                 what=f"#{number} to end")


@pytest.mark.slow  # 6 s of the fast lane, measured
def test_a_deployment_and_a_rollback_show_in_every_series(bot: BotHarness,
                                                           steps: _Steps) -> None:
    _deploy(bot, "v1.0.0", 1)
    steps.failing.add(2)
    _deploy(bot, "v1.0.1", 2)
    deployments = bot.services.deployments
    assert deployments.get(1).state is DeploymentState.SUCCEEDED
    assert deployments.get(2).state is DeploymentState.ROLLED_BACK
    assert steps.undone == [2]
    bot.wait_for(lambda: bot.slack.call_count() >= 2, what="the sender's first posts")
    # The run's thread counts its outcome right after the state is written.
    bot.wait_for(lambda: 'outcome="rolled_back"' in bot.services.metrics.render(),
                 what="the rollback to be counted")
    bot.services.stop_worker()  # the figures stay still while they are read
    m = _samples(bot)
    outbox = bot.services.outbox

    env = {"environment": "production"}
    assert _value(m, "qlp_deployments_total", kind="standard", outcome="succeeded", **env) == 1
    assert _value(m, "qlp_deployments_total", kind="standard", outcome="rolled_back",
                  **env) == 1
    step = "qlp_step_duration_seconds_count"
    assert _value(m, step, kind="standard", step="work", outcome="succeeded") == 2
    assert _value(m, step, kind="standard", step="monitor", outcome="succeeded") == 1
    assert _value(m, step, kind="standard", step="monitor", outcome="failed") == 1
    assert _value(m, step, kind="standard", step="work", outcome="undone") == 1
    assert _value(m, "qlp_step_duration_seconds_bucket", kind="standard", step="work",
                  outcome="succeeded", le="+Inf") == 2
    assert _value(m, "qlp_rollbacks_total", trigger="monitoring") == 1
    assert _value(m, "qlp_monitoring_checks_total", result="ok", **env) == 1
    assert _value(m, "qlp_monitoring_checks_total", result="failed", **env) == 1
    assert _value(m, "qlp_monitoring_warnings_total", reason="errors", **env) == 1
    # Azure: the operation is the code's verb, never the resource name.
    azure = {"service": "azure_front_door", "operation": "read"}
    assert _value(m, "qlp_azure_calls_total", result="throttled", **azure) == 2
    assert _value(m, "qlp_azure_calls_total", result="ok", **azure) == 2
    assert _value(m, "qlp_azure_call_seconds_count", **azure) == 4
    # Slack: the outbox sender's posts and updates, counted by the client.
    assert _value(m, "qlp_slack_api_calls_total", method="chat.postMessage", result="ok") >= 1
    # Acks by command and by button.
    assert _value(m, "qlp_slack_ack_seconds_count", interaction="command", name="deploy") == 2
    assert _value(m, "qlp_slack_ack_seconds_count", interaction="button",
                  name="qlp_approve") == 2
    assert _value(m, "qlp_slack_requests_total", status="200") == 4
    assert _value(m, "qlp_worker_claimed_runs_total", kind="standard") == 2
    # Read at scrape time: everything delivered, nothing running, no scheduler started.
    for kind in ("post", "update", "ephemeral"):
        assert _value(m, "qlp_outbox_pending", kind=kind) == outbox.pending_count([kind])
        assert _value(m, "qlp_outbox_dead", kind=kind) == 0
    assert _value(m, "qlp_outbox_oldest_pending_seconds") >= 0
    assert _value(m, "qlp_deployments_active", **env) == 0
    assert _value(m, "qlp_scheduler_leader") == 0
    assert _value(m, "qlp_worker_runs_in_progress") == 0
    # No label anywhere holds a person's text (the version, the route's name).
    text = bot.http.get("/metrics").text
    assert "v1.0.1" not in text and "qlp-route-of-someone" not in text


def test_the_outbox_backlog_and_its_oldest_row_are_read_at_scrape_time(
        bot: BotHarness, clock: FixedClock) -> None:
    bot.services.outbox.enqueue("C0DEPLOY", "post", {"text": "hello"})
    clock.advance(timedelta(seconds=90))
    m = _samples(bot)
    assert _value(m, "qlp_outbox_pending", kind="post") == 1
    assert _value(m, "qlp_outbox_oldest_pending_seconds") == 90


def test_each_bot_has_its_own_registry(bot: BotHarness) -> None:
    bot.command("help")
    other = type(bot.services.metrics)()
    assert "qlp_slack_requests_total{" not in other.render()
    assert 'qlp_slack_requests_total{status="200"} 1.0' in bot.services.metrics.render()
