"""Hand on the outbox claims of a replica known to be gone, before their lease runs out.

A sender claims a message for 60 s (``storage.outbox.DEFAULT_LEASE``) and writes its worker id
on it (``claimed_by``). A replica that stops cleanly hands its claims back itself
(``bot.graceful_stop``); one that is killed cannot, and its messages, with the rest of their
ordering keys behind them, would wait out the lease. This task, on every replica, looks at the
``bot_instances`` rows (``storage.markers``) every few seconds: a claimant whose row is gone
(a clean stop removed it) or has not beaten for ``dead_after`` is known dead, and its claimed
messages are made due at once. Their ``attempts`` stay counted, so the sender looks a post up
by its metadata before posting it again (``bot.outbox_sender``): the dead replica may have
delivered it in its last moment.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import timedelta

from storage.markers import BotMarkers
from storage.outbox import Outbox

log = logging.getLogger(__name__)

ALL_MODES = ("serve", "socket", "shell")


class OrphanedClaimsTask:
    """A :class:`bot.worker.WorkerTask`: every ``every`` seconds, hand on dead senders' claims.

    ``dead_after`` must stay well above the markers' beat period (the beats have a thread of
    their own: ``bot.instance_marker``), or a live replica's claim is handed on while its
    call is in flight.
    """

    name = "orphaned-claims"

    def __init__(self, outbox: Outbox, markers: BotMarkers, *, own_id: str,
                 dead_after: timedelta, every: float = 5.0,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self._outbox = outbox
        self._markers = markers
        self._own_id = own_id
        self._dead_after = dead_after
        self._every = every
        self._monotonic = monotonic
        self._next = 0.0

    def run_once(self) -> bool:
        now = self._monotonic()
        if now < self._next:
            return False
        self._next = now + self._every
        live = {m.id for m in self._markers.live(ALL_MODES, within=self._dead_after)}
        live.add(self._own_id)
        handed = self._outbox.retry_orphaned_claims(live)
        if handed:
            log.warning("outbox: %d message(s) claimed by a replica that is gone (no heartbeat "
                        "for %.0f s) are due again now: %s", len(handed),
                        self._dead_after.total_seconds(), handed)
        return bool(handed)

    def busy(self) -> bool:
        return False
