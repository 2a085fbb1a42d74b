"""The version's database migration inside the standard deployment (seed 3.1 step 4).

The real engine and standard playbook on the in-memory FakePlatform (its HTTP side through
``tests.playbooks.test_standard_failures.Web``), with a scratch PostgreSQL database as the
application's database and the real runner. Versions are ``2.0.0``, so the file is
``v2.0.0.sql`` and the seed's table records ``2.0.0``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from procedures.checklists import STANDARD_ITEMS, StepFact, states
from procedures.checks.http import HttpChecker
from procedures.clock import FixedClock
from procedures.engine import Engine
from procedures.errors import PolicyRefusal, StepFailure
from procedures.migrations.files import MigrationDirectory
from procedures.migrations.runner import MigrationRunner, MigrationTimeouts
from procedures.model import DeploymentState, ProcedureKind, Slot, StepState
from procedures.playbook import Playbook, StepContext, StepResult
from procedures.playbooks import standard_playbook
from procedures.playbooks.deploy_migration import (
    CHECKSUM_OPTION,
    FILE_OPTION,
    DeployMigration,
    migration_name,
    request_options,
)
from procedures.playbooks.migration import MigrationSteps
from procedures.policy import Policy
from storage.db import Database
from tests.conftest import _Factory
from tests.engine.conftest import ENV, REQUESTER, START, Harness
from tests.fakes.policies import make_policy
from tests.migrations.conftest import MigrationsDir, ScratchDatabases, query, tables
from tests.playbooks.test_standard_failures import Web, ZeroErrors

pytestmark = pytest.mark.postgres

S = DeploymentState
OLD, NEW = "1.0.0", "2.0.0"
SEED_TABLE = "CREATE TABLE schema_migrations (version varchar(255) PRIMARY KEY)"
SQL = "CREATE TABLE refunds (id int PRIMARY KEY);\nINSERT INTO refunds VALUES (1);\n"


class LosingRunner(MigrationRunner):
    """A runner whose record vanishes right after it is written (someone deleted it): the
    read-back that follows fails, as the seed's "Migration verification failed!"."""

    def apply(self, *args: Any, **kwargs: Any) -> Any:
        result = super().apply(*args, **kwargs)
        with self._connection() as conn:
            conn.execute("DELETE FROM schema_migrations")
        return result


@dataclass
class World:
    h: Harness
    http: HttpChecker
    app_db: str
    migrations: MigrationsDir

    @property
    def platform(self) -> Any:
        return self.h.platform

    def playbook(self, runner: type[MigrationRunner] = MigrationRunner) -> Playbook:
        timeouts = MigrationTimeouts(apply_statement=MigrationTimeouts().validate_statement)
        steps = MigrationSteps(timeouts=timeouts, poll=0.02, runner_for=lambda url, label, where:
                               runner(url, label=label, timeouts=timeouts, where=where))
        return standard_playbook(http=self.http, monitoring=self.h.policy.monitoring,
                                 migration=DeployMigration(steps))

    def run(self, playbook: Playbook | None = None, **options: Any) -> int:
        engine = self.engine(playbook or self.playbook())
        record = self.h.deployments.create(ProcedureKind.STANDARD, NEW, ENV, REQUESTER,
                                           state=S.QUEUED,
                                           options={"maintenance": True, **options})
        assert record.id is not None
        assert self.h.deployments.claim_next(engine.worker_id) is not None
        engine.run(record.id)
        return record.id

    def engine(self, playbook: Playbook) -> Engine:
        return self.h.engine(playbook, metrics_for=lambda _env: ZeroErrors())

    def texts(self, deployment_id: int) -> str:
        return "\n".join(self.h.reporter.texts(deployment_id))

    def succeeded_order(self) -> list[str]:
        return [d["step"] for d in self.h.audit_details("step.succeeded")]

    def checklist(self, deployment_id: int) -> dict[str, tuple[str | None, str | None]]:
        """The two migration items of the run's checklist: (ticking step, reason unticked)."""
        facts = [StepFact(s.name, s.state, s.finished_at, s.result)
                 for s in self.h.deployments.steps(deployment_id)]
        return {state.item.key: (state.tick.step if state.tick else None, state.reason)
                for state in states(STANDARD_ITEMS, None, facts)
                if "migration" in state.item.key}


def _policy(app_db: str | None, directory: Path, staging_db: str | None = None) -> Policy:
    policy = make_policy()
    env = policy.environments[ENV].model_copy(update={
        "database_url": app_db, "migrations_dir": str(directory),
        "promoted_from": "staging" if staging_db else None})
    staging = policy.environments["staging"].model_copy(update={"database_url": staging_db})
    return policy.model_copy(update={"environments": {ENV: env, "staging": staging}})


@pytest.fixture
def world(database: Database, database_factory: _Factory, app_db: str,
          migrations: MigrationsDir) -> Iterator[World]:
    h = Harness(database=database, factory=database_factory, clock=FixedClock(START),
                policy=_policy(app_db, migrations.root))
    h.environments.record_switch(ENV, Slot.BLUE, OLD)
    http = HttpChecker(transport=httpx.MockTransport(Web(h.platform)))
    try:
        yield World(h, http, app_db, migrations)
    finally:
        http.close()


def test_the_version_s_migration_runs_at_step_4_into_the_seed_table(world: World) -> None:
    query(world.app_db, SEED_TABLE)
    query(world.app_db, "INSERT INTO schema_migrations VALUES ('1.0.0')")  # the team's history
    world.migrations.write("v2.0.0", SQL)
    deployment_id = world.run()

    assert world.h.state(deployment_id) is S.SUCCEEDED
    order = world.succeeded_order()
    assert order[order.index("snapshot"):order.index("deploy_idle_slot") + 1] == [
        "snapshot", "maintenance_on", "migrate_database", "deploy_idle_slot"]
    assert query(world.app_db, "SELECT version FROM schema_migrations ORDER BY 1") == [
        ("1.0.0",), ("2.0.0",)]
    assert query(world.app_db, "SELECT version, applied_by FROM qlp_schema_migrations") == [
        ("2.0.0", f"qlp #{deployment_id}")]
    assert query(world.app_db, "SELECT count(*) FROM refunds") == [(1,)]
    texts = world.texts(deployment_id)
    assert "Validated v2.0.0.sql on production: ran in a transaction" in texts
    assert ("Migration v2.0.0.sql applied in one transaction on production, under the "
            "migration lock, and recorded in schema_migrations") in texts
    assert "It stays applied if this deployment rolls back later." in texts
    assert world.checklist(deployment_id) == {
        "database-migration-tested-if-applicable": (
            None, "production is promoted from no environment with a database"),
        "database-migrations-completed-if-applicable": ("migrate_database", None)}


def test_no_file_for_the_version_says_so(world: World) -> None:
    world.migrations.write("v1.9.0", SQL)  # another version's
    deployment_id = world.run()
    assert world.h.state(deployment_id) is S.SUCCEEDED
    assert (f"No migration for 2.0.0: {world.migrations.root}/v2.0.0.sql does not exist."
            in world.texts(deployment_id))
    assert tables(world.app_db) == []
    assert world.checklist(deployment_id) == {
        "database-migration-tested-if-applicable": (None, "no migration for 2.0.0"),
        "database-migrations-completed-if-applicable": (None, "no migration for 2.0.0")}


def test_an_environment_without_migrations_skips_the_step(world: World) -> None:
    env = world.h.policy.environments[ENV].model_copy(update={"migrations_dir": None})
    world.h.policy = world.h.policy.model_copy(
        update={"environments": {**world.h.policy.environments, ENV: env}})
    deployment_id = world.run()
    assert world.h.state(deployment_id) is S.SUCCEEDED
    steps = {s.name: s.state for s in world.engine(world.playbook()).snapshot(
        deployment_id).steps}
    assert steps["migrate_database"] is StepState.SKIPPED


def test_a_file_changed_since_the_request_stops_before_anything_is_deployed(
        world: World) -> None:
    world.migrations.write("v2.0.0", SQL)
    deployment_id = world.run(**{FILE_OPTION: "v2.0.0", CHECKSUM_OPTION: "0" * 64})
    record = world.h.deployments.get(deployment_id)
    assert record is not None and record.state is S.ROLLED_BACK
    assert "v2.0.0.sql changed since it was requested" in (record.error or "")
    assert world.platform.called("deploy") == []
    assert tables(world.app_db) == []


def test_a_file_gone_since_the_request_stops(world: World) -> None:
    deployment_id = world.run(**{FILE_OPTION: "v2.0.0", CHECKSUM_OPTION: "0" * 64})
    record = world.h.deployments.get(deployment_id)
    assert record is not None and record.state is S.ROLLED_BACK
    assert "v2.0.0.sql was in" in (record.error or "") and "is gone now" in (record.error or "")
    assert world.platform.called("deploy") == []


def test_already_applied_with_the_same_checksum_is_not_run_again(world: World) -> None:
    world.migrations.write("v2.0.0", SQL)
    migration = MigrationDirectory(world.migrations.root).load("v2.0.0")
    MigrationRunner(world.app_db).apply(migration, applied_by="qlp #1 for U0DBA")
    deployment_id = world.run()
    assert world.h.state(deployment_id) is S.SUCCEEDED
    assert "v2.0.0.sql was applied on production already" in world.texts(deployment_id)
    assert "by qlp #1 for U0DBA): not run again." in world.texts(deployment_id)
    assert query(world.app_db, "SELECT count(*) FROM refunds") == [(1,)]


def test_applied_with_another_checksum_is_refused(world: World) -> None:
    path = world.migrations.write("v2.0.0", SQL)
    MigrationRunner(world.app_db).apply(MigrationDirectory(world.migrations.root).load("v2.0.0"),
                                        applied_by="qlp #1")
    path.write_text(SQL + "INSERT INTO refunds VALUES (2);\n", encoding="utf-8")
    deployment_id = world.run()
    record = world.h.deployments.get(deployment_id)
    assert record is not None and record.state is S.ROLLED_BACK
    assert "v2.0.0 changed since it was applied" in (record.error or "")
    assert world.platform.called("deploy") == []
    assert query(world.app_db, "SELECT count(*) FROM refunds") == [(1,)]


def test_applied_by_this_run_before_a_restart_counts_as_done(world: World) -> None:
    world.migrations.write("v2.0.0", SQL)
    # The id the next deployment gets: the run applied it, then the worker died.
    probe = world.h.deployments.create(ProcedureKind.STANDARD, "0.0.1", ENV, REQUESTER,
                                       state=S.CANCELLED)
    assert probe.id is not None
    MigrationRunner(world.app_db).apply(MigrationDirectory(world.migrations.root).load("v2.0.0"),
                                        applied_by=f"qlp #{probe.id + 1}")
    deployment_id = world.run()
    assert deployment_id == probe.id + 1
    assert world.h.state(deployment_id) is S.SUCCEEDED
    assert "had been applied by this run before the restart" in world.texts(deployment_id)
    assert query(world.app_db, "SELECT count(*) FROM refunds") == [(1,)]


def test_a_file_without_a_database_url_is_refused(world: World) -> None:
    world.migrations.write("v2.0.0", SQL)
    world.h.policy = _policy(None, world.migrations.root)
    deployment_id = world.run()
    record = world.h.deployments.get(deployment_id)
    assert record is not None and record.state is S.ROLLED_BACK
    assert "v2.0.0.sql exists for 2.0.0 but production has no database" in (record.error or "")
    assert world.platform.called("deploy") == []


def test_a_later_rollback_leaves_the_migration_applied(world: World) -> None:
    world.migrations.write("v2.0.0", SQL)
    world.migrations.write("v2.0.0.down", "DROP TABLE refunds;")
    playbook = world.playbook()

    def smoke_fails(ctx: StepContext) -> StepResult:
        raise StepFailure("smoke tests failed on the green slot")

    steps = tuple(s if s.name != "smoke_tests" else
                  type(s)(s.name, s.title, smoke_fails) for s in playbook.steps)
    deployment_id = world.run(Playbook(playbook.kind, playbook.title, steps))
    assert world.h.state(deployment_id) is S.ROLLED_BACK
    assert "refunds" in tables(world.app_db)  # the down script is a person's call here
    assert "no undo for: " in world.texts(deployment_id)
    assert "Database migration of this version (if any)" in world.texts(deployment_id)


def test_a_failed_read_back_runs_the_down_script(world: World) -> None:
    world.migrations.write("v2.0.0", SQL)
    world.migrations.write("v2.0.0.down", "DROP TABLE refunds;")
    deployment_id = world.run(world.playbook(LosingRunner))
    record = world.h.deployments.get(deployment_id)
    assert record is not None and record.state is S.ROLLED_BACK
    assert "migration verification failed: v2.0.0 is not recorded" in (record.error or "")
    assert "refunds" not in tables(world.app_db)
    assert ("Migration rolled back on production: ran v2.0.0.down.sql and schema_migrations "
            "had no record of it by this run.") in world.texts(deployment_id)
    assert world.platform.called("deploy") == []


def test_a_promoted_environment_rehearses_on_its_source_first(
        world: World, scratch: ScratchDatabases) -> None:
    staging_db = scratch.create()
    world.h.policy = _policy(world.app_db, world.migrations.root, staging_db)
    world.migrations.write("v2.0.0", SQL)
    playbook = world.playbook()
    # The staging helper's rehearsal steps (if any) deploy there; only the database is ours.
    steps = tuple(s for s in playbook.steps if not s.name.startswith("rehearsal"))
    deployment_id = world.run(Playbook(playbook.kind, playbook.title, steps))
    assert world.h.state(deployment_id) is S.SUCCEEDED, world.h.deployments.get(deployment_id)
    for url in (staging_db, world.app_db):
        assert query(url, "SELECT count(*) FROM refunds") == [(1,)]
    texts = world.texts(deployment_id)
    assert texts.index("Rehearsed on staging") < texts.index("Migration v2.0.0.sql applied")
    assert world.checklist(deployment_id) == {
        "database-migration-tested-if-applicable": ("migrate_database", None),
        "database-migrations-completed-if-applicable": ("migrate_database", None)}


def test_request_options_record_the_checksum_and_refuse_a_bad_file(
        migrations: MigrationsDir, app_db: str) -> None:
    policy = _policy(app_db, migrations.root)
    env = policy.environments[ENV]
    assert request_options(env, "v2.0.0") == {}
    path = migrations.write("v2.0.0", SQL)
    options = request_options(env, "v2.0.0")
    assert options[FILE_OPTION] == "v2.0.0"
    assert options[CHECKSUM_OPTION] == MigrationDirectory(migrations.root).load(
        "v2.0.0").checksum
    path.write_text("BEGIN;\nCREATE TABLE x (id int);\nCOMMIT;\n", encoding="utf-8")
    with pytest.raises(PolicyRefusal, match="controls transactions itself"):
        request_options(env, "v2.0.0")
    assert migration_name("v1.2.3+build.5") is None
    assert request_options(env, "v1.2.3+build.5") == {}
    assert migration_name("2.0.0") == "v2.0.0"
