"""Unscheduled requests nobody approved expire when their window closes, or after
``pending_max_age`` (seed gap 52): requests come in as signed slash commands through the real
Bolt app; the scheduler's tick is ``PendingRequests.run_due(now)`` on an injected clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlmodel import col, select

from bot.schedule.pending_requests import PendingRequests
from bot.schedule.registry import build_due_works
from procedures.clock import FixedClock
from procedures.model import DeploymentState
from storage.models import AuditEvent, Notification
from tests.fakes.bot_harness import BotHarness

S = DeploymentState
THURSDAY_EVENING = datetime(2026, 12, 3, 18, 0, tzinfo=UTC)  # allowed: outside preferred hours
FRIDAY = datetime(2026, 12, 4, 0, 1, tzinfo=UTC)  # an avoided day
WEDNESDAY = datetime(2026, 12, 2, 11, 0, tzinfo=UTC)  # preferred


@pytest.fixture
def clock() -> FixedClock:
    """Thursday evening; ``bot`` (tests/conftest.py) runs on it."""
    return FixedClock(THURSDAY_EVENING)


def _state(bot: BotHarness, deployment_id: int) -> S:
    record = bot.services.deployments.get(deployment_id)
    assert record is not None
    return record.state


def _messages(bot: BotHarness, **where: object) -> list[Notification]:
    statement = select(Notification).order_by(col(Notification.id))
    for name, value in where.items():
        statement = statement.where(getattr(Notification, name) == value)
    with bot.services.database.session(read_only=True) as s:
        return list(s.exec(statement).all())


def _thread(bot: BotHarness, deployment_id: int) -> list[str]:
    return [str(n.payload.get("text")) for n in _messages(bot, thread_of=deployment_id)]


def _actions(bot: BotHarness) -> list[str]:
    with bot.services.database.session(read_only=True) as s:
        return [e.action for e in s.exec(select(AuditEvent).order_by(col(AuditEvent.id)))]


def test_a_request_asked_in_an_allowed_hour_expires_when_the_avoided_day_begins(
        bot: BotHarness, clock: FixedClock) -> None:
    work = PendingRequests(bot.services)
    answer = bot.command("deploy v1.2.3").text
    assert "Deployment #1 requested" in answer, answer
    assert work.run_due(clock.now()) == 0  # Thursday evening: still approvable
    clock.set(FRIDAY - timedelta(minutes=2))
    assert work.run_due(clock.now()) == 0
    assert _state(bot, 1) is S.PENDING_APPROVAL
    # While it waits it holds production against another standard deployment...
    assert "Deployment #2 requested" not in bot.command("deploy v1.2.4").text

    clock.set(FRIDAY)
    assert work.run_due(clock.now()) == 1
    assert _state(bot, 1) is S.EXPIRED
    [said] = [t for t in _thread(bot, 1) if t.startswith("Expired:")]
    assert "its window closed before it was approved" in said and "Friday" in said, said
    assert "Nothing was deployed. Ask again with `/qlp deploy v1.2.3 to production`" in said
    [dm] = _messages(bot, channel="U0DEV")
    assert "Your standard request #1 (v1.2.3 to production) expired" in dm.payload["text"]
    assert "request.expired" in _actions(bot)
    assert work.run_due(clock.now()) == 0  # once
    record = bot.services.deployments.get(1)
    assert record is not None and (record.error or "").startswith("expired: its window closed")


def test_an_expired_request_no_longer_holds_the_environment(
        bot: BotHarness, clock: FixedClock) -> None:
    assert "Deployment #1 requested" in bot.command("deploy v1.2.3").text
    clock.set(FRIDAY)
    PendingRequests(bot.services).run_due(clock.now())
    clock.set(WEDNESDAY + timedelta(days=7))
    assert "Deployment #2 requested" in bot.command("deploy v1.2.4").text


def test_a_lock_or_a_run_under_way_does_not_expire_a_request(
        bot: BotHarness, clock: FixedClock) -> None:
    clock.set(WEDNESDAY)
    assert "Deployment #1 requested" in bot.command("deploy v1.2.3").text
    assert "production is locked" in bot.command('lock production --reason "db maintenance"',
                                   user="U0OPS").text
    clock.set(WEDNESDAY + timedelta(hours=1))
    assert PendingRequests(bot.services).run_due(clock.now()) == 0
    assert _state(bot, 1) is S.PENDING_APPROVAL


def test_a_request_nobody_approves_expires_after_pending_max_age(
        bot: BotHarness, clock: FixedClock) -> None:
    clock.set(WEDNESDAY)
    assert "Deployment #1 requested" in bot.command("deploy v1.2.3 to staging").text
    work = PendingRequests(bot.services)
    clock.set(WEDNESDAY + timedelta(hours=23, minutes=59))
    assert work.run_due(clock.now()) == 0
    assert work.upcoming(clock.now(), timedelta(hours=1)) == [WEDNESDAY + timedelta(hours=24)]
    clock.set(WEDNESDAY + timedelta(hours=24))
    assert work.run_due(clock.now()) == 1
    [said] = [t for t in _thread(bot, 1) if t.startswith("Expired:")]
    assert "nobody approved it within 1d (pending_max_age)" in said, said


def test_a_break_glass_request_is_left_to_its_override(
        bot: BotHarness, clock: FixedClock) -> None:
    clock.set(FRIDAY + timedelta(hours=10))
    answer = bot.command('deploy v1.2.3 --override "checkout fix cannot wait"').text
    assert "requested with a break-glass override" in answer, answer
    clock.set(FRIDAY + timedelta(hours=12))
    assert PendingRequests(bot.services).run_due(clock.now()) == 0
    assert _state(bot, 1) is S.PENDING_APPROVAL


def test_the_scheduler_ticks_it(bot: BotHarness) -> None:
    assert any(isinstance(work, PendingRequests) for work in build_due_works(bot.services))
