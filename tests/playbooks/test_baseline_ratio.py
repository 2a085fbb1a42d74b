"""The monitor step applies ``error_rate_ratio`` to the previous version's recorded baseline.

Real engine, real repositories (SQLite and PostgreSQL), the real standard playbook on the
in-memory :class:`~tests.fakes.platform.FakePlatform` with the HTTP side of
``test_standard_failures`` (a ``MockTransport`` that answers as the fake platform would). The
previous version, 1.0.0, is live on blue and its baseline (a 1 % error rate) is recorded as
``record_baseline`` records one. The metrics source says the new version serves 6 errors in
200 requests: 3 %, under the absolute ``error_threshold`` (50), so only the ratio can act.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime

import httpx
import pytest

from procedures.checks.http import HttpChecker
from procedures.clock import FixedClock
from procedures.model import DeploymentState, ProcedureKind, Slot, StepState
from storage.baselines import BaselineRepository
from storage.db import Database
from tests.conftest import _Factory
from tests.engine.conftest import ENV, REQUESTER, START, Harness
from tests.fakes.policies import make_policy
from tests.playbooks.test_standard_failures import NEW, OLD, Web, World

S = DeploymentState


class SomeErrors:
    """The new slot's counters since the switch: 6 errors in 200 requests (3 %)."""

    def error_count(self, slot: Slot, since: datetime) -> int | None:
        return 6

    def request_count(self, slot: Slot, since: datetime) -> int | None:
        return 200


@pytest.fixture
def world(database: Database, database_factory: _Factory) -> Iterator[World]:
    policy = make_policy(monitoring={"duration": "3s", "interval": "1s",
                                     "health_failure_ratio": 0.5, "response_time_ms": 2000,
                                     "error_threshold": 50, "error_rate_ratio": 2})
    h = Harness(database=database, factory=database_factory, clock=FixedClock(START),
                policy=policy)
    h.environments.record_switch(ENV, Slot.BLUE, OLD)
    http = HttpChecker(transport=httpx.MockTransport(Web(h.platform)))
    try:
        yield World(h, Web(h.platform), http)
    finally:
        http.close()


def _run(world: World) -> tuple[DeploymentState, int]:
    engine = world.h.engine(world.playbook(), metrics_for=lambda _env: SomeErrors())
    deployment = world.h.deployments.create(ProcedureKind.STANDARD, NEW, ENV, REQUESTER,
                                            state=S.QUEUED)
    claimed = world.h.deployments.claim_next(engine.worker_id)
    assert deployment.id is not None and claimed is not None and claimed.id == deployment.id
    return engine.run(deployment.id), deployment.id


def _baseline(world: World, error_rate: float) -> None:
    BaselineRepository(world.h.database, world.h.clock).record(ENV, OLD, {
        "response_ms_p50": 20.0, "response_ms_p95": 40.0, "error_count": 2,
        "request_count": 200, "error_rate": error_rate, "samples": 10})


def test_a_version_breaching_the_error_rate_ratio_is_rolled_back(world: World) -> None:
    _baseline(world, 0.01)
    state, deployment_id = _run(world)

    assert state is S.ROLLED_BACK
    record = world.h.deployments.get(deployment_id)
    assert record is not None and record.error is not None
    assert "error rate 3.0% (6 of 200 requests) is 3.0x the baseline's 1.0% (> 2x)" \
        in record.error, record.error
    steps = {s.name: s.state for s in world.h.deployments.steps(deployment_id)}
    assert steps["monitor"] is StepState.FAILED and "record_baseline" not in steps
    texts = "\n".join(world.h.reporter.texts(deployment_id))
    assert "the error rate exceeds 2x the baseline of 1.0.0" in texts, texts
    # Traffic is back on the previous version, and its baseline is still the newest.
    assert world.platform.live is Slot.BLUE
    latest = BaselineRepository(world.h.database, world.h.clock).latest(ENV)
    assert latest is not None and latest.version == OLD


def test_the_same_figures_within_the_ratio_pass_and_become_the_baseline(world: World) -> None:
    _baseline(world, 0.02)  # 3 % is 1.5x of 2 %: within 2x
    state, deployment_id = _run(world)

    assert state is S.SUCCEEDED, world.h.deployments.get(deployment_id)
    latest = BaselineRepository(world.h.database, world.h.clock).latest(ENV)
    assert latest is not None and latest.version == NEW
    assert latest.metrics["error_rate"] == pytest.approx(0.03)


def test_without_a_recorded_baseline_the_ratio_says_so_and_does_not_act(world: World) -> None:
    state, deployment_id = _run(world)

    assert state is S.SUCCEEDED
    assert "(no baseline yet to compare with)" in "\n".join(
        world.h.reporter.texts(deployment_id))
