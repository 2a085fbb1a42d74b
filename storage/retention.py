"""Retention: old rows the bot no longer needs, deleted in small batches.

Three kinds of row are purged, each once it is older than its period
(:class:`procedures.policy.Retention`):

* ``processed_requests`` created before the cutoff: Slack retries come within minutes and a
  double click within seconds. Clicks still waiting for a processor (queued, or claimed) are
  kept whatever their age: they are not processed yet.
* ``notifications`` (the outbox) **sent** before the cutoff. Pending and dead rows stay:
  pending ones are still to be delivered, dead ones are what ``/qlp status`` reports.
* ``step_runs`` of deployments that ended (a terminal state) before the cutoff. The deployment
  row itself stays (history, stats), and so does every audit row.

The audit log (``audit_events``) is never purged: it is an append-only hash chain, and a
deleted row would read as tampering.

Each batch is one short statement in its own transaction, ``DELETE ... WHERE key IN (SELECT
key ... LIMIT n)``, so no lock is held for long (on SQLite, the writer lock for one batch; on
PostgreSQL, the batch's row locks) and the bot's own writes interleave between batches. A run
stops after ``max_batches`` per table, so one tick never runs long; what is left goes at the
next run.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import and_, delete, not_, or_, select
from sqlalchemy.sql import Delete

from procedures.model import TERMINAL_STATES
from storage.db import Database
from storage.models import Deployment, Notification, ProcessedRequest, StepRun
from storage.requests import CLICK_CLAIMED, CLICK_QUEUED

log = logging.getLogger(__name__)

BATCH = 1000
"""Rows per batch (processed requests, sent notifications)."""
STEP_BATCH_DEPLOYMENTS = 100
"""Deployments whose step rows go in one batch (a few steps each)."""
MAX_BATCHES = 50
"""Batches per table per run: at most ~50,000 rows a run, the rest at the next."""

_REQUESTS = ProcessedRequest.__table__  # type: ignore[attr-defined]
_NOTIFICATIONS = Notification.__table__  # type: ignore[attr-defined]
_STEPS = StepRun.__table__  # type: ignore[attr-defined]
_DEPLOYMENTS = Deployment.__table__  # type: ignore[attr-defined]


@dataclass(frozen=True)
class Periods:
    """How long each kind of row is kept; ``None``: for ever."""

    processed_requests: timedelta | None
    sent_notifications: timedelta | None
    step_results: timedelta | None


@dataclass(frozen=True)
class Purged:
    """How many rows one run deleted, and whether any table had more than it could take."""

    processed_requests: int = 0
    sent_notifications: int = 0
    step_results: int = 0
    more: bool = False

    @property
    def total(self) -> int:
        return self.processed_requests + self.sent_notifications + self.step_results


class Retention:
    """Deletes what :class:`Periods` says is too old, batch by batch."""

    def __init__(self, database: Database, *, batch: int = BATCH,
                 step_batch: int = STEP_BATCH_DEPLOYMENTS, max_batches: int = MAX_BATCHES,
                 pause: Callable[[], None] | None = None) -> None:
        if batch < 1 or step_batch < 1 or max_batches < 1:
            raise ValueError("batch sizes and max_batches must be at least 1")
        self._db = database
        self._batch = batch
        self._step_batch = step_batch
        self._max_batches = max_batches
        self._pause = pause or (lambda: None)

    def purge(self, periods: Periods, now: datetime) -> Purged:
        """One run: every kind whose period is set, up to ``max_batches`` batches each."""
        counts: dict[str, int] = {}
        more = False
        for name, period, statement_for in (
            ("processed_requests", periods.processed_requests, self._requests_batch),
            ("sent_notifications", periods.sent_notifications, self._notifications_batch),
            ("step_results", periods.step_results, self._steps_batch),
        ):
            if period is None:
                counts[name] = 0
                continue
            deleted, left = self._batches(statement_for(now - period))
            counts[name] = deleted
            more = more or left
            if deleted:
                log.info("retention: deleted %d %s older than %s", deleted,
                         name.replace("_", " "), period)
        return Purged(more=more, **counts)

    def _batches(self, statement: Delete) -> tuple[int, bool]:
        """Run ``statement`` (one batch) until a batch finds nothing; (deleted, more left)."""
        deleted = 0
        for number in range(self._max_batches):
            if number:
                self._pause()
            with self._db.session(bookkeeping=True) as s:
                rows = s.connection().execute(statement).rowcount
            deleted += rows
            if rows == 0:
                return deleted, False
        return deleted, True

    def _requests_batch(self, cutoff: datetime) -> Delete:
        waiting = or_(_REQUESTS.c.outcome.startswith(CLICK_QUEUED, autoescape=True),
                      _REQUESTS.c.outcome.startswith(CLICK_CLAIMED, autoescape=True))
        keys = (select(_REQUESTS.c.key)
                .where(_REQUESTS.c.created_at < cutoff,
                       or_(_REQUESTS.c.outcome.is_(None), not_(waiting)))
                .limit(self._batch))
        return delete(_REQUESTS).where(_REQUESTS.c.key.in_(keys.scalar_subquery()))

    def _notifications_batch(self, cutoff: datetime) -> Delete:
        ids = (select(_NOTIFICATIONS.c.id)
               .where(_NOTIFICATIONS.c.state.in_(("sent", "superseded")),  # never "dead"
                      _NOTIFICATIONS.c.sent_at < cutoff)
               .limit(self._batch))
        return delete(_NOTIFICATIONS).where(_NOTIFICATIONS.c.id.in_(ids.scalar_subquery()))

    def _steps_batch(self, cutoff: datetime) -> Delete:
        # finished_at >= created_at, so created_at < cutoff narrows the scan to old rows
        # (ix_deployments_created_at) without changing the answer.
        has_steps = select(_STEPS.c.id).where(_STEPS.c.deployment_id == _DEPLOYMENTS.c.id)
        ended = (select(_DEPLOYMENTS.c.id)
                 .where(and_(_DEPLOYMENTS.c.created_at < cutoff,
                             _DEPLOYMENTS.c.finished_at < cutoff,
                             _DEPLOYMENTS.c.state.in_([s.value for s in TERMINAL_STATES])),
                        has_steps.exists())
                 .limit(self._step_batch))
        return delete(_STEPS).where(_STEPS.c.deployment_id.in_(ended.scalar_subquery()))
