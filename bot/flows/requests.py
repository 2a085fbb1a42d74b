"""Writing a request: the one place a deployment request is created, audited and announced.

Every kind (standard, scheduled, break-glass, hotfix, emergency, rollback, migration) comes
through :meth:`RequestWriter.open`: the request row and its audit rows are written in one
transaction (a crash leaves both or neither), then its card and first thread reply are queued
in the outbox, then the worker is woken. A repeated request (the same Slack request key)
returns the deployment the first one created and does nothing else.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from bot.plan import plan_hash
from procedures.clock import Clock
from procedures.model import DeploymentState, ProcedureKind
from procedures.reporting import Reporter, RunSnapshot
from procedures.store import DeploymentRecord
from procedures.windows import WindowPolicy

__all__ = ["WINDOWED_KINDS", "NewRequest", "RequestWriter"]

WINDOWED_KINDS = frozenset({ProcedureKind.STANDARD, ProcedureKind.MIGRATION})
"""The kinds the deployment window applies to (``procedures.decision``'s table)."""


class UnitOfWork(Protocol):
    """A database transaction (``storage.db.Database.session``)."""

    def session(self) -> Any: ...


class RequestRows(Protocol):
    """``storage.deployments.DeploymentRepository``'s writer."""

    def create_or_get(self, kind: ProcedureKind, version: str | None, environment: str,
                      requester: str, *, state: DeploymentState = ...,
                      reason: str | None = ..., options: Mapping[str, Any] | None = ...,
                      plan_hash: str | None = ..., channel: str | None = ...,
                      scheduled_at: datetime | None = ..., request_key: str | None = ...,
                      exclusive_of: Collection[DeploymentState] | None = ...,
                      session: Any = ...) -> tuple[DeploymentRecord, bool]: ...


class AuditTrail(Protocol):
    """``storage.audit``: one row per event, in the caller's transaction when given one."""

    def append(self, actor: str, action: str, *, deployment_id: int | None = None,
               environment: str | None = None, detail: Mapping[str, Any] | None = None,
               session: Any = None) -> Any: ...


class Snapshots(Protocol):
    """``bot.runs.RunViews``: a deployment as its card shows it."""

    def snapshot(self, deployment_id: int) -> RunSnapshot: ...


class LiveState(Protocol):
    """``storage.environments``: the live version, slot and lock of an environment."""

    def get(self, environment: str) -> Any: ...


@dataclass(frozen=True)
class NewRequest:
    """What a request asks for. ``audit`` are extra audit rows written with it (action,
    detail), e.g. ``override.requested``."""

    kind: ProcedureKind
    version: str | None
    environment: str
    requester: str
    reason: str | None = None
    options: Mapping[str, Any] = field(default_factory=dict)
    scheduled_at: datetime | None = None
    request_key: str | None = None
    action: str = "deployment.requested"
    audit: Sequence[tuple[str, Mapping[str, Any]]] = ()


class RequestWriter:
    """Creates requests (see the module docstring)."""

    def __init__(self, *, database: UnitOfWork, deployments: RequestRows, audit: AuditTrail,
                 views: Snapshots, reporter: Reporter, environments: LiveState,
                 windows_for: Callable[[str], WindowPolicy], clock: Clock, channel: str,
                 wake_worker: Callable[[], None]) -> None:
        self._db = database
        self._deployments = deployments
        self._audit = audit
        self._views = views
        self._reporter = reporter
        self._environments = environments
        self._windows_for = windows_for
        self._clock = clock
        self._channel = channel
        self._wake = wake_worker

    def evidence(self, environment: str, *, at: datetime | None = None,
                 kind: ProcedureKind = ProcedureKind.STANDARD) -> dict[str, Any]:
        """What a request is judged on, from the bot's own state (no network on a listener):
        the live version and slot, a person's lock, and for the kinds the window applies to
        (standard, migration) the window's rule (at ``at`` when that is still ahead, else now).
        A change of any of it before the run resets approvals; a hotfix, an emergency or a
        rollback ignores the window, so a window that closes does not reset theirs."""
        state = self._environments.get(environment)
        now = self._clock.now()
        evidence: dict[str, Any] = {
            "live_version": state.live_version if state else None,
            "live_slot": str(state.live_slot) if state and state.live_slot else None,
            "lock": state.lock_holder if state and state.lock_deployment_id is None else None,
        }
        if ProcedureKind(kind) in WINDOWED_KINDS:
            at = at if at is not None and at > now else now
            evidence["window"] = self._windows_for(environment).verdict(at).rule.value
        return evidence

    def open(self, new: NewRequest, *, announce: Callable[[int], str],
             broadcast: bool = False) -> tuple[DeploymentRecord, bool]:
        """Write ``new`` (PENDING_APPROVAL) with its evidence and plan hash, audit it, post its
        card and ``announce(id)`` as its first thread reply. (deployment, created)."""
        evidence = self.evidence(new.environment, at=new.scheduled_at, kind=new.kind)
        options = {**new.options, "evidence": evidence}
        digest = plan_hash(new.kind, new.version, new.environment, options, evidence)
        with self._db.session() as s:
            deployment, created = self._deployments.create_or_get(
                new.kind, new.version, new.environment, new.requester,
                state=DeploymentState.PENDING_APPROVAL, reason=new.reason, options=options,
                plan_hash=digest, channel=self._channel, scheduled_at=new.scheduled_at,
                request_key=new.request_key, session=s)
            assert deployment.id is not None
            if created:
                detail: dict[str, Any] = {"version": new.version, "kind": new.kind.value,
                                          "reason": new.reason, "options": options,
                                          "plan_hash": digest}
                if new.scheduled_at is not None:
                    detail["at"] = new.scheduled_at.isoformat()
                self._audit.append(new.requester, new.action, deployment_id=deployment.id,
                                   environment=new.environment, detail=detail, session=s)
                for action, extra in new.audit:
                    self._audit.append(new.requester, action, deployment_id=deployment.id,
                                       environment=new.environment, detail=dict(extra),
                                       session=s)
        if not created:
            return deployment, False
        run = self._views.snapshot(deployment.id)
        self._reporter.run_changed(run)
        self._reporter.event(run, announce(deployment.id), broadcast=broadcast)
        self._wake()
        return deployment, True
