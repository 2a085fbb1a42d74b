"""``CachedStatusReader``: a burst of status reads costs one query; a local write shows at once,
another replica's within ``max_age``."""

from __future__ import annotations

from datetime import UTC, datetime

from procedures.clock import FixedClock
from procedures.model import DeploymentState
from storage.db import Database
from storage.environments import EnvironmentStateRepository
from storage.status import CachedStatusReader

STATES = (DeploymentState.QUEUED, DeploymentState.RUNNING)


class Ticker:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_burst_is_served_from_one_read_until_a_write_or_max_age(database: Database) -> None:
    ticker = Ticker()
    reader = CachedStatusReader(database, max_age=0.25, monotonic=ticker)
    first = reader.snapshot(STATES)
    assert reader.snapshot(STATES) is first
    ticker.now += 0.1
    assert reader.snapshot(list(reversed(STATES))) is first  # the same states, any order

    # A write in this process shows at once.
    environments = EnvironmentStateRepository(database, FixedClock(datetime(2026, 12, 1,
                                                                             tzinfo=UTC)))
    assert environments.acquire_lock("production", "U0OPS", "maintenance", None, None)
    after_write = reader.snapshot(STATES)
    assert after_write is not first
    assert after_write.environments["production"].lock_holder == "U0OPS"

    # Reads do not void the cache; age does.
    assert reader.snapshot(STATES) is after_write
    ticker.now += 0.3
    assert reader.snapshot(STATES) is not after_write


def test_a_write_from_elsewhere_shows_within_max_age(database: Database) -> None:
    ticker = Ticker()
    reader = CachedStatusReader(database, max_age=0.25, monotonic=ticker)
    assert "production" not in reader.snapshot(STATES).environments
    other = Database(database.url)  # another replica: its commits do not reach our counter
    try:
        EnvironmentStateRepository(other, FixedClock(datetime(2026, 12, 1, tzinfo=UTC))) \
            .acquire_lock("production", "U0OPS", "maintenance", None, None)
    finally:
        other.dispose()
    assert "production" not in reader.snapshot(STATES).environments  # still fresh enough
    ticker.now += 0.25
    assert reader.snapshot(STATES).environments["production"].lock_holder == "U0OPS"


def test_audit_rows_do_not_void_the_cache(database: Database) -> None:
    from storage.audit import AuditLog
    from storage.audit_group import GroupCommitAuditLog

    clock = FixedClock(datetime(2026, 12, 1, tzinfo=UTC))
    audit = GroupCommitAuditLog(AuditLog(database, clock), database, clock)
    try:
        before = database.write_generation
        audit.append("U0DEV", "command.status", detail={"text": "status"})
        assert database.write_generation == before  # status's own audit row keeps it warm
        EnvironmentStateRepository(database, clock).acquire_lock(
            "production", "U0OPS", "maintenance", None, None)
        assert database.write_generation == before + 1
    finally:
        audit.close()


def test_a_burst_that_finds_it_stale_reads_once(database: Database) -> None:
    import threading

    from storage.status import StatusReader

    class CountingReader(StatusReader):
        """The real reader, counting its reads and holding each one until told."""

        def __init__(self) -> None:
            super().__init__(database)
            self.reads = 0
            self.release = threading.Event()

        def snapshot(self, states, *, dead_since=None):  # type: ignore[no-untyped-def]
            self.reads += 1
            self.release.wait(5)
            return super().snapshot(states, dead_since=dead_since)

    reader = CachedStatusReader(database, max_age=60)
    counting = CountingReader()
    reader._reader = counting
    results = []
    threads = [threading.Thread(target=lambda: results.append(reader.snapshot(STATES)))
               for _ in range(8)]
    for thread in threads:
        thread.start()
    counting.release.set()
    for thread in threads:
        thread.join(10)
    assert counting.reads == 1
    assert len(results) == 8 and all(result is results[0] for result in results)


def test_while_a_read_refreshes_an_aged_snapshot_others_get_the_aged_one(
        database: Database) -> None:
    import threading
    import time

    from storage.status import StatusReader

    class GatedReader(StatusReader):
        """The real reader; each read after the first waits for ``release``."""

        def __init__(self) -> None:
            super().__init__(database)
            self.reads = 0
            self.release = threading.Event()

        def snapshot(self, states, *, dead_since=None):  # type: ignore[no-untyped-def]
            self.reads += 1
            if self.reads > 1:
                self.release.wait(5)
            return super().snapshot(states, dead_since=dead_since)

    ticker = Ticker()
    reader = CachedStatusReader(database, max_age=0.25, monotonic=ticker)
    gated = GatedReader()
    reader._reader = gated
    aged = reader.snapshot(STATES)
    ticker.now += 1.0
    refreshing = threading.Thread(target=reader.snapshot, args=(STATES,))
    refreshing.start()
    deadline = time.monotonic() + 5
    while gated.reads < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert gated.reads == 2  # the refresh is under way, held
    assert reader.snapshot(STATES) is aged  # answered at once, not held behind it
    gated.release.set()
    refreshing.join(5)
    fresh = reader.snapshot(STATES)
    assert fresh is not aged and gated.reads == 2
