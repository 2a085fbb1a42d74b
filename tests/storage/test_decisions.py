"""Approve/reject exactly once, whatever the interleaving of clicks."""

from __future__ import annotations

from procedures.clock import FixedClock
from procedures.model import DeploymentState, ProcedureKind
from storage.audit import AuditLog
from storage.db import Database
from storage.decisions import DecisionRecorder, Outcome
from storage.deployments import DeploymentRepository
from tests.storage.concurrency import run_concurrently


def _pending(deployments: DeploymentRepository) -> int:
    deployment = deployments.create(ProcedureKind.STANDARD, "v1.2.3", "production", "U0DEV",
                                    plan_hash="plan-a")
    assert deployment.id is not None
    return deployment.id


def test_ten_approvers_at_once_queue_it_exactly_once(
        database: Database, clock: FixedClock, deployments: DeploymentRepository,
        audit: AuditLog) -> None:
    recorder = DecisionRecorder(database, clock)
    deployment_id = _pending(deployments)
    decisions = run_concurrently(
        lambda i: recorder.approve(deployment_id, f"U0LEAD{i}", required=1), 10)
    winners = [d for d in decisions if d.outcome is Outcome.QUEUED]
    assert len(winners) == 1
    losers = [d for d in decisions if d is not winners[0]]
    assert all(d.outcome is Outcome.NOT_PENDING for d in losers)
    assert {d.decided_by for d in losers} == {winners[0].decided_by}
    assert deployments.get(deployment_id).state is DeploymentState.QUEUED
    approved = [e for e in audit.recent(100) if e.action == "deployment.approved"]
    assert len(approved) == 1


def test_two_of_two_needs_two_different_people(
        database: Database, clock: FixedClock, deployments: DeploymentRepository) -> None:
    recorder = DecisionRecorder(database, clock)
    deployment_id = _pending(deployments)
    assert recorder.approve(deployment_id, "U0LEAD1", required=2).outcome is Outcome.RECORDED
    again = recorder.approve(deployment_id, "U0LEAD1", required=2)
    assert again.outcome is Outcome.ALREADY_DECIDED
    final = recorder.approve(deployment_id, "U0LEAD2", required=2)
    assert final.outcome is Outcome.QUEUED
    assert final.approvers == ("U0LEAD1", "U0LEAD2")


def test_double_clicks_count_once(
        database: Database, clock: FixedClock, deployments: DeploymentRepository) -> None:
    recorder = DecisionRecorder(database, clock)
    deployment_id = _pending(deployments)
    decisions = run_concurrently(
        lambda i: recorder.approve(deployment_id, "U0LEAD1", required=2), 6)
    assert sum(d.outcome is Outcome.RECORDED for d in decisions) == 1
    assert all(d.outcome in (Outcome.RECORDED, Outcome.ALREADY_DECIDED) for d in decisions)
    assert deployments.get(deployment_id).state is DeploymentState.PENDING_APPROVAL


def test_reject_and_approve_race_one_wins(
        database: Database, clock: FixedClock, deployments: DeploymentRepository) -> None:
    recorder = DecisionRecorder(database, clock)
    deployment_id = _pending(deployments)

    def click(i: int) -> Outcome:
        if i % 2:
            return recorder.reject(deployment_id, f"U0REJ{i}", "not today").outcome
        return recorder.approve(deployment_id, f"U0APP{i}", required=1).outcome

    outcomes = run_concurrently(click, 8)
    assert sum(o in (Outcome.QUEUED, Outcome.REJECTED) for o in outcomes) == 1
    assert deployments.get(deployment_id).state in (DeploymentState.QUEUED,
                                                    DeploymentState.REJECTED)


def test_approvals_of_an_older_plan_do_not_count(
        database: Database, clock: FixedClock, deployments: DeploymentRepository) -> None:
    recorder = DecisionRecorder(database, clock)
    deployment_id = _pending(deployments)
    assert recorder.approve(deployment_id, "U0LEAD1", required=2).outcome is Outcome.RECORDED
    deployments.update_fields(deployment_id, plan_hash="plan-b")
    decision = recorder.approve(deployment_id, "U0LEAD2", required=2)
    assert decision.outcome is Outcome.RECORDED
    assert decision.approvers == ("U0LEAD2",)


def test_unknown_deployment(database: Database, clock: FixedClock) -> None:
    assert DecisionRecorder(database, clock).approve(999, "U1", required=1).outcome is \
        Outcome.NOT_FOUND
