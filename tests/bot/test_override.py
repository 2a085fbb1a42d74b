"""Break-glass overrides over signed requests into the real app: ``/qlp deploy --override``,
the grant by an override approver, the normal approval, expiry, locks. The worker is not
started, so a queued request stays QUEUED; what Slack would be sent is read from the outbox."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from procedures.clock import FixedClock
from procedures.model import DeploymentState as S
from procedures.model import ProcedureKind
from tests.bot.run_helpers import press
from tests.fakes.bot_harness import BotHarness

FRIDAY = datetime(2026, 12, 4, 11, 0, tzinfo=UTC)  # an avoided day: the window is closed
CARD_TS = "1764849600.000100"  # handlers resolve clicks from the database, not the message
OVERRIDE = 'deploy v1.2.3 --override "checkout fix cannot wait for Tuesday"'


def _thread(bot: BotHarness, deployment_id: int) -> list[dict[str, Any]]:
    return [dict(n.payload) for n in bot.services.outbox.undelivered(500)
            if n.thread_of == deployment_id and n.kind == "post"]


def _thread_text(bot: BotHarness, deployment_id: int) -> str:
    return "\n".join(str(p.get("text")) for p in _thread(bot, deployment_id))


def _broadcasts(bot: BotHarness, deployment_id: int) -> str:
    return "\n".join(str(p.get("text")) for p in _thread(bot, deployment_id)
                     if p.get("reply_broadcast"))


def _card(bot: BotHarness, deployment_id: int) -> str:
    """The newest rendering of the card (its blocks as JSON text)."""
    cards = [n.payload for n in bot.services.outbox.undelivered(500)
             if n.deployment_id == deployment_id and n.thread_of is None
             and n.kind in ("post", "update")]
    assert cards, "no card was queued"
    return json.dumps(cards[-1].get("blocks"))


_press = press  # the click is decided after its ack: run_helpers.press waits for it


def _actions(bot: BotHarness) -> list[str]:
    return [e.action for e in bot.services.audit.recent(300)]


def _audit(bot: BotHarness, action: str) -> Any:
    return next(e for e in bot.services.audit.recent(300) if e.action == action)


def _request(bot: BotHarness, text: str = OVERRIDE, user: str = "U0DEV") -> int:
    answer = bot.command(text, user=user).text
    assert "requested with a break-glass override" in answer, answer
    return int(answer.split("#")[1].split(" ")[0])


def test_outside_the_window_a_deploy_is_refused_and_the_refusal_offers_an_override(
        bot: BotHarness, clock: FixedClock) -> None:
    clock.set(FRIDAY)
    text = bot.command("deploy v1.2.3").text
    assert "A standard deployment is not allowed now: Friday is an avoided day" in text
    assert "(rule: avoided-day)" in text
    assert "Tue 2026-12-08 10:00 UTC" in text
    assert '`--override "why"`; <@U0HEAD1> (not you) must grant it' in text
    assert bot.services.deployments.list_recent() == []
    refused = _audit(bot, "deployment.refused")
    assert refused.detail["rule"] == "avoided-day"


def test_override_request_self_approval_refused_then_approval_and_grant_queue_it(
        bot: BotHarness, clock: FixedClock) -> None:
    clock.set(FRIDAY)
    answer = bot.command(OVERRIDE).text
    assert "Deployment #1 requested with a break-glass override: v1.2.3 to production" in answer
    assert "<@U0HEAD1> (not you) must grant the override" in answer
    deployment = bot.services.deployments.get(1)
    assert deployment.state is S.PENDING_APPROVAL
    assert deployment.options["override"] == {
        "reason": "checkout fix cannot wait for Tuesday", "requested_by": "U0DEV",
        "rules": ["avoided-day"]}
    card = _card(bot, 1)
    assert "Break-glass override needed (avoided-day)" in card
    assert "granted by @U0HEAD1 (not the requester)" in card
    assert "checkout fix cannot wait for Tuesday" in card  # the card's reason
    assert "asks to break glass" in _thread_text(bot, 1)

    # The requester can neither grant nor approve; a stranger can do neither either.
    assert "someone else must grant its override" in _press(bot, 1, "U0DEV")
    assert "You may not approve #1" in _press(bot, 1, "U0STRANGER")
    assert bot.services.deployments.get(1).state is S.PENDING_APPROVAL

    # A normal approver approves: recorded, but it waits for the override.
    text = _press(bot, 1, "U0LEAD1")
    assert "Your approval of #1 is recorded (1 of 1)" in text
    assert "Waiting for the break-glass override from <@U0HEAD1>" in text
    assert bot.services.deployments.get(1).state is S.PENDING_APPROVAL

    # The override approver grants it: complete, queued.
    assert "You granted the override of #1; it is starting." in _press(bot, 1, "U0HEAD1")
    assert bot.services.deployments.get(1).state is S.QUEUED
    broadcast = _broadcasts(bot, 1)
    assert "Break-glass override of #1 granted by <@U0HEAD1>" in broadcast
    assert "lifts avoided-day for this deployment only, until Fri 2026-12-04 13:00 UTC" \
        in broadcast
    thread = _thread_text(bot, 1)
    assert "Approved by <@U0LEAD1> with the break-glass override of <@U0HEAD1>. Starting." \
        in thread
    assert "Break-glass override granted by @U0HEAD1 until Fri 2026-12-04 13:00 UTC" \
        in _card(bot, 1)
    granted = _audit(bot, "override.granted")
    assert granted.actor == "U0HEAD1" and granted.deployment_id == 1
    assert granted.detail["lifts"] == ["avoided-day"]
    assert "review why #1 needed a break-glass override" in granted.detail["follow_up"]
    assert "override.requested" in _actions(bot) and "override.used" in _actions(bot)
    assert _actions(bot).count("approval.refused") == 2
    rows = {(a.actor, a.decision) for a in bot.services.approvals.for_deployment(1)}
    assert rows == {("U0LEAD1", "approve"), ("U0HEAD1", "override")}


def test_grant_first_then_the_granter_cannot_also_approve(
        bot: BotHarness, clock: FixedClock) -> None:
    clock.set(FRIDAY)
    deployment_id = _request(bot)
    text = _press(bot, deployment_id, "U0HEAD1")
    assert "You granted the override of #1 until Fri 2026-12-04 13:00 UTC" in text
    assert "It still needs 1 approval from <@U0LEAD1> or a member of <!subteam^S0RELEASE>" \
        in text
    assert "another approver must approve the deployment itself" in _press(
        bot, deployment_id, "U0HEAD1")
    assert bot.services.deployments.get(deployment_id).state is S.PENDING_APPROVAL
    clock.advance(timedelta(minutes=90))  # still inside the two hours
    assert "You approved #1; it is starting." in _press(bot, deployment_id, "U0LEAD2")
    assert bot.services.deployments.get(deployment_id).state is S.QUEUED


def test_an_override_expires_two_hours_after_the_grant(
        bot: BotHarness, clock: FixedClock) -> None:
    clock.set(FRIDAY)
    deployment_id = _request(bot)
    _press(bot, deployment_id, "U0HEAD1")
    clock.advance(timedelta(hours=2, minutes=1))
    text = _press(bot, deployment_id, "U0LEAD1")
    assert "expired Fri 2026-12-04 13:00 UTC" in text and "(rule: override-expired)" in text
    assert "Ask again with `--override" in text
    deployment = bot.services.deployments.get(deployment_id)
    assert deployment.state is S.EXPIRED
    assert "expired" in (deployment.error or "")
    assert f"#{deployment_id} will not run" in _broadcasts(bot, deployment_id)
    assert "override.expired" in _actions(bot)


def test_an_override_passes_a_persons_lock_and_leaves_it_theirs_when_queued(
        bot: BotHarness) -> None:
    environments = bot.services.environments
    assert environments.acquire_lock("production", "U0OPS", "db maintenance", None, None)
    text = bot.command("deploy v1.2.3").text  # inside the window, but locked
    assert "production is locked by <@U0OPS>: db maintenance" in text
    assert "(rule: environment-lock)" in text and "/qlp unlock production" in text
    deployment_id = _request(bot)
    assert "Break-glass override needed (environment-lock)" in _card(bot, deployment_id)
    _press(bot, deployment_id, "U0LEAD1")
    _press(bot, deployment_id, "U0HEAD1")
    assert bot.services.deployments.get(deployment_id).state is S.QUEUED
    # The lock stays the person's: the run passes it for its own duration (the engine).
    state = environments.get("production")
    assert state.lock_holder == "U0OPS" and state.lock_reason == "db maintenance"
    assert "was lifted" not in _broadcasts(bot, deployment_id)
    assert not [e for e in bot.services.audit.recent(50) if e.action == "environment.unlocked"]


def test_an_override_never_lifts_one_at_a_time(bot: BotHarness, clock: FixedClock) -> None:
    deployments = bot.services.deployments
    other = deployments.create(ProcedureKind.STANDARD, "v1.2.2", "production", "U0LEAD1")
    assert other.id is not None
    assert deployments.transition(other.id, [S.PENDING_APPROVAL], S.QUEUED)
    clock.set(FRIDAY)
    text = bot.command(OVERRIDE).text
    assert f"Deployment #{other.id} (v1.2.2, queued) is already under way" in text
    assert "(rule: one-at-a-time)" in text and "An override never lifts this rule" in text
    assert [d.id for d in deployments.list_recent()] == [other.id]


def test_an_override_approver_who_requested_cannot_grant_their_own(
        bot: BotHarness, clock: FixedClock) -> None:
    clock.set(FRIDAY)
    deployment_id = _request(bot, user="U0HEAD1")
    assert "someone else must grant its override" in _press(bot, deployment_id, "U0HEAD1")
    text = _press(bot, deployment_id, "U0LEAD1")
    assert "Waiting for the break-glass override" in text
    assert bot.services.deployments.get(deployment_id).state is S.PENDING_APPROVAL
    assert not [a for a in bot.services.approvals.for_deployment(deployment_id)
                if a.decision == "override"]


def test_an_override_approver_may_refuse_to_break_glass(
        bot: BotHarness, clock: FixedClock) -> None:
    clock.set(FRIDAY)
    deployment_id = _request(bot)
    assert "You rejected #1" in _press(bot, deployment_id, "U0HEAD1", "qlp_reject")
    assert bot.services.deployments.get(deployment_id).state is S.REJECTED


def test_no_override_is_asked_for_when_none_is_needed(bot: BotHarness) -> None:
    text = bot.command(OVERRIDE).text  # Tuesday 11:00: the window is open
    assert "Deployment #1 requested: v1.2.3 to production" in text
    assert "No override was needed" in text
    assert "override" not in bot.services.deployments.get(1).options


def test_an_override_needs_a_reason(bot: BotHarness) -> None:
    assert "`--override` needs a value" in bot.command("deploy v1.2.3 --override").text
    assert "An override needs a reason" in bot.command('deploy v1.2.3 --override "x"').text
    assert bot.services.deployments.list_recent() == []


def test_a_grant_and_an_approval_at_once_queue_it_exactly_once(
        bot: BotHarness, clock: FixedClock) -> None:
    from concurrent.futures import ThreadPoolExecutor

    clock.set(FRIDAY)
    deployment_id = _request(bot)
    with ThreadPoolExecutor(2) as pool:
        answers = list(pool.map(lambda user: _press(bot, deployment_id, user),
                                ["U0HEAD1", "U0LEAD1"]))
    assert bot.services.deployments.get(deployment_id).state is S.QUEUED
    assert sum("it is starting" in answer for answer in answers) == 1, answers
    assert _actions(bot).count("override.used") == 1
    assert _thread_text(bot, deployment_id).count("Starting.") == 1
