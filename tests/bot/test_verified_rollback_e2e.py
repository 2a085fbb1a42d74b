"""A rollback whose old colour was removed, redeployed and verified, end to end: signed requests
into the real Bolt app, a Slack double behind SLACK_API_URL, the real engine and worker, and the
local platform's real processes (stopped by the harness at the end).

v1.0.0 goes live on blue. v1.1.0-unhealthy goes to green: it passes readiness, smoke tests,
extended health and the post-deployment tests (QLP_SAMPLE_HEALTHY_FOR=8 healthy answers), then
fails in monitoring. While green is being monitored, blue's process is killed. The automatic
rollback finds blue gone, redeploys v1.0.0 into it (blue-green: green keeps serving meanwhile),
switches, verifies the public URL, and the run ends ROLLED_BACK, not NEEDS_ATTENTION; the thread
says so, and the post-rollback investigation is asked for in the thread.
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from bot.schedule.review_reminders import ReviewReminders
from procedures.clock import SystemClock
from procedures.model import DeploymentState
from procedures.platforms.local import processes
from storage.db import Database
from tests.conftest import ON_POSTGRES_ONLY
from tests.fakes.bot_harness import BotHarness
from tests.fakes.policies import make_policy
from tests.fakes.slack_double import SlackDouble
from tests.fakes.slack_views import ALWAYS_OPEN, CHANNEL
from tests.fakes.slack_views import button_ids as _button_ids
from tests.fakes.slack_views import card as _card
from tests.fakes.slack_views import thread_text as _thread_text


@pytest.fixture
def live_bot(database: Database, slack: SlackDouble, tmp_path: Path,
             monkeypatch: pytest.MonkeyPatch) -> Iterator[BotHarness]:
    # Eight healthy answers: readiness, smoke tests, extended health and the post-deployment
    # tests pass; monitoring sees 500s.
    monkeypatch.setenv("QLP_SAMPLE_HEALTHY_FOR", "8")
    policy = make_policy(real_ports=True, windows=ALWAYS_OPEN,
                         monitoring={"duration": "6s", "interval": "1s",
                                     "rollback_verify": "30s"})
    harness = BotHarness(database=database, policy=policy, clock=SystemClock(),
                         home=tmp_path / "home", slack=slack, start_worker=True)
    yield harness
    harness.close()  # stops the router and both slots


def _served(bot: BotHarness) -> str:
    url = bot.services.policy.environments["production"].url
    return str(httpx.get(url + "/health", timeout=5, trust_env=False).json()["version"])


def _deploy(bot: BotHarness, version: str) -> int:
    response = bot.command(f"deploy {version}")
    assert "requested" in response.text, response.text
    deployment_id = int(response.text.split("#")[1].split(" ")[0].rstrip(":"))
    card = bot.wait_for(lambda: _card(bot.slack, deployment_id), what="the card")
    assert _button_ids(card) == ["qlp_approve", "qlp_reject"]
    bot.press("qlp_approve", str(deployment_id), user="U0LEAD1", message_ts=card.ts)
    return deployment_id


@ON_POSTGRES_ONLY
@pytest.mark.slow  # the local platform's real processes, monitoring on the wall clock
def test_a_rollback_whose_old_colour_was_removed_is_redeployed_and_verified(
        live_bot: BotHarness, tmp_path: Path) -> None:
    bot, slack = live_bot, live_bot.slack
    deployments = bot.services.deployments
    state_dir = tmp_path / "home" / "platform" / "production"

    first = _deploy(bot, "v1.0.0")
    bot.wait_for(lambda: deployments.get(first).state.terminal, timeout=90,
                 what="the first run to end")
    assert deployments.get(first).state is DeploymentState.SUCCEEDED, deployments.get(first).error
    assert _served(bot) == "v1.0.0"
    blue_pid_file = state_dir / "blue.pid"
    assert processes.find(blue_pid_file) is not None

    second = _deploy(bot, "v1.1.0-unhealthy")
    bot.wait_for(lambda: deployments.get(second).current_step == "monitor"
                 or deployments.get(second).state.terminal,
                 timeout=90, what="monitoring of the new version")
    assert deployments.get(second).current_step == "monitor", deployments.get(second)
    # The old colour's process dies while the new version is monitored.
    old_pid = json.loads(blue_pid_file.read_text())["pid"]
    os.kill(old_pid, signal.SIGKILL)
    bot.wait_for(lambda: processes.find(blue_pid_file) is None, timeout=10,
                 what="blue's process to be gone")

    bot.wait_for(lambda: deployments.get(second).state.terminal, timeout=120,
                 what="the second run to end")
    final = deployments.get(second)
    assert final.state is DeploymentState.ROLLED_BACK, final.error
    assert "health checks failed" in (final.error or ""), final.error
    assert _served(bot) == "v1.0.0"
    new_pid = json.loads(blue_pid_file.read_text())["pid"]
    assert new_pid != old_pid and processes.find(blue_pid_file) == new_pid
    assert bot.services.environments.get("production").lock_holder is None

    bot.wait_for(lambda: f"Rolled back #{second}" in _thread_text(slack, second),
                 timeout=30, what="the Rolled back reply")
    thread = _thread_text(slack, second)
    for phrase in ("Rolling back",
                   "The previous blue slot is gone",
                   "redeploying v1.0.0 into it",
                   "blue is ready again: v1.0.0",
                   "Traffic switched back to blue (v1.0.0), redeployed.",
                   "Rollback verification:"):
        assert phrase in thread, (phrase, thread)
    assert "needs attention" not in thread and "/qlp emergency" not in thread
    broadcast = [m.text for m in slack.thread(CHANNEL, _card(slack, second).ts) if m.broadcast]
    assert any("redeploying v1.0.0" in text for text in broadcast)
    pages = [n for n in bot.services.outbox.undelivered() if n.channel == "pagerduty"]
    assert pages == []

    # The post-rollback investigation is asked for in the thread (and chased until ticked).
    reminders = ReviewReminders.from_services(bot.services)
    assert [d.id for d, _ in reminders.investigations(datetime.now(UTC))] == [second]
    reminders.run_due(datetime.now(UTC))
    bot.wait_for(lambda: "Post-rollback investigation required" in _thread_text(slack, second),
                 timeout=30, what="the investigation note")
    assert f"/qlp checklist {second}" in _thread_text(slack, second)
