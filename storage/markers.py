"""Which bot processes run on this database: a row per process with its mode and heartbeat.

``qlp-bot serve`` and ``qlp-bot socket`` write their row at start and refresh its heartbeat
while the worker runs; the local shell writes one too. Before it starts, the shell asks
:meth:`BotMarkers.live` whether a served bot beat recently: such a database is production's,
and the shell refuses it unless told it is shared on purpose.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete
from sqlmodel import col, select

from procedures.clock import Clock
from storage.db import Database
from storage.models import BotInstance

SERVED_MODES = ("serve", "socket")
LIVE_WITHIN = timedelta(minutes=2)
"""A heartbeat fresher than this is a process that still runs."""
BEAT_EVERY = timedelta(seconds=20)
FORGET_AFTER = timedelta(days=1)
"""Rows of processes that stopped beating this long ago are deleted by the next beat."""


@dataclass(frozen=True)
class Marker:
    """One running (or lately running) bot process."""

    id: str
    mode: str
    host: str
    pid: int
    started_at: datetime
    heartbeat_at: datetime

    def describe(self, now: datetime) -> str:
        age = max(0, int((now - self.heartbeat_at).total_seconds()))
        return f"{self.mode} on {self.host} (pid {self.pid}, heartbeat {age} s ago)"


class BotMarkers:
    """Rows of ``bot_instances``."""

    def __init__(self, database: Database, clock: Clock) -> None:
        self._db = database
        self._clock = clock

    def beat(self, id: str, mode: str, host: str, pid: int) -> None:
        """Write this process's row, or refresh its heartbeat."""
        now = self._clock.now()
        with self._db.session() as s:
            row = s.get(BotInstance, id)
            if row is None:
                s.add(BotInstance(id=id, mode=mode, host=host[:255], pid=pid, started_at=now,
                                  heartbeat_at=now))
            else:
                row.heartbeat_at = now
                row.mode = mode
            s.exec(delete(BotInstance).where(
                col(BotInstance.heartbeat_at) < now - FORGET_AFTER,
                col(BotInstance.id) != id))

    def remove(self, id: str) -> None:
        """A process that stops cleanly takes its row away."""
        with self._db.session() as s:
            s.exec(delete(BotInstance).where(col(BotInstance.id) == id))

    def live(self, modes: tuple[str, ...] = SERVED_MODES,
             within: timedelta = LIVE_WITHIN) -> list[Marker]:
        """Processes of ``modes`` whose heartbeat is fresher than ``within``, newest first."""
        since = self._clock.now() - within
        with self._db.session(read_only=True) as s:
            rows = s.exec(select(BotInstance).where(
                col(BotInstance.mode).in_(list(modes)),
                col(BotInstance.heartbeat_at) >= since,
            ).order_by(col(BotInstance.heartbeat_at).desc())).all()
            return [Marker(r.id, r.mode, r.host, r.pid, r.started_at, r.heartbeat_at)
                    for r in rows]
