"""A replica's graceful stop (SIGTERM in ``serve`` and ``socket`` modes).

Another replica on the same database takes the work over at once instead of after
``QLP_STALE_AFTER`` (runs) or the leases (scheduler, outbox):

1. nothing new is taken on: the worker claims no queued run and takes no stale one over, and
   ``/readyz`` answers 503 ("stopping");
2. each run under way stops at its next safe point (between steps, or where a step waits:
   ``procedures.engine``, "Graceful stop") and is handed over: claimable by the next worker's
   poll, its lock parked for it. A run still inside a step that does not wait after
   ``QLP_STOP_GRACE`` seconds is not interrupted mid-write: it stays with this process's
   heartbeat and is taken over once that is stale;
3. the scheduler lease is released (a standby leads at its next attempt);
4. the outbox sender finishes the message in hand and hands the rest of its batch back; the
   worker stops; any claim still held is handed back (due at once). ``Services.close`` then
   removes this process's heartbeat row.

One log line per thing released, whatever ``QLP_LOG_LEVEL`` says: the operator of a rolling
update must be able to see what a stopping replica handed over.
"""

from __future__ import annotations

import logging
import time
from typing import Protocol

from bot.outbox_sender import SlackOutboxSender
from bot.runner import RunQueueTask
from bot.schedule.scheduler import LeasedScheduler
from bot.settings import Settings
from bot.worker import Worker, WorkerTask
from procedures.engine import Engine
from procedures.model import DeploymentState
from storage.outbox import Outbox

log = logging.getLogger(__name__)


class Stoppable(Protocol):
    """What a stop hands over (``bot.wiring.Services``)."""

    settings: Settings
    engine: Engine
    outbox: Outbox
    worker_id: str
    worker: Worker | None
    tasks: list[WorkerTask]
    scheduler: LeasedScheduler | None


HANDED_OVER = (DeploymentState.QUEUED, DeploymentState.ROLLING_BACK)


def stop_gracefully(services: Stoppable, *, grace: float, why: str = "SIGTERM") -> None:
    """Hand this replica's work over (see the module's docstring); returns when done."""
    if log.getEffectiveLevel() > logging.INFO:
        log.setLevel(logging.INFO)  # these lines are wanted at any QLP_LOG_LEVEL
    started = time.monotonic()
    runs = next((t for t in services.tasks if isinstance(t, RunQueueTask)), None)
    held = runs.held() if runs is not None else []
    log.info("stopping (%s): taking no new work; %d run(s) under way hand over at their next "
             "safe point (at most %.0f s)", why, len(held), grace)
    if runs is not None:
        runs.stop_claiming()
    services.engine.request_stop()
    if runs is not None:
        ended, left = runs.drain(grace)
        for deployment_id, state in sorted(ended.items()):
            if state in HANDED_OVER:
                assert state is not None
                log.info("released run #%s (%s): another replica claims it at its next poll",
                         deployment_id, state.value)
            elif state is None:
                log.warning("run #%s stopped with an error; another replica takes it over "
                            "once its heartbeat is stale", deployment_id)
            else:
                log.info("run #%s ended (%s) before it could be handed over", deployment_id,
                         state.value)
        for deployment_id in left:
            log.warning("run #%s is still inside a step after %.0f s; not interrupted "
                        "mid-write: another replica takes it over once its heartbeat is "
                        "stale (QLP_STALE_AFTER, %.0f s)", deployment_id, grace,
                        services.settings.qlp_stale_after)
    if services.scheduler is not None and services.scheduler.stop():
        log.info("released the scheduler lease: another replica leads at its next attempt")
    for task in services.tasks:
        if isinstance(task, SlackOutboxSender):
            task.stop_taking()
    worker = services.worker
    if worker is not None and not worker.stop():
        log.warning("the worker was still busy (a hanging call) when it was stopped")
    try:
        released = services.outbox.release_claims(services.worker_id)
    except Exception:
        log.warning("could not hand the outbox claims back; they are handed on by another "
                    "replica (this process's heartbeat row is gone) or after their lease",
                    exc_info=True)
    else:
        if released:
            log.info("released %d outbox claim(s), due again now: %s", len(released),
                     released)
    log.info("stopped in %.1f s: everything handed over", time.monotonic() - started)
