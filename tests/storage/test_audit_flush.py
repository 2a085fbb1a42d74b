"""The hand-over between the lingering audit flusher and a waiting writer (issue 11).

``/qlp status`` (``record``: nobody waits) then ``/qlp unlock`` (``append``: waits) is the README
demo. The flusher lingers on the status row; the unlock's writer arrives, becomes the leader and
commits both rows. The flusher used to wake after that and write the empty remainder anyway:
``WARNING storage.audit_group: audit flush of 0 rows failed; retrying: NOT NULL constraint
failed: audit_events.at``. The interleavings are forced here with events, not with timing.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import pytest

from procedures.clock import FixedClock
from storage import audit_group
from storage.audit import AuditLog
from storage.audit_group import GroupCommitAuditLog
from storage.db import Database

FLUSHER = "qlp-audit-flusher"


class _WatchedCondition(threading.Condition):
    """A Condition that says when the flusher thread starts waiting on it (its linger)."""

    def __init__(self) -> None:
        super().__init__()
        self.flusher_waiting = threading.Event()

    def wait(self, timeout: float | None = None) -> bool:
        if threading.current_thread().name == FLUSHER:
            self.flusher_waiting.set()
        return super().wait(timeout)


class _RecordingGroup(GroupCommitAuditLog):
    """Records every batch written and how many writers were ever inside ``_write`` at once.

    ``hold_leader`` (set by a test) keeps a non-flusher writer inside its write until released.
    """

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self._cond = _WatchedCondition()
        self.batches: list[int] = []
        self.inside = 0
        self.most_inside = 0
        self.hold_leader: threading.Event | None = None
        self.leader_writing = threading.Event()
        self._count = threading.Lock()

    def _write(self, batch: list[Any]) -> None:
        with self._count:
            self.batches.append(len(batch))
            self.inside += 1
            self.most_inside = max(self.most_inside, self.inside)
        try:
            if threading.current_thread().name != FLUSHER and self.hold_leader is not None:
                self.leader_writing.set()
                assert self.hold_leader.wait(10), "the test never released the leader"
            super()._write(batch)
        finally:
            with self._count:
                self.inside -= 1

    @property
    def watched(self) -> _WatchedCondition:
        assert isinstance(self._cond, _WatchedCondition)
        return self._cond


@pytest.fixture
def long_linger(monkeypatch: pytest.MonkeyPatch) -> None:
    """The flusher lingers until told otherwise: no race with the linger's own timeout."""
    monkeypatch.setattr(audit_group, "LINGER", 60.0)


def _flush_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == "storage.audit_group" and r.levelno >= logging.WARNING]


@pytest.mark.usefixtures("long_linger")
def test_a_writer_that_takes_the_lingering_flushers_rows_leaves_it_nothing_to_write(
        database: Database, audit: AuditLog, clock: FixedClock,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="storage.audit_group")
    group = _RecordingGroup(audit, database, clock)
    group.record("U0DEV", "command.status")  # starts the flusher, which lingers on this row
    assert group.watched.flusher_waiting.wait(10), "the flusher never started lingering"

    unlocked = group.append("U0DEV", "environment.unlocked", environment="production")
    group.close()  # ends the linger: the flusher finds its rows already committed

    assert _flush_warnings(caplog) == []
    assert group.batches == [2]  # the leader wrote both rows; nobody wrote an empty batch
    assert unlocked.id == 2
    events = list(reversed(group.recent(10)))
    assert [e.action for e in events] == ["command.status", "environment.unlocked"]
    assert group.verify().ok and group.verify().checked == 2


@pytest.mark.usefixtures("long_linger")
def test_the_flusher_never_writes_beside_a_leader_that_is_still_writing(
        database: Database, audit: AuditLog, clock: FixedClock,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="storage.audit_group")
    group = _RecordingGroup(audit, database, clock)
    group.hold_leader = threading.Event()
    group.record("U0DEV", "command.status")
    assert group.watched.flusher_waiting.wait(10)

    leader = threading.Thread(
        target=group.append, args=("U0DEV", "environment.unlocked"), name="leader")
    leader.start()
    assert group.leader_writing.wait(10), "the waiting writer never became the leader"
    # The linger ends (closing) while the leader is inside its transaction.
    with group.watched:
        group._closing = True
        group.watched.notify_all()
    group.record("U0LEAD1", "command.history")  # arrives during the leader's write
    group.hold_leader.set()
    leader.join(10)
    group.close()

    assert _flush_warnings(caplog) == []
    assert 0 not in group.batches
    assert group.most_inside == 1  # one writer at a time: the head is moved by one transaction
    assert group.batches == [2, 1]
    assert [e.action for e in reversed(group.recent(10))] == [
        "command.status", "environment.unlocked", "command.history"]
    assert group.verify().ok
