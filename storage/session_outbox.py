"""An outbox that delivers only the messages its own process wrote: the shell on a shared
database.

``qlp-bot shell --shared-database`` runs against a database a served bot also uses. Its
stand-in for Slack is a terminal: a message delivered there never reaches Slack. So the
shell's sender must never claim, merge or mark a message it did not write (the served bot's
cards, thread replies, pages). :class:`SessionOutbox` is the shell's outbox:

* every message it enqueues (and whose transaction commits) is *own*; a dedup key that already
  existed is not (the row is someone else's);
* own rows are written ``HOLD`` ahead of their due time and every time the shell's sender sets
  is moved the same way, so a served bot's sender leaves them alone while the shell runs (and
  delivers them, to Slack, if the shell stops before it did);
* :meth:`claim_due`, :meth:`pending_after` and :meth:`pending_count` see own rows only;
  :meth:`mark_sent`, :meth:`mark_failed`, :meth:`mark_dead` and :meth:`release` refuse any
  other row.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Collection, Mapping
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import event, func, update
from sqlalchemy.orm import aliased
from sqlmodel import Session, col, select

from procedures.clock import Clock
from storage.db import Database
from storage.models import Notification
from storage.outbox import DEFAULT_LEASE, Outbox

log = logging.getLogger(__name__)

HOLD = timedelta(minutes=10)
"""How far ahead of a served bot's view own rows are due (see the module's docstring)."""


class SessionOutbox(Outbox):
    """The outbox of one shell session: it delivers what it wrote, nothing else."""

    def __init__(self, database: Database, clock: Clock, *, hold: timedelta = HOLD) -> None:
        super().__init__(database, clock)
        self._now = clock.now
        self._hold = hold
        self._own: set[int] = set()
        self._guard = threading.Lock()

    # -- what is own --------------------------------------------------------------------------

    def owns(self, id: int) -> bool:
        with self._guard:
            return id in self._own

    def _adopt(self, id: int) -> None:
        with self._guard:
            self._own.add(id)

    def _own_ids(self) -> list[int]:
        with self._guard:
            return sorted(self._own)

    def _refuse(self, id: int, what: str) -> bool:
        log.warning("shell outbox: not %s message #%s: another bot process wrote it", what, id)
        return False

    # -- writing ------------------------------------------------------------------------------

    def enqueue(self, channel: str, kind: str, payload: Mapping[str, Any], *,
                deployment_id: int | None = None, thread_of: int | None = None,
                ordering_key: str | None = None, dedup_key: str | None = None,
                session: Session | None = None, priority: int = 0) -> int:
        existed = dedup_key is not None and self.has(dedup_key)
        with self.database.using(session) as s:
            id = super().enqueue(channel, kind, payload, deployment_id=deployment_id,
                                 thread_of=thread_of, ordering_key=ordering_key,
                                 dedup_key=dedup_key, session=s, priority=priority)
            if existed:
                return id
            s.exec(update(Notification)
                   .where(col(Notification.id) == id, col(Notification.state) == "pending")
                   .values(next_attempt_at=self._now() + self._hold)
                   .execution_options(synchronize_session=False))
            if session is not None:
                # Own once the caller's transaction commits (a rolled-back id may be reused).
                event.listen(session, "after_commit", lambda _s: self._adopt(id), once=True)
        if session is None:
            self._adopt(id)
        return id

    # -- claiming -----------------------------------------------------------------------------

    def claim_due(self, now: datetime | None = None, limit: int = 50, *,
                  lease: timedelta = DEFAULT_LEASE,
                  kinds: Collection[str] | None = None,
                  ids: Collection[int] | None = None) -> list[Notification]:
        """Like :meth:`Outbox.claim_due`, among own rows only (a key's head may still be
        another process's row: then the own rows behind it wait, in order)."""
        own = self._own_ids()
        if not own:
            return []
        now = now or self._now()
        older = aliased(Notification)
        head_of_key = (
            select(func.min(older.id))
            .where(col(older.state) == "pending",
                   col(older.ordering_key) == Notification.ordering_key)
            .scalar_subquery()
        )
        statement = (
            select(Notification)
            .where(col(Notification.state) == "pending",
                   col(Notification.id).in_(own),
                   col(Notification.next_attempt_at) <= now + self._hold,
                   col(Notification.id) == head_of_key)
            .order_by(col(Notification.id))
            .limit(limit)
        )
        if kinds is not None:
            statement = statement.where(col(Notification.kind).in_(list(kinds)))
        if ids is not None:
            statement = statement.where(col(Notification.id).in_(list(ids)))
        if self.database.is_postgresql:
            statement = statement.with_for_update(skip_locked=True, of=Notification)
        with self.database.session() as s:
            claimed = list(s.exec(statement.execution_options(populate_existing=True)).all())
            for notification in claimed:
                notification.attempts += 1
                notification.next_attempt_at = now + lease + self._hold
            s.flush()
            return claimed

    def due_heads(self, now: datetime | None = None, limit: int = 200, *,
                  kinds: Collection[str] | None = None) -> list[tuple[Notification, bool]]:
        """Like :meth:`Outbox.due_heads`, own rows only (due ``hold`` ahead, as claimed)."""
        heads = super().due_heads((now or self._now()) + self._hold, limit, kinds=kinds)
        return [(row, newer) for row, newer in heads if row.id is not None and self.owns(row.id)]

    def pending_after(self, ordering_key: str, after_id: int, limit: int = 20
                      ) -> list[Notification]:
        """Own rows queued right behind ``after_id``: up to the first row that is not own."""
        rows: list[Notification] = []
        for row in super().pending_after(ordering_key, after_id, limit):
            if row.id is None or not self.owns(row.id):
                break
            rows.append(row)
        return rows

    def pending_count(self, kinds: Collection[str] | None = None) -> int:
        own = self._own_ids()
        if not own:
            return 0
        statement = select(func.count()).select_from(Notification).where(
            col(Notification.state) == "pending", col(Notification.id).in_(own))
        if kinds is not None:
            statement = statement.where(col(Notification.kind).in_(list(kinds)))
        with self.database.session(read_only=True) as s:
            return int(s.exec(statement).one())

    # -- marks: own rows only -----------------------------------------------------------------

    def mark_sent(self, id: int, slack_ts: str | None = None, *, now: datetime | None = None,
                  note: str | None = None, session: Session | None = None) -> bool:
        if not self.owns(id):
            return self._refuse(id, "marking as sent")
        return super().mark_sent(id, slack_ts, now=now, note=note, session=session)

    def mark_superseded(self, id: int, by: int, *, now: datetime | None = None,
                        session: Session | None = None) -> bool:
        if not self.owns(id):
            return self._refuse(id, "marking as superseded")
        return super().mark_superseded(id, by, now=now, session=session)

    def mark_failed(self, id: int, error: str, retry_at: datetime, *,
                    now: datetime | None = None) -> bool:
        if not self.owns(id):
            return self._refuse(id, "marking as failed")
        return super().mark_failed(id, error, retry_at + self._hold, now=now)

    def mark_dead(self, id: int, error: str) -> bool:
        if not self.owns(id):
            return self._refuse(id, "giving up")
        return super().mark_dead(id, error)

    def release(self, id: int, retry_at: datetime, note: str | None = None) -> bool:
        if not self.owns(id):
            return self._refuse(id, "releasing")
        return super().release(id, retry_at + self._hold, note)
