"""Scheduled deployments: `/qlp deploy v at ...`, then T-24h / T-2h / T-0 / T+30 on an injected
clock. The scheduler's tick is ``ScheduledDeployments.run_due(now)``; nothing waits for wall
time. Signed requests go into the real Bolt app (BotHarness); what the bot means to say is read
from the outbox."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import col, select

from bot.schedule.scheduled_deployments import ScheduledDeployments, is_major
from procedures.clock import FixedClock
from procedures.model import DeploymentState
from storage.db import Database
from storage.models import Notification
from tests.fakes.bot_harness import BotHarness
from tests.fakes.policies import BASE, make_policy
from tests.fakes.slack_double import SlackDouble
from tests.fakes.slack_views import ephemeral_for

# Monday 2026-11-30 08:00 UTC: an avoided day, the day before a preferred window.
MONDAY = datetime(2026, 11, 30, 8, 0, tzinfo=UTC)
AT = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)  # Tuesday, the window opens
CLOSES = datetime(2026, 12, 1, 14, 0, tzinfo=UTC)
AUDIENCES = {"engineering": "C0ENGINEER", "customer-success": "C0CUSTSUC",
             "leadership": "C0LEADERS"}


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(MONDAY)


@pytest.fixture
def bot(database: Database, clock: FixedClock, slack: SlackDouble,
        tmp_path: Path) -> Iterator[BotHarness]:
    policy = make_policy(notifications={"audiences": AUDIENCES})
    harness = BotHarness(database=database, policy=policy, clock=clock,
                         home=tmp_path / "home", slack=slack)
    yield harness
    harness.close()


def _reply(bot: BotHarness, text: str, user: str = "U0DEV") -> str:
    response = bot.command(text.removeprefix("/qlp "), user=user)
    assert response.status_code == 200
    return _text(response.text)


def _text(body: str) -> str:
    """The ephemeral answer in an ack's body (JSON with ``text``/``blocks``, or plain)."""
    try:
        document = json.loads(body)
    except ValueError:
        return body
    parts = [str(document.get("text") or "")]
    parts += [json.dumps(block, ensure_ascii=False) for block in document.get("blocks", [])]
    return "\n".join(parts)


def _messages(bot: BotHarness, **where: Any) -> list[Notification]:
    statement = select(Notification).order_by(col(Notification.id))
    for name, value in where.items():
        statement = statement.where(getattr(Notification, name) == value)
    with bot.services.database.session(read_only=True) as s:
        return list(s.exec(statement).all())


def _thread(bot: BotHarness, deployment_id: int) -> list[str]:
    return [n.payload["text"] for n in _messages(bot, thread_of=deployment_id)]


def _schedule(bot: BotHarness, version: str = "v1.2.3") -> int:
    text = _reply(bot, f"/qlp deploy {version} at 2026-12-01 10:00")
    assert "scheduled" in text, text
    deployment = bot.services.deployments.list_in_states([DeploymentState.PENDING_APPROVAL])[-1]
    assert deployment.id is not None and deployment.scheduled_at == AT
    return deployment.id


def _approve(bot: BotHarness, deployment_id: int, expect: str = "You approved",
             user: str = "U0LEAD1") -> None:
    response = bot.press("qlp_approve", str(deployment_id), user=user, message_ts="1.000")
    assert response.status_code == 200
    bot.wait_for(lambda: expect in ephemeral_for(bot.slack, user), timeout=10,
                 what=f"the answer {expect!r}")


def _state(bot: BotHarness, deployment_id: int) -> DeploymentState:
    deployment = bot.services.deployments.get(deployment_id)
    assert deployment is not None
    return deployment.state


def test_a_moment_outside_the_window_is_refused_with_the_next_slot(bot: BotHarness) -> None:
    text = _reply(bot, "/qlp deploy v1.2.3 at 2026-12-04 10:00")  # a Friday
    assert "outside the deployment window" in text and "Friday is an avoided day" in text
    assert "next preferred slot opens Tue 2026-12-08 10:00 UTC" in text
    text = _reply(bot, "/qlp deploy v1.2.3 at 2026-12-22 10:00")
    assert "year-end freeze" in text
    text = _reply(bot, "/qlp deploy v1.2.3 at 2026-11-29 10:00")
    assert "at least 5 minutes ahead" in text
    text = _reply(bot, "/qlp deploy v1.2.3 at 2026-12-01 10:00 Mars/Olympus")
    assert "not a time zone" in text
    assert bot.services.deployments.list_in_states(list(DeploymentState)) == []


def test_a_time_zone_given_with_the_moment_is_used(bot: BotHarness) -> None:
    # 11:00 in Berlin (UTC+1 in December) is 10:00 UTC: inside the window.
    text = _reply(bot, "/qlp deploy v1.2.3 at 2026-12-01 11:00 Europe/Berlin")
    assert "scheduled" in text and "Tue 2026-12-01 10:00 UTC" in text


def test_the_whole_sequence_t24_t2_t0_t30(bot: BotHarness, clock: FixedClock) -> None:
    work = ScheduledDeployments(bot.services)
    deployment_id = _schedule(bot, "v2.0.0")
    _approve(bot, deployment_id, "it starts at Tue 2026-12-01 10:00 UTC")
    assert _state(bot, deployment_id) is DeploymentState.SCHEDULED
    assert sorted(work.upcoming(clock.now(), timedelta(days=2))) == [
        AT - timedelta(hours=24), AT - timedelta(hours=2), AT, CLOSES]

    assert work.run_due(clock.now()) == 0  # Monday 08:00: nothing is due yet

    clock.set(AT - timedelta(hours=24))  # T-24h
    assert work.run_due(clock.now()) == 1
    assert work.run_due(clock.now()) == 0  # a second tick at the same moment does nothing
    posts = {n.channel: n.payload["text"] for n in _messages(bot, kind="post")
             if n.channel in AUDIENCES.values()}
    # v2.0.0 over nothing live is a major version: leadership hears of it too.
    assert set(posts) == set(AUDIENCES.values())
    notice = posts["C0ENGINEER"]
    assert "v2.0.0 to production" in notice and "Tue 2026-12-01 10:00 UTC" in notice
    assert "Planned duration" in notice and "approved" in notice
    assert any("T-24h notice sent to engineering, customer-success, leadership" in t
               for t in _thread(bot, deployment_id))

    clock.set(AT - timedelta(hours=2))  # T-2h: the final validation's checks
    assert work.run_due(clock.now()) == 1
    assert work.run_due(clock.now()) == 0
    assert any("T-2h final validation" in t for t in _thread(bot, deployment_id))

    clock.set(AT)  # T-0: approved, so it is queued for the worker
    assert work.run_due(clock.now()) == 1
    assert _state(bot, deployment_id) is DeploymentState.QUEUED
    assert work.run_due(clock.now()) == 0
    assert "Starting as scheduled." in _thread(bot, deployment_id)

    # The worker ran it (here: by hand) and monitoring recorded its figures.
    deployments = bot.services.deployments
    assert deployments.transition(deployment_id, [DeploymentState.QUEUED],
                                  DeploymentState.RUNNING)
    clock.advance(timedelta(minutes=20))
    assert deployments.transition(deployment_id, [DeploymentState.RUNNING],
                                  DeploymentState.SUCCEEDED)
    clock.set(AT + timedelta(minutes=29))
    assert work.run_due(clock.now()) == 0
    clock.set(AT + timedelta(minutes=30))  # T+30: the summary
    assert work.run_due(clock.now()) == 1
    assert work.run_due(clock.now()) == 0
    summary = [t for t in _thread(bot, deployment_id) if t.startswith("T+30 summary")]
    assert len(summary) == 1 and "*succeeded*" in summary[0]


def test_unapproved_at_t0_reminds_then_expires_when_the_window_closes(
        bot: BotHarness, clock: FixedClock) -> None:
    work = ScheduledDeployments(bot.services)
    deployment_id = _schedule(bot)
    clock.set(AT)
    work.run_due(clock.now())
    assert _state(bot, deployment_id) is DeploymentState.PENDING_APPROVAL
    reminders = [t for t in _thread(bot, deployment_id) if "it is not approved" in t]
    assert len(reminders) == 1 and "<@U0LEAD1>" in reminders[0] \
        and "<!subteam^S0RELEASE>" in reminders[0]
    clock.set(AT + timedelta(hours=1))
    work.run_due(clock.now())
    assert len([t for t in _thread(bot, deployment_id) if "it is not approved" in t]) == 1
    clock.set(CLOSES)
    assert work.run_due(clock.now()) >= 1
    assert _state(bot, deployment_id) is DeploymentState.EXPIRED
    assert any(t.startswith("Expired: it was not approved before the window closed")
               for t in _thread(bot, deployment_id))
    dm = _messages(bot, channel="U0DEV")
    assert len(dm) == 1 and "expired" in dm[0].payload["text"]
    assert work.run_due(clock.now()) == 0


def test_approved_after_t0_inside_the_window_starts_at_once(
        bot: BotHarness, clock: FixedClock) -> None:
    work = ScheduledDeployments(bot.services)
    deployment_id = _schedule(bot)
    clock.set(AT + timedelta(minutes=10))
    work.run_due(clock.now())
    _approve(bot, deployment_id, "it is starting")
    assert _state(bot, deployment_id) is DeploymentState.QUEUED


def test_a_plan_changed_since_approval_resets_it_at_t0(
        bot: BotHarness, clock: FixedClock) -> None:
    work = ScheduledDeployments(bot.services)
    deployment_id = _schedule(bot)
    _approve(bot, deployment_id)
    # Someone locks production before the moment comes.
    clock.set(AT - timedelta(hours=1))
    assert "production is locked" in _reply(
        bot, "/qlp lock production --reason 'db maintenance'", user="U0OPS")
    clock.set(AT)
    work.run_due(clock.now())
    assert _state(bot, deployment_id) is DeploymentState.PENDING_APPROVAL
    assert any("Approvals reset at the scheduled time: lock none → U0OPS" in t
               for t in _thread(bot, deployment_id))


def test_a_freeze_declared_after_the_request_expires_it_at_t0(
        database: Database, clock: FixedClock, slack: SlackDouble, tmp_path: Path) -> None:
    first = BotHarness(database=database, policy=make_policy(), clock=clock,
                       home=tmp_path / "a", slack=slack)
    try:
        deployment_id = _schedule(first)
        _approve(first, deployment_id)
    finally:
        first.close()
    windows = dict(BASE["windows"])
    windows["freezes"] = [{"start": "2026-12-01", "end": "2026-12-02", "reason": "incident"}]
    second = BotHarness(database=database, policy=make_policy(windows=windows), clock=clock,
                        home=tmp_path / "b", slack=slack)
    try:
        clock.set(AT)
        ScheduledDeployments(second.services).run_due(clock.now())
        assert _state(second, deployment_id) is DeploymentState.EXPIRED
        assert any("the window is closed" in t and "incident" in t
                   for t in _thread(second, deployment_id))
    finally:
        second.close()


def test_status_lists_and_cancel_cancels_a_scheduled_deployment(
        bot: BotHarness, clock: FixedClock) -> None:
    deployment_id = _schedule(bot)
    status = _reply(bot, "/qlp status production")
    assert (f"Scheduled: #{deployment_id} v1.2.3 at Tue 2026-12-01 10:00 UTC (in 1d 2h) by "
            "<@U0DEV>, waiting for approval") in status
    _approve(bot, deployment_id)
    assert "approved" in _reply(bot, "/qlp status")
    assert "before it started" in _reply(bot, f"/qlp cancel {deployment_id}")
    assert _state(bot, deployment_id) is DeploymentState.CANCELLED
    assert "Scheduled:" not in _reply(bot, "/qlp status")
    clock.set(AT)
    assert ScheduledDeployments(bot.services).run_due(clock.now()) == 0


def test_a_major_version_is_judged_against_the_live_one() -> None:
    assert is_major("v2.0.0", None) and not is_major("v1.2.3", None)
    assert is_major("v2.1.0", "v1.9.9") and not is_major("v1.3.0", "v1.2.9")
    assert not is_major("not-a-version", "v1.0.0")
