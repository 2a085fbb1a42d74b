"""What ``/qlp status`` shows, read in one short read-only transaction.

Status is the command people type most, often during a deployment; reading the environments
and the active deployments in one session halves its database round trips.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import datetime

from sqlmodel import select

from procedures.model import DeploymentState
from storage.db import Database
from storage.models import Deployment, EnvironmentStateRow
from storage.undelivered import Undelivered, read_undelivered_in


@dataclass(frozen=True)
class StatusSnapshot:
    """Every environment's state row and the deployments in the given states."""

    environments: dict[str, EnvironmentStateRow]
    deployments: list[Deployment]
    undelivered: Undelivered | None = None  # read when ``dead_since`` was given


class StatusReader:
    """Reads a :class:`StatusSnapshot`."""

    def __init__(self, database: Database) -> None:
        self._db = database

    def snapshot(self, states: Collection[DeploymentState], *,
                 dead_since: datetime | None = None) -> StatusSnapshot:
        """With ``dead_since``, also the notifications not getting through
        (:func:`storage.undelivered.read_undelivered_in`), in the same transaction."""
        # Core rows, not ORM objects: status only reads attributes, and skipping the identity
        # map halves its CPU (it is typed often, and Slack's 3 s ack shares the CPU).
        environments = EnvironmentStateRow.__table__  # type: ignore[attr-defined]
        deployments = Deployment.__table__  # type: ignore[attr-defined]
        with self._db.session(read_only=True) as s:
            connection = s.connection()
            rows = connection.execute(select(environments)).all()
            active = connection.execute(
                select(deployments).where(deployments.c.state.in_(list(states)))
                .order_by(deployments.c.id)).all()
            undelivered = (read_undelivered_in(s, dead_since=dead_since)
                           if dead_since is not None else None)
            return StatusSnapshot({row.environment: row for row in rows},  # type: ignore[misc]
                                  list(active), undelivered)  # type: ignore[arg-type]


class CachedStatusReader:
    """A :class:`StatusReader` that serves a burst of ``/qlp status`` from one read.

    During an incident people type status over and over, dozens at once; each answer is the
    same few rows. A snapshot is reused while it is younger than ``max_age`` *and* this process
    has committed no write since it was read (``Database.write_generation``), so this process's
    own changes show at once; another replica's show within ``max_age`` plus one read.
    """

    def __init__(self, database: Database, *, max_age: float = 0.25,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self._db = database
        self._reader = StatusReader(database)
        self._max_age = max_age
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._cached: dict[tuple[frozenset[DeploymentState], bool],
                           tuple[int, float, StatusSnapshot]] = {}
        self._reading: dict[tuple[frozenset[DeploymentState], bool], threading.Event] = {}

    def snapshot(self, states: Collection[DeploymentState], *,
                 dead_since: datetime | None = None) -> StatusSnapshot:
        key = (frozenset(states), dead_since is not None)
        while True:
            generation = self._db.write_generation  # before the read: a write voids it
            now = self._monotonic()
            with self._lock:
                hit = self._cached.get(key)
                if hit is not None and hit[0] == generation and now - hit[1] < self._max_age:
                    return hit[2]
                # One read per key at a time: a burst that finds the snapshot stale waits for
                # the one read under way instead of running fifty identical ones, or, when only
                # its age is against it (nothing written here since), is answered with it
                # while that read runs.
                pending = self._reading.get(key)
                if pending is None:
                    pending = self._reading[key] = threading.Event()
                    break
                if hit is not None and hit[0] == generation:
                    return hit[2]
            pending.wait(self._max_age)
        try:
            snapshot = self._reader.snapshot(states, dead_since=dead_since)
            with self._lock:
                self._cached[key] = (generation, now, snapshot)
            return snapshot
        finally:
            with self._lock:
                del self._reading[key]
            pending.set()
