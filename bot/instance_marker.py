"""The worker task that keeps this process's row in ``bot_instances`` fresh.

Served bots (``serve``, ``socket``) and the local shell each beat every ``BEAT_EVERY``; the
shell refuses a database whose served bot beat within the last two minutes (see
:mod:`storage.markers`). The row is removed when the worker stops cleanly.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable

from storage.markers import BEAT_EVERY, BotMarkers

log = logging.getLogger(__name__)


class InstanceMarker:
    """A :class:`bot.worker.WorkerTask`: beat when due; never reports work done."""

    name = "instance-marker"

    def __init__(self, markers: BotMarkers, *, id: str, mode: str,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.markers = markers
        self.id = id
        self.mode = mode
        self.host = socket.gethostname()
        self.pid = os.getpid()
        self._monotonic = monotonic
        self._next = 0.0

    def beat(self) -> None:
        self.markers.beat(self.id, self.mode, self.host, self.pid)
        self._next = self._monotonic() + BEAT_EVERY.total_seconds()

    def run_once(self) -> bool:
        if self._monotonic() >= self._next:
            try:
                self.beat()
            except Exception:  # the database is away: the next pass tries again
                log.warning("could not refresh this process's heartbeat row", exc_info=True)
                self._next = self._monotonic() + 5
        return False

    def busy(self) -> bool:
        return False

    def shutdown(self) -> None:
        try:
            self.markers.remove(self.id)
        except Exception:
            log.warning("could not remove this process's heartbeat row", exc_info=True)
