"""Approval decisions on deployments."""

from __future__ import annotations

from sqlmodel import Session, col, select

from procedures.clock import Clock
from storage.db import Database
from storage.models import APPROVAL_DECISIONS, Approval
from storage.sql import insert_ignoring_conflict


class ApprovalRepository:
    """One row per (deployment, person, decision, plan); a repeated click records nothing."""

    def __init__(self, database: Database, clock: Clock) -> None:
        self._db = database
        self._clock = clock

    def record(
        self,
        deployment_id: int,
        actor: str,
        decision: str,
        plan_hash: str = "",
        reason: str | None = None,
        *,
        session: Session | None = None,
    ) -> bool:
        """Store a decision; False if this person already made it on this plan."""
        if decision not in APPROVAL_DECISIONS:
            raise ValueError(f"unknown decision {decision!r}; one of {APPROVAL_DECISIONS}")
        with self._db.using(session) as s:
            inserted = s.exec(
                insert_ignoring_conflict(
                    self._db,
                    Approval,
                    {
                        "deployment_id": deployment_id,
                        "actor": actor,
                        "decision": decision,
                        "plan_hash": plan_hash,
                        "reason": reason,
                        "created_at": self._clock.now(),
                    },
                    ["deployment_id", "actor", "decision", "plan_hash"],
                ).returning(col(Approval.id))
            ).scalar()
            return inserted is not None

    def for_deployment(
        self, deployment_id: int, plan_hash: str | None = None
    ) -> list[Approval]:
        """The decisions on a deployment (on one plan if ``plan_hash``), oldest first."""
        statement = select(Approval).where(col(Approval.deployment_id) == deployment_id)
        if plan_hash is not None:
            statement = statement.where(col(Approval.plan_hash) == plan_hash)
        with self._db.session(read_only=True) as s:
            return list(s.exec(statement.order_by(col(Approval.id))).all())
