"""``LeasedScheduler``: ticks run the works only under the lease; one leader; jobs persist."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bot.schedule.scheduler import (
    LEASE_NAME,
    TICK_JOB_ID,
    LeasedScheduler,
    active_scheduler,
    moment_job_id,
)
from bot.schedule.work import DueWork
from procedures.clock import Clock, FixedClock, SystemClock
from storage.db import Database
from storage.leases import LeaseRepository
from storage.migrate import upgrade
from tests.schedule.works import FailingWork, RecordingWork

START = datetime(2026, 12, 1, 11, 0, tzinfo=UTC)
LEASE = timedelta(seconds=30)
HOUR = timedelta(hours=1)


def _scheduler(database: Database, clock: Clock, works: list[DueWork], holder: str,
               tick: timedelta = HOUR, lease: timedelta = LEASE) -> LeasedScheduler:
    return LeasedScheduler(database=database, works=works, clock=clock, holder=holder,
                           tick=tick, lease=lease)


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(START)


def test_a_tick_runs_every_work_at_the_clock_now_despite_a_failing_one(
        database: Database, clock: FixedClock, caplog: pytest.LogCaptureFixture) -> None:
    first, broken, last = RecordingWork("first", done=2), FailingWork(), RecordingWork("last")
    scheduler = _scheduler(database, clock, [first, broken, last], "me")
    assert LeaseRepository(database, clock).try_acquire(LEASE_NAME, "me", LEASE)
    with caplog.at_level(logging.ERROR, logger="bot.schedule.scheduler"):
        assert scheduler.tick() == 3
    assert first.calls == [START] and last.calls == [START] and broken.calls == 1
    assert "broken failed at 2026-12-01T11:00:00+00:00" in caplog.text
    assert "the broken work broke" in caplog.text


def test_a_tick_does_nothing_without_the_lease(database: Database, clock: FixedClock) -> None:
    work = RecordingWork("work")
    scheduler = _scheduler(database, clock, [work], "me")
    assert scheduler.tick() == 0  # nobody holds it
    leases = LeaseRepository(database, clock)
    assert leases.try_acquire(LEASE_NAME, "someone-else", LEASE)
    assert scheduler.tick() == 0
    assert work.calls == []
    clock.advance(LEASE)  # expired: still not ours until we take it
    assert scheduler.tick() == 0
    assert leases.try_acquire(LEASE_NAME, "me", LEASE)
    assert scheduler.tick() == 1
    assert work.calls == [START + LEASE]


def test_upcoming_moments_become_date_jobs_that_outlive_the_process(
        database: Database, clock: FixedClock) -> None:
    soon, later = START + timedelta(minutes=10), START + timedelta(minutes=40)
    work = RecordingWork("work", next_moments=lambda now: [
        later, soon, now - timedelta(minutes=1), now + timedelta(hours=2)])
    other = RecordingWork("other", next_moments=lambda now: [soon])
    scheduler = _scheduler(database, clock, [work, other], "me")
    scheduler.open()  # APScheduler paused on the database, no keeper: nothing runs by itself
    try:
        assert LeaseRepository(database, clock).try_acquire(LEASE_NAME, "me", LEASE)
        wall = datetime.now(UTC)
        scheduler.tick()
        scheduler.tick()  # planned once, however many ticks announce a moment
        jobs = dict(scheduler.jobs())
        # In the past or beyond the horizon (1 h): not planned; two works' moment: one job.
        assert set(jobs) == {moment_job_id(soon), moment_job_id(later)}
        run_at = jobs[moment_job_id(soon)]
        assert run_at is not None
        # Injected-clock moments are planned at the same distance from the wall clock.
        assert timedelta(minutes=9) < run_at - wall < timedelta(minutes=11)
    finally:
        scheduler.stop()
    restarted = _scheduler(database, clock, [], "me-again")
    restarted.open()
    try:
        assert {job_id for job_id, _ in restarted.jobs()} == {
            moment_job_id(soon), moment_job_id(later)}
    finally:
        restarted.stop()


def test_one_leader_and_a_takeover_when_it_stops_renewing(
        database: Database, clock: FixedClock) -> None:
    work_a, work_b = RecordingWork("a"), RecordingWork("b")
    a = _scheduler(database, clock, [work_a], "process-a")
    b = _scheduler(database, clock, [work_b], "process-b")
    a.open()
    b.open()
    try:
        assert (a.health(), b.health()) == ("standby", "standby")
        assert a.keep(START)
        assert not b.keep(START)
        assert (a.health(), b.health()) == ("leader", "standby")
        assert active_scheduler() is a
        # Leading resumes APScheduler and ticks at once (on its thread, at the clock's now).
        assert work_a.wait_calls(1) == [START]
        assert TICK_JOB_ID in {job_id for job_id, _ in a.jobs()}
        # a renews within its lease: b stays out.
        assert a.keep(START + LEASE / 3)
        assert not b.keep(START + LEASE)
        # a stops renewing (hung, killed): once the lease has run out, b takes it and ticks.
        expired = START + LEASE / 3 + LEASE
        clock.set(expired)
        assert b.keep(expired)
        assert active_scheduler() is b
        assert work_b.wait_calls(1) == [expired]
        # a comes back: it cannot renew, so it stops running jobs.
        assert not a.keep(expired)
        assert (a.health(), b.health()) == ("standby", "leader")
        assert LeaseRepository(database, clock).holder(LEASE_NAME) == "process-b"
        assert work_a.calls == [START]
    finally:
        a.stop()
        b.stop()
    assert (a.health(), b.health()) == ("stopped", "stopped")
    assert active_scheduler() is None
    # A clean stop gives the lease back at once.
    assert LeaseRepository(database, clock).holder(LEASE_NAME) is None


def test_start_and_stop_in_real_time(tmp_path: Path) -> None:
    database = Database(f"sqlite:///{tmp_path / 'qlp.db'}")
    upgrade(database)
    clock = SystemClock()
    planned: list[datetime] = []

    def once_soon(now: datetime) -> list[datetime]:
        if not planned:
            planned.append(now + timedelta(milliseconds=300))
        return [m for m in planned if m > now]

    work = RecordingWork("work", next_moments=once_soon)
    # The interval tick is an hour away: a second call can only come from the date job.
    scheduler = _scheduler(database, clock, [work], "me", tick=HOUR, lease=timedelta(seconds=3))
    try:
        scheduler.start()
        assert scheduler.health() == "leader"  # decided before start() returns
        calls = work.wait_calls(2, timeout=10)
        assert calls[1] >= planned[0]
        assert scheduler.tick() == 1  # driven by hand too
    finally:
        scheduler.stop()
        assert scheduler.health() == "stopped"
        assert LeaseRepository(database, clock).holder(LEASE_NAME) is None
        database.dispose()
    assert len(work.calls) == 3
