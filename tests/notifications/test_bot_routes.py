"""The routes inside the real bot: signed `/qlp` requests in, the PagerDuty double out.

The composition root wires the NotificationSender into the worker (with the policy's routing
key) and the PagingReporter in front of the engine's card reporter; ``/qlp status`` lists what
is not delivered and says nothing once it is.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from bot.notification_sender import NotificationSender
from bot.paging import PagingReporter
from procedures.clock import FixedClock
from storage.db import Database
from tests.fakes.bot_harness import BOT_TOKEN, BotHarness
from tests.fakes.pagerduty_double import PagerDutyDouble
from tests.fakes.slack_double import SlackDouble
from tests.notifications.conftest import routes_policy


@pytest.fixture
def slack() -> Iterator[SlackDouble]:
    double = SlackDouble(token=BOT_TOKEN, users={"U0DEV": "dev", "U0LEAD1": "lead1"})
    double.start()
    yield double
    double.stop()


@pytest.fixture
def bot(database: Database, clock: FixedClock, slack: SlackDouble, tmp_path: Path,
        pagerduty: PagerDutyDouble) -> Iterator[BotHarness]:
    harness = BotHarness(database=database, policy=routes_policy(pagerduty), clock=clock,
                         home=tmp_path / "home", slack=slack)
    yield harness
    harness.close()


def _sender(bot: BotHarness) -> NotificationSender:
    [sender] = [t for t in bot.services.worker_tasks() if isinstance(t, NotificationSender)]
    return sender


@pytest.mark.slow  # 3 s of the fast lane, measured
def test_an_emergency_page_reaches_pagerduty_and_status_shows_the_wait(
        bot: BotHarness, clock: FixedClock, pagerduty: PagerDutyDouble) -> None:
    chain, reporter = [], bot.services.engine.reporter
    while reporter is not None:  # the engine's reporter wraps the pager (charts, audiences)
        chain.append(reporter)
        reporter = getattr(reporter, "_inner", None)
    assert any(isinstance(r, PagingReporter) for r in chain)
    text = bot.command('emergency outage v1.2.5 --reason "API down"').text
    assert text.startswith("Emergency deployment #1 requested"), text
    assert "Undelivered" not in bot.command("status").text  # on its way: not listed

    pagerduty.fail_next(503)
    sender = _sender(bot)
    assert sender.run_once()
    status = bot.command("status").text
    assert ":warning: *Undelivered notifications*: 1 waiting to be retried" in status
    assert "pagerduty to PagerDuty (oncall) (deployment #1): 1 attempt, next try now; last " \
           "error: PagerDuty: HTTP 503: scripted 503" in status

    clock.advance(timedelta(seconds=1))
    assert sender.run_once()
    [event] = pagerduty.events
    assert event["routing_key"] == pagerduty.routing_key
    assert event["event_action"] == "trigger" and event["dedup_key"] == "qlp-deployment-1"
    assert event["payload"]["summary"] == (
        "Emergency deployment #1 (outage) of v1.2.5 to production requested by U0DEV: API down")
    assert event["payload"]["custom_details"]["channel"] == "C0DEPLOY"
    assert "Undelivered" not in bot.command("status").text
    [delivered] = [e for e in bot.services.audit.recent(50)
                   if e.action == "pagerduty.delivered"]
    assert delivered.deployment_id == 1 and delivered.detail["dedup_key"] == "qlp-deployment-1"
