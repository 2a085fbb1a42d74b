"""The seed's window tiers through signed requests: preferred goes, an "allowed" time (neither
preferred nor avoided) goes with the "outside the preferred window" mark on the reply, the
card and its thread, an avoided day is refused unless broken glass, and a queued run is judged
again when it starts (``tests/flows/test_gate_table.py`` has the whole table)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from procedures.clock import FixedClock
from procedures.model import DeploymentState as S
from tests.bot.run_helpers import press, thread_text
from tests.fakes.bot_harness import BotHarness

THURSDAY = datetime(2026, 12, 3, 11, 0, tzinfo=UTC)
FRIDAY = datetime(2026, 12, 4, 11, 0, tzinfo=UTC)


def _card(bot: BotHarness, deployment_id: int) -> str:
    cards = [n for n in bot.services.outbox.undelivered(1000)
             if n.payload.get("card_for") == deployment_id]
    assert cards, "no card was queued"
    return json.dumps(cards[-1].payload)


def test_thursday_1100_is_allowed_and_marked_outside_the_preferred_window(
        bot: BotHarness, clock: FixedClock) -> None:
    clock.set(THURSDAY)
    answer = bot.command("deploy v1.2.3").text
    assert answer.startswith("Deployment #1 requested: v1.2.3 to production."), answer
    assert "Outside the preferred window: allowed outside the preferred window" in answer
    assert "Outside the preferred window" in thread_text(bot, 1)
    assert "Outside the preferred window" in _card(bot, 1)
    press(bot, 1, "U0LEAD1")
    assert bot.services.deployments.get(1).state is S.QUEUED  # approvers may approve it


def test_a_friday_request_is_refused_as_an_avoided_day(
        bot: BotHarness, clock: FixedClock) -> None:
    clock.set(FRIDAY)
    answer = bot.command("deploy v1.2.3").text
    assert answer.startswith(":no_entry:"), answer
    assert "Friday is an avoided day" in answer and "(rule: avoided-day)" in answer
    assert "The next preferred slot opens Tue 2026-12-08 10:00 UTC" in answer
    assert bot.services.deployments.list_recent() == []


def test_a_window_that_closes_does_not_reset_a_hotfix_or_an_emergency(
        bot: BotHarness, clock: FixedClock) -> None:
    """Seed gap 28: the window does not apply to them, so it is not part of their plan."""
    clock.set(datetime(2026, 12, 1, 13, 59, tzinfo=UTC))  # Tue, a minute before the close
    assert "Hotfix #1 requested" in bot.command('hotfix v1.2.4 --reason "500s"').text
    clock.set(datetime(2026, 12, 1, 14, 1, tzinfo=UTC))  # closed now
    press(bot, 1, "U0LEAD1")
    assert bot.services.deployments.get(1).state is S.QUEUED
    assert "Approvals reset" not in thread_text(bot, 1)


def test_a_start_close_to_the_windows_close_says_it_may_overrun(
        bot: BotHarness, clock: FixedClock) -> None:
    clock.set(datetime(2026, 12, 1, 13, 40, tzinfo=UTC))  # Tue, 20 min before the close
    answer = bot.command("deploy v1.2.3").text
    assert "Deployment #1 requested" in answer, answer
    assert "Mind the clock: it may overrun the window: it closes Tue 2026-12-01 14:00 UTC, " \
        "20m from now, and a deployment takes about 45m." in answer
    assert "may overrun the window" in _card(bot, 1)
