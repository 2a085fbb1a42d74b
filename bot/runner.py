"""Worker tasks that run deployments: claim queued runs, run them off the listener threads,
and take over runs whose worker died."""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import timedelta

from procedures.engine import Engine
from procedures.model import DeploymentState
from procedures.store import DeploymentStore

log = logging.getLogger(__name__)


class RunQueueTask:
    """Claims queued deployments and runs each on a thread of its own pool.

    Claiming is a database operation (``FOR UPDATE SKIP LOCKED`` on PostgreSQL), so two bot
    processes on one database never run the same deployment.
    """

    name = "runs"

    def __init__(self, engine: Engine, deployments: DeploymentStore, *, max_parallel: int = 4,
                 worker_id: str) -> None:
        self._engine = engine
        self._deployments = deployments
        self._worker_id = worker_id
        self._pool = ThreadPoolExecutor(max_workers=max_parallel, thread_name_prefix="qlp-run")
        self._running: dict[int, Future[DeploymentState]] = {}
        self._lock = threading.Lock()
        self._max = max_parallel

    def run_once(self) -> bool:
        with self._lock:
            self._running = {k: f for k, f in self._running.items() if not f.done()}
            if len(self._running) >= self._max:
                return False
        claimed = self._deployments.claim_next(self._worker_id)
        if claimed is None or claimed.id is None:
            return False
        self.submit(claimed.id)
        return True

    def submit(self, deployment_id: int) -> None:
        """Run (or go on compensating) a deployment this worker holds."""
        with self._lock:
            if deployment_id in self._running and not self._running[deployment_id].done():
                return
            self._running[deployment_id] = self._pool.submit(self._run, deployment_id)

    def _run(self, deployment_id: int) -> DeploymentState:
        try:
            return self._engine.run(deployment_id)
        except BaseException:
            # The store failed under the run: leave it RUNNING; recovery takes it over.
            log.exception("run #%s stopped unexpectedly", deployment_id)
            raise

    def busy(self) -> bool:
        with self._lock:
            if any(not f.done() for f in self._running.values()):
                return True
        return bool(self._deployments_queued())

    def _deployments_queued(self) -> bool:
        lister = getattr(self._deployments, "list_in_states", None)
        if lister is None:
            return False
        return bool(lister([DeploymentState.QUEUED]))

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


class RecoveryTask:
    """Every ``every``, takes over runs whose worker stopped heartbeating."""

    name = "recovery"

    def __init__(self, engine: Engine, runs: RunQueueTask, *, stale_after: timedelta,
                 every: float = 5.0) -> None:
        self._engine = engine
        self._runs = runs
        self._stale_after = stale_after
        self._every = every
        self._next = 0.0

    def run_once(self) -> bool:
        now = time.monotonic()
        if now < self._next:
            return False
        self._next = now + self._every
        taken = self._engine.recover(self._stale_after)
        for deployment_id in taken:
            # RUNNING ones went back to QUEUED (claimed again by RunQueueTask); ROLLING_BACK
            # ones were claimed for this worker: finish compensating them. Submitting a QUEUED
            # one here would race the claim: run() refuses it ("claim it before run()"), and
            # RunQueueTask.submit skips the claimed run while that doomed future is pending.
            record = self._engine.deployments.get(deployment_id)
            if record is not None and record.state is DeploymentState.ROLLING_BACK:
                self._runs.submit(deployment_id)
        return bool(taken)

    def busy(self) -> bool:
        return False
