"""The preflight: final validation's checks run by the worker while a standard deployment waits
for approval, stored on the deployment and shown on its card.

The bot is the real one (signed requests, Slack double, both databases); the environment is a
local-platform production whose ``ci:`` section points at the local GitHub double of
``tests.checks.test_ci_status``. Nothing listens on production's URL (port 1), so a live slot
recorded in the bot's state is unhealthy and has no error data (no router answers).
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bot.cards import card_problems, render_card
from bot.outbox_sender import SlackOutboxSender
from bot.preflight import LEASE, OPTION, Preflight, run_preflight
from bot.worker import Worker
from procedures.clock import FixedClock
from procedures.errors import ConflictError, UserError
from procedures.model import DeploymentState, Slot
from storage.db import Database
from tests.checks.test_ci_status import GitHubDouble, github, run  # noqa: F401 (a fixture)
from tests.fakes.bot_harness import BotHarness
from tests.fakes.policies import BASE, make_policy
from tests.fakes.slack_double import SlackDouble
from tests.fakes.slack_views import card

WORKFLOW = ("acme/shop", "deploy.yml", "main")


@pytest.fixture
def ci_bot(database: Database, clock: FixedClock, slack: SlackDouble, tmp_path: Path,
           github: tuple[GitHubDouble, str]) -> Iterator[BotHarness]:  # noqa: F811
    _, url = github
    environments = copy.deepcopy(BASE["environments"])
    environments["production"]["ci"] = {"repository": "acme/shop", "workflow": "deploy.yml",
                                         "branch": "main", "api_url": url}
    harness = BotHarness(database=database, policy=make_policy(environments=environments),
                         clock=clock, home=tmp_path / "home", slack=slack)
    # A worker that is not started: the test runs its passes (BotHarness.settle). Its Slack
    # sender does not pace: on the fixed clock a paced message would never fall due.
    services = harness.services
    tasks = services.worker_tasks()
    tasks[[task.name for task in tasks].index("slack-outbox")] = SlackOutboxSender(
        services.outbox, services.deployments, services.slack, services.clock,
        per_channel_interval=0, per_card_interval=0)
    services.worker = Worker(tasks)
    yield harness
    harness.close()


def _request(bot: BotHarness, version: str = "v1.2.3") -> int:
    response = bot.command(f"deploy {version}")
    assert "requested" in response.text, response.text
    return int(response.text.split("#")[1].split(" ")[0].rstrip(":"))


def _evidence_text(bot: BotHarness, deployment_id: int) -> str:
    """The Evidence section (and its note) of the card as the Slack double holds it."""
    message = card(bot.slack, deployment_id)
    assert message is not None, "the card was not posted"
    assert card_problems(message.blocks) == []
    return "\n".join(_texts(block) for block in message.blocks
                     if str(block.get("block_id", "")).startswith("card-evidence"))


def _texts(block: dict[str, Any]) -> str:
    if "text" in block:
        return str(block["text"]["text"])
    return "\n".join(str(element.get("text", "")) for element in block.get("elements", []))


def _ci_calls(double: GitHubDouble) -> int:
    return sum(1 for path, _, _ in double.requests if path.endswith("/runs"))


def test_the_card_shows_each_checks_evidence_after_the_worker_pass(
        ci_bot: BotHarness, github: tuple[GitHubDouble, str]) -> None:  # noqa: F811
    double, _ = github
    double.runs[WORKFLOW] = [run("completed", "success")]
    bot = ci_bot
    deployment_id = _request(bot)

    # The listener only wrote the request: no check ran, the card says "checking…".
    assert double.requests == []
    waiting = bot.services.views.snapshot(deployment_id)
    assert waiting.evidence is not None and waiting.evidence.pending
    _, blocks = render_card(waiting, zone=bot.services.policy.zone,
                            now=bot.services.clock.now())
    assert any("checking…" in _texts(block) for block in blocks)

    bot.settle()
    assert _ci_calls(double) == 1
    text = _evidence_text(bot, deployment_id)
    assert "*Evidence* (checked Tue 2026-12-01 11:00 UTC)" in text
    assert (":large_green_circle: *CI status* (ok, 11:00:00): CI acme/shop deploy.yml on main: "
            "success (abc1234, 2026-12-01T10:00:00Z)") in text
    assert (":white_circle: *Health* (skipped, 11:00:00): nothing is live on production yet "
            "(first deployment)") in text
    assert "checking…" not in text
    assert "checks again at start" not in text  # nothing failed

    record = bot.services.deployments.get(deployment_id)
    assert record is not None and record.state is DeploymentState.PENDING_APPROVAL
    stored = record.options[OPTION]
    assert stored["plan_hash"] == record.plan_hash and stored["status"] == "done"
    assert [f["name"] for f in stored["findings"]] == ["health", "errors", "ci"]
    assert [f["verdict"] for f in stored["findings"]] == ["skipped", "skipped", "ok"]

    # Exactly once per plan: another pass runs nothing and changes nothing.
    revision = record.revision
    bot.settle()
    assert _ci_calls(double) == 1
    again = bot.services.deployments.get(deployment_id)
    assert again is not None and again.revision == revision


def test_a_failing_ci_run_and_an_unhealthy_live_slot_show_red_and_grey(
        ci_bot: BotHarness, github: tuple[GitHubDouble, str]) -> None:  # noqa: F811
    double, _ = github
    double.runs[WORKFLOW] = [run("completed", "failure")]
    bot = ci_bot
    # The bot recorded v1.2.2 live on blue, but nothing answers on production's URL.
    bot.services.environments.record_switch("production", Slot.BLUE, "v1.2.2")
    deployment_id = _request(bot)
    bot.settle()

    text = _evidence_text(bot, deployment_id)
    assert ":red_circle: *CI status* (failed, 11:00:00): CI acme/shop deploy.yml on main: " \
           "failure" in text
    assert ":red_circle: *Health* (failed, 11:00:00): GET http://127.0.0.1:1/health:" in text
    # No router answers: no data, an amber warning (validation.no_data), never a pass or "0".
    assert (":large_orange_circle: *Recent errors* (warning, 11:00:00): no data: no error "
            "figures for the live blue slot over the last 1h") in text
    assert ":large_green_circle:" not in text
    assert "2 failed: the run's final validation checks again at start" in text
    # The card keeps its buttons: the preflight informs approvers, it does not decide.
    message = card(bot.slack, deployment_id)
    assert message is not None
    assert any(block["type"] == "actions" for block in message.blocks)


@pytest.mark.slow  # 5 s of the fast lane, measured
def test_a_plan_change_recomputes_and_a_dead_claim_is_taken_over(
        ci_bot: BotHarness, github: tuple[GitHubDouble, str],  # noqa: F811
        clock: FixedClock) -> None:
    double, _ = github
    double.runs[WORKFLOW] = [run("completed", "success")]
    bot = ci_bot
    services = bot.services
    deployment_id = _request(bot)
    bot.settle()
    assert _ci_calls(double) == 1

    # The plan changes (approvals reset then): the findings are stale until checked again.
    services.deployments.update_fields(deployment_id, plan_hash="f" * 32)
    stale = services.views.snapshot(deployment_id).evidence
    assert stale is not None and stale.pending and stale.stale
    double.runs[WORKFLOW] = [run("completed", "failure", number=8)]
    bot.settle()
    assert _ci_calls(double) == 2
    record = services.deployments.get(deployment_id)
    assert record is not None and record.options[OPTION]["plan_hash"] == "f" * 32
    assert "*CI status* (failed" in _evidence_text(bot, deployment_id)

    # A worker claims the next plan's preflight and dies before storing anything.
    services.deployments.update_fields(deployment_id, plan_hash="e" * 32)
    record = services.deployments.get(deployment_id)
    assert record is not None
    with Preflight(services) as dying:
        assert dying.claim(record) is not None
    bot.settle()  # the claim is young: nobody runs it twice
    assert _ci_calls(double) == 2
    clock.advance(LEASE)
    bot.settle()  # the claim is dead: the checks run again
    assert _ci_calls(double) == 3
    record = services.deployments.get(deployment_id)
    assert record is not None
    assert record.options[OPTION]["plan_hash"] == "e" * 32
    assert record.options[OPTION]["status"] == "done"


def test_two_workers_claim_once_and_a_plan_change_drops_the_late_findings(
        ci_bot: BotHarness, github: tuple[GitHubDouble, str]) -> None:  # noqa: F811
    double, _ = github
    double.runs[WORKFLOW] = [run("completed", "success")]
    services = ci_bot.services
    deployment_id = _request(ci_bot)
    record = services.deployments.get(deployment_id)
    assert record is not None
    with Preflight(services) as one, Preflight(services) as other:
        # Both read the same row; the conditional update lets one of them claim it.
        first = one.claim(record)
        assert first is not None
        assert other.claim(record) is None
        # The plan changes while the checks run: their findings are dropped, not stored.
        services.deployments.update_fields(deployment_id, plan_hash="d" * 32)
        result = one.complete(first)
    assert result.ran and not result.stored
    assert [f.name for f in result.findings] == ["health", "errors", "ci"]
    stored = services.deployments.get(deployment_id)
    assert stored is not None and stored.options[OPTION]["status"] == "running"


@pytest.mark.slow  # 3 s of the fast lane, measured
def test_run_preflight_returns_the_stored_findings_or_runs_again_when_forced(
        ci_bot: BotHarness, github: tuple[GitHubDouble, str]) -> None:  # noqa: F811
    double, _ = github
    double.runs[WORKFLOW] = [run("in_progress", None)]
    services = ci_bot.services
    deployment_id = _request(ci_bot)

    first = run_preflight(services, deployment_id)
    assert first.ran and first.stored and not first.passed
    ci = [f for f in first.findings if f.name == "ci"]
    assert [f.verdict.value for f in ci] == ["inconclusive"]  # still running: no verdict yet
    assert [f.name for f in first.problems] == ["ci"]
    assert _ci_calls(double) == 1

    again = run_preflight(services, deployment_id)
    assert not again.ran and again.findings == first.findings
    assert _ci_calls(double) == 1

    double.runs[WORKFLOW] = [run("completed", "success", number=9)]
    forced = run_preflight(services, deployment_id, force=True)  # the T-2h validation
    assert forced.ran and forced.stored and forced.passed
    assert _ci_calls(double) == 2
    ci_bot.settle()  # the update reaches the card
    assert ":large_green_circle: *CI status* (ok" in _evidence_text(ci_bot, deployment_id)

    with pytest.raises(UserError, match="#99 does not exist"):
        run_preflight(services, 99)
    services.deployments.transition(deployment_id, [DeploymentState.PENDING_APPROVAL],
                                    DeploymentState.CANCELLED)
    with pytest.raises(ConflictError, match="is cancelled"):
        run_preflight(services, deployment_id)
    assert services.views.snapshot(deployment_id).evidence is None  # no section once over
