"""The durable playbook engine: runs one deployment's steps, persisting before it acts.

Everything the engine knows lives in the database (through the ``procedures.store``
protocols), so a restarted bot or a surviving replica resumes or compensates a run from there.

Life of a run (``Engine.run``)::

    RUNNING ──all steps done──────────────────────────────▶ SUCCEEDED
       │  step failed / cancel (request_cancel)
       ▼
    ROLLING_BACK ──undos done──▶ ROLLED_BACK (something had succeeded)
       │                         FAILED / CANCELLED (nothing had succeeded)
       └──an undo failed──────▶ NEEDS_ATTENTION (the environment stays locked)

Decisions worth knowing:

* **Lock.** The environment lock is taken before the first step (holder = requester, reason
  "deployment #N", owner = this worker) and re-taken on resume (re-entrant for the same
  deployment). Held by anyone else, or unreadable: the run fails closed at once (FAILED,
  nothing ran). It is released on every terminal state except NEEDS_ATTENTION, where it is
  kept with the reason "needs attention after #N: ..." and without an owner, so the stale-lock
  reaper never frees it; a person unlocks after looking.
* **Exceptions.** Steps fail with ``Exception`` (retried when a ``StepFailure`` or
  ``ExternalServiceError`` says ``retryable`` and attempts are left). ``BaseException`` that is
  not ours (``KeyboardInterrupt``, ``SystemExit``, a test's simulated crash) is NOT caught: it
  leaves the run as it was in the database (RUNNING/ROLLING_BACK), exactly as a killed process
  would, and :meth:`Engine.recover` takes it over once its heartbeat is stale. Errors of the
  stores themselves are not step failures either: they propagate out of ``run`` the same way.
* **Retry budget.** ``step.retry.attempts`` counts attempts within one life of the run; the
  persisted ``attempts`` keeps counting across resumes (a step re-run after a crash gets a
  fresh budget).
* **Timeout** is cooperative: ``ctx.sleep`` raises ``StepFailure("timed out after ...")`` once
  the attempt's deadline has come. A step that returns after its deadline without sleeping is
  accepted: it finished, and undoing finished work because it was slow would be worse.
* **Compensation** undoes only SUCCEEDED steps that declare ``undo`` (and UNDOING ones left by
  a crash: undo is idempotent), in reverse order. The failed or interrupted step is not undone:
  its ``run`` must clean up after itself or leave nothing half-done. Steps without ``undo`` stay
  SUCCEEDED. The final state is ROLLED_BACK if any step had succeeded, else FAILED (or
  CANCELLED for a cancel).
* **Cancel** of a RUNNING run only moves it to ROLLING_BACK (one conditional update: exactly
  one of concurrent callers wins); the running engine notices between steps and in
  ``ctx.sleep``, interrupts the step (recorded FAILED, "interrupted: cancelled by ...") and
  compensates. Between steps no read is needed: a step's start (its RUNNING row,
  ``current_step`` and "step.started", one transaction) is written only while the run is
  RUNNING and ours, so a cancel or take-over stops the next step before it acts. A queued
  run that already did something (requeued after a crash) is cancelled the same way;
  :meth:`Engine.recover` hands it to a worker.
* **Take-over.** ``recover`` moves stale RUNNING runs back to QUEUED (worker cleared) and
  claims stale ROLLING_BACK ones for this worker; the takeover is noticed by the old worker at
  its next heartbeat or check (worker id no longer ours), which then stops without touching
  anything. Heartbeats happen between steps and inside ``ctx.sleep``, so choose
  ``stale_after`` well above ``heartbeat_every`` and above the longest stretch a step blocks
  without calling ``ctx.sleep``.
* **Graceful stop.** :meth:`Engine.request_stop` (a replica's SIGTERM) makes every run of this
  engine stop at its next safe point: between steps, or where a step waits (``ctx.sleep``;
  steps are idempotent, ``rerun_on_resume``). There the run is handed over at once: RUNNING
  goes back to QUEUED, ROLLING_BACK stays so, both without a worker (another replica claims it
  at its next poll instead of after ``stale_after``), the lock parked as ``recover`` parks it,
  "run.released" audited and said in the thread. A step that blocks without sleeping is not
  interrupted: the process leaves it for ``recover`` rather than stop it mid-write.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from procedures import tracing
from procedures.clock import Clock
from procedures.durations import format_duration
from procedures.engine_context import (
    EngineContext,
    RunCancelled,
    RunInterrupted,
    RunTakenOver,
)
from procedures.engine_loans import EnvironmentLoans, LoanedEnvironment, park_borrowed
from procedures.errors import ConflictError, ExternalServiceError, QlpError, StepFailure
from procedures.log_context import Observer, notify, scope
from procedures.model import DeploymentState, ProcedureKind, Slot, StepState
from procedures.mrkdwn import escape
from procedures.platforms.base import Platform
from procedures.playbook import MetricsSource, Playbook, Step
from procedures.policy import Policy
from procedures.reporting import Reporter, RunSnapshot, StepSnapshot
from procedures.store import (
    UNCHANGED,
    AuditEntry,
    AuditSink,
    BaselineStore,
    DeploymentRecord,
    DeploymentStore,
    EnvironmentRecord,
    EnvironmentStore,
    NotRunning,
    StepRecord,
    Unchanged,
)

__all__ = ["CANCELLED_BY", "Engine", "EngineContext", "RunCancelled", "RunReleased",
           "RunTakenOver"]

log = logging.getLogger(__name__)

CANCELLED_BY = "cancelled by "
SLEEP_SLICE = 1.0  # seconds: how often a waiting step notices cancel, deadline and heartbeat
MAX_ERROR = 500  # characters of an error message kept in the database and the card
MAX_HINT = 400  # characters of its hint kept after it

_S = DeploymentState


class RunReleased(RunInterrupted):
    """This worker is stopping (``Engine.request_stop``): hand the run over at this safe
    point, for another worker to resume."""

_DONE = (StepState.SUCCEEDED, StepState.SKIPPED)
_TOUCHED = (StepState.SUCCEEDED, StepState.RUNNING, StepState.UNDOING, StepState.UNDONE,
            StepState.UNDO_FAILED)
_CANCELLABLE_AT_ONCE = (_S.PENDING_APPROVAL, _S.SCHEDULED, _S.QUEUED)


_MENTION_ONLY = re.compile(r"(?:cancelled by )?<@[UW][A-Z0-9]{2,20}>")
_LOCKED_BY = re.compile(r"([a-z][a-z0-9-]{0,30}) is locked by &lt;@([UW][A-Z0-9]{2,20})&gt;")


def _shown(error: str, *, lock_problem: bool = False) -> str:
    """A run's error (plain text: a service's words, an exception's message) as mrkdwn for a
    thread reply: escaped (issue 13, finding 4), except the engine's own mentions: a whole
    "cancelled by <@U…>", and with ``lock_problem`` (``_take_lock``'s words) the holder of
    "<env> is locked by <@U…>" at its very start; the lock's reason after it stays escaped."""
    if _MENTION_ONLY.fullmatch(error):
        return error
    shown = escape(error)
    if lock_problem:
        shown = _LOCKED_BY.sub(r"\1 is locked by <@\2>", shown, count=1) \
            if _LOCKED_BY.match(shown) else shown
    return shown


def describe_error(exc: BaseException) -> str:
    """A one-line message for an error (never a traceback): the message capped at
    ``MAX_ERROR`` chars, then the error's hint (what to do about it, e.g. the role to grant),
    capped at ``MAX_HINT``, so a long service message never pushes the fix out."""
    hint = None
    if isinstance(exc, QlpError):
        text = exc.message
        hint = " ".join(exc.hint.split()) if exc.hint else None
    else:
        detail = str(exc)
        text = f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__
    text = " ".join(text.split())
    text = text if len(text) <= MAX_ERROR else text[: MAX_ERROR - 1] + "…"
    if hint:
        hint = hint if len(hint) <= MAX_HINT else hint[: MAX_HINT - 1] + "…"
        text = f"{text} (fix: {hint})"
    return text


PROGRESS = "progress"
"""The key of a running step's result under which it keeps its progress (KeepsProgress)."""


def _kept_progress(record: StepRecord | None) -> Mapping[str, Any] | None:
    """The progress a step left RUNNING kept, if any."""
    if record is None or record.state is not StepState.RUNNING or not record.result:
        return None
    progress = record.result.get(PROGRESS)
    return progress if isinstance(progress, Mapping) else None


def _retryable(exc: Exception) -> bool:
    return isinstance(exc, StepFailure | ExternalServiceError) and exc.retryable


def _retry_after(exc: Exception) -> timedelta:
    if isinstance(exc, ExternalServiceError) and exc.retry_after:
        return timedelta(seconds=exc.retry_after)
    return timedelta(0)


def _json_result(result: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The step's result as stored: a JSON document (odd values become strings)."""
    if result is None:
        return None
    loaded = json.loads(json.dumps(dict(result), default=str))
    return loaded if isinstance(loaded, dict) else {"result": loaded}


def _steps(count: int) -> str:
    return f"{count} step" if count == 1 else f"{count} steps"


# -- snapshots ----------------------------------------------------------------------------------


@dataclass
class _View:
    """The engine's copy of the deployment row (refreshed on reads, updated on writes)."""

    id: int
    kind: ProcedureKind
    version: str | None
    environment: str
    requester: str
    state: DeploymentState
    created_at: datetime
    options: Mapping[str, Any] = field(default_factory=dict)
    reason: str | None = None
    error: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    current_step: str | None = None
    worker_id: str | None = None
    revision: int = 0

    @classmethod
    def of(cls, record: DeploymentRecord) -> _View:
        assert record.id is not None
        return cls(
            id=record.id, kind=record.kind, version=record.version,
            environment=record.environment, requester=record.requester, state=record.state,
            created_at=record.created_at, options=dict(record.options or {}),
            reason=record.reason, error=record.error, started_at=record.started_at,
            finished_at=record.finished_at, current_step=record.current_step,
            worker_id=record.worker_id, revision=record.revision,
        )


def _step_snapshot(step: Step, record: StepRecord | None) -> StepSnapshot:
    if record is None:
        return StepSnapshot(step.name, step.title, StepState.PENDING)
    return StepSnapshot(
        step.name, step.title, record.state, record.attempts, record.started_at,
        record.finished_at, record.error,
    )


_Seen = dict[str, tuple[StepRecord | None, StepSnapshot]]


def _snapshot(
    view: _View, records: Mapping[str, StepRecord], playbook: Playbook | None,
    seen: _Seen | None = None,
) -> RunSnapshot:
    """``seen`` (a run's own cache) reuses a step's snapshot while its record is the same."""
    steps: list[StepSnapshot] = []
    known: set[str] = set()
    for step in playbook.steps if playbook else ():
        known.add(step.name)
        record = records.get(step.name)
        if seen is None:
            steps.append(_step_snapshot(step, record))
            continue
        cached = seen.get(step.name)
        if cached is None or cached[0] is not record:
            cached = seen[step.name] = (record, _step_snapshot(step, record))
        steps.append(cached[1])
    extra = sorted((r for name, r in records.items() if name not in known),
                   key=lambda r: r.position)
    for record in extra:  # recorded by an older playbook
        steps.append(StepSnapshot(
            record.name, record.name, record.state, record.attempts, record.started_at,
            record.finished_at, record.error,
        ))
    return RunSnapshot(
        deployment_id=view.id, kind=view.kind, version=view.version,
        environment=view.environment, requester=view.requester, state=view.state,
        created_at=view.created_at, steps=tuple(steps), current_step=view.current_step,
        reason=view.reason, error=view.error, started_at=view.started_at,
        finished_at=view.finished_at, options=dict(view.options),
    )


def _safely(what: str, call: Callable[[], None]) -> None:
    """Reporting must never break a run: log and go on."""
    try:
        call()
    except Exception:
        log.warning("reporter failed on %s", what, exc_info=True)


# -- the engine ---------------------------------------------------------------------------------


class Engine:
    """Runs one deployment's playbook durably.

    One engine serves one worker (``worker_id``) and may run several deployments, one per
    thread; all per-run state lives in the database and in a private object per ``run`` call.
    Time comes only from ``clock`` and passes only through ``sleep``.
    """

    observer: Observer | None = None  # the bot's metrics (procedures.log_context)

    def __init__(
        self,
        *,
        deployments: DeploymentStore,
        environments: EnvironmentStore,
        audit: AuditSink,
        reporter: Reporter,
        playbooks: Mapping[ProcedureKind, Playbook],
        policy: Policy,
        platform_for: Callable[[str], Platform],
        metrics_for: Callable[[str], MetricsSource],
        baselines: BaselineStore | None,
        clock: Clock,
        sleep: Callable[[float], None],
        worker_id: str,
        heartbeat_every: timedelta = timedelta(seconds=5),
    ) -> None:
        self.deployments = deployments
        self.environments = environments
        self.audit = audit
        self.reporter = reporter
        self.playbooks = playbooks
        self.policy = policy
        self.platform_for = platform_for
        self.metrics_for = metrics_for
        self.baselines = baselines
        self.clock = clock
        self.sleep = sleep
        self.worker_id = worker_id
        self.heartbeat_every = heartbeat_every
        self.stopping = threading.Event()

    def request_stop(self) -> None:
        """This worker is stopping: each run hands itself over at its next safe point
        (between steps, or where a step waits); ``run`` then returns QUEUED or ROLLING_BACK."""
        self.stopping.set()

    # -- running --------------------------------------------------------------------------------

    def run(self, deployment_id: int) -> DeploymentState:
        """Run (or resume, or compensate) ``deployment_id`` until a terminal state; return it.

        Precondition: the deployment is RUNNING and claimed by this worker
        (``DeploymentStore.claim_next``), or ROLLING_BACK and owned by this worker or by
        nobody. A terminal deployment is returned as is. If another worker takes the run over
        meanwhile, ``run`` stops without touching anything and returns the state it found.
        """
        record = self.deployments.get(deployment_id)
        if record is None:
            raise LookupError(f"deployment #{deployment_id} does not exist")
        if record.state.terminal:
            return record.state
        if record.state is _S.RUNNING:
            if record.worker_id != self.worker_id:
                raise ConflictError(
                    f"#{deployment_id} is run by worker {record.worker_id}, not {self.worker_id}"
                )
        elif record.state is _S.ROLLING_BACK:
            if record.worker_id not in (None, self.worker_id):
                raise ConflictError(
                    f"#{deployment_id} is rolled back by worker {record.worker_id}; "
                    "recover() takes it over once its heartbeat is stale"
                )
            if record.worker_id is None:
                if not self.deployments.transition(
                    deployment_id, [_S.ROLLING_BACK], _S.ROLLING_BACK,
                    expected_revision=record.revision, worker_id=self.worker_id,
                    heartbeat_at=self.clock.now(),
                ):
                    raise ConflictError(f"#{deployment_id} was taken by another worker")
                record = self.deployments.get(deployment_id)
                assert record is not None
        else:
            raise ConflictError(
                f"#{deployment_id} is {record.state.value}: claim it (claim_next) before run()"
            )
        with scope(self.observer, deployment_id=deployment_id, kind=record.kind.value,
                   environment=record.environment, worker_id=self.worker_id), \
                tracing.span("qlp.run") as run_span:
            state = _Run(self, _View.of(record)).execute()
            if run_span is not None:
                run_span.set_attribute("qlp.outcome", state.value)
            log.info("run #%s stopped: %s", deployment_id, state.value)
            if state.terminal:
                notify("run_finished", kind=record.kind.value,
                       environment=record.environment, outcome=state.value)
            return state

    def snapshot(self, deployment_id: int) -> RunSnapshot:
        """The deployment and every step of its playbook, for reporters and the card."""
        record = self.deployments.get(deployment_id)
        if record is None:
            raise LookupError(f"deployment #{deployment_id} does not exist")
        records = {r.name: r for r in self.deployments.steps(deployment_id)}
        return _snapshot(_View.of(record), records, self.playbooks.get(record.kind))

    # -- cancelling -----------------------------------------------------------------------------

    def request_cancel(self, deployment_id: int, actor: str) -> bool:
        """Cancel ``deployment_id``; True only for the one call that changed it.

        Not started yet (PENDING_APPROVAL, SCHEDULED, QUEUED with nothing done) -> CANCELLED at
        once. RUNNING (or QUEUED after a crash with steps done) -> ROLLING_BACK with error
        "cancelled by <@actor>": the running engine (or the next ``recover``) compensates.
        Anything else (already rolling back, terminal) -> False.
        """
        error = f"{CANCELLED_BY}<@{actor}>"
        for _ in range(20):  # lost a race against a claim or a step update: look again
            record = self.deployments.get(deployment_id)
            if record is None or record.state.terminal or record.state is _S.ROLLING_BACK:
                return False
            state = record.state
            at_once = state in _CANCELLABLE_AT_ONCE
            if state is _S.QUEUED:
                touched = any(r.state in _TOUCHED for r in self.deployments.steps(deployment_id))
                at_once = not touched
            target = _S.CANCELLED if at_once else _S.ROLLING_BACK
            if not self.deployments.transition(
                deployment_id, [state], target, expected_revision=record.revision, error=error,
            ):
                continue
            self.audit.append(
                actor, "run.cancelled" if at_once else "run.cancel_requested",
                deployment_id=deployment_id, environment=record.environment,
                detail={"from": state.value, "to": target.value},
            )
            if at_once:
                # A queued run may hold a parked lock (requeued after a crash with nothing done).
                self.environments.release_lock(record.environment, deployment_id)
            self._announce(deployment_id,
                           f"Cancelled by <@{actor}> before it started." if at_once else None)
            return True
        return False

    def note_waiting(self, deployment_id: int, ahead_id: int) -> None:
        """Say on the card (and in the audit) that queued ``deployment_id`` waits in line for
        ``ahead_id``, which holds the environment; the worker starts it once that run ended."""
        record = self.deployments.get(deployment_id)
        if record is None or record.state is not _S.QUEUED:
            return
        self.audit.append(self.worker_id, "run.waiting", deployment_id=deployment_id,
                          environment=record.environment, detail={"behind": ahead_id})
        self._announce(deployment_id,
                       f"Queued behind #{ahead_id}, which is under way on "
                       f"{record.environment}: #{deployment_id} starts when #{ahead_id} "
                       "has ended.")

    def refuse_start(self, deployment_id: int, rule: str, reason: str) -> bool:
        """A queued deployment that the policy gate refuses at its start (a window closed, a
        lock taken, an override expired while it waited): FAILED with nothing done, said on
        the card and in the channel. False if it was no longer queued."""
        record = self.deployments.get(deployment_id)
        if record is None:
            return False
        message = f"did not start: {reason}"
        if not self.deployments.transition(deployment_id, [_S.QUEUED], _S.FAILED,
                                           error=message, current_step=None):
            return False
        self.audit.append(self.worker_id, "run.refused", deployment_id=deployment_id,
                          environment=record.environment, detail={"rule": rule,
                                                                  "reason": reason})
        snapshot = self.snapshot(deployment_id)
        _safely("run_changed", lambda: self.reporter.run_changed(snapshot))
        _safely("event", lambda: self.reporter.event(
            snapshot, f"✗ #{deployment_id} did not start: {reason} (rule: {rule}). Nothing "
                      "was changed.", broadcast=True))
        return True

    def _announce(self, deployment_id: int, text: str | None) -> None:
        snapshot = self.snapshot(deployment_id)
        _safely("run_changed", lambda: self.reporter.run_changed(snapshot))
        if text is not None:
            _safely("event", lambda: self.reporter.event(snapshot, text))

    # -- recovering -----------------------------------------------------------------------------

    def recover(self, stale_after: timedelta) -> list[int]:
        """Take over runs whose worker stopped heartbeating for ``stale_after``; reap locks.

        Stale RUNNING runs go back to QUEUED (worker cleared; ``claim_next`` resumes them);
        stale ROLLING_BACK runs are claimed for this worker: the caller compensates them with
        ``run()``. The lock a taken-over run holds is parked (owner cleared) so the reaper
        below does not hand the half-changed environment to someone else before the run
        resumes. Then locks whose owner has not beaten for ``stale_after`` are freed. Returns
        the ids taken over; every take-over and every reaped lock is audited.
        """
        now = self.clock.now()
        taken: list[int] = []
        for record in self.deployments.stale(stale_after, now):
            assert record.id is not None
            if record.state is _S.RUNNING:
                won = self.deployments.transition(
                    record.id, [_S.RUNNING], _S.QUEUED, expected_revision=record.revision,
                    worker_id=None,
                )
                owner: str | None = None
            else:
                won = self.deployments.transition(
                    record.id, [_S.ROLLING_BACK], _S.ROLLING_BACK,
                    expected_revision=record.revision, worker_id=self.worker_id,
                    heartbeat_at=now,
                )
                owner = self.worker_id
            if not won:
                continue  # another replica got there first, or the run moved on
            lock = self.environments.get(record.environment)
            if lock is not None and lock.lock_deployment_id == record.id:
                self.environments.acquire_lock(
                    record.environment, lock.lock_holder or record.requester, lock.lock_reason,
                    record.id, owner, now,
                )
            # A lock it borrowed for a rehearsal (procedures.engine_loans) is parked alike.
            park_borrowed(self.environments, self.policy, record, owner, now)
            self.audit.append(
                self.worker_id, "run.taken_over", deployment_id=record.id,
                environment=record.environment,
                detail={"state": record.state.value, "previous_worker": record.worker_id,
                        "stale_after_s": stale_after.total_seconds(),
                        "now": "queued" if record.state is _S.RUNNING else "rolling_back"},
            )
            taken.append(record.id)
        for environment in self.environments.reap_stale_locks(now, stale_after):
            self.audit.append(
                self.worker_id, "lock.reaped", environment=environment,
                detail={"stale_after_s": stale_after.total_seconds()},
            )
        return taken


# -- one run ------------------------------------------------------------------------------------


@dataclass
class _Failure:
    step: Step
    error: str


class _CancelledBeforeStart(RunCancelled):
    """The cancel was noticed as the step was about to start: it did nothing."""


class _Run:
    """The state of one ``Engine.run`` call; implements ``RunServices`` for the contexts."""

    def __init__(self, engine: Engine, view: _View) -> None:
        self.e = engine
        self.view = view
        self.playbook: Playbook | None = engine.playbooks.get(view.kind)
        self.records: dict[str, StepRecord] = {}
        # A step's progress as the attempt before this worker's kept it (KeepsProgress).
        self.kept: dict[str, Mapping[str, Any]] = {}
        self._seen: _Seen = {}  # step snapshots by the record they were made from
        self.last_beat = engine.clock.now()
        self.holds_lock = False
        self.passing: str | None = None  # the holder of a person's lock this run passes
        self.pass_owner: str | None = None  # the pass's owner id on the lock row
        self.cancel_noticed = False
        self._platform: Platform | None = None
        self._metrics: MetricsSource | None = None
        # A step's findings are held and sent with its "✓"/"✗" line: one reply per phase.
        self.held_lines: list[str] = []
        # Other environments this run's steps act on (a rehearsal on staging) and their locks.
        self.loans = EnvironmentLoans(
            deployment_id=view.id, requester=view.requester, home=view.environment,
            policy=engine.policy, environments=engine.environments,
            deployments=engine.deployments, audit=engine.audit, worker_id=engine.worker_id,
            now=engine.clock.now, platform_for=engine.platform_for,
            metrics_for=engine.metrics_for)

    # -- RunServices ----------------------------------------------------------------------------

    @property
    def deployment_id(self) -> int:
        return self.view.id

    @property
    def kind(self) -> ProcedureKind:
        return self.view.kind

    @property
    def version(self) -> str | None:
        return self.view.version

    @property
    def environment_name(self) -> str:
        return self.view.environment

    @property
    def options(self) -> Mapping[str, Any]:
        return self.view.options

    @property
    def policy(self) -> Policy:
        return self.e.policy

    @property
    def platform(self) -> Platform:
        if self._platform is None:
            self._platform = self.e.platform_for(self.view.environment)
        return self._platform

    @property
    def metrics(self) -> MetricsSource:
        if self._metrics is None:
            self._metrics = self.e.metrics_for(self.view.environment)
        return self._metrics

    def now(self) -> datetime:
        return self.e.clock.now()

    def other_environment(self, name: str) -> LoanedEnvironment:
        return self.loans.get(name)

    def wait(
        self, seconds: float, *, deadline: datetime | None, timeout: timedelta | None,
        forward: bool,
    ) -> None:
        """Sleep in slices; between them heartbeat, notice cancel/take-over and the deadline."""
        remaining = max(float(seconds), 0.0)
        while True:
            self.checkpoint(forward=forward)
            now = self.now()
            if deadline is not None and now >= deadline:
                raise StepFailure(
                    f"timed out after {format_duration(timeout or timedelta(0))}"
                )
            if remaining <= 1e-9:
                return
            chunk = min(SLEEP_SLICE, remaining)
            if deadline is not None:
                chunk = min(chunk, (deadline - now).total_seconds())
            self.e.sleep(chunk)
            remaining -= chunk

    def result_of(self, step_name: str) -> Mapping[str, Any]:
        record = self.records.get(step_name)
        return dict(record.result or {}) if record is not None else {}

    def hold(self, text: str) -> None:
        """Keep a finding for the step's own reply."""
        self.held_lines.append(text)

    def with_held(self, text: str) -> str:
        """``text`` followed by the held findings (indented), which are then cleared."""
        lines, self.held_lines = self.held_lines, []
        return "\n".join([text, *(f"    {line}" for line in lines)])

    def report(self, text: str, *, broadcast: bool = False) -> None:
        snapshot = self.snapshot()
        _safely("event", lambda: self.e.reporter.event(snapshot, text, broadcast=broadcast))

    def record_switch(self, live: Slot, version: str) -> None:
        self.e.environments.record_switch(self.view.environment, live, version)

    def keep_progress(self, step: Step, progress: Mapping[str, Any]) -> None:
        assert self.playbook is not None
        self._record(step, self.playbook.steps.index(step), StepState.RUNNING, None, None,
                     guarded=True, result={PROGRESS: dict(progress)})

    def kept_progress(self, step: Step) -> Mapping[str, Any] | None:
        return self.kept.get(step.name)

    def record_baseline(self, metrics: Mapping[str, Any]) -> None:
        if self.e.baselines is None:
            raise StepFailure("no baseline store is configured; cannot record a baseline")
        if self.view.version is None:
            raise StepFailure("this run has no version; cannot record a baseline")
        self.e.baselines.record(self.view.environment, self.view.version, metrics)

    def baseline(self) -> Mapping[str, Any] | None:
        """The newest baseline recorded for this environment, with its ``version`` and
        ``recorded_at``. Read before this run records its own (``record_baseline`` comes after
        ``monitor``), so it is the one of the version deployed before. A store that cannot
        be read fails the step: monitoring must not quietly drop its ratio rules."""
        if self.e.baselines is None:
            return None
        try:
            latest = self.e.baselines.latest(self.view.environment)
        except Exception as exc:
            raise ExternalServiceError(
                "database", f"could not read the performance baseline of "
                f"{self.view.environment}: {describe_error(exc)}", retryable=True) from exc
        if latest is None:
            return None
        return {**dict(latest.metrics or {}), "version": latest.version,
                "recorded_at": latest.recorded_at.isoformat()}

    # -- the run --------------------------------------------------------------------------------

    def execute(self) -> DeploymentState:
        # A pulse heartbeats for as long as this run is alive, whatever its step is doing:
        # a step that blocks (a readiness wait, a long SDK call) must not look dead to
        # recover() on another replica.
        stop = threading.Event()
        pulse = threading.Thread(target=contextvars.copy_context().run,  # the run's log fields
                                 args=(self._pulse, stop), daemon=True,
                                 name=f"qlp-pulse-{self.view.id}")
        pulse.start()
        try:
            return self._execute_guarded()
        finally:
            stop.set()
            pulse.join(timeout=5)

    def _pulse(self, stop: threading.Event) -> None:
        interval = max(self.e.heartbeat_every.total_seconds(), 0.05)
        while not stop.wait(interval):
            try:
                now = self.now()
                if not self.e.deployments.heartbeat(self.view.id, self.e.worker_id, now):
                    return  # taken over: the run notices at its next checkpoint
                if self.holds_lock:
                    self.e.environments.heartbeat(self.view.environment, self.lock_owner, now)
                self.loans.heartbeat(now)
            except Exception:  # a missed beat is retried; the run itself reports errors
                log.warning("heartbeat of #%s failed", self.view.id, exc_info=True)

    def _execute_guarded(self) -> DeploymentState:
        try:
            try:
                return self._execute()
            except RunReleased:
                return self._hand_over()
        except RunTakenOver:
            record = self.e.deployments.get(self.view.id)
            state = record.state if record is not None else self.view.state
            log.warning("#%s was taken over by another worker; stopping (%s)",
                        self.view.id, state.value)
            self._audit("run.abandoned", {"state": state.value})
            return state

    def _execute(self) -> DeploymentState:
        self.records = {r.name: r for r in self.e.deployments.steps(self.view.id)}
        self._heartbeat(self.now())
        touched = any(r.state in _TOUCHED for r in self.records.values())
        resumed = bool(self.records) or self.view.state is _S.ROLLING_BACK
        self._audit("run.resumed" if resumed else "run.started",
                    {"state": self.view.state.value, "worker": self.e.worker_id})
        log.info("run #%s %s (%s)", self.view.id, "resumed" if resumed else "started",
                 self.view.state.value)
        if self.view.kind is ProcedureKind.ROLLBACK and not resumed:
            notify("rollback_started", kind=self.view.kind.value,
                   environment=self.view.environment, trigger="command")
        if self.playbook is None:
            message = f"no playbook for {self.view.kind.value} runs"
            if self.view.state is _S.RUNNING and not touched:
                return self._fail_closed(message)
            return self._needs_attention(message, locked=False)
        if self.view.state is _S.ROLLING_BACK and not touched:
            return self._finish_rollback()  # nothing to undo: no lock needed
        problem = self._take_lock()
        if problem is not None:
            if self.view.state is _S.RUNNING and not touched:
                ahead = self._lock_under_way()
                if ahead is not None:
                    return self._back_in_line(ahead)
                return self._fail_closed(problem)
            return self._needs_attention(
                f"{problem}; cannot resume #{self.view.id} without it", locked=False,
            )
        if self.view.state is _S.RUNNING:
            self._report_changed()
            failure = self._forward()
            if failure is None and self._finish_success():
                return _S.SUCCEEDED
        return self._compensate()

    # -- lock -----------------------------------------------------------------------------------

    def _take_lock(self) -> str | None:
        """Take (or re-take) the environment lock; a message if we cannot."""
        env = self.view.environment
        try:
            taken = self.e.environments.acquire_lock(
                env, self.view.requester, f"deployment #{self.view.id}", self.view.id,
                self.e.worker_id, self.now(),
            )
        except Exception as exc:
            return f"could not take the lock on {env}: {describe_error(exc)}"
        if taken:
            self.holds_lock, self.passing, self.pass_owner = True, None, None
            self._audit("lock.acquired", {"reason": f"deployment #{self.view.id}"})
            return None
        try:
            current = self.e.environments.get(env)
        except Exception as exc:
            return f"{env} is locked (holder unknown: {describe_error(exc)})"
        if current is None or current.lock_holder is None:
            return f"could not take the lock on {env}"
        reason = f" ({current.lock_reason})" if current.lock_reason else ""
        if self._may_pass(current):
            try:
                owner = self.e.environments.pass_lock(env, self.view.id, self.e.worker_id,
                                                      self.now())
            except Exception as exc:
                return f"could not pass the lock on {env}: {describe_error(exc)}"
            if owner is not None:
                first = self.passing is None
                self.holds_lock, self.passing = True, current.lock_holder
                self.pass_owner = owner
                if first:
                    self._audit("lock.passed", {"holder": current.lock_holder,
                                                "reason": current.lock_reason})
                    self.report(f"The lock of <@{current.lock_holder}> on {env}"
                                f"{escape(reason)} stays theirs: the break-glass override "
                                f"of #{self.view.id} passes it for this run only.")
                return None
        return f"{env} is locked by <@{current.lock_holder}>{reason}"

    @property
    def lock_owner(self) -> str:
        """Who owns the lock row for this run: the pass's id, or this worker."""
        return self.pass_owner or self.e.worker_id

    def _may_pass(self, current: EnvironmentRecord) -> bool:
        """A break-glass run passes a person's lock that was there when it was approved.

        The request carries ``options["override"]`` and is queued only once a granted
        override lifted the refusals (``procedures.decision``), a person's lock included. A
        lock taken after the run started is someone's new "hands off": not passed.
        """
        if current.lock_deployment_id is not None or not self.view.options.get("override"):
            return False
        started = self.view.started_at
        return current.locked_since is None or started is None or \
            current.locked_since <= started

    def _lock_under_way(self) -> int | None:
        """The deployment holding the lock, unless it needs attention (that lock stays until a
        person unlocks): queued, running, rolling back, or ended and releasing it now."""
        try:
            current = self.e.environments.get(self.view.environment)
            holder = current.lock_deployment_id if current is not None else None
            if holder is None or holder == self.view.id:
                return None
            record = self.e.deployments.get(holder)
        except Exception:
            return None
        if record is None or record.state is _S.NEEDS_ATTENTION or not (
                record.state.terminal or record.state in (_S.QUEUED, _S.RUNNING,
                                                          _S.ROLLING_BACK)):
            return None
        # A run that has just ended releases its lock right after its last transition: a
        # claim in between waits in line for that release rather than failing on it.
        return holder

    def _back_in_line(self, ahead: int) -> DeploymentState:
        """Another run holds the environment and nothing was done: QUEUED again (worker
        cleared), to be claimed once that run has ended; the card says so."""
        if not self.e.deployments.transition(
            self.view.id, [_S.RUNNING], _S.QUEUED, worker_id=None, current_step=None,
        ):
            return self._after_lost_transition()
        self.view.state, self.view.worker_id = _S.QUEUED, None
        self._audit("run.waiting", {"behind": ahead})
        self._report_changed()
        self.report(f"Queued behind #{ahead}, which holds {self.view.environment}: "
                    f"#{self.view.id} starts when #{ahead} has ended.")
        return _S.QUEUED

    def _release_lock(self) -> None:
        try:
            if self.passing is not None:
                # The person's lock stays, with its holder, reason and time: only the pass ends.
                self.e.environments.end_pass(self.view.environment,
                                             self.pass_owner or self.e.worker_id)
                self._audit("lock.pass_ended", {"holder": self.passing})
            else:
                self.e.environments.release_lock(self.view.environment, self.view.id)
        except Exception:
            # The lock stays with our worker as owner; its heartbeat goes stale and
            # recover() reaps it.
            log.warning("could not release the lock on %s", self.view.environment,
                        exc_info=True)
        self.holds_lock = False
        self.passing = self.pass_owner = None

    # -- checks between and inside steps --------------------------------------------------------

    def _heartbeat(self, now: datetime) -> None:
        if not self.e.deployments.heartbeat(self.view.id, self.e.worker_id, now):
            raise RunTakenOver(f"#{self.view.id} is no longer ours")
        self.last_beat = now

    def checkpoint(self, *, forward: bool, look: bool = True) -> None:
        """Heartbeat when due; while running forward also notice cancel and take-over.

        ``look=False`` skips reading the deployment: for the check before a step whose start
        is recorded with ``running_for`` (the write itself checks, atomically). Raises
        RunReleased once the engine is stopping: every caller is a safe point.
        """
        if self.e.stopping.is_set():
            raise RunReleased(f"#{self.view.id}: worker {self.e.worker_id} is stopping")
        now = self.now()
        if now - self.last_beat >= self.e.heartbeat_every:
            self._heartbeat(now)
            if self.holds_lock and not self.e.environments.heartbeat(
                self.view.environment, self.lock_owner, now
            ):
                self._lock_lost()
            for name in self.loans.heartbeat(now):
                busy = self.loans.take(name)  # someone freed it (/qlp unlock): take it again
                if busy is not None:
                    raise StepFailure(f"lost the lock on {name}: {busy.describe()}")
        if forward and look:
            self._check_running()

    def _check_running(self) -> None:
        """Read the deployment: RunCancelled / RunTakenOver unless still RUNNING and ours."""
        record = self.e.deployments.get(self.view.id)
        if record is None or record.worker_id != self.e.worker_id:
            raise RunTakenOver(f"#{self.view.id} is no longer ours")
        self.view = _View.of(record)
        if record.state is _S.ROLLING_BACK:
            raise RunCancelled(record.error or "cancelled")
        if record.state is not _S.RUNNING:
            raise RunTakenOver(f"#{self.view.id} is {record.state.value}")

    def _lock_lost(self) -> None:
        """Someone freed or took our lock (``/qlp unlock``): take it again, or fail."""
        passed = self.passing
        problem = self._take_lock()
        if problem is None and passed is not None and self.passing is None:
            self.report(f"The lock of <@{passed}> on {self.view.environment} was lifted "
                        "during the run; the run now holds its own until it ends.")
            return
        if problem is None:
            self.report(f":warning: The lock on {self.view.environment} was released by "
                        "someone else during the run; taken again.")
            return
        self.holds_lock = False
        raise StepFailure(f"lost the lock: {problem}")

    # -- handing over (a graceful stop) ---------------------------------------------------------

    def _hand_over(self) -> DeploymentState:
        """Give the run back without a worker, at once (see "Graceful stop" above); the state
        it was left in. A run taken over or finished meanwhile is left alone."""
        for _ in range(5):  # lost a race against a cancel (RUNNING -> ROLLING_BACK): again
            record = self.e.deployments.get(self.view.id)
            if record is None or record.worker_id != self.e.worker_id or \
                    record.state not in (_S.RUNNING, _S.ROLLING_BACK):
                raise RunTakenOver(f"#{self.view.id} is no longer ours to hand over")
            # The lock first: once the run is claimable, its next worker re-takes the lock,
            # and parking it after that would look to that worker like someone unlocking.
            self._park_lock()
            self.loans.park_for_hand_over()  # staging's lock, borrowed for a rehearsal
            target = _S.QUEUED if record.state is _S.RUNNING else _S.ROLLING_BACK
            if not self.e.deployments.transition(
                self.view.id, [record.state], target, expected_revision=record.revision,
                worker_id=None,
            ):
                continue
            self.view = _View.of(record)
            self.view.state, self.view.worker_id = target, None
            step = record.current_step
            self._audit("run.released", {"state": target.value, "step": step,
                                         "worker": self.e.worker_id})
            log.info("run #%s released at %s (%s): another worker resumes it",
                     self.view.id, step or "a step boundary", target.value)
            title = self._step_title(step)
            self.report(f"↪ Handed over{f' during {title}' if title else ''}: the replica "
                        "running it is stopping; another replica resumes it now.")
            return target
        raise RunTakenOver(f"#{self.view.id} kept changing; not handed over")

    def _park_lock(self) -> None:
        """A person's lock this run passes stays theirs (only the pass ends; the next worker
        passes it again); the run's own lock stays the run's, without an owner, so the reaper
        never frees it before the run resumes (as ``Engine.recover`` parks it)."""
        if not self.holds_lock:
            return
        if self.passing is not None:
            self._release_lock()
            return
        self.e.environments.acquire_lock(
            self.view.environment, self.view.requester, f"deployment #{self.view.id}",
            self.view.id, None, self.now())
        self.holds_lock = False

    def _step_title(self, name: str | None) -> str | None:
        if name is None or self.playbook is None:
            return None
        try:
            return self.playbook.step(name).title
        except KeyError:
            return None

    # -- forward --------------------------------------------------------------------------------

    def _forward(self) -> _Failure | None:
        """Run the steps in order; None when all are done, else why it stopped."""
        assert self.playbook is not None
        for position, step in enumerate(self.playbook.steps):
            record = self.records.get(step.name)
            state = record.state if record is not None else StepState.PENDING
            # A step that starts at once (no ``when`` to ask first) is recorded RUNNING by a
            # write that itself checks the run is still RUNNING and ours, so no read is needed
            # here; nor for a step already done (skipped without a write: the next start or
            # the conditional RUNNING -> SUCCEEDED notices a cancel).
            starts_at_once = step.when is None if state is StepState.PENDING else (
                state is StepState.RUNNING and step.rerun_on_resume)
            try:
                self.checkpoint(forward=True, look=not (starts_at_once or state in _DONE))
            except RunCancelled as cancel:
                return self._cancelled(step, cancel, interrupted=False)
            except StepFailure as exc:  # the lock was lost between steps
                return self._begin_rollback(_Failure(step, describe_error(exc)))
            if state in _DONE:
                continue
            if state is StepState.RUNNING and not step.rerun_on_resume:
                error = "interrupted (the worker stopped during this step; not safe to re-run)"
                self._record(step, position, StepState.FAILED, "step.failed",
                             {"step": step.name, "error": error}, error=error,
                             finished_at=self.now())
                return self._begin_rollback(_Failure(step, error))
            if state not in (StepState.PENDING, StepState.RUNNING):
                # Left FAILED (or later) by a crash before the run moved to ROLLING_BACK.
                return self._begin_rollback(_Failure(step, record.error if record and
                                                     record.error else state.value))
            try:
                with scope(step=step.name), tracing.span(f"qlp.step {step.name}"):
                    failure = self._run_step(step, position, fresh=state is StepState.PENDING)
            except _CancelledBeforeStart as cancel:
                return self._cancelled(step, cancel, interrupted=False)
            except RunCancelled as cancel:
                return self._cancelled(step, cancel, interrupted=True)
            if failure is not None:
                return self._begin_rollback(failure)
        return None

    def _run_step(self, step: Step, position: int, *, fresh: bool) -> _Failure | None:
        record = self.records.get(step.name)
        attempts = record.attempts if record is not None else 0
        if fresh and step.when is not None:
            ctx = EngineContext(self, step, self.now() + step.timeout, undoing=False)
            try:
                applies = step.when(ctx)
            except Exception as exc:
                return self._step_failed(step, position, attempts, self.now(), exc)
            if not applies:
                try:
                    self._record(step, position, StepState.SKIPPED, "step.skipped",
                                 {"step": step.name}, guarded=True, finished_at=self.now())
                except RunCancelled as cancel:
                    raise _CancelledBeforeStart(cancel.reason) from None
                self._report_changed()
                return None
        first_started = self.now()
        tries = 0
        while True:
            tries += 1
            attempts += 1
            started = self.now()
            fields: dict[str, Any] = {"attempts": attempts, "finished_at": None}
            if tries == 1:
                # Persisted RUNNING (with current_step and its audit row, in one transaction
                # that checks the run is still ours and not cancelled) before the step acts.
                # A step left RUNNING keeps the progress its last attempt kept (a run taken
                # over continues its monitoring window), until this attempt keeps its own.
                progress = _kept_progress(record) if not fresh else None
                if progress is not None:
                    self.kept[step.name] = progress
                    fields.update(started_at=started, error=None)
                else:
                    self.kept.pop(step.name, None)
                    fields.update(started_at=started, error=None, result=None)
                try:
                    self._record(step, position, StepState.RUNNING, "step.started",
                                 {"step": step.name, "attempt": attempts}, guarded=True,
                                 current_step=step.name, **fields)
                except RunCancelled as cancel:
                    raise _CancelledBeforeStart(cancel.reason) from None
            else:
                self._record(step, position, StepState.RUNNING, None, None, guarded=True,
                             **fields)
            self._report_changed()
            ctx = EngineContext(self, step, started + step.timeout, undoing=False)
            try:
                result = step.run(ctx)
            except RunCancelled:
                raise
            except Exception as exc:
                if _retryable(exc) and tries < step.retry.attempts:
                    self._retry_wait(step, position, tries, attempts, exc, forward=True)
                    continue
                return self._step_failed(step, position, attempts, first_started, exc)
            finished = self.now()
            took = finished - first_started
            self._record(step, position, StepState.SUCCEEDED, "step.succeeded",
                         {"step": step.name, "attempts": attempts,
                          "duration_s": took.total_seconds()},
                         result=_json_result(result), finished_at=finished, error=None)
            self._observe_step(step, "succeeded", took)
            self._report_changed()
            self.report(self.with_held(f"✓ {step.title} ({format_duration(took)})"))
            return None

    def _retry_wait(
        self, step: Step, position: int, tries: int, attempts: int, exc: Exception, *,
        forward: bool,
    ) -> None:
        delay = max(step.retry.delay(tries), _retry_after(exc))
        error = describe_error(exc)
        self._record(step, position, self.records[step.name].state, "step.retrying",
                     {"step": step.name, "attempt": attempts, "error": error,
                      "delay_s": delay.total_seconds(), "undo": not forward},
                     error=f"attempt {attempts} failed: {error}")
        what = "undo of " + step.title if not forward else step.title
        self.report(f"↻ {what}: {escape(error)}; trying again in {format_duration(delay)} "
                    f"(attempt {tries + 1} of {step.retry.attempts})")
        self.wait(delay.total_seconds(), deadline=None, timeout=None, forward=forward)

    def _step_failed(
        self, step: Step, position: int, attempts: int, started: datetime, exc: Exception
    ) -> _Failure:
        error = describe_error(exc)
        finished = self.now()
        self._record(step, position, StepState.FAILED, "step.failed",
                     {"step": step.name, "attempts": attempts, "error": error,
                      "duration_s": (finished - started).total_seconds()},
                     error=error, finished_at=finished, attempts=attempts,
                     result=_json_result(exc.result) if isinstance(exc, StepFailure)
                     else None)
        self._observe_step(step, "failed", finished - started)
        return _Failure(step, error)

    def _observe_step(self, step: Step, outcome: str, took: timedelta) -> None:
        log.info("step %s %s in %.1f s", step.name, outcome, took.total_seconds())
        notify("step_finished", kind=self.view.kind.value, step=step.name, outcome=outcome,
               seconds=took.total_seconds())

    def _cancelled(self, step: Step, cancel: RunCancelled, *, interrupted: bool) -> _Failure:
        self.cancel_noticed = True
        notify("rollback_started", kind=self.view.kind.value,
               environment=self.view.environment, trigger="cancelled")
        if interrupted:
            position = self.playbook.steps.index(step) if self.playbook else 0
            self._record(step, position, StepState.FAILED, "step.interrupted",
                         {"step": step.name, "reason": cancel.reason},
                         error=f"interrupted: {cancel.reason}", finished_at=self.now())
        return _Failure(step, cancel.reason)

    def _begin_rollback(self, failure: _Failure) -> _Failure:
        error = f"{failure.step.title} failed: {failure.error}"
        if self.e.deployments.transition(
            self.view.id, [_S.RUNNING], _S.ROLLING_BACK, error=error
        ):
            self.view.state, self.view.error = _S.ROLLING_BACK, error
            self._audit("run.rolling_back", {"error": error, "step": failure.step.name})
            log.info("run #%s rolling back: %s failed", self.view.id, failure.step.name)
            notify("rollback_started", kind=self.view.kind.value,
                   environment=self.view.environment,
                   trigger="monitoring" if failure.step.name == "monitor" else "step_failed")
            self._report_changed()
            self.report(self.with_held(
                f"✗ {failure.step.title} failed: {_shown(failure.error)}. Rolling back."),
                broadcast=True)
        else:
            self._refresh_owned()  # a cancel won the race: compensate as cancelled
            self.cancel_noticed = self.view.state is _S.ROLLING_BACK
        return failure

    def _finish_success(self) -> bool:
        """RUNNING -> SUCCEEDED; False if a cancel got in first (then compensate)."""
        if not self.e.deployments.transition(
            self.view.id, [_S.RUNNING], _S.SUCCEEDED, current_step=None, error=None,
        ):
            self._refresh_owned()
            self.cancel_noticed = True
            return False
        now = self.now()
        self.view.state, self.view.current_step, self.view.finished_at = (
            _S.SUCCEEDED, None, now)
        self._release_lock()
        self.loans.release_all()
        took = now - (self.view.started_at or now)
        self._audit("run.succeeded", {"duration_s": took.total_seconds()})
        self._report_changed()
        target = f"{self.view.version} to {self.view.environment}" if self.view.version else (
            f"{self.playbook.title if self.playbook else self.view.kind.value} on "
            f"{self.view.environment}")
        verb = "Deployed" if self.view.version else "Finished"
        self.report(f"{verb} {target} in {format_duration(took)}", broadcast=True)
        return True

    def _fail_closed(self, message: str) -> DeploymentState:
        """Nothing was changed: FAILED at once."""
        if not self.e.deployments.transition(
            self.view.id, [_S.RUNNING], _S.FAILED, error=message, current_step=None,
        ):
            self._refresh_owned()
            if self.view.state is _S.ROLLING_BACK:  # cancelled meanwhile: nothing to undo
                return self._finish_rollback()
            return self.view.state
        self.view.state, self.view.error = _S.FAILED, message
        self._release_lock()
        self._audit("run.failed", {"error": message, "changed": False})
        self._report_changed()
        self.report(f"✗ #{self.view.id} did not start: {_shown(message, lock_problem=True)}. "
                    "Nothing was changed.",
                    broadcast=True)
        return _S.FAILED

    # -- compensation ---------------------------------------------------------------------------

    def _compensate(self) -> DeploymentState:
        assert self.playbook is not None
        self._refresh_owned()
        for position, step in enumerate(self.playbook.steps):
            record = self.records.get(step.name)
            if record is not None and record.state is StepState.RUNNING:
                self._save(step, position, StepState.FAILED, finished_at=self.now(),
                           error="interrupted (the worker stopped during this step)")
            if record is not None and record.state is StepState.UNDO_FAILED:
                return self._needs_attention(
                    f"undo of {step.title} failed: {record.error}", locked=True)
        todo = [(position, step) for position, step in reversed(list(
            enumerate(self.playbook.steps)))
            if step.undo is not None and self._state(step) in (
                StepState.SUCCEEDED, StepState.UNDOING)]
        resuming = any(r.state in (StepState.UNDOING, StepState.UNDONE)
                       for r in self.records.values())
        error = self.view.error or ""
        if error.startswith(CANCELLED_BY) and not resuming:
            self.report(f"Cancelled by {_shown(error[len(CANCELLED_BY):])}; undoing "
                        f"{_steps(len(todo))}", broadcast=True)
        elif resuming:
            self.report(f"Resuming the rollback: undoing {_steps(len(todo))}")
        for position, step in todo:
            self.checkpoint(forward=False)
            with scope(step=step.name), tracing.span(f"qlp.undo {step.name}"):
                problem = self._undo_step(step, position)
            if problem is not None:
                return self._needs_attention(f"undo of {step.title} failed: {problem}",
                                             locked=True)
        return self._finish_rollback()

    def _undo_step(self, step: Step, position: int) -> str | None:
        assert step.undo is not None
        started = self.now()
        self._record(step, position, StepState.UNDOING, "step.undoing", {"step": step.name},
                     current_step=step.name)
        self._report_changed()
        tries = 0
        while True:
            tries += 1
            ctx = EngineContext(self, step, self.now() + step.timeout, undoing=True)
            try:
                step.undo(ctx)
            except Exception as exc:
                if _retryable(exc) and tries < step.retry.attempts:
                    self._retry_wait(step, position, tries, tries, exc, forward=False)
                    continue
                error = describe_error(exc)
                self._record(step, position, StepState.UNDO_FAILED, "step.undo_failed",
                             {"step": step.name, "error": error}, error=f"undo: {error}")
                self._observe_step(step, "undo_failed", self.now() - started)
                return error
            took = self.now() - started
            self._observe_step(step, "undone", took)
            self._record(step, position, StepState.UNDONE, "step.undone",
                         {"step": step.name, "duration_s": took.total_seconds()})
            self._report_changed()
            self.report(f"↩ Undid {step.title} ({format_duration(took)})")
            return None

    def _finish_rollback(self) -> DeploymentState:
        changed = any(r.state in (StepState.SUCCEEDED, StepState.UNDONE)
                      for r in self.records.values())
        error = self.view.error or ""
        cancelled = error.startswith(CANCELLED_BY)
        final = _S.ROLLED_BACK if changed else (_S.CANCELLED if cancelled else _S.FAILED)
        if not self.e.deployments.transition(
            self.view.id, [_S.ROLLING_BACK], final, current_step=None,
        ):
            return self._after_lost_transition()
        self.view.state, self.view.current_step = final, None
        self._release_lock()
        self.loans.release_all()
        undone = sum(1 for r in self.records.values() if r.state is StepState.UNDONE)
        self._audit(f"run.{final.value}", {"error": error, "undone": undone})
        self._report_changed()
        if final is _S.ROLLED_BACK:
            kept = [s.title for s in self._steps_in(StepState.SUCCEEDED)]
            note = f" (no undo for: {', '.join(kept)})" if kept else ""
            self.report(f"Rolled back #{self.view.id}: undid {_steps(undone)}{note}. "
                        f"{self.view.environment} is unlocked.", broadcast=True)
        else:
            self.report(f"#{self.view.id} {final.value.replace('_', ' ')}: {_shown(error)}. "
                        "Nothing was changed.", broadcast=True)
        return final

    def _needs_attention(self, message: str, *, locked: bool) -> DeploymentState:
        """Stop here for a person: NEEDS_ATTENTION, keeping (and labelling) the lock."""
        message = message[:MAX_ERROR]
        if locked and self.passing is not None:
            # Passing a person's lock: it stays theirs and keeps the environment locked.
            self._release_lock()
        elif locked and self.holds_lock:
            # Parked first, without owner: the reaper never frees it, and if this fails the
            # run stays ROLLING_BACK and the next life gets here again.
            self.e.environments.acquire_lock(
                self.view.environment, self.view.requester,
                f"needs attention after #{self.view.id}: {message}", self.view.id, None,
                self.now(),
            )
        if locked:
            self.loans.park_all(message)
        if not self.e.deployments.transition(
            self.view.id, [_S.RUNNING, _S.ROLLING_BACK], _S.NEEDS_ATTENTION, error=message,
            current_step=None,
        ):
            return self._after_lost_transition()
        self.view.state, self.view.error, self.view.current_step = (
            _S.NEEDS_ATTENTION, message, None)
        self._audit("run.needs_attention", {"error": message, "locked": locked})
        self._report_changed()
        tail = (f" The environment {self.view.environment} stays locked." if locked
                else "")
        self.report(f":rotating_light: #{self.view.id} needs attention: {_shown(message)}.{tail}",
                    broadcast=True)
        return _S.NEEDS_ATTENTION

    def _after_lost_transition(self) -> DeploymentState:
        """A conditional update changed nothing: someone else moved the run. Touch nothing."""
        record = self.e.deployments.get(self.view.id)
        if record is None:
            raise RunTakenOver(f"#{self.view.id} disappeared")
        if record.worker_id != self.e.worker_id:
            raise RunTakenOver(f"#{self.view.id} is no longer ours")
        return record.state

    # -- bookkeeping ----------------------------------------------------------------------------

    def _refresh_owned(self) -> None:
        record = self.e.deployments.get(self.view.id)
        if record is None or record.worker_id != self.e.worker_id:
            raise RunTakenOver(f"#{self.view.id} is no longer ours")
        self.view = _View.of(record)

    def _state(self, step: Step) -> StepState:
        record = self.records.get(step.name)
        return record.state if record is not None else StepState.PENDING

    def _steps_in(self, state: StepState) -> Iterable[Step]:
        assert self.playbook is not None
        return (s for s in self.playbook.steps if self._state(s) is state)

    def _save(self, step: Step, position: int, state: StepState, **fields: Any) -> None:
        self.records[step.name] = self.e.deployments.upsert_step(
            self.view.id, step.name, position, state, **fields
        )

    def _record(
        self, step: Step, position: int, state: StepState, action: str | None,
        detail: Mapping[str, Any] | None, *, guarded: bool = False,
        current_step: str | Unchanged | None = UNCHANGED, **fields: Any,
    ) -> None:
        """Save the step's row with its audit event (``action``), and ``current_step`` if
        given, in one transaction. ``guarded``: only while the run is RUNNING and ours, else
        nothing is written and RunCancelled / RunTakenOver is raised."""
        entry = None if action is None else AuditEntry(
            self.e.worker_id or "engine", action, self.view.environment, dict(detail or {}))
        try:
            self.records[step.name] = self.e.deployments.record_step(
                self.view.id, step.name, position, state, audit=entry,
                current_step=current_step,
                running_for=self.e.worker_id if guarded else None, **fields,
            )
        except NotRunning:
            self._check_running()  # raises: cancelled, or no longer ours
            raise RunTakenOver(f"#{self.view.id} changed under the run") from None
        if current_step is not UNCHANGED:
            self.view.current_step = current_step

    def _audit(self, action: str, detail: Mapping[str, Any]) -> None:
        self.e.audit.append(
            self.e.worker_id or "engine", action, deployment_id=self.view.id,
            environment=self.view.environment, detail=detail,
        )

    def snapshot(self) -> RunSnapshot:
        return _snapshot(self.view, self.records, self.playbook, self._seen)

    def _report_changed(self) -> None:
        snapshot = self.snapshot()
        _safely("run_changed", lambda: self.e.reporter.run_changed(snapshot))
