"""The hash-chained audit log: append, verify, tamper detection, concurrent appends."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import bindparam, text

from procedures.clock import FixedClock
from procedures.model import DeploymentState, ProcedureKind
from storage.audit import AuditLog, event_hash
from storage.db import Database
from storage.deployments import DeploymentRepository
from storage.models import GENESIS_HASH
from storage.types import JSONDocument
from tests.conftest import _Factory
from tests.storage.concurrency import run_concurrently


def _fill(audit: AuditLog, clock: FixedClock, n: int) -> None:
    for i in range(n):
        audit.append(
            "U1", "deploy.requested", deployment_id=i + 1, environment="staging",
            detail={"version": f"v1.0.{i}", "n": i},
        )
        clock.advance(timedelta(seconds=1))


def test_append_links_events_into_a_chain(audit: AuditLog, clock: FixedClock) -> None:
    first = audit.append("U1", "lock", environment="production", detail={"reason": "freeze"})
    clock.advance(timedelta(minutes=1))
    second = audit.append("U2", "unlock", environment="production")
    assert (first.id, second.id) == (1, 2)
    assert first.prev_hash == GENESIS_HASH
    assert second.prev_hash == first.hash
    assert first.hash == event_hash(
        GENESIS_HASH, first.at, "U1", "lock", None, "production", {"reason": "freeze"}
    )
    assert first.at == clock.now() - timedelta(minutes=1)
    assert first.at.tzinfo is not None
    assert audit.verify().ok


def test_verify_an_empty_and_a_long_chain(audit: AuditLog, clock: FixedClock) -> None:
    result = audit.verify()
    assert (result.ok, result.checked, result.first_bad_id) == (True, 0, None)
    _fill(audit, clock, 25)
    result = audit.verify()
    assert (result.ok, result.checked, result.problem) == (True, 25, None)


def test_detail_is_stored_as_canonical_json(audit: AuditLog, clock: FixedClock) -> None:
    event = audit.append("U1", "x", detail={"when": clock.now(), "b": [1, 2], "a": None})
    stored = audit.recent(1)[0]
    assert stored.detail == {"when": str(clock.now()), "b": [1, 2], "a": None}
    assert stored.hash == event.hash
    assert audit.verify().ok


def test_a_changed_detail_is_named_by_verify(
    database: Database, audit: AuditLog, clock: FixedClock
) -> None:
    _fill(audit, clock, 5)
    with database.connect() as connection, connection.begin():
        connection.execute(
            text("UPDATE audit_events SET detail = :detail WHERE id = :id").bindparams(
                bindparam("detail", type_=JSONDocument)
            ),
            {"detail": {"version": "v9.9.9", "n": 2}, "id": 3},
        )
    result = audit.verify()
    assert not result.ok
    assert result.first_bad_id == 3
    assert result.checked == 2
    assert "changed" in (result.problem or "")


def test_a_changed_actor_with_a_recomputed_hash_breaks_the_next_link(
    database: Database, audit: AuditLog, clock: FixedClock
) -> None:
    _fill(audit, clock, 4)
    event = audit.recent(4)[-2]  # id 2
    forged = event_hash(
        event.prev_hash, event.at, "U-forger", event.action, event.deployment_id,
        event.environment, event.detail,
    )
    with database.connect() as connection, connection.begin():
        connection.execute(
            text("UPDATE audit_events SET actor = :actor, hash = :hash WHERE id = :id"),
            {"actor": "U-forger", "hash": forged, "id": 2},
        )
    result = audit.verify()
    assert (result.ok, result.first_bad_id) == (False, 3)


def test_a_deleted_middle_row_is_detected(
    database: Database, audit: AuditLog, clock: FixedClock
) -> None:
    _fill(audit, clock, 5)
    with database.connect() as connection, connection.begin():
        connection.execute(text("DELETE FROM audit_events WHERE id = :id"), {"id": 3})
    result = audit.verify()
    assert not result.ok
    assert result.first_bad_id == 4
    assert "#3 is missing" in (result.problem or "")


def test_a_deleted_first_or_last_row_is_detected(
    database: Database, audit: AuditLog, clock: FixedClock
) -> None:
    _fill(audit, clock, 3)
    with database.connect() as connection, connection.begin():
        connection.execute(text("DELETE FROM audit_events WHERE id = 3"))
    result = audit.verify()
    assert (result.ok, result.first_bad_id) == (False, 3)
    with database.connect() as connection, connection.begin():
        connection.execute(text("DELETE FROM audit_events WHERE id = 1"))
    result = audit.verify()
    assert (result.ok, result.first_bad_id) == (False, 2)


def test_appending_after_a_deleted_tail_does_not_hide_it(
    database: Database, audit: AuditLog, clock: FixedClock
) -> None:
    _fill(audit, clock, 3)
    with database.connect() as connection, connection.begin():
        connection.execute(text("DELETE FROM audit_events WHERE id = 3"))
    audit.append("U1", "after")
    result = audit.verify()
    assert (result.ok, result.first_bad_id) == (False, 4)


def test_recent_filters_by_deployment(audit: AuditLog, clock: FixedClock) -> None:
    _fill(audit, clock, 5)
    assert [e.id for e in audit.recent(3)] == [5, 4, 3]
    assert [e.deployment_id for e in audit.recent(10, deployment_id=2)] == [2]


def test_append_inside_the_callers_transaction_commits_or_rolls_back_with_it(
    database: Database, audit: AuditLog, clock: FixedClock
) -> None:
    repo = DeploymentRepository(database, clock)
    created = repo.create(ProcedureKind.STANDARD, "v1.2.3", "staging", "U1")
    with database.session() as s:
        assert repo.transition(
            created.id, [DeploymentState.PENDING_APPROVAL], DeploymentState.QUEUED, session=s
        )
        audit.append("U2", "approve", deployment_id=created.id, session=s)
    try:
        with database.session() as s:
            repo.transition(
                created.id, [DeploymentState.QUEUED], DeploymentState.CANCELLED, session=s
            )
            audit.append("U3", "cancel", deployment_id=created.id, session=s)
            raise RuntimeError("the caller fails after both writes")
    except RuntimeError:
        pass
    assert [e.action for e in audit.recent(10)] == ["approve"]
    assert repo.get(created.id).state is DeploymentState.QUEUED
    assert audit.append("U4", "next").id == 2  # the rolled-back append left no gap
    assert audit.verify().ok


def test_concurrent_appends_keep_one_valid_chain(
    database_factory: _Factory, clock: FixedClock
) -> None:
    # Separate engines (as separate processes would have), 8 threads, 5 appends each.
    url = database_factory.url(migrated=True)
    logs = [AuditLog(database_factory.open(url), clock) for _ in range(8)]

    def append_five(i: int) -> list[int]:
        return [logs[i].append(f"U{i}", "x", detail={"i": i, "j": j}).id for j in range(5)]

    ids = run_concurrently(append_five, 8)
    all_ids = sorted(i for chunk in ids for i in chunk)
    assert all_ids == list(range(1, 41))
    result = logs[0].verify()
    assert (result.ok, result.checked) == (True, 40)
