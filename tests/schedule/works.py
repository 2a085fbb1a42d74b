"""``DueWork`` doubles for the scheduler tests: real classes that record what they were asked."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import datetime, timedelta


class RecordingWork:
    """Records each ``run_due(now)``; ``upcoming`` answers what ``next_moments`` says."""

    def __init__(self, name: str, *, done: int = 1,
                 next_moments: Callable[[datetime], list[datetime]] | None = None) -> None:
        self.name = name
        self.done = done
        self.next_moments = next_moments or (lambda now: [])
        self.calls: list[datetime] = []
        self._called = threading.Condition()

    def run_due(self, now: datetime) -> int:
        with self._called:
            self.calls.append(now)
            self._called.notify_all()
        return self.done

    def upcoming(self, now: datetime, horizon: timedelta) -> list[datetime]:
        return self.next_moments(now)

    def wait_calls(self, count: int, timeout: float = 10) -> list[datetime]:
        """Block until ``run_due`` has been called ``count`` times (ticks run on threads)."""
        with self._called:
            if not self._called.wait_for(lambda: len(self.calls) >= count, timeout):
                raise AssertionError(f"{self.name}: {len(self.calls)} calls, wanted {count}")
            return list(self.calls)


class FailingWork:
    """Raises from both methods, as a broken work would."""

    name = "broken"

    def __init__(self) -> None:
        self.calls = 0

    def run_due(self, now: datetime) -> int:
        self.calls += 1
        raise RuntimeError("the broken work broke")

    def upcoming(self, now: datetime, horizon: timedelta) -> list[datetime]:
        raise RuntimeError("the broken work cannot plan")
