"""``DueWork``: one kind of timed work the scheduler does on each tick.

The scheduler (``bot.schedule.scheduler``) calls every ``DueWork`` of the process with the
injected clock's ``now`` on each tick, and again at each moment a ``DueWork`` announces through
``upcoming`` (those become APScheduler date jobs in the job store, so the tick comes on time
and survives a restart). Only the process holding the scheduler lease runs ticks.

Every ``DueWork`` is idempotent: running it twice at one moment (a tick and a date job, a
restart, a lease taken over mid-tick) does each thing once. Messages carry an outbox
``dedup_key`` naming the moment they are about; state changes are conditional updates.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Protocol


class DueWork(Protocol):
    """Timed work: what is due at ``now`` is done by ``run_due``; ``upcoming`` says when next."""

    name: str

    def run_due(self, now: datetime) -> int:
        """Do whatever is due at ``now`` (and was not done already); return how many things."""
        ...

    def upcoming(self, now: datetime, horizon: timedelta) -> list[datetime]:
        """Moments after ``now`` and within ``horizon`` at which something falls due."""
        ...
