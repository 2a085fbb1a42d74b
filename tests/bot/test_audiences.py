"""The audiences hear of every start and end (seed: notify the teams), through the outbox:
engineering and customer success always, leadership for a major version and every emergency.
Signed requests into the real app; the runs are the bot's engine on a one-step playbook."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from procedures.clock import FixedClock
from procedures.model import DeploymentState as S
from storage.db import Database
from tests.bot.run_helpers import TinyRuns, press
from tests.fakes.bot_harness import BotHarness
from tests.fakes.policies import make_policy
from tests.fakes.slack_double import SlackDouble

CHANNELS = {"engineering": "C0ENGINEER", "customer-success": "C0CUSTSUC",
            "leadership": "C0LEADERS"}


@pytest.fixture
def told(database: Database, clock: FixedClock, slack: SlackDouble,
         tmp_path: Path) -> Iterator[tuple[BotHarness, TinyRuns]]:
    harness = BotHarness(database=database, policy=make_policy(
        notifications={"audiences": CHANNELS}), clock=clock, home=tmp_path / "home",
        slack=slack)
    runs = TinyRuns(harness)
    yield harness, runs
    runs.close()
    harness.close()


def _posts(bot: BotHarness, channel: str) -> list[str]:
    return [str(n.payload.get("text")) for n in bot.services.outbox.undelivered(1000)
            if n.channel == channel and n.kind == "post"]


def test_a_deployment_start_and_end_reach_engineering_and_customer_success(
        told: tuple[BotHarness, TinyRuns]) -> None:
    bot, runs = told
    bot.command("deploy v1.2.3")
    press(bot, 1, "U0LEAD1")
    runs.drain()
    assert bot.services.deployments.get(1).state is S.SUCCEEDED
    for audience in ("engineering", "customer-success"):
        posts = _posts(bot, CHANNELS[audience])
        assert len(posts) == 2, posts  # once each, however often the card changed
        assert "*Deployment #1 started*: v1.2.3 to production" in posts[0]
        assert "requested by <@U0DEV>" in posts[0]
        assert "*Deployment #1 succeeded*" in posts[1]
    assert _posts(bot, CHANNELS["leadership"]) == []  # not a major version


def test_an_emergency_reaches_leadership_too(told: tuple[BotHarness, TinyRuns]) -> None:
    bot, runs = told
    bot.command('emergency outage v1.2.5 --reason "API down <!channel>"')
    press(bot, 1, "U0LEAD1")
    runs.drain()
    posts = _posts(bot, CHANNELS["leadership"])
    assert [p.split("*")[1] for p in posts] == ["Emergency deployment #1 started",
                                                "Emergency deployment #1 succeeded"]
    assert "&lt;!channel&gt;" in posts[0] and "<!channel>" not in posts[0]
