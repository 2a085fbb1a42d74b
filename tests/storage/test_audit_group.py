"""Group-committed audit appends: concurrent callers share transactions, nothing is lost."""

from __future__ import annotations

import threading

from procedures.clock import FixedClock
from storage.audit import AuditLog
from storage.audit_group import GroupCommitAuditLog
from storage.db import Database


def test_concurrent_appends_all_commit_into_one_valid_chain(
        database: Database, audit: AuditLog, clock: FixedClock) -> None:
    group = GroupCommitAuditLog(audit, database, clock)
    barrier = threading.Barrier(16)
    ids: list[int] = []
    lock = threading.Lock()

    def worker(n: int) -> None:
        barrier.wait()
        for i in range(10):
            event = group.append(f"U{n}", "command.help", detail={"i": i})
            with lock:
                ids.append(int(event.id or 0))

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(ids) == list(range(1, 161))
    result = group.verify()
    assert result.ok and result.checked == 160


def test_a_failed_batch_raises_to_its_callers_and_writes_nothing(
        database: Database, audit: AuditLog, clock: FixedClock) -> None:
    group = GroupCommitAuditLog(audit, database, clock)
    group.append("U1", "ok")
    try:
        group.append("U1", "bad", detail={"ratio": float("nan")})
    except Exception as error:  # the caller sees why its row was not written
        assert "nan" in str(error).lower() or "json" in str(error).lower()
    else:
        raise AssertionError("a row that cannot be stored must fail its append")
    assert [e.action for e in group.recent(10)] == ["ok"]
    assert group.verify().ok


def test_recorded_events_are_flushed_in_order_without_waiting(
        database: Database, audit: AuditLog, clock: FixedClock) -> None:
    group = GroupCommitAuditLog(audit, database, clock)
    for i in range(50):
        group.record("U1", "command.status", detail={"i": i})
    group.append("U2", "deployment.requested")  # a waited append goes after them, in order
    group.close()
    events = list(reversed(group.recent(100)))
    assert [e.detail.get("i") for e in events[:50]] == list(range(50))
    assert events[-1].action == "deployment.requested"
    assert group.verify().ok and group.verify().checked == 51
