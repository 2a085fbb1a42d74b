"""Slack request deduplication: retries and double clicks are handled once."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, or_, update
from sqlmodel import Session, col, select

from procedures.clock import Clock
from storage.db import Database
from storage.models import ProcessedRequest
from storage.sql import insert_ignoring_conflict


class ProcessedRequests:
    """Remembers request keys (Slack retry ids, ``action_ts`` of a click...) already seen.

    :meth:`first_time` is an ``INSERT ... ON CONFLICT DO NOTHING`` on the primary key: of any
    number of concurrent callers with the same key, exactly one gets ``True``.
    """

    def __init__(self, database: Database, clock: Clock) -> None:
        self._db = database
        self._clock = clock

    def first_time(
        self, key: str, *, outcome: str | None = None, session: Session | None = None
    ) -> bool:
        """True for the first caller with ``key``, False for every later (or concurrent) one."""
        with self._db.using(session) as s:
            inserted = s.exec(
                insert_ignoring_conflict(
                    self._db,
                    ProcessedRequest,
                    {"key": key, "created_at": self._clock.now(), "outcome": outcome},
                    ["key"],
                ).returning(col(ProcessedRequest.key))
            ).scalar()
            return inserted is not None

    def set_outcome(self, key: str, outcome: str) -> bool:
        """Record what handling the request produced (shown when the request repeats)."""
        with self._db.session() as s:
            result = s.exec(
                update(ProcessedRequest)
                .where(col(ProcessedRequest.key) == key)
                .values(outcome=outcome)
                .execution_options(synchronize_session=False)
            )
            return result.rowcount == 1

    def outcome(self, key: str) -> str | None:
        """The recorded outcome of ``key``, if any."""
        with self._db.session(read_only=True) as s:
            return s.exec(
                select(ProcessedRequest.outcome).where(col(ProcessedRequest.key) == key)
            ).first()

    def purge_before(self, cutoff: datetime) -> int:
        """Forget keys older than ``cutoff`` (Slack retries stop after minutes); returns count."""
        with self._db.session() as s:
            result = s.exec(
                delete(ProcessedRequest)
                .where(col(ProcessedRequest.created_at) < cutoff)
                .execution_options(synchronize_session=False)
            )
            return result.rowcount


# -- button clicks decided after the ack ---------------------------------------------------------
#
# A click's row is its dedup key *and* its durable queue entry: the listener inserts it (one
# INSERT, the same one that recognises a Slack retry) with the click in ``outcome``, acks, and a
# worker thread claims it, decides, and leaves the answer there. A click whose processor died
# is claimed again once its lease has passed; deciding twice is harmless because the decision
# itself is serialised (``storage.decisions``): the second attempt is told it was done.

CLICK_QUEUED = "click-queued:"
CLICK_CLAIMED = "click-claimed:"
CLICK_DONE = "click-done:"


class ClickQueue:
    """Durable queue of button clicks, kept in ``processed_requests`` (see above)."""

    def __init__(self, database: Database, clock: Clock) -> None:
        self._db = database
        self._clock = clock
        self._requests = ProcessedRequests(database, clock)

    def queue(self, key: str, click: dict[str, Any]) -> bool:
        """Store a click; False if ``key`` was seen before (a Slack retry: do nothing)."""
        return self._requests.first_time(key, outcome=CLICK_QUEUED + json.dumps(click))

    def claim(self, key: str, *, lease: timedelta) -> dict[str, Any] | None:
        """Take the click ``key`` for ``lease``: its stored click, or None if it is decided
        or another processor holds it. One conditional UPDATE: of racing claimers one wins."""
        now = self._clock.now()
        with self._db.session() as s:
            current = s.exec(select(ProcessedRequest.outcome)
                             .where(col(ProcessedRequest.key) == key)).first()
            click = _claimable(current, now)
            if click is None:
                return None
            claimed = f"{CLICK_CLAIMED}{(now + lease).isoformat()}|{click}"
            result = s.exec(
                update(ProcessedRequest)
                .where(col(ProcessedRequest.key) == key,
                       col(ProcessedRequest.outcome) == current)
                .values(outcome=claimed)
                .execution_options(synchronize_session=False))
            if result.rowcount != 1:
                return None
            loaded: dict[str, Any] = json.loads(click)
            return loaded

    def claimable(self, *, since: datetime) -> list[str]:
        """Keys of clicks made after ``since`` that wait for a processor, oldest first
        (queued ones, and claimed ones whose lease has passed)."""
        now = self._clock.now()
        with self._db.session(read_only=True) as s:
            rows = s.exec(
                select(ProcessedRequest.key, ProcessedRequest.outcome)
                .where(col(ProcessedRequest.created_at) >= since,
                       or_(col(ProcessedRequest.outcome).startswith(CLICK_QUEUED),
                           col(ProcessedRequest.outcome).startswith(CLICK_CLAIMED)))
                .order_by(col(ProcessedRequest.created_at))).all()
        return [key for key, outcome in rows if _claimable(outcome, now) is not None]

    def finish(self, key: str, answer: str) -> None:
        """Mark the click decided, keeping the answer it got."""
        self._requests.set_outcome(key, CLICK_DONE + answer)

    def answer(self, key: str) -> str | None:
        """The answer a decided click got; None while it waits (or for an unknown key)."""
        outcome = self._requests.outcome(key)
        if outcome is None or not outcome.startswith(CLICK_DONE):
            return None
        return outcome[len(CLICK_DONE):]


def _claimable(outcome: str | None, now: datetime) -> str | None:
    """The stored click (JSON) if ``outcome`` may be claimed at ``now``."""
    if outcome is None:
        return None
    if outcome.startswith(CLICK_QUEUED):
        return outcome[len(CLICK_QUEUED):]
    if outcome.startswith(CLICK_CLAIMED):
        until, _, click = outcome[len(CLICK_CLAIMED):].partition("|")
        try:
            expired = datetime.fromisoformat(until) <= now
        except ValueError:
            expired = True
        return click if expired else None
    return None
