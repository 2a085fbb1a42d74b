"""``RetentionWork``: the scheduled purge of rows older than the policy's ``retention`` periods.

Run by the scheduler's tick, so only in the process holding the scheduler lease. It purges at
most once per ``every`` (an hour) of the injected clock, unless the last run left rows behind
(:data:`storage.retention.MAX_BATCHES` per table per run), in which case the next tick carries
on. Deleting is idempotent: a run after a restart or a takeover finds less or nothing to do.
The audit log is never touched (see :mod:`storage.retention`).
"""

from __future__ import annotations

import threading
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from procedures.policy import Policy
from storage.db import Database
from storage.retention import Periods, Retention

if TYPE_CHECKING:
    from bot.ports import RetentionServices

EVERY = timedelta(hours=1)


def periods_of(policy: Policy) -> Periods:
    """The policy's retention periods, as storage takes them."""
    kept = policy.retention
    return Periods(processed_requests=kept.processed_requests,
                   sent_notifications=kept.sent_notifications,
                   step_results=kept.step_results)


class RetentionWork:
    """Timed work (``DueWork``): purge what the policy no longer keeps."""

    name = "retention"

    def __init__(self, database: Database, policy: Policy, *, every: timedelta = EVERY,
                 retention: Retention | None = None) -> None:
        self._periods = periods_of(policy)
        self._retention = retention or Retention(database)
        self._every = every
        self._lock = threading.Lock()
        self._last: datetime | None = None
        self._more = False

    @classmethod
    def from_services(cls, services: RetentionServices) -> RetentionWork:
        return cls(services.database, services.policy)

    def run_due(self, now: datetime) -> int:
        """Purge if an hour has passed since the last run (or it left rows behind)."""
        with self._lock:
            if (self._last is not None and not self._more
                    and self._last <= now < self._last + self._every):
                return 0
            purged = self._retention.purge(self._periods, now)
            self._last, self._more = now, purged.more
            return purged.total

    def upcoming(self, now: datetime, horizon: timedelta) -> list[datetime]:
        """Nothing to plan: the regular ticks are often enough for an hourly purge."""
        return []
