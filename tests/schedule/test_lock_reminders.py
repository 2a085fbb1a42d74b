"""Lock reminders: a DM to whoever holds a manual lock too long, once per period, never twice."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlmodel import col, select

from bot.formatting import local_time
from bot.schedule.lock_reminders import LockReminders
from bot.schedule.scheduler import LEASE_NAME
from procedures.clock import FixedClock
from storage.db import Database
from storage.environments import EnvironmentStateRepository
from storage.leases import LeaseRepository
from storage.models import Notification
from storage.outbox import Outbox
from tests.fakes.bot_harness import BOT_TOKEN, BotHarness
from tests.fakes.policies import make_policy
from tests.fakes.slack_double import SlackDouble

LOCKED = datetime(2026, 12, 1, 9, 30, tzinfo=UTC)
MAX_AGE = timedelta(hours=2)
DAY = timedelta(days=1)


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(LOCKED)


@pytest.fixture
def environments(database: Database, clock: FixedClock) -> EnvironmentStateRepository:
    return EnvironmentStateRepository(database, clock)


@pytest.fixture
def outbox(database: Database, clock: FixedClock) -> Outbox:
    return Outbox(database, clock)


def _reminders(environments: EnvironmentStateRepository, outbox: Outbox,
               timezone: str = "UTC") -> LockReminders:
    return LockReminders(environments, outbox, make_policy(lock_max_age="2h", timezone=timezone))


def _sent(outbox: Outbox) -> list[Notification]:
    return outbox.undelivered()


def test_the_holder_gets_one_dm_once_the_lock_is_too_old(
        environments: EnvironmentStateRepository, outbox: Outbox) -> None:
    assert environments.acquire_lock("production", "U0DEV", "incident <42>", None, None, LOCKED)
    reminders = _reminders(environments, outbox)
    assert reminders.upcoming(LOCKED + timedelta(hours=1), DAY) == [LOCKED + MAX_AGE]
    assert reminders.upcoming(LOCKED + timedelta(hours=1), timedelta(minutes=59)) == []
    assert reminders.run_due(LOCKED + MAX_AGE - timedelta(seconds=1)) == 0
    assert _sent(outbox) == []
    assert reminders.run_due(LOCKED + MAX_AGE) == 1
    assert reminders.run_due(LOCKED + MAX_AGE + timedelta(seconds=30)) == 1  # again: deduped
    [dm] = _sent(outbox)
    assert (dm.channel, dm.kind) == ("U0DEV", "post")
    assert dm.dedup_key == f"lock-reminder:production:{LOCKED.isoformat()}:1"
    text = dm.payload["text"]
    assert text.startswith(":hourglass: You have held the lock on *production* since "
                           "Tue 2026-12-01 09:30 UTC (2h), longer than the 2h the policy allows.")
    assert "Reason: incident &lt;42&gt;." in text
    assert "release it with `/qlp unlock production`" in text
    assert reminders.upcoming(LOCKED + MAX_AGE, DAY) == [LOCKED + 2 * MAX_AGE]


def test_reminders_repeat_once_per_further_period_and_only_the_latest_after_downtime(
        environments: EnvironmentStateRepository, outbox: Outbox) -> None:
    environments.acquire_lock("staging", "U0DEV", "testing", None, None, LOCKED)
    reminders = _reminders(environments, outbox)
    for hours in (2, 3, 4, 5):
        reminders.run_due(LOCKED + timedelta(hours=hours))
    assert [n.dedup_key.rsplit(":", 1)[1] for n in _sent(outbox) if n.dedup_key] == ["1", "2"]
    # The bot was down from 5h to 9h: reminder 3 is skipped, 4 goes out.
    assert reminders.run_due(LOCKED + timedelta(hours=9)) == 1
    sent = _sent(outbox)
    assert [n.dedup_key.rsplit(":", 1)[1] for n in sent if n.dedup_key] == ["1", "2", "4"]
    assert "(reminder 2)" in sent[1].payload["text"]
    assert "since Tue 2026-12-01 09:30 UTC (9h)" in sent[2].payload["text"]


def test_a_deployment_lock_and_a_released_lock_get_no_reminder(
        environments: EnvironmentStateRepository, outbox: Outbox) -> None:
    environments.acquire_lock("production", "U0DEV", None, 7, "worker-1", LOCKED)
    environments.acquire_lock("staging", "U0DEV", "testing", None, None, LOCKED)
    environments.force_release("staging")
    reminders = _reminders(environments, outbox)
    assert reminders.run_due(LOCKED + DAY) == 0
    assert reminders.upcoming(LOCKED, DAY) == []
    assert _sent(outbox) == []


def test_a_new_lock_starts_its_own_count(environments: EnvironmentStateRepository,
                                         outbox: Outbox) -> None:
    reminders = _reminders(environments, outbox)
    environments.acquire_lock("production", "U0DEV", "one", None, None, LOCKED)
    reminders.run_due(LOCKED + MAX_AGE)
    environments.force_release("production")
    again = LOCKED + timedelta(hours=3)
    environments.acquire_lock("production", "U0LEAD1", "two", None, None, again)
    assert reminders.run_due(LOCKED + timedelta(hours=4)) == 0
    assert reminders.run_due(again + MAX_AGE) == 1
    first, second = _sent(outbox)
    assert (first.channel, second.channel) == ("U0DEV", "U0LEAD1")
    assert second.dedup_key == f"lock-reminder:production:{again.isoformat()}:1"


def test_the_time_is_shown_in_the_policy_zone(environments: EnvironmentStateRepository,
                                              outbox: Outbox) -> None:
    environments.acquire_lock("production", "U0DEV", "x", None, None, LOCKED)
    reminders = _reminders(environments, outbox, timezone="Europe/Berlin")
    reminders.run_due(LOCKED + MAX_AGE)
    [dm] = _sent(outbox)
    assert "since Tue 2026-12-01 10:30 CET" in dm.payload["text"]
    assert local_time(LOCKED, make_policy(timezone="Europe/Berlin").zone) in dm.payload["text"]


def test_a_lock_taken_in_slack_is_reminded_by_a_tick_as_a_dm(
        database: Database, clock: FixedClock, tmp_path: Path) -> None:
    with SlackDouble(token=BOT_TOKEN) as slack:
        bot = BotHarness(database=database, policy=make_policy(lock_max_age="2h"), clock=clock,
                         home=tmp_path / "home", slack=slack, start_worker=True)
        try:
            scheduler = bot.services.scheduler
            assert scheduler is not None
            assert any(isinstance(work, LockReminders) for work in scheduler.works)
            assert bot.command('lock staging --reason "db upgrade"').status_code == 200
            assert LeaseRepository(database, clock).try_acquire(LEASE_NAME, scheduler.holder,
                                                                timedelta(days=1))
            scheduler.tick()
            clock.advance(MAX_AGE)
            scheduler.tick()
            scheduler.tick()
            dms = bot.wait_for(lambda: slack.messages("U0DEV"), timeout=10,
                               what="the reminder DM")
            assert isinstance(dms, list) and len(dms) == 1
            with database.session(read_only=True) as session:
                queued = session.exec(select(Notification).where(
                    col(Notification.channel) == "U0DEV")).all()
            assert len(queued) == 1  # three ticks, two of them after it fell due
            assert "the lock on *staging*" in dms[0].text and "db upgrade" in dms[0].text
        finally:
            bot.close()
