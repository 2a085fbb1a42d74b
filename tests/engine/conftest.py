"""Fixtures for the engine tests: real repositories on both backends, a clock that sleep moves.

``h`` (a :class:`Harness`) bundles the clock, the repositories, a recording reporter, a fake
platform and a shared ``log`` list that steps and the platform append to, so a test can assert
the exact order of runs and undos. ``h.engine(...)`` builds an Engine; ``h.restarted(...)``
builds one over a second connection pool on the same database, as a restarted bot would.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from procedures.clock import FixedClock
from procedures.engine import Engine
from procedures.model import DeploymentState, ProcedureKind, Slot
from procedures.playbook import Playbook, Step
from procedures.policy import Policy
from procedures.reporting import RunSnapshot
from storage.audit import AuditLog
from storage.baselines import BaselineRepository
from storage.db import Database
from storage.deployments import DeploymentRepository
from storage.environments import EnvironmentStateRepository
from tests.conftest import _Factory
from tests.fakes.platform import FakePlatform
from tests.fakes.policies import make_policy

START = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)
ENV = "production"
REQUESTER = "U0DEV01"


class RecordingReporter:
    """A Reporter that keeps every snapshot and event (thread-safe)."""

    def __init__(self) -> None:
        self.changes: list[RunSnapshot] = []
        self.events: list[tuple[int, str, bool]] = []
        self._lock = threading.Lock()

    def run_changed(self, run: RunSnapshot) -> None:
        with self._lock:
            self.changes.append(run)

    def event(self, run: RunSnapshot, text: str, *, broadcast: bool = False) -> None:
        with self._lock:
            self.events.append((run.deployment_id, text, broadcast))

    def texts(self, deployment_id: int | None = None) -> list[str]:
        with self._lock:
            return [t for d, t, _ in self.events if deployment_id in (None, d)]

    def broadcasts(self) -> list[str]:
        with self._lock:
            return [t for _, t, b in self.events if b]


class NullMetrics:
    """No metrics at all (the engine tests do not read any)."""

    def error_count(self, slot: Slot, since: datetime) -> int | None:
        return None

    def request_count(self, slot: Slot, since: datetime) -> int | None:
        return None


@dataclass
class Stores:
    """The repositories over one Database (one 'process')."""

    deployments: DeploymentRepository
    environments: EnvironmentStateRepository
    audit: AuditLog
    baselines: BaselineRepository


@dataclass
class Harness:
    """Everything an engine test needs; see the module docstring."""

    database: Database
    factory: _Factory
    clock: FixedClock
    policy: Policy
    reporter: RecordingReporter = field(default_factory=RecordingReporter)
    log: list[str] = field(default_factory=list)
    sleeps: list[float] = field(default_factory=list)
    platform: FakePlatform = field(init=False)
    stores: Stores = field(init=False)

    def __post_init__(self) -> None:
        self.platform = FakePlatform(log=self.log)
        self.stores = self.stores_on(self.database)

    # -- building -------------------------------------------------------------------------------

    def stores_on(self, database: Database) -> Stores:
        return Stores(
            DeploymentRepository(database, self.clock),
            EnvironmentStateRepository(database, self.clock),
            AuditLog(database, self.clock),
            BaselineRepository(database, self.clock),
        )

    @property
    def deployments(self) -> DeploymentRepository:
        return self.stores.deployments

    @property
    def environments(self) -> EnvironmentStateRepository:
        return self.stores.environments

    @property
    def audit(self) -> AuditLog:
        return self.stores.audit

    def sleep(self, seconds: float) -> None:
        """The injected sleep: moves the clock, never the wall clock."""
        self.sleeps.append(seconds)
        self.clock.advance(timedelta(seconds=seconds))

    def engine(
        self,
        steps: Sequence[Step] | Playbook,
        *,
        worker_id: str = "w1",
        stores: Stores | None = None,
        **overrides: Any,
    ) -> Engine:
        playbook = steps if isinstance(steps, Playbook) else Playbook(
            ProcedureKind.STANDARD, "Standard deployment", tuple(steps))
        stores = stores or self.stores
        kwargs: dict[str, Any] = {
            "deployments": stores.deployments,
            "environments": stores.environments,
            "audit": stores.audit,
            "reporter": self.reporter,
            "playbooks": {playbook.kind: playbook},
            "policy": self.policy,
            "platform_for": lambda _env: self.platform,
            "metrics_for": lambda _env: NullMetrics(),
            "baselines": stores.baselines,
            "clock": self.clock,
            "sleep": self.sleep,
            "worker_id": worker_id,
        }
        kwargs.update(overrides)
        return Engine(**kwargs)

    def restarted(self, steps: Sequence[Step] | Playbook, *, worker_id: str = "w2",
                  **overrides: Any) -> Engine:
        """An Engine over a fresh connection pool on the same database (a new process)."""
        url = self.database.url.render_as_string(hide_password=False)
        stores = self.stores_on(self.factory.open(url))
        return self.engine(steps, worker_id=worker_id, stores=stores, **overrides)

    # -- deployments ----------------------------------------------------------------------------

    def create(
        self, state: DeploymentState = DeploymentState.QUEUED, *, version: str | None = "2.0.0",
        environment: str = ENV, requester: str = REQUESTER,
    ) -> int:
        deployment = self.deployments.create(
            ProcedureKind.STANDARD, version, environment, requester, state=state,
        )
        assert deployment.id is not None
        return deployment.id

    def start(self, engine: Engine, **kwargs: Any) -> int:
        """Create a queued deployment and claim it for ``engine`` (as the worker does)."""
        deployment_id = self.create(**kwargs)
        claimed = self.deployments.claim_next(engine.worker_id)
        assert claimed is not None and claimed.id == deployment_id
        return deployment_id

    # -- reading --------------------------------------------------------------------------------

    def state(self, deployment_id: int) -> DeploymentState:
        record = self.deployments.get(deployment_id)
        assert record is not None
        return record.state

    def step_states(self, deployment_id: int) -> dict[str, str]:
        return {s.name: s.state.value for s in self.deployments.steps(deployment_id)}

    def actions(self, deployment_id: int | None = None) -> list[str]:
        events = self.audit.recent(limit=1000, deployment_id=deployment_id)
        return [e.action for e in reversed(events)]

    def audit_details(self, action: str) -> list[Mapping[str, Any]]:
        return [e.detail for e in reversed(self.audit.recent(limit=1000)) if e.action == action]

    def lock(self) -> tuple[str | None, str | None, int | None, str | None]:
        row = self.environments.get(ENV)
        if row is None:
            return (None, None, None, None)
        return (row.lock_holder, row.lock_reason, row.lock_deployment_id, row.lock_owner)


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(START)


@pytest.fixture
def h(database: Database, database_factory: _Factory, clock: FixedClock) -> Harness:
    return Harness(database=database, factory=database_factory, clock=clock,
                   policy=make_policy())
