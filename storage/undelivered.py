"""Notifications that are not getting through: the outbox rows ``/qlp status`` reports."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import and_, case, func, or_
from sqlmodel import Session, col, select

from storage.db import Database
from storage.models import Notification


@dataclass(frozen=True)
class Undelivered:
    """How many messages are retrying (pending after a failed try) and dead, and the oldest."""

    retrying: int
    dead: int
    oldest: list[Notification]


def read_undelivered(database: Database, *, dead_since: datetime, limit: int = 5
                     ) -> Undelivered:
    """See :func:`read_undelivered_in`; in a read-only session of its own."""
    with database.session(read_only=True) as s:
        return read_undelivered_in(s, dead_since=dead_since, limit=limit)


def read_undelivered_in(session: Session, *, dead_since: datetime, limit: int = 5
                        ) -> Undelivered:
    """Pending messages that already failed (``last_error`` set) and messages given up since
    ``dead_since``; a message waiting for its first try is on its way, not undelivered."""
    stuck = or_(
        and_(col(Notification.state) == "pending", col(Notification.last_error).is_not(None)),
        and_(col(Notification.state) == "dead", col(Notification.created_at) >= dead_since),
    )
    is_pending = col(Notification.state) == "pending"
    # One round trip: the totals are window sums over every matching row, computed before
    # LIMIT keeps the oldest (status is typed often; it should not pay for this twice).
    retrying = func.sum(case((is_pending, 1), else_=0)).over()
    dead = func.sum(case((is_pending, 0), else_=1)).over()
    rows = session.exec(select(Notification, retrying, dead).where(stuck)
                        .order_by(col(Notification.id)).limit(limit)).all()
    if not rows:
        return Undelivered(0, 0, [])
    return Undelivered(int(rows[0][1] or 0), int(rows[0][2] or 0), [row[0] for row in rows])
