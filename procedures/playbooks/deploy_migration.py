"""A version's database migration inside the standard deployment (seed 3.1, step 4).

The seed's ``production-deployment.sh`` runs ``migrations/v${VERSION}.sql`` when that file
exists. Here the file is ``<migrations_dir>/<version>.sql`` of the environment (versions carry
their ``v``: ``v1.2.3.sql``), and :class:`DeployMigration` runs it as one step of the standard
playbook, after the pre-deployment snapshot (which took the ``pg_dump`` backup) and maintenance
mode, before the new version is deployed, with every safeguard of ``/qlp migrate`` (the same
:class:`~procedures.playbooks.migration.MigrationSteps` and
:class:`~procedures.migrations.runner.MigrationRunner`):

1. the file is found by the migration-name rules, checked against the checksum the request
   recorded (``migration_checksum``, see :func:`request_options`), and refused if it changed;
2. it is validated in a transaction that is rolled back;
3. where the environment is promoted from another one with a database, it is applied there
   first (the migration playbook's ``staging_first``);
4. it is applied under the advisory lock, recorded in ``schema_migrations`` (qlp's layout or
   the seed's ``schema_migrations(version)``) and read back. A failed read-back runs the down
   script (the migration playbook's rollback) before the step fails.

Already applied with the same checksum (by ``/qlp migrate``, an earlier deployment of this
version, or this run before a restart): said, not run again. Applied with another checksum:
refused. No file for the version: the step says "no migration for <version>". A file but no
``database_url``: refused before anything is deployed (the new version expects that schema).

A later failure (smoke tests, monitoring) switches traffic back but leaves the migration
applied, and the step says so up front: the previous version must work on the new schema (the
seed's deployment never rolls a database back either), and a down script run automatically
after minutes of traffic could destroy what the new version wrote. The engine's rollback
message lists the step under "no undo for".
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from procedures.errors import StepFailure
from procedures.migrations.files import DOWN_SUFFIX, MIGRATION_NAME, MigrationDirectory
from procedures.migrations.runner import MigrationAlreadyApplied
from procedures.playbook import StepContext, StepResult
from procedures.playbooks.migration import (
    MigrationSteps,
    _applied_by,
    _target,
    rehearsal_environment,
)
from procedures.policy import Environment

__all__ = ["CHECKSUM_OPTION", "FILE_OPTION", "DeployMigration", "migration_name",
           "request_options"]

FILE_OPTION = "migration_file"
CHECKSUM_OPTION = "migration_checksum"


def migration_name(version: str) -> str | None:
    """The migration a deployment of ``version`` carries (``v1.2.3``), or None when the
    version cannot name a migration file (``+build`` metadata)."""
    name = version if version.startswith("v") else f"v{version}"
    if not MIGRATION_NAME.match(name) or ".." in name or name.endswith(DOWN_SUFFIX):
        return None
    return name


def _file(environment: Environment, version: str) -> tuple[str, Path] | None:
    name = migration_name(version)
    if name is None or not environment.migrations_dir:
        return None
    path = Path(environment.migrations_dir) / f"{name}.sql"
    return (name, path) if path.is_file() else None


def request_options(environment: Environment, version: str | None) -> dict[str, Any]:
    """What a deployment request records about the version's migration: its name and the
    checksum the approvers approve ({} when there is none). A file that is not a valid
    migration refuses the request now (PolicyRefusal), not after approval."""
    found = _file(environment, version) if version else None
    if found is None:
        return {}
    name, _ = found
    assert environment.migrations_dir is not None
    migration = MigrationDirectory(environment.migrations_dir).load(name)
    return {FILE_OPTION: name, CHECKSUM_OPTION: migration.checksum}


def _has_migrations(ctx: StepContext) -> bool:
    return bool(ctx.environment.migrations_dir)


class DeployMigration:
    """The standard playbook's ``migrate_database`` step (see the module docstring)."""

    when = staticmethod(_has_migrations)

    def __init__(self, steps: MigrationSteps | None = None) -> None:
        self.steps = steps or MigrationSteps()

    def run(self, ctx: StepContext) -> StepResult:
        version = ctx.version or ""
        env, settings = ctx.environment_name, ctx.environment
        if not settings.migrations_dir:  # normally skipped (``when``) before it gets here
            ctx.report(f"No migration for {version}: {env} has no migrations_dir.")
            return {"name": None, **_evidence(None, f"no migrations_dir on {env}")}
        found = _file(settings, version)
        requested = ctx.options.get(FILE_OPTION)
        if found is None:
            if requested:
                raise StepFailure(f"{requested}.sql was in {settings.migrations_dir} when this "
                                  "deployment was requested and is gone now; nothing was done",
                                  hint="Request the deployment again.")
            ctx.report(f"No migration for {version}: {settings.migrations_dir}/"
                       f"{migration_name(version) or version}.sql does not exist.")
            return {"name": None, **_evidence(None, f"no migration for {version}")}
        name, path = found
        if not settings.database_url:
            raise StepFailure(
                f"{path.name} exists for {version} but {env} has no database: "
                f"environments.{env}.database_url is not set, so it cannot be applied and "
                f"{version} is not deployed", hint="Set the environment's database_url.")
        steps = self.steps
        target = _target(ctx.policy, env)
        migration = steps._load(ctx, target, name=name, checksum_option=CHECKSUM_OPTION)
        up = migration.up
        runner = steps.runner(ctx, target.url)
        applied_by = _applied_by(ctx)
        try:
            mine = runner.check_not_applied(up, applied_by=applied_by)
        except MigrationAlreadyApplied as already:
            ctx.report(f"{path.name} was applied on {env} already "
                       f"({already.applied.describe()}): not run again.")
            return {"name": None, "file": name, "already_applied": True,
                    **_evidence(False, "applied before this deployment")}
        source = rehearsal_environment(ctx.policy, env)
        if mine is None:
            invalid = runner.invalid_indexes()
            validation = steps._blocking(ctx, runner, lambda: runner.validate(migration))
            ctx.report(f"Validated {path.name} on {env}: {validation.note}.")
            if source is not None:
                steps.rehearse(ctx, name, CHECKSUM_OPTION)
            result = steps._blocking(ctx, runner, lambda: runner.apply(
                migration, applied_by=applied_by, known_invalid=invalid))
            resumed = result.resumed
        else:
            resumed = True
        try:
            row = runner.verify(up)
        except StepFailure as failure:
            steps.roll_back(ctx, name, CHECKSUM_OPTION, _backup(ctx.result_of("snapshot")))
            raise StepFailure(f"migration verification failed: {failure.message}; rolled "
                              "back with its down script", hint="Nothing was deployed.") from None
        how = ("had been applied by this run before the restart" if resumed else
               "applied in one transaction" if up.transactional else
               "applied alone, outside a transaction")
        ctx.report(f"Migration {path.name} {how} on {env}, under the migration lock, and "
                   f"recorded in schema_migrations ({row.describe()}). It stays applied if this "
                   "deployment rolls back later.")
        # (on a resume the rehearsal, which comes before the apply, had run before the crash)
        return {"name": name, "checksum": up.checksum, "applied_by": row.applied_by,
                "resumed": resumed, **_evidence(source is not None, f"{env} is promoted from "
                                                "no environment with a database")}


def _evidence(rehearsed: bool | None, reason: str) -> dict[str, Any]:
    """What the checklist reads (``procedures.checklists``): "Database migrations completed"
    from ``migration``, "Database migration tested" (on the promoted-from environment) from
    ``rehearsal``; ``rehearsed`` None: there was no migration at all."""
    migration = {"taken": True} if rehearsed is not None else {"taken": False,
                                                              "reason": reason}
    rehearsal = {"taken": True} if rehearsed else {"taken": False, "reason": reason}
    return {"migration": migration, "rehearsal": rehearsal}


def _backup(snapshot: Mapping[str, Any]) -> str | None:
    backup = snapshot.get("database_backup") or {}
    return str(backup.get("location")) if backup.get("taken") else None
