"""Another environment a run acts on besides its own: the rehearsal on staging (seed 2.2).

A standard deployment to an environment with ``promoted_from`` first rehearses the same version
on that environment (``procedures.playbooks.rehearsal``). Its steps act there through a
:class:`LoanedEnvironment`, which the engine hands out (``EngineContext.other_environment``):
that environment's platform and metrics (the same factories the engine uses for runs there),
its state record (``record_switch``: ``/qlp status staging`` shows the version) and its lock.

The lock is taken the way the engine takes a run's own (``procedures.engine``): holder the
requester, deployment this run, owner this worker, heartbeated with the run's own lock, so a
run on staging waits in line (the gate and the engine see "deployment #N holds the lock on
staging") and a person's ``/qlp lock staging`` stops the rehearsal. The engine's side,
:class:`EnvironmentLoans`, releases every borrowed lock when the run ends, parks them (owner
cleared, so the stale-lock reaper leaves them) when the run needs attention or is taken over,
and heartbeats them while the run lives.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol, runtime_checkable

from procedures.errors import StepFailure
from procedures.model import DeploymentState, Slot
from procedures.platforms.base import Platform
from procedures.playbook import MetricsSource
from procedures.policy import Environment, Policy
from procedures.store import AuditSink, DeploymentRecord, DeploymentStore, EnvironmentStore

__all__ = ["Busy", "EnvironmentLoans", "LoanedEnvironment", "ReachesOtherEnvironments",
           "park_borrowed"]

log = logging.getLogger(__name__)

_UNDER_WAY = (DeploymentState.QUEUED, DeploymentState.RUNNING, DeploymentState.ROLLING_BACK)


@dataclass(frozen=True)
class Busy:
    """Who holds an environment's lock that a run could not take."""

    environment: str
    holder: str | None  # a Slack user id
    reason: str | None
    deployment_id: int | None
    run_state: DeploymentState | None  # the holding deployment's state, when a run holds it
    owned: bool  # a live worker owns it (heartbeats); False: parked, or a person's

    @property
    def run_under_way(self) -> bool:
        """A queued, running or rolling-back deployment holds it: it will let go by itself."""
        return (self.deployment_id is not None and self.owned
                and self.run_state in _UNDER_WAY)

    def describe(self) -> str:
        """``deployment #7 (running) holds the lock on staging`` and the like: plain text (a
        step's report is escaped, so a person is named by their Slack id, not a mention)."""
        env = self.environment
        why = f" ({self.reason})" if self.reason else ""
        if self.deployment_id is not None:
            state = self.run_state.value.replace("_", " ") if self.run_state else "unknown"
            if self.run_state is DeploymentState.NEEDS_ATTENTION or not self.owned:
                return (f"{env} stays locked after deployment #{self.deployment_id} "
                        f"({state}){why}")
            return f"deployment #{self.deployment_id} ({state}) holds the lock on {env}{why}"
        who = f"Slack user {self.holder}" if self.holder else "someone"
        return f"{env} is locked by {who}{why}"


class LoanedEnvironment(Protocol):
    """Another environment, as a step of this run may act on it."""

    @property
    def name(self) -> str: ...
    @property
    def environment(self) -> Environment: ...
    @property
    def platform(self) -> Platform: ...
    @property
    def metrics(self) -> MetricsSource: ...

    def lock(self) -> Busy | None:
        """Take (or take again, after a restart) this environment's lock for the run; None
        when held, else who holds it. A store that cannot answer raises (retryable)."""
        ...

    def unlock(self) -> None:
        """Let go of the lock (the rehearsal is over); nothing if the run does not hold it."""
        ...

    def record_switch(self, live: Slot, version: str) -> None:
        """Record in the bot's state which colour and version serve this environment now."""
        ...


@runtime_checkable
class ReachesOtherEnvironments(Protocol):
    """Optional on a step context: hands out another environment of the policy. The engine's
    context has it; a step checks with ``isinstance`` and says so when it is missing."""

    def other_environment(self, name: str) -> LoanedEnvironment: ...


class EnvironmentLoans:
    """The engine's side, one per run: the environments this run borrowed and their locks.

    ``owner`` is called each time a lock is taken or beaten (the run's worker id). Thread-safe:
    the run's pulse thread heartbeats while a step takes or lets go of a lock.
    """

    def __init__(self, *, deployment_id: int, requester: str, home: str, policy: Policy,
                 environments: EnvironmentStore, deployments: DeploymentStore,
                 audit: AuditSink, worker_id: str, now: Callable[[], datetime],
                 platform_for: Callable[[str], Platform],
                 metrics_for: Callable[[str], MetricsSource]) -> None:
        self.deployment_id = deployment_id
        self.requester = requester
        self.home = home
        self.policy = policy
        self.environments = environments
        self.deployments = deployments
        self.audit = audit
        self.worker_id = worker_id
        self.now = now
        self.platform_for = platform_for
        self.metrics_for = metrics_for
        self._held: set[str] = set()
        self._loans: dict[str, _Loan] = {}
        self._mutex = threading.Lock()

    @property
    def reason(self) -> str:
        return f"rehearsal of #{self.deployment_id} for {self.home}"

    def get(self, name: str) -> LoanedEnvironment:
        if name == self.home:
            raise StepFailure(f"{name} is this run's own environment, not another one")
        if name not in self.policy.environments:
            raise StepFailure(f"environment {name!r} is not in the policy")
        with self._mutex:
            if name not in self._loans:
                self._loans[name] = _Loan(self, name)
            return self._loans[name]

    @property
    def held(self) -> frozenset[str]:
        with self._mutex:
            return frozenset(self._held)

    def _candidates(self) -> set[str]:
        """What this run may hold: what it took in this life, and (taken in an earlier life,
        before a restart) the environment its own is promoted from."""
        names = set(self.held)
        source = self.policy.promoted_from(self.home)
        if source is not None:
            names.add(source)
        return names

    # -- the lock -------------------------------------------------------------------------------

    def take(self, name: str) -> Busy | None:
        for _ in range(3):  # a lock freed between our try and our read: try again
            if self.environments.acquire_lock(name, self.requester, self.reason,
                                              self.deployment_id, self.worker_id, self.now()):
                with self._mutex:
                    first = name not in self._held
                    self._held.add(name)
                if first:
                    self._audit(name, "lock.acquired", {"reason": self.reason})
                return None
            row = self.environments.get(name)
            if row is not None and row.lock_holder is not None:
                break
        else:
            raise StepFailure(f"could not take the lock on {name}", retryable=True)
        holder: DeploymentRecord | None = None
        if row.lock_deployment_id is not None:
            holder = self.deployments.get(row.lock_deployment_id)
        return Busy(name, row.lock_holder, row.lock_reason, row.lock_deployment_id,
                    holder.state if holder is not None else None,
                    owned=row.lock_owner is not None)

    def give_back(self, name: str) -> None:
        with self._mutex:
            held = name in self._held
            self._held.discard(name)
        if self.environments.release_lock(name, self.deployment_id) or held:
            self._audit(name, "lock.released", {"reason": self.reason})

    def heartbeat(self, now: datetime) -> list[str]:
        """Beat every borrowed lock; the names whose lock is no longer ours."""
        return [name for name in sorted(self.held)
                if not self.environments.heartbeat(name, self.worker_id, now)]

    def release_all(self) -> None:
        """The run ended: every lock it borrowed (in this life or an earlier one) is freed.
        A failure is logged; the lock's heartbeat then goes stale and the reaper frees it."""
        for name in sorted(self._candidates()):
            try:
                self.give_back(name)
            except Exception:
                log.warning("could not release the lock on %s", name, exc_info=True)

    def park_for_hand_over(self) -> None:
        """The run is handed to another worker (a graceful stop): the locks it borrowed stay
        its own, without an owner until the next worker takes them again (re-entrant)."""
        for name in sorted(self.held):
            self.environments.acquire_lock(name, self.requester, self.reason,
                                           self.deployment_id, None, self.now())
            with self._mutex:
                self._held.discard(name)

    def park_all(self, message: str) -> None:
        """The run needs attention: the environments it still holds stay locked, without an
        owner (the reaper never frees them), labelled like the run's own."""
        for name in sorted(self._candidates()):
            row = self.environments.get(name)
            if row is None or row.lock_deployment_id != self.deployment_id:
                continue
            self.environments.acquire_lock(
                name, self.requester, f"needs attention after #{self.deployment_id}: "
                f"{message}", self.deployment_id, None, self.now())
            with self._mutex:
                self._held.discard(name)

    def _audit(self, name: str, action: str, detail: dict[str, str]) -> None:
        self.audit.append(self.worker_id or "engine", action,
                          deployment_id=self.deployment_id, environment=name, detail=detail)


class _Loan:
    """One :class:`LoanedEnvironment` of one run."""

    def __init__(self, loans: EnvironmentLoans, name: str) -> None:
        self._loans = loans
        self._name = name
        self._platform: Platform | None = None
        self._metrics: MetricsSource | None = None

    @property
    def name(self) -> str:
        return self._name

    @property
    def environment(self) -> Environment:
        return self._loans.policy.environments[self._name]

    @property
    def platform(self) -> Platform:
        if self._platform is None:
            self._platform = self._loans.platform_for(self._name)
        return self._platform

    @property
    def metrics(self) -> MetricsSource:
        if self._metrics is None:
            self._metrics = self._loans.metrics_for(self._name)
        return self._metrics

    def lock(self) -> Busy | None:
        return self._loans.take(self._name)

    def unlock(self) -> None:
        self._loans.give_back(self._name)

    def record_switch(self, live: Slot, version: str) -> None:
        self._loans.environments.record_switch(self._name, live, version)


def park_borrowed(environments: EnvironmentStore, policy: Policy, record: DeploymentRecord,
                  owner: str | None, now: datetime) -> None:
    """A taken-over run (``Engine.recover``): the lock it borrowed on the environment its own
    is promoted from is parked with ``owner`` like its own lock, so the stale-lock reaper does
    not free a half-rehearsed staging before the run resumes and takes it again."""
    source = policy.promoted_from(record.environment)
    if source is None:
        return
    row = environments.get(source)
    if row is None or row.lock_deployment_id != record.id:
        return
    environments.acquire_lock(source, row.lock_holder or record.requester, row.lock_reason,
                              record.id, owner, now)
