"""Notifications that are not getting through: the outbox rows ``/qlp status`` reports."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import and_, case, func, or_
from sqlmodel import Session, col, select

from storage.db import Database
from storage.models import Notification
from storage.outbox import BLOCKED, blocked_reason

SLACK_KINDS = ("post", "update", "ephemeral")


@dataclass(frozen=True)
class Blocked:
    """Slack messages held back by one blocking error (``storage.outbox.BLOCKED``)."""

    reason: str  # Slack's error code: invalid_auth, not_in_channel ...
    messages: int  # pending Slack messages in those channels (the blocked and those behind)
    channels: tuple[str, ...]
    since: datetime  # when the oldest of them was queued


@dataclass(frozen=True)
class Undelivered:
    """How many messages are retrying (pending after a failed try) and dead, and the oldest;
    ``blocked``: the Slack messages that wait for someone to fix something, by reason."""

    retrying: int
    dead: int
    oldest: list[Notification]
    blocked: list[Blocked] = field(default_factory=list)


BLOCKED_SCAN = 1000


def read_blocked_in(session: Session) -> list[Blocked]:
    """Pending Slack messages whose last try was blocked, grouped by Slack's error code
    (most messages first). Reads at most :data:`BLOCKED_SCAN` rows."""
    rows = session.exec(
        select(Notification.channel, Notification.last_error, Notification.created_at)
        .where(col(Notification.state) == "pending",
               col(Notification.kind).in_(SLACK_KINDS),
               col(Notification.last_error).contains(BLOCKED))
        .order_by(col(Notification.id)).limit(BLOCKED_SCAN)).all()
    found: dict[str, tuple[set[str], datetime]] = {}
    for channel, last_error, created_at in rows:
        reason = blocked_reason(last_error)
        if reason is None:
            continue
        channels, since = found.get(reason, (set(), created_at))
        channels.add(channel)
        found[reason] = (channels, min(since, created_at))
    if not found:
        return []
    # The blocked row is the one that was tried; the messages queued behind it in the same
    # channels wait as much.
    everywhere = set().union(*(channels for channels, _ in found.values()))
    waiting = dict(session.exec(
        select(Notification.channel, func.count())
        .where(col(Notification.state) == "pending",
               col(Notification.kind).in_(SLACK_KINDS),
               col(Notification.channel).in_(sorted(everywhere)))
        .group_by(col(Notification.channel))).all())
    return sorted((Blocked(reason, sum(int(waiting.get(c, 0)) for c in channels),
                           tuple(sorted(channels)), since)
                   for reason, (channels, since) in found.items()),
                  key=lambda b: (-b.messages, b.reason))


def read_blocked(database: Database) -> list[Blocked]:
    """See :func:`read_blocked_in`; in a read-only session of its own (``/metrics``)."""
    with database.session(read_only=True) as s:
        return read_blocked_in(s)


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
    blocked = read_blocked_in(session) if int(rows[0][1] or 0) else []
    return Undelivered(int(rows[0][1] or 0), int(rows[0][2] or 0), [row[0] for row in rows],
                       blocked)
