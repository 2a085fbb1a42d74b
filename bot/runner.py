"""Worker tasks that run deployments: claim queued runs, run them off the listener threads,
and take over runs whose worker died."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import timedelta

from procedures.decision import Verdict
from procedures.engine import Engine
from procedures.log_context import notify
from procedures.model import HOLDING_STATES, DeploymentState, ProcedureKind
from procedures.store import DeploymentRecord, DeploymentStore

log = logging.getLogger(__name__)


HOLDING = HOLDING_STATES
"""A deployment in these states has its environment: the next one there waits in line."""


class RunQueueTask:
    """Claims queued deployments and runs each on a thread of its own pool.

    One deployment at a time per environment: a queued deployment whose environment another
    deployment is running (or rolling back) waits in line, oldest first, and is claimed once
    that run has ended; its card says so once ("queued behind #N"). An emergency approved
    while a run is under way therefore starts right after it instead of failing on the lock.
    Claiming is one conditional update (QUEUED -> RUNNING for this worker), so two bot
    processes on one database never run the same deployment.
    """

    name = "runs"

    def __init__(self, engine: Engine, deployments: DeploymentStore, *, max_parallel: int = 4,
                 worker_id: str,
                 gate: Callable[[DeploymentRecord], Verdict] | None = None) -> None:
        self._engine = engine
        self._gate = gate
        self._deployments = deployments
        self._worker_id = worker_id
        self._pool = ThreadPoolExecutor(max_workers=max_parallel, thread_name_prefix="qlp-run")
        self._running: dict[int, Future[DeploymentState]] = {}
        self._lock = threading.Lock()
        self._max = max_parallel
        self._told_waiting: set[tuple[int, int]] = set()  # (waiting, behind) already said
        self._claiming = True

    def run_once(self) -> bool:
        with self._lock:
            self._running = {k: f for k, f in self._running.items() if not f.done()}
            if len(self._running) >= self._max or not self._claiming:
                return False
        orphan = self._claim_orphaned_rollback()
        if orphan is not None:
            self.submit(orphan)
            return True
        claimed = self._claim_next_free()
        if claimed is None:
            return False
        self.submit(claimed)
        return True

    def _claim_next_free(self) -> int | None:
        """Claim the oldest queued deployment whose environment no other run holds."""
        lister = getattr(self._deployments, "list_in_states", None)
        if lister is None:  # a store that cannot list: first come, first claimed
            claimed = self._deployments.claim_next(self._worker_id)
            return claimed.id if claimed is not None else None
        queued: list[DeploymentRecord] = list(lister([DeploymentState.QUEUED]))
        if not queued:
            return None
        holding: dict[str, DeploymentRecord] = {}
        for other in lister(HOLDING):
            holding.setdefault(other.environment, other)
        # Emergencies first: an emergency waits only for the run under way, not for the
        # other requests queued behind it.
        line = sorted(queued, key=lambda d: (d.kind is not ProcedureKind.EMERGENCY,
                                             d.created_at, d.id or 0))
        for deployment in line:
            assert deployment.id is not None
            ahead = holding.get(deployment.environment) or self._borrowed_by(deployment)
            if ahead is not None and ahead.id != deployment.id:
                self._say_waiting(deployment, ahead)
                continue
            if not self._allowed_to_start(deployment):
                continue
            now = self._engine.clock.now()
            if self._deployments.transition(
                deployment.id, [DeploymentState.QUEUED], DeploymentState.RUNNING,
                worker_id=self._worker_id, heartbeat_at=now,
            ):
                notify("run_claimed", self._engine.observer, kind=deployment.kind.value,
                       environment=deployment.environment)
                return deployment.id
            # Another worker claimed it (or it was cancelled) meanwhile: its environment is
            # now held; the rest of the line waits for the next pass.
            holding.setdefault(deployment.environment, deployment)
        return None

    def _borrowed_by(self, deployment: DeploymentRecord) -> DeploymentRecord | None:
        """The run under way on another environment that holds ``deployment``'s environment
        for a rehearsal (``procedures.engine_loans``: production rehearsing on staging): it
        waits for that run rather than be claimed and put back in line pass after pass. Read
        only for an environment that some environment is promoted from."""
        policy = self._engine.policy
        if not any(policy.promoted_from(name) == deployment.environment
                   for name in policy.environments):
            return None
        row = self._engine.environments.get(deployment.environment)
        if row is None or row.lock_deployment_id in (None, deployment.id):
            return None
        holder = self._deployments.get(row.lock_deployment_id)
        return holder if holder is not None and holder.state in HOLDING else None

    def _claim_orphaned_rollback(self) -> int | None:
        """Claim a rollback that no worker holds (handed over by a stopping replica, or a
        queued run cancelled after a crash): it goes on compensating here at once, instead
        of waiting for ``recover`` to find it stale."""
        lister = getattr(self._deployments, "list_in_states", None)
        if lister is None:
            return None
        for deployment in lister([DeploymentState.ROLLING_BACK]):
            if deployment.worker_id is not None or deployment.id is None:
                continue
            if self._deployments.transition(
                deployment.id, [DeploymentState.ROLLING_BACK], DeploymentState.ROLLING_BACK,
                expected_revision=deployment.revision, worker_id=self._worker_id,
                heartbeat_at=self._engine.clock.now(),
            ):
                notify("run_claimed", self._engine.observer, kind=deployment.kind.value,
                       environment=deployment.environment)
                log.info("claimed #%s, rolling back without a worker", deployment.id)
                return deployment.id
        return None

    def _allowed_to_start(self, deployment: DeploymentRecord) -> bool:
        """The policy gate at run start (``bot.flows.gate``). A run that started before (put
        back in line by recovery, or waiting behind another run) is resumed, never judged
        again: its steps may have changed something."""
        if self._gate is None or deployment.started_at is not None:
            return True
        assert deployment.id is not None
        try:
            verdict = self._gate(deployment)
        except Exception:  # e.g. Slack down for a membership read: try again next pass
            log.warning("the gate could not judge #%s at its start; it stays queued",
                        deployment.id, exc_info=True)
            return False
        if verdict.allowed:
            return True
        self._engine.refuse_start(deployment.id, verdict.rule, verdict.reason)
        return False

    def _say_waiting(self, deployment: DeploymentRecord, ahead: DeploymentRecord) -> None:
        assert deployment.id is not None and ahead.id is not None
        key = (deployment.id, ahead.id)
        if key in self._told_waiting:
            return
        self._told_waiting.add(key)
        try:
            self._engine.note_waiting(deployment.id, ahead.id)
        except Exception:  # saying so must never stop the queue
            log.warning("could not say that #%s waits for #%s", deployment.id, ahead.id,
                        exc_info=True)

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

    def in_progress(self) -> int:
        """How many runs this task is running now (``/metrics``)."""
        with self._lock:
            return sum(1 for f in self._running.values() if not f.done())

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

    def stop_claiming(self) -> None:
        """A graceful stop begins: claim nothing more (another replica will)."""
        self._claiming = False

    def held(self) -> list[int]:
        """The deployments this task is running now."""
        with self._lock:
            return sorted(k for k, f in self._running.items() if not f.done())

    def drain(self, grace: float) -> tuple[dict[int, DeploymentState | None], list[int]]:
        """Wait up to ``grace`` seconds for the runs under way to stop (the engine was told
        to hand them over, ``Engine.request_stop``). Returns the state each stopped run was
        left in (None if it raised) and the ids still going when the grace ran out: those
        stay with this worker's heartbeat and are taken over once it is stale."""
        with self._lock:
            running = {k: f for k, f in self._running.items() if not f.done()}
        deadline = time.monotonic() + grace
        ended: dict[int, DeploymentState | None] = {}
        for deployment_id, future in sorted(running.items()):
            try:
                ended[deployment_id] = future.result(max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                continue
            except BaseException:  # logged by _run; the run is as the crash left it
                ended[deployment_id] = None
        left = [k for k in sorted(running) if k not in ended]
        return ended, left

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
        if now < self._next or self._engine.stopping.is_set():
            return False  # a stopping worker takes nothing over
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
