"""The staging rehearsal end to end: signed requests into the real Bolt app, a Slack double
behind SLACK_API_URL, the real engine and worker, and the local platform's real processes for
both environments (routers and slots, stopped by the harness at the end).

Production names ``promoted_from: staging`` (comparison 3 s). ``/qlp deploy v1.0.0`` is
rehearsed on staging first (nothing is live on production yet, so nothing to compare with),
then production deploys. ``v1.1.0``: staging's idle slot gets it, passes its smoke tests,
serves staging's URL, is compared with production's v1.0.0 for 3 s, then production deploys,
all in one card's thread. ``v1.2.0-apierror`` answers 500 on ``/api/v1/status`` (a smoke
path): the rehearsal stops it on staging, staging is put back on v1.1.0, and production's idle
slot is never started.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest

from procedures.clock import FixedClock, SystemClock
from procedures.model import DeploymentState, Slot
from procedures.policy import Policy
from storage.db import Database
from tests.conftest import ON_POSTGRES_ONLY
from tests.fakes.bot_harness import BotHarness
from tests.fakes.policies import BASE, free_port, make_policy
from tests.fakes.slack_double import SlackDouble
from tests.fakes.slack_views import ALWAYS_OPEN, CHANNEL
from tests.fakes.slack_views import button_ids as _button_ids
from tests.fakes.slack_views import card as _card
from tests.fakes.slack_views import thread_text as _thread_text


def _policy() -> Policy:
    environments = copy.deepcopy(BASE["environments"])
    for env in environments.values():
        env["url"] = f"http://127.0.0.1:{free_port()}"
        env["local"]["slots"] = {"blue": free_port(), "green": free_port()}
        env["local"]["ready_timeout"] = "10s"
        env["smoke"] = ["/api/v1/status"]
    environments["production"]["promoted_from"] = "staging"
    environments["production"]["rehearsal"] = {"compare_for": "3s", "max_slowdown": 1.5}
    return make_policy(environments=environments, windows=ALWAYS_OPEN,
                       monitoring={"duration": "2s", "interval": "1s"})


@pytest.fixture
def live_bot(database: Database, slack: SlackDouble, tmp_path: Path) -> Iterator[BotHarness]:
    harness = BotHarness(database=database, policy=_policy(), clock=SystemClock(),
                         home=tmp_path / "home", slack=slack, start_worker=True)
    yield harness
    harness.close()


def _served(bot: BotHarness, environment: str) -> str:
    url = bot.services.policy.environments[environment].url
    return str(httpx.get(url + "/health", timeout=5, trust_env=False).json()["version"])


def _deploy(bot: BotHarness, version: str) -> int:
    response = bot.command(f"deploy {version}")
    assert "requested" in response.text, response.text
    deployment_id = int(response.text.split("#")[1].split(" ")[0].rstrip(":"))
    card = bot.wait_for(lambda: _card(bot.slack, deployment_id), what="the card")
    assert _button_ids(card) == ["qlp_approve", "qlp_reject"]
    bot.press("qlp_approve", str(deployment_id), user="U0LEAD1", message_ts=card.ts)
    return deployment_id


def _ended(bot: BotHarness, deployment_id: int) -> DeploymentState:
    deployments = bot.services.deployments
    bot.wait_for(lambda: deployments.get(deployment_id).state.terminal, timeout=120,
                 what=f"run #{deployment_id} to end")
    return deployments.get(deployment_id).state


def test_the_dry_run_lists_the_rehearsal_only_where_it_happens(
        database: Database, slack: SlackDouble, tmp_path: Path, clock: FixedClock) -> None:
    bot = BotHarness(database=database, policy=_policy(), clock=clock, home=tmp_path / "home",
                     slack=slack)
    try:
        production = bot.command("deploy v1.2.3 --dry-run").text
        staging = bot.command("deploy v1.2.3 to staging --dry-run").text
    finally:
        bot.close()
    assert "2. Staging rehearsal: deploy to the idle slot" in production, production
    assert "5. Staging rehearsal: performance against the live version" in production
    assert "Staging rehearsal" not in staging and "2. Pre-deployment snapshot" in staging


@ON_POSTGRES_ONLY
@pytest.mark.slow  # real processes, a comparison on the wall clock
def test_production_is_rehearsed_on_staging_and_a_staging_failure_stops_it(
        live_bot: BotHarness) -> None:
    bot, slack = live_bot, live_bot.slack
    platforms = bot.services.platforms

    # 1. The first deployment: rehearsed on staging (nothing live on production to compare
    #    with yet), then deployed to production, in one thread.
    first = _deploy(bot, "v1.0.0")
    assert _ended(bot, first) is DeploymentState.SUCCEEDED, \
        bot.services.deployments.get(first).error
    assert _served(bot, "staging") == "v1.0.0"
    assert _served(bot, "production") == "v1.0.0"
    bot.wait_for(lambda: "Deployed v1.0.0 to production" in _thread_text(slack, first),
                 timeout=30, what="the final reply")
    assert "nothing is live on production yet" in _thread_text(slack, first)

    # 2. The next one is compared with production's live v1.0.0 for 3 s.
    second = _deploy(bot, "v1.1.0")
    assert _ended(bot, second) is DeploymentState.SUCCEEDED, \
        bot.services.deployments.get(second).error
    assert _served(bot, "staging") == "v1.1.0"
    assert _served(bot, "production") == "v1.1.0"
    bot.wait_for(lambda: "Deployed v1.1.0 to production" in _thread_text(slack, second),
                 timeout=30, what="the final reply")
    thread = _thread_text(slack, second)
    print(f"Thread of #{second}:\n{thread}")
    order = ["✓ Final validation",
             "✓ Staging rehearsal: deploy to the idle slot",
             "✓ Staging rehearsal: ready and smoke tests",
             "/api/v1/status: 200",
             "✓ Staging rehearsal: switch staging's traffic",
             "Comparing staging (v1.1.0) with production (v1.0.0) for 3s",
             "Rehearsal passed: p95",
             "on staging (v1.1.0) against",
             "✓ Pre-deployment snapshot",
             "✓ Switch traffic to the new slot",
             "Deployed v1.1.0 to production"]
    positions = [thread.find(phrase) for phrase in order]
    assert -1 not in positions, [p for p, at in zip(order, positions, strict=True) if at < 0]
    assert positions == sorted(positions), thread
    status = bot.command("status staging").text
    assert "v1.1.0" in status, status
    staging_state = bot.services.environments.get("staging")
    assert (staging_state.live_slot, staging_state.live_version) == (Slot.GREEN, "v1.1.0")
    assert staging_state.lock_holder is None
    assert not platforms.platform_for("staging").traffic().slots[Slot.BLUE].running

    # 3. A version whose smoke path answers 500: stopped on staging, production untouched.
    production_before = platforms.platform_for("production").traffic()
    assert production_before.live is Slot.GREEN
    third = _deploy(bot, "v1.2.0-apierror")
    final = _ended(bot, third)
    record = bot.services.deployments.get(third)
    assert final is DeploymentState.ROLLED_BACK, record.error
    assert "smoke tests failed on staging (v1.2.0-apierror)" in (record.error or "")
    assert "/api/v1/status: HTTP 500" in (record.error or "")
    # Production: the same live colour and version, its idle blue never started again.
    production = platforms.platform_for("production").traffic()
    assert production.live is Slot.GREEN and production.live_version == "v1.1.0"
    assert not production.slots[Slot.BLUE].running
    assert _served(bot, "production") == "v1.1.0"
    steps = {s.name: s.state.value for s in bot.services.deployments.steps(third)}
    assert "deploy_idle_slot" not in steps and "snapshot" not in steps, steps
    # Staging: put back (its blue with the failed version stopped), v1.1.0 served again.
    assert _served(bot, "staging") == "v1.1.0"
    assert not platforms.platform_for("staging").traffic().slots[Slot.BLUE].running
    staging_state = bot.services.environments.get("staging")
    assert staging_state.live_version == "v1.1.0" and staging_state.lock_holder is None
    assert bot.services.environments.get("production").lock_holder is None
    bot.wait_for(lambda: f"Rolled back #{third}" in _thread_text(slack, third),
                 timeout=30, what="the Rolled back reply")
    thread = _thread_text(slack, third)
    for phrase in ("✗ Staging rehearsal: ready and smoke tests failed",
                   "/api/v1/status: HTTP 500",
                   "Stopped staging's blue slot (v1.2.0-apierror)"):
        assert phrase in thread, (phrase, thread)
    assert "✓ Pre-deployment snapshot" not in thread
    broadcast = [m.text for m in slack.thread(CHANNEL, _card(slack, third).ts) if m.broadcast]
    assert any("Staging rehearsal: ready and smoke tests failed" in text for text in broadcast)


def test_the_card_lists_the_rehearsal_steps_only_where_they_run(
        database: Database, slack: SlackDouble, tmp_path: Path, clock: FixedClock) -> None:
    bot = BotHarness(database=database, policy=_policy(), clock=clock, home=tmp_path / "home",
                     slack=slack)
    try:
        assert "requested" in bot.command("deploy v1.2.3").text
        second = bot.command("deploy v1.2.3 to staging", user="U0OPS").text
        assert "requested" in second, second
        sender = bot.services.worker_tasks()[-1]  # the outbox sender (one post a second)

        def posted(deployment_id: int) -> object:
            clock.advance(timedelta(seconds=2))  # the channel's pacing runs on this clock
            sender.run_once()
            return _card(slack, deployment_id)

        production = str(bot.wait_for(lambda: posted(1), what="card #1").blocks)
        staging = str(bot.wait_for(lambda: posted(2), what="card #2").blocks)
    finally:
        bot.close()
    assert "Staging rehearsal: deploy to the idle slot" in production
    assert "Staging rehearsal: performance against the live version" in production
    assert "Staging rehearsal" not in staging and "Pre-deployment snapshot" in staging
