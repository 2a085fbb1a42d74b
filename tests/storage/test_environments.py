"""Environment state: live/previous slots and the per-environment lock."""

from __future__ import annotations

from datetime import timedelta

import pytest

from procedures.clock import FixedClock
from procedures.errors import ExternalServiceError
from procedures.model import Slot
from storage.db import Database
from storage.environments import EnvironmentStateRepository
from tests.conftest import _Factory
from tests.storage.concurrency import run_concurrently


def test_ensure_get_all(environments: EnvironmentStateRepository, clock: FixedClock) -> None:
    assert environments.get("production") is None
    row = environments.ensure("production")
    assert (row.environment, row.live_slot, row.lock_holder, row.revision) == (
        "production", None, None, 0,
    )
    assert row.updated_at == clock.now()
    assert environments.ensure("production").revision == 0  # no second row, no change
    environments.ensure("staging")
    assert [r.environment for r in environments.all()] == ["production", "staging"]


def test_record_switch_moves_live_to_previous(environments: EnvironmentStateRepository) -> None:
    first = environments.record_switch("production", Slot.BLUE, "v1.0.0")
    assert (first.live_slot, first.live_version) == (Slot.BLUE, "v1.0.0")
    assert (first.previous_slot, first.previous_version) == (None, None)
    second = environments.record_switch("production", Slot.GREEN, "v1.1.0")
    assert (second.live_slot, second.live_version) == (Slot.GREEN, "v1.1.0")
    assert (second.previous_slot, second.previous_version) == (Slot.BLUE, "v1.0.0")
    assert second.live_slot is Slot.GREEN
    assert second.revision == 2


def test_acquire_contend_release(
    environments: EnvironmentStateRepository, clock: FixedClock
) -> None:
    assert environments.acquire_lock("production", "U1", "deploy #1", 1, "w1", clock.now())
    assert not environments.acquire_lock("production", "U2", "deploy #2", 2, "w2", clock.now())
    assert environments.acquire_lock("production", "U1", "resumed", 1, "w3", clock.now())
    row = environments.get("production")
    assert (row.lock_holder, row.lock_deployment_id, row.lock_owner) == ("U1", 1, "w3")
    assert row.locked_since == clock.now() and row.locked_since.tzinfo is not None
    assert not environments.release_lock("production", 2)  # not the holder
    assert environments.release_lock("production", 1)
    assert environments.get("production").lock_holder is None
    assert environments.acquire_lock("production", "U2", "deploy #2", 2, "w2", clock.now())


def test_a_persons_lock(environments: EnvironmentStateRepository) -> None:
    assert environments.acquire_lock("production", "U1", "freeze", None, None)
    assert environments.acquire_lock("production", "U1", "still frozen", None, None)
    assert not environments.acquire_lock("production", "U2", "mine", None, None)
    assert not environments.acquire_lock("production", "U2", "deploy", 5, "w1")
    assert environments.release_lock("production", None)
    assert environments.acquire_lock("production", "U2", "deploy", 5, "w1")
    assert not environments.release_lock("production", None)  # a deployment holds it
    assert environments.force_release("production") == "U2"
    assert environments.force_release("production") is None


def test_only_one_of_many_racing_acquirers_gets_the_lock(
    database_factory: _Factory, clock: FixedClock
) -> None:
    url = database_factory.url(migrated=True)
    repos = [EnvironmentStateRepository(database_factory.open(url), clock) for _ in range(10)]
    won = run_concurrently(
        lambda i: repos[i].acquire_lock("production", f"U{i}", "race", i + 1, f"w{i}"), 10
    )
    assert won.count(True) == 1
    assert repos[0].get("production").lock_deployment_id == won.index(True) + 1


def test_heartbeat_and_reap_stale_locks(
    environments: EnvironmentStateRepository, clock: FixedClock
) -> None:
    environments.acquire_lock("production", "U1", "deploy", 1, "w1", clock.now())
    environments.acquire_lock("staging", "U2", "deploy", 2, "w2", clock.now())
    environments.acquire_lock("dev", "U3", "freeze", None, None, clock.now())  # a person's
    clock.advance(timedelta(minutes=4))
    assert environments.heartbeat("staging", "w2", clock.now())
    assert not environments.heartbeat("staging", "w1", clock.now())
    clock.advance(timedelta(minutes=2))
    assert environments.reap_stale_locks(clock.now(), timedelta(minutes=5)) == ["production"]
    assert environments.get("production").lock_holder is None
    assert environments.get("staging").lock_owner == "w2"
    assert environments.get("dev").lock_holder == "U3"
    clock.advance(timedelta(hours=1))
    assert environments.reap_stale_locks(clock.now(), timedelta(minutes=5)) == ["staging"]
    assert environments.get("dev").lock_holder == "U3"  # never reaped


def test_acquire_fails_closed_on_a_database_error(
    database: Database, clock: FixedClock, backend: str
) -> None:
    from sqlalchemy import text

    with database.connect() as connection, connection.begin():
        connection.execute(text("DROP TABLE environment_state"))
    environments = EnvironmentStateRepository(database, clock)
    with pytest.raises(ExternalServiceError) as caught:
        environments.acquire_lock("production", "U1", "deploy", 1, "w1", clock.now())
    assert caught.value.service == "database"
    assert caught.value.retryable
