"""record_step: a step row, the deployment's current_step and an audit row in ONE transaction."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from procedures.clock import FixedClock
from procedures.model import DeploymentState, ProcedureKind, StepState
from procedures.store import AuditEntry, NotRunning
from storage.audit import AuditLog
from storage.audit_group import GroupCommitAuditLog
from storage.db import Database
from storage.deployments import DeploymentRepository

S = DeploymentState
ENV = "production"


def _running(deployments: DeploymentRepository, worker: str = "w1") -> int:
    created = deployments.create(ProcedureKind.STANDARD, "1.0.0", ENV, "U1", state=S.QUEUED)
    claimed = deployments.claim_next(worker)
    assert claimed is not None and claimed.id == created.id and created.id is not None
    return created.id


def _started(attempt: int = 1) -> AuditEntry:
    return AuditEntry("w1", "step.started", ENV, {"step": "deploy", "attempt": attempt})


def test_step_row_current_step_and_audit_row_are_written_together(
    deployments: DeploymentRepository, audit: AuditLog, clock: FixedClock,
) -> None:
    deployment_id = _running(deployments)
    before = deployments.get(deployment_id)
    assert before is not None

    step = deployments.record_step(
        deployment_id, "deploy", 0, StepState.RUNNING, audit=_started(),
        current_step="deploy", running_for="w1", attempts=1, started_at=clock.now(),
    )

    assert (step.name, step.state, step.attempts, step.started_at) == (
        "deploy", StepState.RUNNING, 1, clock.now())
    stored = deployments.get_step(deployment_id, "deploy")
    assert stored is not None and stored.state is StepState.RUNNING and stored.id == step.id
    after = deployments.get(deployment_id)
    assert after is not None and after.current_step == "deploy"
    assert after.revision == before.revision + 1
    (event,) = audit.recent(deployment_id=deployment_id)
    assert (event.actor, event.action, event.environment, event.detail) == (
        "w1", "step.started", ENV, {"step": "deploy", "attempt": 1})
    assert event.at == clock.now()
    assert audit.verify().ok

    clock.advance(timedelta(seconds=3))
    done = deployments.record_step(
        deployment_id, "deploy", 0, StepState.SUCCEEDED,
        audit=AuditEntry("w1", "step.succeeded", ENV, {"step": "deploy"}),
        result={"slot": "green"}, finished_at=clock.now(), error=None,
    )
    assert (done.id, done.state, done.attempts, done.result) == (
        step.id, StepState.SUCCEEDED, 1, {"slot": "green"})
    assert done.started_at == clock.now() - timedelta(seconds=3)  # not given: kept
    unchanged = deployments.get(deployment_id)
    assert unchanged is not None and unchanged.current_step == "deploy"  # UNCHANGED by default
    assert unchanged.revision == after.revision
    assert [e.action for e in reversed(audit.recent(deployment_id=deployment_id))] == [
        "step.started", "step.succeeded"]
    assert audit.verify().ok


def test_current_step_none_clears_it_and_no_audit_writes_no_event(
    deployments: DeploymentRepository, audit: AuditLog,
) -> None:
    deployment_id = _running(deployments)
    deployments.record_step(deployment_id, "deploy", 0, StepState.UNDOING, current_step="deploy")
    deployments.record_step(deployment_id, "deploy", 0, StepState.UNDONE, current_step=None)
    record = deployments.get(deployment_id)
    assert record is not None and record.current_step is None
    assert audit.recent(deployment_id=deployment_id) == []
    with pytest.raises(ValueError, match="cannot set"):
        deployments.record_step(deployment_id, "deploy", 0, StepState.RUNNING, bogus=1)


def test_a_failing_audit_append_leaves_no_step_row_and_no_current_step(
    deployments: DeploymentRepository, audit: AuditLog,
) -> None:
    deployment_id = _running(deployments)
    bad = AuditEntry("w1", "step.started", ENV, {"ratio": float("nan")})  # not storable JSON
    with pytest.raises(ValueError):
        deployments.record_step(deployment_id, "deploy", 0, StepState.RUNNING, audit=bad,
                                current_step="deploy", running_for="w1", attempts=1)
    assert deployments.get_step(deployment_id, "deploy") is None
    record = deployments.get(deployment_id)
    assert record is not None and record.current_step is None
    assert audit.recent(deployment_id=deployment_id) == []
    assert audit.verify().ok


def test_a_database_error_in_the_audit_insert_rolls_the_step_back(
    database: Database, deployments: DeploymentRepository, audit: AuditLog,
) -> None:
    deployment_id = _running(deployments)
    deployments.record_step(deployment_id, "deploy", 0, StepState.SUCCEEDED, attempts=1)
    audit.append("w1", "before")
    # A row that squats the next id of the chain: the append's INSERT fails on the primary key.
    with database.connect() as connection, connection.begin():
        connection.execute(text(
            "INSERT INTO audit_events (id, at, actor, action, detail, prev_hash, hash) "
            "VALUES (2, CURRENT_TIMESTAMP, 'x', 'squatter', '{}', 'x', 'x')"))
    with pytest.raises(IntegrityError):
        deployments.record_step(
            deployment_id, "deploy", 0, StepState.FAILED, error="boom",
            audit=AuditEntry("w1", "step.failed", ENV, {"step": "deploy"}),
        )
    step = deployments.get_step(deployment_id, "deploy")
    assert step is not None and step.state is StepState.SUCCEEDED and step.error is None


@pytest.mark.parametrize("how", ["cancelled", "other worker", "requeued"])
def test_running_for_writes_nothing_unless_the_run_is_running_for_that_worker(
    deployments: DeploymentRepository, audit: AuditLog, how: str,
) -> None:
    deployment_id = _running(deployments)
    if how == "cancelled":
        assert deployments.transition(deployment_id, [S.RUNNING], S.ROLLING_BACK, error="x")
    elif how == "requeued":
        assert deployments.transition(deployment_id, [S.RUNNING], S.QUEUED, worker_id=None)
    worker = "w2" if how == "other worker" else "w1"
    before = deployments.get(deployment_id)
    assert before is not None
    with pytest.raises(NotRunning):
        deployments.record_step(deployment_id, "deploy", 0, StepState.RUNNING,
                                audit=_started(), current_step="deploy", running_for=worker)
    assert deployments.get_step(deployment_id, "deploy") is None
    after = deployments.get(deployment_id)
    assert after is not None
    assert (after.current_step, after.revision) == (None, before.revision)
    assert audit.recent(deployment_id=deployment_id) == []


def test_concurrent_record_steps_and_other_appenders_keep_one_valid_chain(
    database: Database, deployments: DeploymentRepository, audit: AuditLog, clock: FixedClock,
) -> None:
    group = GroupCommitAuditLog(audit, database, clock)
    ids = [_running(deployments, f"w{n}") for n in range(3)]
    barrier = threading.Barrier(5)
    errors: list[BaseException] = []

    def stepper(n: int) -> None:
        barrier.wait()
        for i in range(8):
            deployments.record_step(
                ids[n], f"s{i}", i, StepState.RUNNING, running_for=f"w{n}",
                current_step=f"s{i}", audit=AuditEntry(f"w{n}", "step.started", ENV, {"i": i}))

    def appender(n: int) -> None:
        barrier.wait()
        for i in range(8):
            (group if n else audit).append(f"U{n}", "command.help", detail={"i": i})

    def guarded(target: object, n: int) -> None:
        try:
            target(n)  # type: ignore[operator]
        except BaseException as error:  # reported below
            errors.append(error)

    threads = [threading.Thread(target=guarded, args=(stepper, n)) for n in range(3)]
    threads += [threading.Thread(target=guarded, args=(appender, n)) for n in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    result = audit.verify()
    assert result.ok and result.checked == 5 * 8
    for n, deployment_id in enumerate(ids):
        assert len(deployments.steps(deployment_id)) == 8
        assert len(audit.recent(100, deployment_id=deployment_id)) == 8, n


def test_given_fields_overwrite_an_existing_row_and_others_are_kept(
    deployments: DeploymentRepository, clock: FixedClock,
) -> None:
    deployment_id = _running(deployments)
    first = deployments.record_step(deployment_id, "deploy", 0, StepState.RUNNING,
                                    running_for="w1", current_step="deploy", attempts=1,
                                    started_at=clock.now(), error=None, result=None)
    retried = deployments.record_step(deployment_id, "deploy", 0, StepState.RUNNING,
                                      running_for="w1", attempts=2, error="attempt 1 failed")
    assert (retried.id, retried.attempts, retried.error) == (first.id, 2, "attempt 1 failed")
    assert retried.started_at == clock.now()
    again = deployments.upsert_step(deployment_id, "deploy", 1, StepState.SUCCEEDED, attempts=3)
    assert (again.id, again.position, again.attempts, again.error) == (
        first.id, 1, 3, "attempt 1 failed")
    stored = deployments.get_step(deployment_id, "deploy")
    assert stored is not None and (stored.state, stored.attempts) == (StepState.SUCCEEDED, 3)
