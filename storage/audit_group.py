"""Group commit for the audit log: concurrent appends share one transaction.

Every command a person types is audited before it is answered. On SQLite (and, to a lesser
degree, PostgreSQL) each commit is a synchronous disk flush, so fifty people typing at once
would queue behind fifty flushes. Here the first caller to arrive becomes the *leader*: it
takes every append queued so far, writes them in one transaction and wakes the others. Nobody
returns before their row is committed, so nothing is lost; the chain stays in arrival order.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import insert, update
from sqlmodel import col

from procedures.clock import Clock
from storage.audit import AuditKeyring, AuditLog, VerifyResult, canonical_detail
from storage.db import Database
from storage.models import AuditEvent, AuditHead

log = logging.getLogger(__name__)
MAX_QUEUED = 10_000
LINGER = 0.02
"""Seconds the flusher waits for company when only unwaited rows (``record``) are queued."""
LINGER_BATCH = 200


@dataclass
class _Pending:
    actor: str
    action: str
    kwargs: dict[str, Any]
    at: datetime | None = None
    waited: bool = True  # False: nobody waits (record()); a failure is retried, not raised
    done: bool = False
    result: AuditEvent | None = None
    error: BaseException | None = None


class GroupCommitAuditLog:
    """An :class:`AuditLog` whose standalone appends are group-committed.

    Appends that join a caller's session (``session=``) go straight through: they commit with
    the caller's change.
    """

    def __init__(self, audit: AuditLog, database: Database, clock: Clock) -> None:
        self._audit = audit
        self._db = database
        self._clock = clock
        self._cond = threading.Condition()
        self._queue: list[_Pending] = []
        self._writing = False
        self._flusher: threading.Thread | None = None
        self._closing = False

    def record(self, actor: str, action: str, *, deployment_id: int | None = None,
               environment: str | None = None, detail: Mapping[str, Any] | None = None) -> None:
        """Queue an event and return at once; a background flusher commits it (in order).

        For what only reads (``/qlp status``, ``help``): the command is answered without
        waiting for the disk. Such rows are committed within milliseconds; a process killed in
        that moment loses them. Decisions and changes use :meth:`append`, which waits, or join
        the transaction of the change itself.
        """
        kwargs: dict[str, Any] = {"deployment_id": deployment_id, "environment": environment,
                                  "detail": detail}
        item = _Pending(actor, action, kwargs, at=self._clock.now(), waited=False)
        with self._cond:
            if len(self._queue) >= MAX_QUEUED:
                log.error("audit queue full (%d): dropping %s by %s", MAX_QUEUED, action, actor)
                return
            self._queue.append(item)
            if self._flusher is None:
                self._flusher = threading.Thread(target=self._flush_loop, daemon=True,
                                                 name="qlp-audit-flusher")
                self._flusher.start()
            if len(self._queue) == 1 or len(self._queue) >= LINGER_BATCH:
                # Only the first row wakes the flusher (and a full batch ends its linger):
                # waking it for every row of a burst costs every listener the GIL.
                self._cond.notify_all()

    def _flush_loop(self) -> None:
        while True:
            with self._cond:
                while not self._queue or self._writing:
                    if self._closing and not self._queue:
                        return
                    self._cond.wait(0.5)
                # Nobody waits for these rows (read-only commands): linger a moment so a
                # burst shares one transaction instead of paying one each. A waiter (append)
                # or a full batch ends the linger at once.
                deadline = time.monotonic() + LINGER
                while not self._closing and len(self._queue) < LINGER_BATCH and \
                        not any(p.waited for p in self._queue):
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    self._cond.wait(remaining)
                if not self._queue or self._writing:
                    # While we lingered (the lock released), a waiting writer became the
                    # leader and took these rows with its own: they are its to commit. Writing
                    # now would be an empty batch, or a second writer beside the leader.
                    continue
                self._writing = True
                batch, self._queue = self._queue, []
            failed = False
            try:
                self._write(batch)
            except Exception as error:
                failed = True
                log.warning("audit flush of %d rows failed; retrying: %s", len(batch), error)
            finally:
                with self._cond:
                    if failed:  # nobody waits for these: keep them, in order, and retry
                        self._queue = [p for p in batch if not p.waited] + self._queue
                        for pending in batch:
                            if pending.waited:
                                pending.error = RuntimeError("audit write failed")
                    for pending in batch:
                        pending.done = pending.waited or not failed
                    self._writing = False
                    self._cond.notify_all()
            if failed:
                time.sleep(1.0)

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until everything queued so far is committed (reads see this process's rows)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            self._cond.notify_all()
            while (self._queue or self._writing) and time.monotonic() < deadline:
                self._cond.wait(0.05)
            return not self._queue and not self._writing

    def close(self, timeout: float = 10.0) -> None:
        """Flush what :meth:`record` queued, then stop the flusher."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        if self._flusher is not None:
            self._flusher.join(timeout)

    def append(self, actor: str, action: str, *, deployment_id: int | None = None,
               environment: str | None = None, detail: Mapping[str, Any] | None = None,
               session: Any = None) -> AuditEvent:
        """Append one event; returns once it is committed."""
        kwargs: dict[str, Any] = {"deployment_id": deployment_id, "environment": environment,
                                  "detail": detail}
        if session is not None:
            return self._audit.append(actor, action, session=session, **kwargs)
        item = _Pending(actor, action, kwargs)
        with self._cond:
            self._queue.append(item)
            while not item.done and self._writing:
                self._cond.wait()
            if item.done:
                return self._outcome(item)
            self._writing = True
            # The leader takes everything queued so far, its own item included.
            batch, self._queue = self._queue, []
        try:
            self._write(batch)
        except BaseException as error:  # every waiter of a failed batch sees the failure
            for pending in batch:
                pending.error = error
        finally:
            with self._cond:
                for pending in batch:
                    pending.done = True
                self._writing = False
                self._cond.notify_all()
        return self._outcome(item)

    def _write(self, batch: list[_Pending]) -> None:
        """One transaction: lock the chain head once, insert every row, move the head once."""
        if not batch:  # nothing to chain; an empty INSERT would be one row of NULLs
            return
        with self._db.session(bookkeeping=True) as session:
            head = self._audit._lock_head(session)
            last_id, last_hash = head.last_id, head.last_hash
            rows: list[dict[str, Any]] = []
            first_at = (batch[0].at or self._clock.now()).astimezone(UTC)
            rotation = self._audit.rotation_row(session, last_id, last_hash, first_at)
            if rotation is not None:  # the key changed since the last row: say so first
                rows.append(rotation)
                last_id, last_hash = rotation["id"], rotation["hash"]
            for pending in batch:
                kwargs = pending.kwargs
                detail = canonical_detail(kwargs["detail"])
                at = (pending.at or self._clock.now()).astimezone(UTC)
                key_id, digest = self._audit.seal(last_hash, at, pending.actor, pending.action,
                                                  kwargs["deployment_id"],
                                                  kwargs["environment"], detail)
                last_id += 1
                row = {"id": last_id, "at": at, "actor": pending.actor,
                       "action": pending.action, "deployment_id": kwargs["deployment_id"],
                       "environment": kwargs["environment"], "detail": detail,
                       "prev_hash": last_hash, "hash": digest, "key_id": key_id}
                rows.append(row)
                if pending.waited:  # only a waiter reads the row back
                    pending.result = AuditEvent(**row)
                last_hash = digest
            session.execute(insert(AuditEvent), rows)
            session.execute(update(AuditHead).where(col(AuditHead.id) == 1)
                            .values(last_id=last_id, last_hash=last_hash))

    @staticmethod
    def _outcome(item: _Pending) -> AuditEvent:
        if item.error is not None:
            raise item.error
        assert item.result is not None
        return item.result

    def recent(self, limit: int = 20, deployment_id: int | None = None) -> list[AuditEvent]:
        self.flush()
        return self._audit.recent(limit, deployment_id)

    def verify(self, keyring: AuditKeyring | None = None) -> VerifyResult:
        self.flush()
        return self._audit.verify(keyring)
