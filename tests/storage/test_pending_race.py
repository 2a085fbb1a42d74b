"""One pending request per environment, atomically, even with no history (issue 11).

``/qlp deploy`` checks "one at a time" (``procedures.decision``) and then writes the request.
With no row for the environment yet, nothing serialised two writers between the check and
the write: 50 concurrent requests to a new environment created 2 pending requests. The write
now re-checks under a per-environment lock (SQLite: BEGIN IMMEDIATE; PostgreSQL: an advisory
lock), on both databases.
"""

from __future__ import annotations

from procedures.clock import FixedClock
from procedures.errors import PolicyRefusal
from procedures.model import DeploymentState as S
from procedures.model import ProcedureKind
from storage.audit import AuditLog
from storage.db import Database
from storage.deployments import DeploymentRepository
from storage.models import Deployment
from tests.storage.concurrency import run_concurrently


def _request(repository: DeploymentRepository, i: int, *, environment: str = "production",
             kind: ProcedureKind = ProcedureKind.STANDARD,
             key: str | None = None) -> tuple[Deployment, bool] | PolicyRefusal:
    try:
        return repository.create_or_get(kind, "v1.0.0", environment, f"U{i:03d}",
                                        request_key=key or f"command:trigger-{i}")
    except PolicyRefusal as refusal:
        return refusal


def test_fifty_concurrent_requests_to_a_new_environment_create_exactly_one(
        database: Database, clock: FixedClock, audit: AuditLog) -> None:
    repository = DeploymentRepository(database, clock)
    results = run_concurrently(lambda i: _request(repository, i), 50)

    created = [r for r in results if isinstance(r, tuple) and r[1]]
    refused = [r for r in results if isinstance(r, PolicyRefusal)]
    assert len(created) == 1 and len(refused) == 49
    winner = created[0][0]
    assert [d.id for d in repository.list_in_states([S.PENDING_APPROVAL], "production")] == [
        winner.id]
    assert {r.rule for r in refused} == {"one-at-a-time"}
    assert {r.message for r in refused} == {
        f"Deployment #{winner.id} (v1.0.0, pending approval) is already under way for "
        "production; one deployment at a time."}
    assert {r.hint for r in refused} == {f"Wait for it, or `/qlp cancel {winner.id}`."}
    refusals = [e for e in audit.recent(100) if e.action == "deployment.refused"]
    assert len(refusals) == 49
    assert {e.detail["blocked_by"] for e in refusals} == {winner.id}
    assert audit.verify().ok


def test_a_repeated_request_gets_its_deployment_back_and_others_stay_free(
        database: Database, clock: FixedClock) -> None:
    repository = DeploymentRepository(database, clock)
    first = _request(repository, 1)
    assert isinstance(first, tuple) and first[1]
    again = _request(repository, 1)  # Slack retried the same command: not a refusal
    assert isinstance(again, tuple) and again[0].id == first[0].id and again[1] is False
    # Another environment is not held by production's request.
    staging = _request(repository, 2, environment="staging")
    assert isinstance(staging, tuple) and staging[1]
    # A queued or running deployment holds its environment too.
    assert first[0].id is not None
    assert repository.transition(first[0].id, [S.PENDING_APPROVAL], S.QUEUED)
    hotfix = _request(repository, 3, kind=ProcedureKind.HOTFIX)
    assert isinstance(hotfix, PolicyRefusal) and "(v1.0.0, queued)" in hotfix.message


def test_only_the_kinds_that_wait_for_pending_requests_are_guarded_by_default(
        database: Database, clock: FixedClock) -> None:
    repository = DeploymentRepository(database, clock)
    assert isinstance(_request(repository, 1), tuple)
    # An emergency's command judges running deployments only (bot/commands/emergency.py):
    # storage does not refuse it beside a pending request unless told to.
    emergency = _request(repository, 2, kind=ProcedureKind.EMERGENCY)
    assert isinstance(emergency, tuple) and emergency[1]
    # Direct writes without a request key (imports, tests, the bot's own records) are not
    # checked; a caller can ask for any set of states explicitly.
    repository.create(ProcedureKind.STANDARD, "v0.9.0", "production", "U0DEV")
    try:
        repository.create_or_get(ProcedureKind.ROLLBACK, None, "production", "U0DEV",
                                 exclusive_of=[S.PENDING_APPROVAL])
    except PolicyRefusal as refusal:
        assert refusal.rule == "one-at-a-time"
    else:
        raise AssertionError("an explicit exclusive_of must be enforced")
