"""The database migration playbook: the seed's "Database Migration Playbook" as durable steps.

How the seed's script maps to the steps (in order)::

    seed (database-migration-deployment.sh)         step
    1. file exists + ``psql --dry-run``              validate         (rolled-back transaction)
    3. test-migration-staging.sh                     staging_first    (production only)
    2. create-database-backup.sh                     backup           (pg_dump)
    4. maintenance-mode.sh enable                    maintenance_on   (--maintenance only)
    5. psql -f migration.sql                         apply            (advisory lock, run, record)
    6. SELECT version FROM schema_migrations         verify
    8. maintenance-mode.sh disable                   maintenance_off  (--maintenance only)

What the steps do differently from the seed, on purpose:

- ``psql --dry-run`` does not exist: ``validate`` runs the file in a transaction that is always
  rolled back, with short lock and statement timeouts (``procedures.migrations.runner``). It
  also refuses a migration already applied (same checksum) or changed since (other checksum),
  and a file that changed since the request was approved (its checksum is in the request).
- Validation comes first, before anything changes anywhere; then the rehearsal on staging, then
  the backup, so a broken file costs neither a staging change nor a dump.
- **Staging first.** When the target is ``production`` and the policy has a ``staging``
  environment with a ``database_url``, ``staging_first`` validates and applies the same file
  (same checksum; staging's own ``migrations_dir`` if it has one, else production's) on
  staging's database. Already applied there: said and skipped. It is not undone if production
  fails later (a staging database is where a failed rehearsal may stay); it refuses to run if
  staging and production name the same database.
- **One connection, one advisory lock.** ``apply`` takes ``pg_try_advisory_lock`` on the
  connection that then runs the file and writes the ``schema_migrations`` row, and releases it
  at the end: a session lock held for the whole migration in one step (rather than an
  ``xact`` lock, which would not cover files that run outside a transaction). A second
  migration of the same database is refused with "another migration is running (#id)". The
  engine's environment lock already keeps two runs of the bot off one environment; the
  advisory lock also covers other bot replicas, other environments sharing the database and
  other tools that use the same key.
- **Failure mid-way.** A transactional file rolls back by itself, and the step says so. A file
  that runs outside a transaction (CONCURRENTLY, VACUUM, ADD VALUE) is followed by its down
  script (``<name>.down.sql``) if there is one, and the step says whether it ran.
- A successful ``apply`` has no undo: if ``verify`` or ``maintenance_off`` failed after it,
  running a down script automatically could destroy data, so the run is ROLLED_BACK (the
  maintenance mode is turned off) with the migration still applied, and the failure says so.
- **Long statements.** The file runs in a thread; the step waits for it through ``ctx.sleep``,
  so the run keeps heartbeating, and a cancel or the step's deadline cancels the statement on
  the server (``MigrationRunner.cancel``) instead of leaving it running.
- **Resume.** ``apply`` may run again after a crash: a ``schema_migrations`` row written by this
  very run (``applied_by`` names the run) counts as done.

The playbook uses ``ctx.environment`` (``database_url``, ``migrations_dir``), the optional
:class:`~procedures.platforms.base.SupportsMaintenance` of ``ctx.platform`` (only with
``--maintenance``), psycopg and ``pg_dump``. It imports no cloud SDK.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, timedelta
from pathlib import Path
from typing import Any, TypeVar

from procedures.errors import StepFailure
from procedures.migrations.backup import PgDump
from procedures.migrations.files import MigrationDirectory, MigrationFile
from procedures.migrations.runner import (
    MigrationAlreadyApplied,
    MigrationRunner,
    MigrationTimeouts,
    same_database,
)
from procedures.model import ProcedureKind
from procedures.platforms.base import SupportsMaintenance
from procedures.playbook import Playbook, RetryPolicy, Step, StepContext, StepResult
from procedures.policy import Policy

__all__ = ["MigrationSteps", "RunnerFactory", "migration_playbook", "rehearses_on_staging"]

STAGING = "staging"
PRODUCTION = "production"
T = TypeVar("T")
# (database URL, label for application_name, " on staging" or "") -> a runner
RunnerFactory = Callable[[str, str, str], MigrationRunner]


@dataclass(frozen=True)
class _Target:
    environment: str
    url: str
    directory: MigrationDirectory | None


def _target(policy: Policy, environment: str) -> _Target:
    settings = policy.environments.get(environment)
    if settings is None:
        raise StepFailure(f"environment {environment} is not in the policy")
    if not settings.database_url:
        raise StepFailure(f"{environment} has no database: set environments.{environment}."
                          "database_url in the policy")
    directory = MigrationDirectory(settings.migrations_dir) if settings.migrations_dir else None
    return _Target(environment, settings.database_url, directory)


def rehearses_on_staging(policy: Policy, environment: str) -> bool:
    """Whether a migration of ``environment`` is applied on staging first."""
    staging = policy.environments.get(STAGING)
    return environment == PRODUCTION and staging is not None and bool(staging.database_url)


def _name(ctx: StepContext) -> str:
    name = ctx.options.get("migration") or ctx.version
    if not name:
        raise StepFailure("this run names no migration")
    return str(name)


def _applied_by(ctx: StepContext) -> str:
    who = ctx.options.get("requested_by")
    return f"qlp #{ctx.deployment_id}" + (f" for {who}" if who else "")


def _size(count: int) -> str:
    if count < 1024:
        return f"{count} bytes"
    value = float(count)
    for unit in ("KiB", "MiB", "GiB"):
        value /= 1024
        if value < 1024 or unit == "GiB":
            break
    return f"{value:.1f} {unit}"


class MigrationSteps:
    """The step functions of the migration playbook.

    ``backups_dir`` is where dumps go (``<backups_dir>/<env>/<timestamp>-<name>.dump``);
    ``runner_for`` builds a :class:`MigrationRunner` (tests pass their own timeouts);
    ``poll`` is how often (seconds, wall time) a waiting step looks at its thread or pg_dump.
    """

    def __init__(self, *, backups_dir: Path, pg_dump: PgDump | None = None,
                 timeouts: MigrationTimeouts | None = None,
                 runner_for: RunnerFactory | None = None, poll: float = 0.2) -> None:
        self.backups_dir = backups_dir
        self.pg_dump = pg_dump or PgDump()
        self.timeouts = timeouts or MigrationTimeouts()
        self._runner_for = runner_for
        self.poll = poll

    # -- helpers --------------------------------------------------------------------------------

    def runner(self, ctx: StepContext, url: str, where: str = "") -> MigrationRunner:
        label = f"#{ctx.deployment_id}"
        if self._runner_for is not None:
            return self._runner_for(url, label, where)
        return MigrationRunner(url, label=label, timeouts=self.timeouts, where=where)

    def _load(self, ctx: StepContext, target: _Target,
              directory: MigrationDirectory | None = None) -> MigrationFile:
        directory = directory or target.directory
        if directory is None:
            raise StepFailure(f"{target.environment} has no migrations directory: set "
                              f"environments.{target.environment}.migrations_dir in the policy")
        migration = directory.load(_name(ctx))
        expected = ctx.options.get("checksum")
        if expected and migration.checksum != expected:
            raise StepFailure(
                f"{migration.up.path.name} changed since it was requested (checksum then "
                f"{str(expected)[:12]}, now {migration.checksum[:12]}); nothing was done",
                hint="Request it again, so the approvers approve the file as it is now.")
        return migration

    def _blocking(self, ctx: StepContext, runner: MigrationRunner, work: Callable[[], T]) -> T:
        """Run ``work`` in a thread; meanwhile heartbeat and notice cancel and deadline."""
        box: dict[str, Any] = {}

        def target() -> None:
            try:
                box["value"] = work()
            except BaseException as exc:  # handed to the step's thread below
                box["error"] = exc

        thread = threading.Thread(target=target, name="qlp-migration", daemon=True)
        thread.start()
        try:
            while thread.is_alive():
                thread.join(self.poll)
                ctx.sleep(0)  # raises on cancel, take-over or the step's deadline
        except BaseException:
            runner.cancel()
            thread.join(self.timeouts.lock.total_seconds() + 60)
            error = box.get("error")
            if error is not None:
                ctx.report(f"Stopped: {getattr(error, 'message', error)}")
            raise
        if "error" in box:
            raise box["error"]
        value: T = box["value"]
        return value

    # -- steps ----------------------------------------------------------------------------------

    def validate(self, ctx: StepContext) -> StepResult:
        """The file exists, is unchanged, not applied yet, and runs in a rolled-back transaction."""
        target = _target(ctx.policy, ctx.environment_name)
        migration = self._load(ctx, target)
        up = migration.up
        runner = self.runner(ctx, target.url)
        runner.check_not_applied(up)
        invalid = runner.invalid_indexes()
        validation = self._blocking(ctx, runner, lambda: runner.validate(migration))
        how = ("runs in one transaction" if up.transactional else
               f"runs alone, outside a transaction ({up.outside_transaction})")
        down = migration.down.path.name if migration.down else "none"
        ctx.report(f"Validated {up.path.name} on {ctx.environment_name}: {validation.note}. "
                   f"It {how}; checksum {up.checksum[:12]}; down script: {down}.")
        if invalid:
            ctx.report(f"Note: {ctx.environment_name} already has INVALID indexes: "
                       f"{', '.join(sorted(invalid))}.")
        return {"name": up.name, "checksum": up.checksum, "transactional": up.transactional,
                "outside_transaction": up.outside_transaction, "dry_run": validation.executed,
                "note": validation.note, "down": migration.down is not None,
                "invalid_indexes": sorted(invalid)}

    def staging_first(self, ctx: StepContext) -> StepResult:
        """Validate and apply the same file on staging's database before production's."""
        target = _target(ctx.policy, ctx.environment_name)
        staging = _target(ctx.policy, STAGING)
        if same_database(staging.url, target.url):
            raise StepFailure(f"staging and {ctx.environment_name} have the same database_url; "
                              "a rehearsal there would be the real thing",
                              hint="Give staging its own database.")
        migration = self._load(ctx, target, staging.directory or target.directory)
        runner = self.runner(ctx, staging.url, " on staging")
        try:
            runner.check_not_applied(migration.up)
        except MigrationAlreadyApplied as already:
            ctx.report(f"{migration.name} was applied on staging already "
                       f"({already.applied.describe()}): not again.")
            return {"staging": "already applied", "applied_at": already.applied.applied_at}
        validation = self._blocking(ctx, runner, lambda: runner.validate(migration))
        result = self._blocking(ctx, runner, lambda: runner.apply(
            migration, applied_by=_applied_by(ctx), known_invalid=runner.invalid_indexes()))
        ctx.report(f"Rehearsed on staging: validated ({validation.note}) and applied "
                   f"{migration.name}. Staging keeps it even if {ctx.environment_name} fails.")
        return {"staging": "applied", "applied_at": result.applied_at}

    def backup(self, ctx: StepContext) -> StepResult:
        """``pg_dump`` of the target database into the bot's backups directory."""
        target = _target(ctx.policy, ctx.environment_name)
        name = _name(ctx)
        folder = self.backups_dir / ctx.environment_name
        stamp = ctx.now().astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
        path = folder / f"{stamp}-{name}.dump"
        number = 1
        while path.exists():  # a retry within the same second
            number += 1
            path = folder / f"{stamp}-{name}-{number}.dump"
        dump = self.pg_dump.dump(target.url, path, wait=lambda: ctx.sleep(0), poll=self.poll)
        ctx.report(f"Backup of {ctx.environment_name}'s database: {dump.path} "
                   f"({_size(dump.size)}; restore with pg_restore).")
        return {"path": str(dump.path), "bytes": dump.size}

    def maintenance_on(self, ctx: StepContext) -> StepResult:
        """Maintenance mode on (asked for with --maintenance)."""
        platform = ctx.platform
        if not isinstance(platform, SupportsMaintenance):
            raise StepFailure(
                f"maintenance mode was asked for, but the platform of {ctx.environment_name} "
                f"({type(platform).__name__}) does not support it",
                hint="migrate without --maintenance")
        platform.set_maintenance(True)
        ctx.report(f"Maintenance mode on: {ctx.environment.url} answers 503 during the "
                   "migration.", broadcast=True)
        return {"maintenance": True}

    def maintenance_off(self, ctx: StepContext) -> StepResult:
        """Maintenance mode off after the migration."""
        platform = ctx.platform
        if isinstance(platform, SupportsMaintenance):
            platform.set_maintenance(False)
            ctx.report(f"Maintenance mode off: {ctx.environment.url} serves traffic again.",
                       broadcast=True)
        return {"maintenance": False}

    def undo_maintenance_on(self, ctx: StepContext) -> None:
        platform = ctx.platform
        if isinstance(platform, SupportsMaintenance):
            platform.set_maintenance(False)
            ctx.report(f"Maintenance mode off: {ctx.environment.url} serves traffic again.")

    def apply(self, ctx: StepContext) -> StepResult:
        """Under the advisory lock: run the file and record it in ``schema_migrations``."""
        target = _target(ctx.policy, ctx.environment_name)
        migration = self._load(ctx, target)
        runner = self.runner(ctx, target.url)
        known = frozenset(ctx.result_of("validate").get("invalid_indexes") or ())
        result = self._blocking(ctx, runner, lambda: runner.apply(
            migration, applied_by=_applied_by(ctx), known_invalid=known))
        if result.resumed:
            ctx.report(f"{result.name} had been applied by this run before the restart.")
        else:
            how = "in one transaction" if result.transactional else "alone, outside a transaction"
            ctx.report(f"Applied {migration.up.path.name} on {ctx.environment_name} {how}, "
                       "under the migration lock.")
        return {"name": result.name, "checksum": result.checksum,
                "transactional": result.transactional, "applied_at": result.applied_at,
                "applied_by": result.applied_by, "resumed": result.resumed}

    def verify(self, ctx: StepContext) -> StepResult:
        """``schema_migrations`` has the row, with the file's checksum."""
        target = _target(ctx.policy, ctx.environment_name)
        migration = self._load(ctx, target)
        runner = self.runner(ctx, target.url)
        try:
            row = runner.verify(migration.up)
        except StepFailure as failure:
            backup = ctx.result_of("backup").get("path")
            raise StepFailure(
                f"{failure.message}; the migration ran and is NOT undone automatically (a "
                "down script may destroy data)",
                hint=f"Look at schema_migrations; the backup is {backup or 'missing'}.",
            ) from None
        ctx.report(f"schema_migrations: {row.name}, checksum {row.checksum[:12]}, applied "
                   f"{row.describe()}.")
        return {"name": row.name, "checksum": row.checksum, "applied_at": row.applied_at,
                "applied_by": row.applied_by}


def _maintenance_requested(ctx: StepContext) -> bool:
    return bool(ctx.options.get("maintenance"))


def _rehearse(ctx: StepContext) -> bool:
    return rehearses_on_staging(ctx.policy, ctx.environment_name)


def migration_playbook(*, backups_dir: Path, pg_dump: PgDump | None = None,
                       timeouts: MigrationTimeouts | None = None,
                       runner_for: RunnerFactory | None = None,
                       poll: float = 0.2) -> Playbook:
    """The database migration (``ProcedureKind.MIGRATION``); see the module docstring."""
    steps = MigrationSteps(backups_dir=backups_dir, pg_dump=pg_dump, timeouts=timeouts,
                           runner_for=runner_for, poll=poll)
    apply_for = steps.timeouts.apply_statement + timedelta(minutes=5)
    external = RetryPolicy(attempts=3, backoff=timedelta(seconds=5))
    return Playbook(
        kind=ProcedureKind.MIGRATION,
        title="Database migration",
        steps=(
            Step("validate", "Validate the migration (rolled back)", steps.validate,
                 timeout=timedelta(minutes=5), retry=external),
            Step("staging_first", "Apply on staging first", steps.staging_first,
                 timeout=apply_for + timedelta(minutes=5), retry=external, when=_rehearse),
            Step("backup", "Back up the database (pg_dump)", steps.backup,
                 timeout=timedelta(minutes=60), retry=RetryPolicy(attempts=2)),
            Step("maintenance_on", "Maintenance mode on", steps.maintenance_on,
                 undo=steps.undo_maintenance_on, timeout=timedelta(minutes=1),
                 retry=RetryPolicy(attempts=3), when=_maintenance_requested),
            Step("apply", "Apply the migration (advisory lock)", steps.apply,
                 timeout=apply_for, retry=external),
            Step("verify", "Verify schema_migrations", steps.verify,
                 timeout=timedelta(minutes=1), retry=external),
            Step("maintenance_off", "Maintenance mode off", steps.maintenance_off,
                 timeout=timedelta(minutes=1), retry=RetryPolicy(attempts=3),
                 when=_maintenance_requested),
        ),
    )
