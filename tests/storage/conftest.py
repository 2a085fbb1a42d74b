"""Fixtures for the storage tests: a clock that only moves when told, and the repositories."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from procedures.clock import FixedClock
from storage.audit import AuditLog
from storage.db import Database
from storage.deployments import DeploymentRepository
from storage.environments import EnvironmentStateRepository
from storage.outbox import Outbox

START = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(START)


@pytest.fixture
def audit(database: Database, clock: FixedClock) -> AuditLog:
    return AuditLog(database, clock)


@pytest.fixture
def outbox(database: Database, clock: FixedClock) -> Outbox:
    return Outbox(database, clock)


@pytest.fixture
def deployments(database: Database, clock: FixedClock) -> DeploymentRepository:
    return DeploymentRepository(database, clock)


@pytest.fixture
def environments(database: Database, clock: FixedClock) -> EnvironmentStateRepository:
    return EnvironmentStateRepository(database, clock)
