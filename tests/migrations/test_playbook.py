"""The migration playbook under the real Engine: the happy path, staging first, and what a
failure at each step leaves behind.

Real engine and repositories (the bot's database on SQLite and PostgreSQL through the
``database`` fixture), a scratch PostgreSQL database as the application's database, the real
runner, real ``pg_dump``, the in-memory :class:`~tests.fakes.platform.FakePlatform` for
maintenance mode and a real HTTP application (:class:`~tests.fakes.app_server.AppServer`) for
the post-migration tests and the app-update hook. Runs use ``--maintenance`` so every step but
``staging_first`` (and ``app_update``, for files without the header) runs.
"""

from __future__ import annotations

import copy
import dataclasses
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from procedures.checklists import STANDARD_ITEMS, StepFact, states
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
from tests.fakes.app_server import AppServer
from tests.fakes.policies import BASE
from tests.migrations.conftest import MigrationsDir, ScratchDatabases, query, tables

pytestmark = pytest.mark.postgres

S = DeploymentState
NAME = "2026_11_26_orders"
SQL = "CREATE TABLE orders (id int PRIMARY KEY);\nINSERT INTO orders VALUES (1), (2);\n"
DOWN = "DROP TABLE orders;\n"
HOOKED = "-- qlp: app-update=/admin/reload-schema\n" + SQL
ORDER = ("validate", "staging_first", "backup", "maintenance_on", "apply", "verify",
         "app_update", "maintenance_off", "post_migration_tests")


@pytest.fixture
def app() -> Iterator[AppServer]:
    with AppServer() as server:
        yield server


def _policy(url: str, directory: Path, staging_url: str | None = None, *,
            app_url: str = "http://127.0.0.1:1", promoted: bool = True) -> Policy:
    data: dict[str, Any] = copy.deepcopy(BASE)
    data["environments"]["production"].update(database_url=url, migrations_dir=str(directory),
                                              url=app_url)
    if staging_url is not None:
        data["environments"]["staging"].update(database_url=staging_url)
        if promoted:
            data["environments"]["production"]["promoted_from"] = "staging"
    return parse_policy(data, source="test policy")


def _playbook(tmp_path: Path) -> Playbook:
    return migration_playbook(
        backups_dir=tmp_path / "backups", poll=0.02,
        timeouts=MigrationTimeouts(apply_statement=MigrationTimeouts().validate_statement))


def _harness(database: Database, factory: _Factory, policy: Policy,
             app: AppServer | None = None) -> Harness:
    from procedures.clock import FixedClock

    h = Harness(database=database, factory=factory, clock=FixedClock(START), policy=policy)
    if app is not None:  # the live slot's own URL, where the app-update hook is called
        h.platform.base_url = app.url
    return h


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
        migrations: MigrationsDir, tmp_path: Path, app: AppServer) -> None:
    migrations.write(NAME, SQL)
    h = _harness(database, database_factory, _policy(app_db, migrations.root, app_url=app.url))
    deployment_id = _run(h, h.engine(_playbook(tmp_path)))

    record = h.deployments.get(deployment_id)
    assert record is not None and record.state is S.SUCCEEDED, record.error
    assert h.step_states(deployment_id) == {
        "validate": "succeeded", "staging_first": "skipped", "backup": "succeeded",
        "maintenance_on": "succeeded", "apply": "succeeded", "verify": "succeeded",
        "app_update": "skipped", "maintenance_off": "succeeded",
        "post_migration_tests": "succeeded"}
    # The seed's "sleep 30" after maintenance mode on, on the injected clock.
    # (the engine sleeps in heartbeat-sized pieces, so the clock tells how long it waited)
    assert sum(h.sleeps) >= 30 and h.clock.now() - START >= timedelta(seconds=30)
    assert app.gets == ["/health"] and app.posts == []
    assert query(app_db, "SELECT count(*) FROM orders") == [(2,)]
    assert _recorded(app_db) == [(NAME, f"qlp #{deployment_id} for {REQUESTER}")]
    backups = list((tmp_path / "backups" / ENV).iterdir())
    assert [b.name for b in backups] == [f"20261124T100000Z-{NAME}.dump"]
    assert [str(c) for c in h.platform.called("set_maintenance")] == [
        "set_maintenance(True)", "set_maintenance(False)"]
    texts = "\n".join(h.reporter.texts(deployment_id))
    assert "Validated 2026_11_26_orders.sql on production" in texts
    assert "Applied 2026_11_26_orders.sql on production in one transaction" in texts
    assert "Waiting 30s for active connections to drain before the migration." in texts
    assert "schema migration (statement limit 1m)" in texts
    assert "Post-migration tests on " + app.url in texts
    facts = [StepFact(s.name, s.state, s.finished_at, s.result)
             for s in h.deployments.steps(deployment_id)]
    ticked = {state.item.key: state.tick.step for state in states(STANDARD_ITEMS, None, facts)
              if state.tick is not None}
    assert ticked["database-migrations-completed-if-applicable"] == "apply"
    assert ticked["pre-deployment-backup-created"] == "backup"
    assert "database-migration-tested-if-applicable" not in ticked  # no rehearsal here


@pytest.mark.slow  # 4 s of the fast lane, measured
def test_production_is_rehearsed_on_staging_first(
        database: Database, database_factory: _Factory, scratch: ScratchDatabases,
        migrations: MigrationsDir, tmp_path: Path, app: AppServer) -> None:
    production, staging = scratch.create(), scratch.create()
    migrations.write(NAME, SQL)
    h = _harness(database, database_factory,
                 _policy(production, migrations.root, staging, app_url=app.url))
    deployment_id = _run(h, h.engine(_playbook(tmp_path)))

    assert h.state(deployment_id) is S.SUCCEEDED
    assert h.step_states(deployment_id)["staging_first"] == "succeeded"
    for url in (staging, production):
        assert query(url, "SELECT count(*) FROM orders") == [(2,)]
        assert [row[0] for row in _recorded(url)] == [NAME]
    assert "Rehearsed on staging" in "\n".join(h.reporter.texts(deployment_id))


@pytest.mark.slow  # 5 s of the fast lane, measured
def test_rehearsal_follows_promoted_from_not_the_names(
        database: Database, database_factory: _Factory, scratch: ScratchDatabases,
        migrations: MigrationsDir, tmp_path: Path, app: AppServer) -> None:
    # A staging database alone rehearses nothing: production must be promoted from it.
    production, staging = scratch.create(), scratch.create()
    migrations.write(NAME, SQL)
    policy = _policy(production, migrations.root, staging, app_url=app.url, promoted=False)
    h = _harness(database, database_factory, policy)
    deployment_id = _run(h, h.engine(_playbook(tmp_path)))
    assert h.state(deployment_id) is S.SUCCEEDED
    assert h.step_states(deployment_id)["staging_first"] == "skipped"
    assert _recorded(staging) == []

    # Other names: "eu" promoted from "eu-preview" rehearses on eu-preview's database.
    data: dict[str, Any] = copy.deepcopy(BASE)
    envs = data["environments"]
    envs["eu"] = {**envs.pop("production"), "url": app.url, "database_url": production,
                  "migrations_dir": str(migrations.root), "promoted_from": "eu-preview"}
    envs["eu-preview"] = {**envs.pop("staging"), "database_url": staging}
    h2 = _harness(database, database_factory, parse_policy(data, source="test policy"))
    other = "2026_11_27_refunds"
    migrations.write(other, "CREATE TABLE refunds (id int);")
    record = h2.deployments.create(
        ProcedureKind.MIGRATION, other, "eu", REQUESTER, state=S.QUEUED,
        options={"migration": other, "maintenance": False, "requested_by": REQUESTER})
    assert record.id is not None
    engine = h2.engine(_playbook(tmp_path))
    assert h2.deployments.claim_next(engine.worker_id) is not None
    engine.run(record.id)
    assert h2.state(record.id) is S.SUCCEEDED, h2.deployments.get(record.id)
    assert [row[0] for row in _recorded(staging)] == [other]
    assert "Rehearsed on eu-preview" in "\n".join(h2.reporter.texts(record.id))


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


# For a failure at each step (the file has a down script and an app-update hook): the final
# state and the steps undone (in order). After a successful apply, the undo of apply runs the
# down script (the seed's rollback-migration.sh), so the migration is never left applied.
AFTER_APPLY = ("apply", "maintenance_on")
FAILURES = [
    ("validate", S.FAILED, ()),
    ("backup", S.ROLLED_BACK, ()),
    ("maintenance_on", S.ROLLED_BACK, ()),
    ("apply", S.ROLLED_BACK, ("maintenance_on",)),
    ("verify", S.ROLLED_BACK, AFTER_APPLY),
    ("app_update", S.ROLLED_BACK, AFTER_APPLY),
    ("maintenance_off", S.ROLLED_BACK, AFTER_APPLY),
    ("post_migration_tests", S.ROLLED_BACK, AFTER_APPLY),
]


@pytest.mark.parametrize(("failed", "state", "undone"), FAILURES, ids=[f[0] for f in FAILURES])
@pytest.mark.slow  # 12 s of the fast lane, measured
def test_failure_at_each_step(database: Database, database_factory: _Factory, app_db: str,
                              migrations: MigrationsDir, tmp_path: Path, app: AppServer,
                              failed: str, state: DeploymentState,
                              undone: tuple[str, ...]) -> None:
    migrations.write(NAME, HOOKED)
    migrations.write(NAME + ".down", DOWN)
    h = _harness(database, database_factory, _policy(app_db, migrations.root, app_url=app.url),
                 app)
    deployment_id = _run(h, h.engine(_replace(_playbook(tmp_path), failed, _fail)))

    assert h.state(deployment_id) is state
    states = h.step_states(deployment_id)
    assert states[failed] == "failed"
    assert tuple(name for name in reversed(ORDER) if states.get(name) == "undone") == undone
    later = ORDER[ORDER.index(failed) + 1:]
    assert all(name not in states for name in later), states
    assert "orders" not in tables(app_db)
    assert _recorded(app_db) == []
    if "apply" in undone:
        assert (f"Migration rolled back on production: ran {NAME}.down.sql and removed its "
                "schema_migrations record.") in "\n".join(h.reporter.texts(deployment_id))
    maintenance = [str(c) for c in h.platform.called("set_maintenance")]
    on = ORDER.index(failed) > ORDER.index("maintenance_on")
    expected = ["set_maintenance(True)", "set_maintenance(False)"] if on else []
    if failed == "post_migration_tests":  # off by maintenance_off, again by the undo of on
        expected.append("set_maintenance(False)")
    assert maintenance == expected


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


@pytest.mark.slow  # 4 s of the fast lane, measured
def test_the_app_update_hook_is_called_on_the_live_slot(
        database: Database, database_factory: _Factory, app_db: str,
        migrations: MigrationsDir, tmp_path: Path, app: AppServer) -> None:
    migrations.write(NAME, HOOKED)
    h = _harness(database, database_factory, _policy(app_db, migrations.root, app_url=app.url),
                 app)
    deployment_id = _run(h, h.engine(_playbook(tmp_path)))
    assert h.state(deployment_id) is S.SUCCEEDED
    assert h.step_states(deployment_id)["app_update"] == "succeeded"
    # FakePlatform's live slot (blue) is <base_url>/blue; the POST names the migration.
    assert app.posts == [("/blue/admin/reload-schema", {"migration": NAME})]
    texts = "\n".join(h.reporter.texts(deployment_id))
    assert f"App update: POST {app.url}/blue/admin/reload-schema: 200" in texts


@pytest.mark.parametrize("broken", ["app_update", "post_migration_tests"])
@pytest.mark.slow  # 5 s of the fast lane, measured
def test_a_failing_app_update_or_post_migration_test_rolls_the_migration_back(
        database: Database, database_factory: _Factory, app_db: str,
        migrations: MigrationsDir, tmp_path: Path, app: AppServer, broken: str) -> None:
    migrations.write(NAME, HOOKED)
    migrations.write(NAME + ".down", DOWN)
    if broken == "app_update":
        app.post_status = 500
    else:
        app.get_status["/health"] = 503
    h = _harness(database, database_factory, _policy(app_db, migrations.root, app_url=app.url),
                 app)
    deployment_id = _run(h, h.engine(_playbook(tmp_path)))
    record = h.deployments.get(deployment_id)
    assert record is not None and record.state is S.ROLLED_BACK
    expected = ("the application update failed: POST" if broken == "app_update" else
                "post-migration tests failed: GET")
    assert expected in (record.error or "")
    assert h.step_states(deployment_id)["apply"] == "undone"
    assert "orders" not in tables(app_db) and _recorded(app_db) == []
    texts = "\n".join(h.reporter.texts(deployment_id))
    assert f"ran {NAME}.down.sql and removed its schema_migrations record" in texts
    assert "The backup " in texts and ".dump is kept." in texts


def test_without_a_down_script_a_failed_verification_needs_a_person(
        database: Database, database_factory: _Factory, app_db: str,
        migrations: MigrationsDir, tmp_path: Path, app: AppServer) -> None:
    migrations.write(NAME, SQL)
    playbook = _playbook(tmp_path)
    verify = playbook.step("verify")

    def row_lost_then_verify(ctx: StepContext) -> StepResult:
        query(app_db, "DELETE FROM schema_migrations")  # the seed's failed verification
        return verify.run(ctx)

    h = _harness(database, database_factory, _policy(app_db, migrations.root, app_url=app.url))
    deployment_id = _run(h, h.engine(_replace(playbook, "verify", row_lost_then_verify)))
    record = h.deployments.get(deployment_id)
    assert record is not None and record.state is S.NEEDS_ATTENTION
    error = record.error or ""
    assert "migration verification failed" not in error  # the undo's failure is what stops it
    assert f"{NAME} stays applied on production: it has no down script" in error
    assert "a restore discards every write made since it was taken" in error
    assert h.step_states(deployment_id)["apply"] == "undo_failed"
    assert query(app_db, "SELECT count(*) FROM orders") == [(2,)]  # nothing destroyed
