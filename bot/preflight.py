"""The preflight: final validation's checks, run while a standard deployment waits for approval,
so approvers see on the card what each check found before they click Approve.

``/qlp deploy`` only writes the request (a listener does no network work); :class:`PreflightTask`
(a worker task) notices a waiting standard deployment without current findings and runs the
read-only checks of ``final_validation`` (:class:`~procedures.playbooks.final_validation.
FinalValidation`, the same code as the step) for its environment: health and recent errors of
the live slot the bot recorded, CI status, slow queries, container CPU/memory and backup age,
whichever the environment configures. Nothing is changed anywhere: every check only reads, and
the live colour comes from the bot's own state, not from the platform (which could start a
router).

The findings live on the deployment, in ``options["preflight"]``::

    {"plan_hash": "...", "claim": "<token>", "claimed_by": "<worker>", "claimed_at": "...",
     "status": "running" | "done", "finished_at": "...", "findings": [Finding.to_json()...]}

Exactly once per plan hash: a worker first *claims* the preflight with a conditional update
(the deployment's revision), so of two workers one runs the checks; the findings are stored
only if the claim token and the plan hash are still the deployment's (another conditional
update). When the plan changes (``bot.plan``; approvals reset then), the stored hash no longer
matches and the checks run again. A claim whose worker died (still ``running`` after
:data:`LEASE`) is taken over, so a crash mid-preflight re-runs it. Once stored, the card is
re-rendered through the reporter.

:func:`run_preflight` runs it on demand (a scheduled deployment's T-2h validation) and returns
the findings. The run's own ``final_validation`` checks again when the run starts, whatever the
preflight found.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from types import TracebackType
from typing import TYPE_CHECKING, Any

from bot.settings import Settings
from procedures.checks.findings import CheckVerdict, Evidence, Finding
from procedures.checks.http import HttpChecker
from procedures.errors import ConflictError, QlpError, UserError
from procedures.model import DeploymentState, ProcedureKind, Slot
from procedures.platforms.base import Platform
from procedures.playbook import MetricsSource
from procedures.playbooks.final_validation import FinalChecks, FinalValidation
from procedures.policy import Environment, Policy
from procedures.store import DeploymentRecord

if TYPE_CHECKING:
    from bot.ports import PreflightServices

log = logging.getLogger(__name__)

__all__ = [
    "LEASE",
    "OPTION",
    "PREFLIGHT_STATES",
    "Preflight",
    "PreflightResult",
    "PreflightTask",
    "evidence_of",
    "final_checks",
    "run_preflight",
]

OPTION = "preflight"
"""The key of the preflight in a deployment's ``options``."""
PREFLIGHT_STATES = (DeploymentState.PENDING_APPROVAL, DeploymentState.SCHEDULED)
"""The states in which a deployment has (and shows) a preflight: it has not started yet."""
LEASE = timedelta(minutes=5)
"""A claim still ``running`` after this long belongs to a worker that died: take it over."""
WRITE_ATTEMPTS = 5


def final_checks(settings: Settings) -> FinalChecks:
    """The optional checks' configuration from the bot's settings (the CI token)."""
    return FinalChecks(tokens={"GITHUB_TOKEN": settings.github_token}
                       if settings.github_token else {})


@dataclass(frozen=True)
class PreflightResult:
    """The findings of one deployment's preflight for ``plan_hash``.

    ``ran``: this call ran the checks (False: it returned what was stored, or another worker is
    running them: then ``findings`` is empty and ``checked_at`` None). ``stored``: the findings
    are the deployment's (False: its plan or state changed while the checks ran, so they were
    dropped).
    """

    deployment_id: int
    plan_hash: str
    findings: tuple[Finding, ...]
    checked_at: datetime | None
    ran: bool
    stored: bool

    @property
    def problems(self) -> tuple[Finding, ...]:
        """The failed and inconclusive findings (inconclusive is never a pass)."""
        return tuple(finding for finding in self.findings if finding.problem)

    @property
    def passed(self) -> bool:
        """Checked, and no check failed or was inconclusive."""
        return self.checked_at is not None and not self.problems


@dataclass(frozen=True)
class _Claim:
    deployment_id: int
    environment: str
    plan_hash: str
    token: str


def _stored(record: DeploymentRecord) -> Mapping[str, Any]:
    stored = record.options.get(OPTION)
    return stored if isinstance(stored, Mapping) else {}


def _time(value: Any) -> datetime | None:
    try:
        return datetime.fromisoformat(str(value)) if value else None
    except ValueError:
        return None


def _findings(stored: Mapping[str, Any]) -> tuple[Finding, ...]:
    found = (Finding.from_json(item) for item in stored.get("findings") or ())
    return tuple(finding for finding in found if finding is not None)


def _current(record: DeploymentRecord, stored: Mapping[str, Any]) -> bool:
    """The stored preflight is finished and for the deployment's present plan."""
    return (stored.get("status") == "done"
            and stored.get("plan_hash") == (record.plan_hash or ""))


def evidence_of(record: DeploymentRecord) -> Evidence | None:
    """What the card shows of ``record``'s preflight: None unless it is a standard deployment
    that has not started; pending (``checking…``) until the checks ran for its present plan."""
    if record.kind is not ProcedureKind.STANDARD or record.state not in PREFLIGHT_STATES:
        return None
    stored = _stored(record)
    if not _current(record, stored):
        earlier = stored.get("plan_hash")
        return Evidence(stale=earlier is not None and earlier != (record.plan_hash or ""))
    return Evidence(_findings(stored), _time(stored.get("finished_at")))


class _PreflightContext:
    """The :class:`~procedures.playbooks.final_validation.CheckContext` of a preflight: the
    environment's platform and metrics (built only when a check asks), the bot's clock; the
    checks' reports are kept here, not posted (the findings go on the card)."""

    def __init__(self, services: PreflightServices, environment: str) -> None:
        self._services = services
        self.environment_name = environment
        self.reports: list[str] = []

    @property
    def environment(self) -> Environment:
        return self._services.policy.environments[self.environment_name]

    @property
    def policy(self) -> Policy:
        return self._services.policy

    @property
    def platform(self) -> Platform:
        return self._services.platforms.platform_for(self.environment_name)

    @property
    def metrics(self) -> MetricsSource:
        return self._services.platforms.metrics_for(self.environment_name)

    def now(self) -> datetime:
        return self._services.clock.now()

    def report(self, text: str, *, broadcast: bool = False) -> None:
        self.reports.append(text)


class Preflight:
    """Claims, runs and stores deployments' preflights (see the module docstring)."""

    def __init__(self, services: PreflightServices,
                 validation: FinalValidation | None = None) -> None:
        self._services = services
        self._http: HttpChecker | None = None
        if validation is None:
            self._http = HttpChecker()
            validation = FinalValidation(self._http, final_checks(services.settings))
        self._validation = validation

    # -- deciding -----------------------------------------------------------------------------

    def due(self, record: DeploymentRecord, now: datetime | None = None) -> bool:
        """``record`` needs its checks run: a waiting standard deployment with no preflight for
        its present plan, finished or under way (a claim older than :data:`LEASE` is dead)."""
        if record.kind is not ProcedureKind.STANDARD or record.state not in PREFLIGHT_STATES:
            return False
        stored = _stored(record)
        if stored.get("plan_hash") != (record.plan_hash or ""):
            return True
        if stored.get("status") == "done":
            return False
        claimed_at = _time(stored.get("claimed_at"))
        now = now or self._services.clock.now()
        return claimed_at is None or now - claimed_at >= LEASE

    # -- running ------------------------------------------------------------------------------

    def run(self, deployment_id: int, *, force: bool = False) -> PreflightResult:
        """The preflight of ``deployment_id``: the stored one when current (unless ``force``),
        else the checks run now and their findings stored."""
        record = self._services.deployments.get(deployment_id)
        if record is None:
            raise UserError(f"Deployment #{deployment_id} does not exist.")
        if record.kind is not ProcedureKind.STANDARD:
            raise UserError(f"#{deployment_id} is a {record.kind} deployment: only standard "
                            "deployments have a preflight.")
        if record.state not in PREFLIGHT_STATES:
            raise ConflictError(f"#{deployment_id} is {record.state.value.replace('_', ' ')}: "
                                "a preflight checks only deployments that have not started.")
        stored = _stored(record)
        if not force and _current(record, stored):
            return PreflightResult(deployment_id, record.plan_hash or "", _findings(stored),
                                   _time(stored.get("finished_at")), ran=False, stored=True)
        claim = self.claim(record, force=force)
        if claim is None:  # another worker holds a live claim (or the deployment moved on)
            return PreflightResult(deployment_id, record.plan_hash or "", (), None, ran=False,
                                   stored=False)
        return self.complete(claim)

    def claim(self, record: DeploymentRecord, *, force: bool = False) -> _Claim | None:
        """Take the preflight of ``record`` for this worker (one conditional update); None if
        it is not due (unless ``force``) or the deployment left the waiting states."""
        services = self._services
        current: DeploymentRecord | None = record
        for _ in range(WRITE_ATTEMPTS):
            if current is None or current.id is None or current.state not in PREFLIGHT_STATES:
                return None
            now = services.clock.now()
            if not force and not self.due(current, now):
                return None
            token = uuid.uuid4().hex
            plan = current.plan_hash or ""
            options = dict(current.options)
            options[OPTION] = {"plan_hash": plan, "claim": token,
                               "claimed_by": services.worker_id, "claimed_at": now.isoformat(),
                               "status": "running"}
            if services.deployments.transition(current.id, [current.state], current.state,
                                               expected_revision=current.revision,
                                               options=options):
                return _Claim(current.id, current.environment, plan, token)
            current = services.deployments.get(current.id)
        return None

    def complete(self, claim: _Claim) -> PreflightResult:
        """Run the checks of a claimed preflight, store the findings, update the card."""
        findings = self.check(claim.environment)
        finished = self._services.clock.now()
        stored = self._store(claim, findings, finished)
        if stored:
            services = self._services
            services.reporter.run_changed(services.views.snapshot(claim.deployment_id))
        return PreflightResult(claim.deployment_id, claim.plan_hash, findings, finished,
                               ran=True, stored=stored)

    def check(self, environment: str) -> tuple[Finding, ...]:
        """The findings of every final-validation check of ``environment``, read-only."""
        services = self._services
        try:
            state = services.environments.get(environment)
            live = Slot(state.live_slot) if state is not None and state.live_slot else None
            version = state.live_version if state is not None and live is not None else None
            context = _PreflightContext(services, environment)
            return self._validation.run(context, live, version, collect_all=True).findings
        except Exception as exc:  # the card says so; the run's final validation checks anyway
            log.exception("the preflight of %s could not run", environment)
            reason = exc.message if isinstance(exc, QlpError) else f"{type(exc).__name__}: {exc}"
            return (Finding("preflight", "Preflight", CheckVerdict.INCONCLUSIVE,
                            f"the checks could not run: {reason}"[:300], services.clock.now()),)

    def _store(self, claim: _Claim, findings: tuple[Finding, ...], finished: datetime) -> bool:
        """Write the findings if the claim is still the deployment's, for the same plan."""
        deployments = self._services.deployments
        for _ in range(WRITE_ATTEMPTS):
            current = deployments.get(claim.deployment_id)
            if current is None or current.state not in PREFLIGHT_STATES:
                return False
            stored = _stored(current)
            if (stored.get("claim") != claim.token
                    or (current.plan_hash or "") != claim.plan_hash):
                return False  # taken over, or the plan changed: that preflight's turn
            options = dict(current.options)
            options[OPTION] = {**stored, "status": "done", "finished_at": finished.isoformat(),
                               "findings": [finding.to_json() for finding in findings]}
            if deployments.transition(claim.deployment_id, [current.state], current.state,
                                      expected_revision=current.revision, options=options):
                return True
        return False

    def close(self) -> None:
        if self._http is not None:
            self._http.close()

    def __enter__(self) -> Preflight:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()


def run_preflight(services: PreflightServices, deployment_id: int, *,
                  force: bool = False) -> PreflightResult:
    """Run (or, unless ``force``, return the current) preflight of ``deployment_id`` and store
    its findings on the deployment; the card is updated when they are stored.

    For a scheduled deployment's T-2h validation, call it with ``force=True``: the checks run
    again even if findings for the same plan exist. Raises UserError for an unknown or
    non-standard deployment and ConflictError for one that has started or ended. Blocks for
    as long as the checks take (seconds; each has its own timeout): call it from the worker,
    never from a listener.
    """
    with Preflight(services) as preflight:
        return preflight.run(deployment_id, force=force)


class PreflightTask:
    """Worker task: runs the preflight of every waiting standard deployment that lacks one
    for its present plan, on a small pool of its own (the checks take seconds; outbox delivery
    must not wait for them)."""

    name = "preflight"

    def __init__(self, services: PreflightServices, *, max_parallel: int = 2) -> None:
        self._services = services
        self._preflight = Preflight(services)
        self._pool = ThreadPoolExecutor(max_workers=max_parallel,
                                        thread_name_prefix="qlp-preflight")
        self._running: dict[int, Future[PreflightResult]] = {}
        self._lock = threading.Lock()
        self._max = max_parallel

    def run_once(self) -> bool:
        with self._lock:
            self._running = {k: f for k, f in self._running.items() if not f.done()}
            if len(self._running) >= self._max:
                return False
            running = set(self._running)
        for record in self._waiting():
            if record.id is None or record.id in running or not self._preflight.due(record):
                continue
            claim = self._preflight.claim(record)
            if claim is None:
                continue
            with self._lock:
                self._running[claim.deployment_id] = self._pool.submit(self._complete, claim)
            return True
        return False

    def _complete(self, claim: _Claim) -> PreflightResult:
        try:
            return self._preflight.complete(claim)
        except BaseException:
            # Left claimed: after LEASE another pass takes it over and runs it again.
            log.exception("the preflight of #%s stopped unexpectedly", claim.deployment_id)
            raise

    def _waiting(self) -> list[DeploymentRecord]:
        return list(self._services.deployments.list_in_states(PREFLIGHT_STATES))

    def busy(self) -> bool:
        with self._lock:
            if any(not future.done() for future in self._running.values()):
                return True
        return any(self._preflight.due(record) for record in self._waiting())

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._preflight.close()
