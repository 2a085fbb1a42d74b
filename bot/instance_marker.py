"""The worker task that keeps this process's row in ``bot_instances`` fresh.

Served bots (``serve``, ``socket``) and the local shell each beat every ``every`` (at most
``BEAT_EVERY``); the shell refuses a database whose served bot beat within the last two
minutes (see :mod:`storage.markers`), and the other replicas hand on the outbox claims of a
process whose row is gone or has not beaten for a while (``bot.orphaned_claims``). The beats
come from a thread of their own, started at the worker's first pass, so a worker pass held up
by a slow Slack call never makes a live process look dead. The row is removed when the worker
stops cleanly.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from datetime import timedelta

from storage.markers import BEAT_EVERY, BotMarkers

log = logging.getLogger(__name__)


class InstanceMarker:
    """A :class:`bot.worker.WorkerTask`: beat when due; never reports work done."""

    name = "instance-marker"

    def __init__(self, markers: BotMarkers, *, id: str, mode: str,
                 monotonic: Callable[[], float] = time.monotonic,
                 every: timedelta = BEAT_EVERY, thread: bool = False) -> None:
        self.markers = markers
        self.id = id
        self.mode = mode
        self.host = socket.gethostname()
        self.pid = os.getpid()
        self._monotonic = monotonic
        self._every = min(every, BEAT_EVERY).total_seconds()
        self._next = 0.0
        self._want_thread = thread
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def beat(self) -> None:
        self.markers.beat(self.id, self.mode, self.host, self.pid)
        self._next = self._monotonic() + self._every

    def run_once(self) -> bool:
        if self._want_thread:
            if self._thread is None and not self._stop.is_set():
                self._beat_when_due()  # the row exists once the worker's first pass is done
                self._thread = threading.Thread(target=self._beat_loop, daemon=True,
                                                name="qlp-instance-marker")
                self._thread.start()
            return False
        self._beat_when_due()
        return False

    def _beat_when_due(self) -> None:
        if self._monotonic() >= self._next:
            try:
                self.beat()
            except Exception:  # the database is away: the next pass tries again
                log.warning("could not refresh this process's heartbeat row", exc_info=True)
                self._next = self._monotonic() + 5

    def _beat_loop(self) -> None:
        while not self._stop.is_set():
            self._beat_when_due()
            self._stop.wait(max(0.05, min(self._every, self._next - self._monotonic())))

    def busy(self) -> bool:
        return False

    def shutdown(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        try:
            self.markers.remove(self.id)
        except Exception:
            log.warning("could not remove this process's heartbeat row", exc_info=True)
