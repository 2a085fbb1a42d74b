"""Approve / reject a pending deployment exactly once, in one transaction.

Two approvers pressing at once, a double click, or Slack retrying the request: whatever the
interleaving, exactly one transaction moves the deployment on, and every other caller is told
what happened instead. The deployment's ``revision`` is bumped by a conditional UPDATE first,
which serialises concurrent deciders (PostgreSQL row lock; SQLite takes the write lock at
BEGIN), so the approval row, the count, the state change and the audit row commit together.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from sqlmodel import Session, col, select

from procedures.clock import Clock
from procedures.model import DeploymentState
from storage.approvals import ApprovalRepository
from storage.audit import AuditLog
from storage.db import Database
from storage.deployments import DeploymentRepository
from storage.models import Approval, Deployment


class Outcome(StrEnum):
    """What a decision did."""

    RECORDED = "recorded"  # counted; more approvals are needed
    QUEUED = "queued"  # this approval completed the count: the run is queued
    SCHEDULED = "scheduled"  # completed the count of a deployment whose time is still ahead
    REJECTED = "rejected"  # this rejection ended the request
    ALREADY_DECIDED = "already_decided"  # this person already approved this plan
    ENOUGH = "enough"  # the count was already complete (waiting for something else): not counted
    NOT_PENDING = "not_pending"  # the deployment is no longer waiting for decisions
    NOT_FOUND = "not_found"


@dataclass(frozen=True)
class Decision:
    """The result of one click, with what the loser of a race needs to be told."""

    outcome: Outcome
    state: DeploymentState | None
    approvers: tuple[str, ...]  # who approved the current plan, in order
    decided_by: str | None = None  # who moved it on (for "already approved by ...")


class DecisionRecorder:
    """Atomic approve/reject on pending deployments."""

    def __init__(self, database: Database, clock: Clock) -> None:
        self._db = database
        self._clock = clock
        self._deployments = DeploymentRepository(database, clock)
        self._approvals = ApprovalRepository(database, clock)
        self._audit = AuditLog(database, clock)

    def approve(self, deployment_id: int, actor: str, *, required: int) -> Decision:
        """Count ``actor``'s approval of the deployment's current plan."""
        return self._decide(deployment_id, actor, "approve", required=required, reason=None)

    def count_approval(self, deployment_id: int, actor: str, *, required: int,
                       not_counting: str | None = None,
                       detail: Mapping[str, Any] | None = None) -> Decision:
        """Count ``actor``'s approval without moving the deployment on (a break-glass request
        is queued by whoever completes both the count and the grant, ``bot.override``).

        Serialised like :meth:`approve`, so the count never passes ``required``: once it is
        complete a further approval is not recorded (``ENOUGH``), whatever the interleaving.
        ``not_counting`` is a person whose approval does not count (the override's granter).
        Returns RECORDED with the counted approvers, this one last.
        """
        def check(deployment: Deployment, approvers: tuple[str, ...]) -> Decision | None:
            if actor in approvers:
                return Decision(Outcome.ALREADY_DECIDED, deployment.state, approvers, actor)
            if len(approvers) >= required:
                return Decision(Outcome.ENOUGH, deployment.state, approvers)
            return None

        def record(s: Session, deployment: Deployment, plan: str,
                   approvers: tuple[str, ...]) -> Decision:
            self._approvals.record(deployment_id, actor, "approve", plan, session=s)
            approvers = (*approvers, actor)
            self._audit.append(actor, "deployment.approved", session=s,
                               deployment_id=deployment_id,
                               environment=deployment.environment,
                               detail={**(detail or {}), "plan_hash": plan,
                                       "count": len(approvers), "required": required})
            return Decision(Outcome.RECORDED, DeploymentState.PENDING_APPROVAL, approvers,
                            actor)

        return self._in_turn(deployment_id, check, record, what="the approval",
                             not_counting=not_counting)

    def reject(self, deployment_id: int, actor: str, reason: str | None = None) -> Decision:
        """Reject the request; it ends REJECTED."""
        return self._decide(deployment_id, actor, "reject", required=1, reason=reason)

    def _decide(self, deployment_id: int, actor: str, decision: str, *, required: int,
                reason: str | None) -> Decision:
        def check(deployment: Deployment, approvers: tuple[str, ...]) -> Decision | None:
            if decision == "approve" and actor in approvers:
                return Decision(Outcome.ALREADY_DECIDED, deployment.state, approvers, actor)
            return None

        def record(s: Session, deployment: Deployment, plan: str,
                   approvers: tuple[str, ...]) -> Decision:
            self._approvals.record(deployment_id, actor, decision, plan, reason, session=s)
            detail = {"plan_hash": plan, "reason": reason}
            if decision == "reject":
                self._deployments.transition(
                    deployment_id, [DeploymentState.PENDING_APPROVAL],
                    DeploymentState.REJECTED, error=f"rejected by <@{actor}>"
                    + (f": {reason}" if reason else ""), session=s)
                self._audit.append(actor, "deployment.rejected", session=s,
                                   deployment_id=deployment_id,
                                   environment=deployment.environment, detail=detail)
                return Decision(Outcome.REJECTED, DeploymentState.REJECTED, approvers, actor)
            approvers = (*approvers, actor)
            queued = len(approvers) >= required
            # A scheduled deployment approved ahead of its time waits for the scheduler.
            later = deployment.scheduled_at is not None and \
                deployment.scheduled_at > self._clock.now()
            target = DeploymentState.SCHEDULED if later else DeploymentState.QUEUED
            if queued:
                self._deployments.transition(
                    deployment_id, [DeploymentState.PENDING_APPROVAL], target, session=s)
            self._audit.append(actor, "deployment.approved", session=s,
                               deployment_id=deployment_id,
                               environment=deployment.environment,
                               detail={**detail, "count": len(approvers),
                                       "required": required, "queued": queued})
            if not queued:
                return Decision(Outcome.RECORDED, DeploymentState.PENDING_APPROVAL,
                                approvers, actor)
            return Decision(Outcome.SCHEDULED if later else Outcome.QUEUED, target,
                            approvers, actor)

        return self._in_turn(deployment_id, check, record, what="the decision")

    def _in_turn(self, deployment_id: int,
                 check: Callable[[Deployment, tuple[str, ...]], Decision | None],
                 record: Callable[[Session, Deployment, str, tuple[str, ...]], Decision], *,
                 what: str, not_counting: str | None = None) -> Decision:
        """One decider at a time on a pending deployment: read it and its approvers of the
        current plan (less ``not_counting``), let ``check`` answer at once (already decided,
        enough), then bump the revision (only the transaction that does goes on; a loser
        reads again) and ``record`` in that same transaction."""
        for _ in range(10):
            with self._db.session() as s:
                deployment = s.get(Deployment, deployment_id, populate_existing=True)
                if deployment is None:
                    return Decision(Outcome.NOT_FOUND, None, ())
                plan = deployment.plan_hash or ""
                approvers = tuple(a for a in self._approvers(s, deployment_id, plan)
                                  if a != not_counting)
                if deployment.state is not DeploymentState.PENDING_APPROVAL:
                    return Decision(Outcome.NOT_PENDING, deployment.state, approvers,
                                    self._last_decider(s, deployment_id))
                answer = check(deployment, approvers)
                if answer is not None:
                    return answer
                if not self._deployments.transition(
                        deployment_id, [DeploymentState.PENDING_APPROVAL],
                        DeploymentState.PENDING_APPROVAL,
                        expected_revision=deployment.revision, session=s):
                    s.rollback()
                    continue
                return record(s, deployment, plan, approvers)
        raise RuntimeError(f"deployment #{deployment_id}: could not record {what}")

    @staticmethod
    def _approvers(session: object, deployment_id: int, plan: str) -> tuple[str, ...]:
        rows = session.exec(  # type: ignore[attr-defined]
            select(Approval).where(col(Approval.deployment_id) == deployment_id,
                                   col(Approval.decision) == "approve",
                                   col(Approval.plan_hash) == plan)
            .order_by(col(Approval.id))).all()
        return tuple(row.actor for row in rows)

    @staticmethod
    def _last_decider(session: object, deployment_id: int) -> str | None:
        row = session.exec(  # type: ignore[attr-defined]
            select(Approval).where(col(Approval.deployment_id) == deployment_id)
            .order_by(col(Approval.id).desc())).first()
        return row.actor if row else None
