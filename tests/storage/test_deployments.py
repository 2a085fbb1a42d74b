"""Deployments: idempotent create, conditional transitions, claiming, step runs."""

from __future__ import annotations

from datetime import timedelta

import pytest

from procedures.clock import FixedClock
from procedures.model import DeploymentState, ProcedureKind, StepState
from storage.deployments import DeploymentRepository
from tests.conftest import _Factory
from tests.storage.concurrency import run_concurrently

S = DeploymentState


def _create(repo: DeploymentRepository, env: str = "staging", **kw: object):
    return repo.create(ProcedureKind.STANDARD, "v1.2.3", env, "U1", **kw)  # type: ignore[arg-type]


def test_create_and_get(deployments: DeploymentRepository, clock: FixedClock) -> None:
    created = _create(
        deployments, options={"maintenance": True}, channel="C1", reason="weekly",
        scheduled_at=clock.now() + timedelta(days=1),
    )
    assert created.id is not None
    got = deployments.get(created.id)
    assert got is not None
    assert got.kind is ProcedureKind.STANDARD
    assert got.state is S.PENDING_APPROVAL
    assert got.state.terminal is False
    assert got.options == {"maintenance": True}
    assert (got.revision, got.channel, got.reason) == (0, "C1", "weekly")
    assert got.created_at == clock.now()
    assert got.scheduled_at == clock.now() + timedelta(days=1)
    assert got.scheduled_at.tzinfo is not None
    assert deployments.get(9999) is None


def test_create_is_idempotent_per_request_key(deployments: DeploymentRepository) -> None:
    first, created = deployments.create_or_get(
        ProcedureKind.HOTFIX, "v1.2.4", "production", "U1", request_key="slack:abc"
    )
    again, created_again = deployments.create_or_get(
        ProcedureKind.HOTFIX, "v1.2.4", "production", "U1", request_key="slack:abc"
    )
    assert (created, created_again) == (True, False)
    assert again.id == first.id
    assert _create(deployments, request_key="slack:abc").id == first.id
    assert len(deployments.list_recent(limit=10)) == 1


def test_concurrent_creates_with_one_request_key(
    database_factory: _Factory, clock: FixedClock
) -> None:
    url = database_factory.url(migrated=True)
    repos = [DeploymentRepository(database_factory.open(url), clock) for _ in range(8)]
    results = run_concurrently(
        lambda i: repos[i].create_or_get(
            ProcedureKind.STANDARD, "v1", "staging", "U1", request_key="retry-1"
        ),
        8,
    )
    assert len({d.id for d, _ in results}) == 1
    assert sum(created for _, created in results) == 1


def test_transition_is_conditional_and_bumps_the_revision(
    deployments: DeploymentRepository, clock: FixedClock
) -> None:
    d = _create(deployments)
    assert not deployments.transition(d.id, [S.QUEUED], S.RUNNING)  # wrong from-state
    assert deployments.transition(d.id, [S.PENDING_APPROVAL], S.QUEUED, plan_hash="p1")
    assert not deployments.transition(
        d.id, [S.QUEUED], S.CANCELLED, expected_revision=0
    )  # stale revision
    clock.advance(timedelta(minutes=5))
    assert deployments.transition(d.id, [S.QUEUED], S.RUNNING, expected_revision=1)
    running = deployments.get(d.id)
    assert (running.state, running.revision, running.plan_hash) == (S.RUNNING, 2, "p1")
    assert running.started_at == clock.now()
    assert running.updated_at == clock.now()
    clock.advance(timedelta(minutes=5))
    assert deployments.transition(d.id, [S.RUNNING], S.SUCCEEDED, current_step=None)
    done = deployments.get(d.id)
    assert done.finished_at == clock.now()
    assert done.started_at == clock.now() - timedelta(minutes=5)
    with pytest.raises(ValueError, match="cannot set"):
        deployments.transition(d.id, [S.SUCCEEDED], S.FAILED, revision=99)


def test_exactly_one_of_ten_racing_transitions_wins(
    database_factory: _Factory, clock: FixedClock
) -> None:
    url = database_factory.url(migrated=True)
    repos = [DeploymentRepository(database_factory.open(url), clock) for _ in range(10)]
    d = _create(repos[0])
    outcomes = run_concurrently(
        lambda i: repos[i].transition(
            d.id, [S.PENDING_APPROVAL], S.QUEUED if i % 2 else S.REJECTED,
            error=f"worker {i}",
        ),
        10,
    )
    assert outcomes.count(True) == 1
    winner = outcomes.index(True)
    final = repos[0].get(d.id)
    assert final.revision == 1
    assert final.error == f"worker {winner}"


def test_claim_next_takes_the_oldest_queued(
    deployments: DeploymentRepository, clock: FixedClock
) -> None:
    assert deployments.claim_next("w1", clock.now()) is None
    older = _create(deployments, state=S.QUEUED)
    clock.advance(timedelta(seconds=1))
    _create(deployments, state=S.PENDING_APPROVAL)
    newer = _create(deployments, env="production", state=S.QUEUED)
    claimed = deployments.claim_next("w1", clock.now())
    assert claimed is not None
    assert claimed.id == older.id
    assert (claimed.state, claimed.worker_id, claimed.revision) == (S.RUNNING, "w1", 1)
    assert claimed.heartbeat_at == clock.now()
    assert deployments.claim_next("w2").id == newer.id
    assert deployments.claim_next("w3") is None
    assert [d.id for d in deployments.active_for("staging")] == [older.id]


def test_claim_next_race_claims_each_deployment_exactly_once(
    database_factory: _Factory, clock: FixedClock
) -> None:
    url = database_factory.url(migrated=True)
    repos = [DeploymentRepository(database_factory.open(url), clock) for _ in range(6)]
    queued = {_create(repos[0], env=f"env{i}", state=S.QUEUED).id for i in range(20)}

    def work(i: int) -> list[int]:
        mine: list[int] = []
        while (d := repos[i].claim_next(f"w{i}")) is not None:
            mine.append(d.id)
        return mine

    claims = run_concurrently(work, 6)
    flat = [d for chunk in claims for d in chunk]
    assert sorted(flat) == sorted(queued)
    for i, chunk in enumerate(claims):
        for deployment_id in chunk:
            assert repos[0].get(deployment_id).worker_id == f"w{i}"


def test_heartbeat_and_stale(deployments: DeploymentRepository, clock: FixedClock) -> None:
    d = _create(deployments, state=S.QUEUED)
    deployments.claim_next("w1")
    clock.advance(timedelta(minutes=1))
    assert deployments.heartbeat(d.id, "w1")
    assert not deployments.heartbeat(d.id, "w2")
    assert deployments.stale(timedelta(minutes=2)) == []
    clock.advance(timedelta(minutes=3))
    assert [x.id for x in deployments.stale(timedelta(minutes=2))] == [d.id]


def test_due_scheduled_and_listing(deployments: DeploymentRepository, clock: FixedClock) -> None:
    later = _create(deployments, state=S.SCHEDULED, scheduled_at=clock.now() + timedelta(hours=2))
    soon = _create(deployments, state=S.SCHEDULED, scheduled_at=clock.now() + timedelta(hours=1))
    _create(deployments, env="production")
    assert deployments.due_scheduled() == []
    clock.advance(timedelta(hours=1))
    assert [d.id for d in deployments.due_scheduled()] == [soon.id]
    clock.advance(timedelta(hours=1))
    assert [d.id for d in deployments.due_scheduled()] == [soon.id, later.id]
    assert [d.environment for d in deployments.list_recent(limit=2)] == ["production", "staging"]
    assert len(deployments.list_recent("staging")) == 2
    assert deployments.update_fields(soon.id, card_ts="1700000000.000100")
    assert deployments.get(soon.id).card_ts == "1700000000.000100"


def test_step_runs_upsert_and_list(deployments: DeploymentRepository, clock: FixedClock) -> None:
    d = _create(deployments)
    run = deployments.upsert_step(
        d.id, "deploy_green", 2, StepState.RUNNING, attempts=1, started_at=clock.now()
    )
    assert (run.state, run.attempts, run.result) == (StepState.RUNNING, 1, None)
    deployments.upsert_step(d.id, "preflight", 1, StepState.SUCCEEDED, result={"ok": True})
    clock.advance(timedelta(seconds=42))
    done = deployments.upsert_step(
        d.id, "deploy_green", 2, StepState.SUCCEEDED,
        finished_at=clock.now(), result={"slot": "green"},
    )
    assert done.id == run.id
    assert done.attempts == 1  # not given: unchanged
    assert done.started_at == clock.now() - timedelta(seconds=42)
    assert done.finished_at == clock.now()
    assert done.result == {"slot": "green"}
    assert [s.name for s in deployments.steps(d.id)] == ["preflight", "deploy_green"]
    step = deployments.get_step(d.id, "deploy_green")
    assert step is not None and step.state is StepState.SUCCEEDED
    assert deployments.get_step(d.id, "nope") is None
    with pytest.raises(ValueError, match="cannot set"):
        deployments.upsert_step(d.id, "x", 3, StepState.PENDING, bogus=1)
