"""``DecisionRecorder.count_approval``: the count of a break-glass request never passes the
rule's number, whatever the interleaving of clicks (issue 11: "recorded (2 of 1)")."""

from __future__ import annotations

from procedures.clock import FixedClock
from procedures.model import DeploymentState, ProcedureKind
from storage.approvals import ApprovalRepository
from storage.audit import AuditLog
from storage.db import Database
from storage.decisions import DecisionRecorder, Outcome
from storage.deployments import DeploymentRepository
from tests.storage.concurrency import run_concurrently


def _pending(deployments: DeploymentRepository) -> int:
    deployment = deployments.create(ProcedureKind.STANDARD, "v1.2.3", "production", "U0DEV",
                                    plan_hash="plan-a", options={"override": {"reason": "x"}})
    assert deployment.id is not None
    return deployment.id


def test_ten_approvers_at_once_count_exactly_the_required_number(
        database: Database, clock: FixedClock, deployments: DeploymentRepository,
        audit: AuditLog) -> None:
    recorder = DecisionRecorder(database, clock)
    deployment_id = _pending(deployments)
    decisions = run_concurrently(
        lambda i: recorder.count_approval(deployment_id, f"U0LEAD{i}", required=2), 10)
    recorded = [d for d in decisions if d.outcome is Outcome.RECORDED]
    assert sorted(len(d.approvers) for d in recorded) == [1, 2]
    assert all(d.outcome is Outcome.ENOUGH for d in decisions if d not in recorded)
    assert all(len(d.approvers) == 2 for d in decisions if d not in recorded)
    rows = ApprovalRepository(database, clock).for_deployment(deployment_id)
    assert len(rows) == 2
    # Counting never moves the request on: a break-glass request also waits for its grant.
    assert deployments.get(deployment_id).state is DeploymentState.PENDING_APPROVAL
    counts = sorted(e.detail["count"] for e in audit.recent(100)
                    if e.action == "deployment.approved")
    assert counts == [1, 2]


def test_the_granter_does_not_count_and_a_repeated_approval_is_told_so(
        database: Database, clock: FixedClock, deployments: DeploymentRepository) -> None:
    recorder = DecisionRecorder(database, clock)
    deployment_id = _pending(deployments)
    approvals = ApprovalRepository(database, clock)
    assert approvals.record(deployment_id, "U0HEAD1", "approve", "plan-a")
    first = recorder.count_approval(deployment_id, "U0LEAD1", required=1,
                                    not_counting="U0HEAD1")
    assert first.outcome is Outcome.RECORDED and first.approvers == ("U0LEAD1",)
    again = recorder.count_approval(deployment_id, "U0LEAD1", required=1,
                                    not_counting="U0HEAD1")
    assert again.outcome is Outcome.ALREADY_DECIDED
    assert deployments.transition(deployment_id, [DeploymentState.PENDING_APPROVAL],
                                  DeploymentState.QUEUED)
    late = recorder.count_approval(deployment_id, "U0LEAD2", required=1)
    assert late.outcome is Outcome.NOT_PENDING and late.state is DeploymentState.QUEUED
