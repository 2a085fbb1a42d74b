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
from tests.fakes.slack_views import ephemeral_for

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


def test_a_refused_friday_request_offers_a_working_schedule_button(
        bot: BotHarness, clock: FixedClock) -> None:
    clock.set(FRIDAY)
    reply = bot.command("deploy v1.2.3")
    assert reply.text.startswith(":no_entry:") and "(rule: avoided-day)" in reply.text
    [button] = [element for block in reply.blocks if block["type"] == "actions"
                for element in block["elements"]]
    assert button["text"]["text"] == "Schedule for Tue 08 Dec 10:00 UTC"
    assert button["value"] == "deploy v1.2.3 to production at 2026-12-08 10:00 UTC"
    for _ in range(2):  # a double click creates one scheduled deployment
        bot.press(button["action_id"], button["value"], user="U0DEV", message_ts="9.000001",
                  action_ts="1733310000.000001")
    record = bot.wait_for(lambda: bot.services.deployments.get(1), what="the scheduled request")
    assert record.scheduled_at == datetime(2026, 12, 8, 10, 0, tzinfo=UTC)
    assert (record.version, record.requester, record.state) == ("v1.2.3", "U0DEV",
                                                                S.PENDING_APPROVAL)
    bot.wait_for(lambda: "Deployment #1 scheduled" in ephemeral_for(bot.slack, "U0DEV"),
                 what="the answer")
    assert len(bot.services.deployments.list_recent()) == 1


def test_a_forged_offer_runs_nothing_else(bot: BotHarness) -> None:
    bot.press("qlp_offer", "lock production --reason x", user="U0DEV", message_ts="9.1")
    bot.wait_for(lambda: "does not carry a command the bot offers" in
                 ephemeral_for(bot.slack, "U0DEV"), what="the refusal")
    assert bot.services.environments.get("production") is None \
        or bot.services.environments.get("production").lock_holder is None
