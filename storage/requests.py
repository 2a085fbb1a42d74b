"""Slack request deduplication: retries and double clicks are handled once."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, update
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
