"""Processed requests, approvals and performance baselines."""

from __future__ import annotations

from datetime import timedelta

import pytest

from procedures.clock import FixedClock
from procedures.model import ProcedureKind
from storage.approvals import ApprovalRepository
from storage.baselines import BaselineRepository
from storage.db import Database
from storage.deployments import DeploymentRepository
from storage.requests import ProcessedRequests
from tests.conftest import _Factory
from tests.storage.concurrency import run_concurrently


def test_first_time(database: Database, clock: FixedClock) -> None:
    requests = ProcessedRequests(database, clock)
    assert requests.first_time("slack:retry:1")
    assert not requests.first_time("slack:retry:1")
    assert requests.first_time("slack:retry:2", outcome="queued #1")
    assert requests.outcome("slack:retry:2") == "queued #1"
    assert requests.set_outcome("slack:retry:1", "approved")
    assert requests.outcome("slack:retry:1") == "approved"
    assert requests.outcome("never") is None
    clock.advance(timedelta(hours=1))
    requests.first_time("fresh")
    assert requests.purge_before(clock.now() - timedelta(minutes=30)) == 2
    assert requests.first_time("slack:retry:1")


def test_first_time_race(database_factory: _Factory, clock: FixedClock) -> None:
    url = database_factory.url(migrated=True)
    repos = [ProcessedRequests(database_factory.open(url), clock) for _ in range(10)]
    results = run_concurrently(lambda i: repos[i].first_time("double-click"), 10)
    assert results.count(True) == 1


def test_approvals(database: Database, clock: FixedClock) -> None:
    deployment = DeploymentRepository(database, clock).create(
        ProcedureKind.STANDARD, "v1", "production", "U1"
    )
    approvals = ApprovalRepository(database, clock)
    assert approvals.record(deployment.id, "U2", "approve", "plan-a")
    assert not approvals.record(deployment.id, "U2", "approve", "plan-a")  # double click
    assert approvals.record(deployment.id, "U3", "approve", "plan-a", "lgtm")
    assert approvals.record(deployment.id, "U2", "approve", "plan-b")  # a new plan
    assert [a.actor for a in approvals.for_deployment(deployment.id, "plan-a")] == ["U2", "U3"]
    assert len(approvals.for_deployment(deployment.id)) == 3
    assert approvals.for_deployment(deployment.id)[0].created_at == clock.now()
    with pytest.raises(ValueError, match="unknown decision"):
        approvals.record(deployment.id, "U2", "maybe")


def test_baselines(database: Database, clock: FixedClock) -> None:
    baselines = BaselineRepository(database, clock)
    assert baselines.latest("production") is None
    baselines.record("production", "v1.0.0", {"p95_ms": 120.5, "error_rate": 0.001})
    clock.advance(timedelta(days=1))
    baselines.record("production", "v1.1.0", {"p95_ms": 110.0, "error_rate": 0.0005})
    baselines.record("staging", "v1.2.0", {"p95_ms": 300.0})
    latest = baselines.latest("production")
    assert latest is not None
    assert (latest.version, latest.metrics["p95_ms"]) == ("v1.1.0", 110.0)
    assert latest.recorded_at == clock.now()
    assert [b.version for b in baselines.history("production")] == ["v1.1.0", "v1.0.0"]
