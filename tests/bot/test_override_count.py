"""Counting the normal approvals of a break-glass request (issue 11: "recorded (2 of 1)").

A request with ``--override`` waits for the grant *and* the kind's approvals. Once the approvals
are complete, a further approver used to be recorded and told "recorded (2 of 1)"; now the count
never passes the rule's number and the extra approver is told the request has what it needs.
Signed requests into the real app; the worker is not started, so a queued request stays QUEUED.
"""

from __future__ import annotations

from datetime import UTC, datetime

from procedures.clock import FixedClock
from procedures.model import DeploymentState as S
from tests.bot.run_helpers import press
from tests.fakes.bot_harness import BotHarness

FRIDAY = datetime(2026, 12, 4, 11, 0, tzinfo=UTC)  # an avoided day: the window is closed
CARD_TS = "1764849600.000100"
OVERRIDE = 'deploy v1.2.3 --override "checkout fix cannot wait for Tuesday"'


_press = press  # the click is decided after its ack: run_helpers.press waits for it


def _thread_text(bot: BotHarness, deployment_id: int) -> str:
    return "\n".join(str(n.payload.get("text")) for n in bot.services.outbox.undelivered(500)
                     if n.thread_of == deployment_id and n.kind == "post")


def test_a_second_approval_of_a_complete_override_request_is_not_counted(
        bot: BotHarness, clock: FixedClock) -> None:
    clock.set(FRIDAY)
    answer = bot.command(OVERRIDE).text
    assert "Deployment #1 requested with a break-glass override" in answer

    first = _press(bot, 1, "U0LEAD1")
    assert "Your approval of #1 is recorded (1 of 1)." in first
    assert "Waiting for the break-glass override from <@U0HEAD1>" in first

    second = _press(bot, 1, "U0LEAD2")  # in S0RELEASE: a standard approver too
    assert "2 of 1" not in second and "recorded" not in second
    assert "#1 already has the 1 approval it needs (<@U0LEAD1>); yours was not counted." \
        in second
    assert "Waiting for the break-glass override from <@U0HEAD1>" in second
    rows = [(a.actor, a.decision) for a in bot.services.approvals.for_deployment(1)]
    assert rows == [("U0LEAD1", "approve")]
    approved = [e for e in bot.services.audit.recent(100) if e.action == "deployment.approved"]
    assert [(e.actor, e.detail["count"], e.detail["required"]) for e in approved] == [
        ("U0LEAD1", 1, 1)]
    assert "(2/1)" not in _thread_text(bot, 1)

    assert "You granted the override of #1; it is starting." in _press(bot, 1, "U0HEAD1")
    assert bot.services.deployments.get(1).state is S.QUEUED
    assert "Approved by <@U0LEAD1> with the break-glass override of <@U0HEAD1>. Starting." \
        in _thread_text(bot, 1)
