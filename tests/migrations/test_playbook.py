"""The migration playbook under the real Engine: the happy path, staging first, and what a
failure at each step leaves behind.

Real engine and repositories (the bot's database on SQLite and PostgreSQL through the
``database`` fixture), a scratch PostgreSQL database as the application's database, the real
runner, real ``pg_dump``, and the in-memory :class:`~tests.fakes.platform.FakePlatform` for
maintenance mode. Runs use ``--maintenance`` so every step but ``staging_first`` runs.
"""

from __future__ import annotations

import copy
import dataclasses
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from procedures.engine import Engine
from procedures.errors import StepFailure
from procedures.migrations.runner import MigrationTimeouts
from procedures.model import DeploymentState, ProcedureKind
from procedures.playbook import Playbook, StepContext, StepResult
from procedures.playbooks.migration import migration_playbook
from procedures.policy import Policy, parse_policy
from storage.db import Database
from tests.conftest import _Factory
from tests.engine.conftest import ENV, REQUESTER, START, Harness
from tests.fakes.policies import BASE
from tests.migrations.conftest import MigrationsDir, ScratchDatabases, query, tables

pytestmark = pytest.mark.postgres

S = DeploymentState
NAME = "2026_11_26_orders"
SQL = "CREATE TABLE orders (id int PRIMARY KEY);\nINSERT INTO orders VALUES (1), (2);\n"
ORDER = ("validate", "staging_first", "backup", "maintenance_on", "apply", "verify",
         "maintenance_off")


def _policy(url: str, directory: Path, staging_url: str | None = None) -> Policy:
    data: dict[str, Any] = copy.deepcopy(BASE)
    data["environments"]["production"].update(database_url=url, migrations_dir=str(directory))
    if staging_url is not None:
        data["environments"]["staging"].update(database_url=staging_url)
    return parse_policy(data, source="test policy")


def _playbook(tmp_path: Path) -> Playbook:
    return migration_playbook(
        backups_dir=tmp_path / "backups", poll=0.02,
        timeouts=MigrationTimeouts(apply_statement=MigrationTimeouts().validate_statement))


def _harness(database: Database, factory: _Factory, policy: Policy) -> Harness:
    from procedures.clock import FixedClock

    return Harness(database=database, factory=factory, clock=FixedClock(START), policy=policy)


def _run(h: Harness, engine: Engine, options: dict[str, Any] | None = None) -> int:
    record = h.deployments.create(
        ProcedureKind.MIGRATION, NAME, ENV, REQUESTER, state=S.QUEUED,
        options={"migration": NAME, "maintenance": True, "requested_by": REQUESTER,
                 **(options or {})})
    assert record.id is not None
    claimed = h.deployments.claim_next(engine.worker_id)
    assert claimed is not None and claimed.id == record.id
    engine.run(record.id)
    return record.id


def _recorded(url: str) -> list[tuple[object, ...]]:
    if "schema_migrations" not in tables(url):
        return []
    return query(url, "SELECT name, applied_by FROM schema_migrations")


def test_happy_path_validates_backs_up_applies_and_verifies(
        database: Database, database_factory: _Factory, app_db: str,
        migrations: MigrationsDir, tmp_path: Path) -> None:
    migrations.write(NAME, SQL)
    h = _harness(database, database_factory, _policy(app_db, migrations.root))
    deployment_id = _run(h, h.engine(_playbook(tmp_path)))

    record = h.deployments.get(deployment_id)
    assert record is not None and record.state is S.SUCCEEDED, record.error
    assert h.step_states(deployment_id) == {
        "validate": "succeeded", "staging_first": "skipped", "backup": "succeeded",
        "maintenance_on": "succeeded", "apply": "succeeded", "verify": "succeeded",
        "maintenance_off": "succeeded"}
    assert query(app_db, "SELECT count(*) FROM orders") == [(2,)]
    assert _recorded(app_db) == [(NAME, f"qlp #{deployment_id} for {REQUESTER}")]
    backups = list((tmp_path / "backups" / ENV).iterdir())
    assert [b.name for b in backups] == [f"20261124T100000Z-{NAME}.dump"]
    assert [str(c) for c in h.platform.called("set_maintenance")] == [
        "set_maintenance(True)", "set_maintenance(False)"]
    texts = "\n".join(h.reporter.texts(deployment_id))
    assert "Validated 2026_11_26_orders.sql on production" in texts
    assert "Applied 2026_11_26_orders.sql on production in one transaction" in texts


def test_production_is_rehearsed_on_staging_first(
        database: Database, database_factory: _Factory, scratch: ScratchDatabases,
        migrations: MigrationsDir, tmp_path: Path) -> None:
    production, staging = scratch.create(), scratch.create()
    migrations.write(NAME, SQL)
    h = _harness(database, database_factory, _policy(production, migrations.root, staging))
    deployment_id = _run(h, h.engine(_playbook(tmp_path)))

    assert h.state(deployment_id) is S.SUCCEEDED
    assert h.step_states(deployment_id)["staging_first"] == "succeeded"
    for url in (staging, production):
        assert query(url, "SELECT count(*) FROM orders") == [(2,)]
        assert [row[0] for row in _recorded(url)] == [NAME]
    assert "Rehearsed on staging" in "\n".join(h.reporter.texts(deployment_id))


def test_staging_on_the_production_database_is_refused(
        database: Database, database_factory: _Factory, app_db: str,
        migrations: MigrationsDir, tmp_path: Path) -> None:
    migrations.write(NAME, SQL)
    h = _harness(database, database_factory, _policy(app_db, migrations.root, app_db))
    deployment_id = _run(h, h.engine(_playbook(tmp_path)))
    record = h.deployments.get(deployment_id)
    assert record is not None and record.state is S.ROLLED_BACK
    assert "same database_url" in (record.error or "")
    assert tables(app_db) == []


def test_a_file_changed_since_the_request_does_not_run(
        database: Database, database_factory: _Factory, app_db: str,
        migrations: MigrationsDir, tmp_path: Path) -> None:
    migrations.write(NAME, SQL)
    h = _harness(database, database_factory, _policy(app_db, migrations.root))
    deployment_id = _run(h, h.engine(_playbook(tmp_path)), {"checksum": "0" * 64})
    record = h.deployments.get(deployment_id)
    assert record is not None and record.state is S.FAILED
    assert "changed since it was requested" in (record.error or "")
    assert tables(app_db) == []


def test_a_file_failing_mid_way_is_rolled_back_and_maintenance_ends(
        database: Database, database_factory: _Factory, app_db: str,
        migrations: MigrationsDir, tmp_path: Path) -> None:
    # Valid on an empty table (validation passes), failing once a row exists: a concurrent
    # writer between validation and apply, in miniature.
    query(app_db, "CREATE TABLE items (id int, qty int)")
    migrations.write(NAME, "CREATE TABLE audit_items (id int);\n"
                           "INSERT INTO audit_items SELECT 100 / qty FROM items;\n")
    playbook = _playbook(tmp_path)
    backup = playbook.step("backup")

    def backup_then_write(ctx: StepContext) -> StepResult:
        result = backup.run(ctx)
        query(app_db, "INSERT INTO items VALUES (1, 0)")
        return result

    playbook = _replace(playbook, "backup", backup_then_write)
    h = _harness(database, database_factory, _policy(app_db, migrations.root))
    deployment_id = _run(h, h.engine(playbook))

    record = h.deployments.get(deployment_id)
    assert record is not None and record.state is S.ROLLED_BACK
    assert "division by zero" in (record.error or "")
    assert "rolled back by itself" in (record.error or "")
    assert "audit_items" not in tables(app_db)
    assert h.step_states(deployment_id)["maintenance_on"] == "undone"
    assert [str(c) for c in h.platform.called("set_maintenance")] == [
        "set_maintenance(True)", "set_maintenance(False)"]


def _replace(playbook: Playbook, name: str, run: Any) -> Playbook:
    steps = tuple(dataclasses.replace(step, run=run, retry=dataclasses.replace(
        step.retry, attempts=1)) if step.name == name else step for step in playbook.steps)
    return dataclasses.replace(playbook, steps=steps)


def _fail(ctx: StepContext) -> StepResult:
    raise StepFailure("injected")


# For a failure at each step: the final state, the steps undone (in order), and whether the
# migration is applied in the end (a successful apply is never undone automatically).
FAILURES = [
    ("validate", S.FAILED, (), False),
    ("backup", S.ROLLED_BACK, (), False),
    ("maintenance_on", S.ROLLED_BACK, (), False),
    ("apply", S.ROLLED_BACK, ("maintenance_on",), False),
    ("verify", S.ROLLED_BACK, ("maintenance_on",), True),
    ("maintenance_off", S.ROLLED_BACK, ("maintenance_on",), True),
]


@pytest.mark.parametrize(("failed", "state", "undone", "applied"), FAILURES,
                         ids=[f[0] for f in FAILURES])
def test_failure_at_each_step(database: Database, database_factory: _Factory, app_db: str,
                              migrations: MigrationsDir, tmp_path: Path, failed: str,
                              state: DeploymentState, undone: tuple[str, ...],
                              applied: bool) -> None:
    migrations.write(NAME, SQL)
    h = _harness(database, database_factory, _policy(app_db, migrations.root))
    deployment_id = _run(h, h.engine(_replace(_playbook(tmp_path), failed, _fail)))

    assert h.state(deployment_id) is state
    states = h.step_states(deployment_id)
    assert states[failed] == "failed"
    assert tuple(name for name in reversed(ORDER) if states.get(name) == "undone") == undone
    later = ORDER[ORDER.index(failed) + 1:]
    assert all(name not in states for name in later), states
    assert ("orders" in tables(app_db)) is applied
    maintenance = [str(c) for c in h.platform.called("set_maintenance")]
    on = ORDER.index(failed) > ORDER.index("maintenance_on")
    assert maintenance == (["set_maintenance(True)", "set_maintenance(False)"] if on else [])


def test_cancel_during_apply_cancels_the_statement_and_rolls_back(
        database: Database, database_factory: _Factory, app_db: str,
        migrations: MigrationsDir, tmp_path: Path) -> None:
    # The file sleeps only once ``go`` has a row: quick to validate, slow to apply.
    query(app_db, "CREATE TABLE go (id int)")
    migrations.write(NAME, "CREATE TABLE slow (id int);\n"
                           "SELECT pg_sleep(CASE WHEN EXISTS (SELECT 1 FROM go) THEN 30 "
                           "ELSE 0 END);\n")
    playbook = _playbook(tmp_path)
    backup = playbook.step("backup")

    def backup_then_go(ctx: StepContext) -> StepResult:
        result = backup.run(ctx)
        query(app_db, "INSERT INTO go VALUES (1)")
        return result

    h = _harness(database, database_factory, _policy(app_db, migrations.root))
    engine = h.engine(_replace(playbook, "backup", backup_then_go))
    record = h.deployments.create(
        ProcedureKind.MIGRATION, NAME, ENV, REQUESTER, state=S.QUEUED,
        options={"migration": NAME, "maintenance": True})
    assert record.id is not None
    deployment_id = record.id
    assert h.deployments.claim_next(engine.worker_id) is not None
    runner = threading.Thread(target=engine.run, args=(deployment_id,))
    started = time.monotonic()
    runner.start()
    try:
        deadline = time.monotonic() + 30

        def applying() -> bool:
            # The validation runs the same statement (for an instant: `go` is still empty then),
            # so wait for the apply step itself to be running with its statement active.
            return h.step_states(deployment_id).get("apply") == "running" and bool(query(
                app_db, "SELECT 1 FROM pg_stat_activity WHERE query LIKE '%pg_sleep(CASE%' "
                        "AND state = 'active' AND application_name LIKE 'qlp-migrate%'"))

        while time.monotonic() < deadline and not applying():
            time.sleep(0.05)
        assert h.step_states(deployment_id)["apply"] == "running"
        assert engine.request_cancel(deployment_id, "U0LEAD1")
    finally:
        runner.join(60)
    assert time.monotonic() - started < 25  # the 30 s statement was cancelled, not waited for
    assert h.state(deployment_id) is S.ROLLED_BACK
    assert h.step_states(deployment_id)["apply"] == "failed"
    assert h.step_states(deployment_id)["maintenance_on"] == "undone"
    assert "slow" not in tables(app_db)
    assert _recorded(app_db) == []
