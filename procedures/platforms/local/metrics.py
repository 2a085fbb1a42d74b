"""Error and request counts of the local slots, read from the router's counters.

The router (``procedures.platforms.local.router``) counts, per colour and in memory, the
requests it forwarded and how many ended in a 5xx (its own 502/504 for that colour included),
from zero at each router start. It keeps no history, so :class:`LocalMetrics` keeps one: each
call reads the counters and remembers the reading with the time of its own clock (the same clock
the engine's ``ctx.now()`` uses, so ``since`` values are comparable with it). A question "errors
of green since T" is answered as the growth of the counters from the last reading taken at or
before T to the reading taken now. When no reading that old exists, the first reading after T is
the baseline, so a window opens when it is first asked about: the switch step asks once right
after switching, which makes "errors since the switch" exact. A router restart (another pid or
start time, or a counter that went down) resets the counters; the growth across it is the
readings before it plus what the new router counted.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from procedures.clock import Clock, SystemClock
from procedures.model import Slot

__all__ = ["LocalMetrics", "RouterStateSource"]


class RouterStateSource(Protocol):
    """Where the router's control state comes from (``LocalPlatform.router_state``)."""

    def router_state(self) -> Mapping[str, Any] | None: ...


@dataclass(frozen=True)
class _Reading:
    at: datetime
    incarnation: tuple[Any, Any]  # (pid, started) of the router that gave these counts
    requests: int
    errors: int


class LocalMetrics:
    """:class:`procedures.playbook.MetricsSource` for the local platform.

    ``None`` (no data) when the router does not answer or reports no counters. Readings older
    than ``retention`` are dropped, as are the oldest beyond ``max_readings`` per slot.
    """

    def __init__(
        self,
        platform: RouterStateSource,
        *,
        clock: Clock | None = None,
        retention: timedelta = timedelta(hours=6),
        max_readings: int = 10_000,
    ) -> None:
        self._source = platform
        self._clock = clock or SystemClock()
        self._retention = retention
        self._max = max(2, max_readings)
        self._history: dict[Slot, list[_Reading]] = {}
        self._lock = threading.Lock()

    def error_count(self, slot: Slot, since: datetime) -> int | None:
        """5xx answers given for ``slot`` since ``since`` (see the module docstring)."""
        growth = self._growth(Slot(slot), since)
        return None if growth is None else growth[1]

    def request_count(self, slot: Slot, since: datetime) -> int | None:
        """Requests forwarded to ``slot`` since ``since`` (see the module docstring)."""
        growth = self._growth(Slot(slot), since)
        return None if growth is None else growth[0]

    def _growth(self, slot: Slot, since: datetime) -> tuple[int, int] | None:
        # Read and record under the lock, so readings are in time order and counters in
        # consecutive readings can be compared.
        with self._lock:
            reading = self._read(slot)
            if reading is None:
                return None
            history = self._history.setdefault(slot, [])
            history.append(reading)
            self._prune(history, reading.at)
            # The baseline: the newest reading taken at or before ``since`` (the first of
            # several taken at that same moment), else the oldest one kept.
            start, start_at = 0, None
            for index, earlier in enumerate(history):
                if earlier.at > since:
                    break
                if start_at is None or earlier.at > start_at:
                    start, start_at = index, earlier.at
            requests = errors = 0
            for before, after in zip(history[start:], history[start + 1 :], strict=False):
                if (after.incarnation != before.incarnation or after.requests < before.requests
                        or after.errors < before.errors):
                    requests += after.requests  # a new router counts from zero
                    errors += after.errors
                else:
                    requests += after.requests - before.requests
                    errors += after.errors - before.errors
            return requests, errors

    def _read(self, slot: Slot) -> _Reading | None:
        state = self._source.router_state()
        if not state:
            return None
        stats = state.get("stats")
        counts = stats.get(slot.value) if isinstance(stats, Mapping) else None
        if not isinstance(counts, Mapping):
            return None
        try:
            requests, errors = int(counts["requests"]), int(counts["errors"])
        except (KeyError, TypeError, ValueError):
            return None
        return _Reading(self._clock.now(), (state.get("pid"), state.get("started")),
                        requests, errors)

    def _prune(self, history: list[_Reading], now: datetime) -> None:
        cutoff = now - self._retention
        keep_from = 0
        while keep_from < len(history) - 1 and history[keep_from].at < cutoff:
            keep_from += 1
        keep_from = max(keep_from, len(history) - self._max)
        if keep_from:
            del history[:keep_from]
