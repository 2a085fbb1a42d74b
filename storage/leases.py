"""Leases: one process at a time holds a named lease, renewed while it lives.

The bot's scheduler uses the lease ``"scheduler"`` so that only one replica runs timed work
(reminders, scheduled deployments): two replicas sharing a database never remind twice.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import case, literal, or_, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import col, select

from procedures.clock import Clock
from storage.db import Database
from storage.models import SchedulerLease
from storage.types import UTCDateTime


class LeaseRepository:
    """Rows of ``scheduler_leases``: who holds a lease, until when.

    :meth:`try_acquire` is a single ``INSERT ... ON CONFLICT (name) DO UPDATE ... WHERE``: the
    row is inserted when there is none, taken over when it has expired, renewed when the caller
    already holds it, and left alone otherwise. The database decides, so of any number of
    processes racing for one lease exactly one gets it (PostgreSQL re-checks the ``WHERE``
    against the row a concurrent winner committed; SQLite serialises writers).

    Times come from the callers' clocks: replicas on different hosts need clocks that agree to
    well within the lease's time to live.
    """

    def __init__(self, database: Database, clock: Clock) -> None:
        self._db = database
        self._clock = clock

    def try_acquire(self, name: str, holder: str, ttl: timedelta,
                    now: datetime | None = None) -> bool:
        """Take, take over (expired) or renew (ours) the lease until ``now + ttl``; True if held.

        False means another holder's lease is still live; nothing was changed.
        """
        if ttl <= timedelta(0):
            raise ValueError(f"a lease's time to live must be positive, not {ttl}")
        now = now or self._clock.now()
        values: dict[str, Any] = {"name": name, "holder": holder, "term": 1,
                                  "acquired_at": now, "renewed_at": now, "expires_at": now + ttl}
        dialect: Any = postgresql if self._db.is_postgresql else sqlite
        table = SchedulerLease.__table__  # type: ignore[attr-defined]
        ours = col(SchedulerLease.holder) == holder
        statement = dialect.insert(table).values(**values)
        statement = statement.on_conflict_do_update(
            index_elements=["name"],
            set_={
                "holder": holder,
                # A new holder starts a new term; a renewal keeps the term and its start.
                "term": case((ours, table.c.term), else_=table.c.term + 1),
                "acquired_at": case((ours, table.c.acquired_at),
                                     else_=literal(now, UTCDateTime())),
                "renewed_at": now,
                "expires_at": now + ttl,
            },
            where=or_(ours, col(SchedulerLease.expires_at) <= now),
        ).returning(table.c.term)
        # RETURNING, not rowcount: a row comes back exactly when it was inserted or updated
        # (psycopg does not report a reliable rowcount for INSERT ... ON CONFLICT here).
        with self._db.session() as s:
            return s.exec(statement).first() is not None

    def release(self, name: str, holder: str, now: datetime | None = None) -> bool:
        """Give the lease up at once if ``holder`` holds it (a clean stop); True if released.

        The row stays (its term counts on); it is merely expired, so the next
        :meth:`try_acquire` of anyone takes it.
        """
        now = now or self._clock.now()
        with self._db.session() as s:
            result = s.exec(
                update(SchedulerLease)
                .where(col(SchedulerLease.name) == name, col(SchedulerLease.holder) == holder,
                       col(SchedulerLease.expires_at) > now)
                .values(expires_at=now)
                .execution_options(synchronize_session=False)
            )
            return bool(result.rowcount == 1)

    def holder(self, name: str, now: datetime | None = None) -> str | None:
        """Who holds the lease at ``now``; None when nobody does (never taken, or expired)."""
        now = now or self._clock.now()
        with self._db.session(read_only=True) as s:
            return s.exec(
                select(SchedulerLease.holder)
                .where(col(SchedulerLease.name) == name, col(SchedulerLease.expires_at) > now)
            ).first()

    def get(self, name: str) -> SchedulerLease | None:
        """The lease's row as it is (expired or not), or None if it was never taken."""
        with self._db.session(read_only=True) as s:
            return s.get(SchedulerLease, name)
