"""The database migration playbook: the seed's "Database Migration Playbook" as durable steps.

How the seed's script maps to the steps (in order)::

    seed (database-migration-deployment.sh)         step
    1. file exists + ``psql --dry-run``              validate         (rolled-back transaction)
    3. test-migration-staging.sh                     staging_first    (promoted_from only)
    2. create-database-backup.sh                     backup           (pg_dump)
    4. maintenance-mode.sh enable + sleep 30         maintenance_on   (--maintenance only)
    5. psql -f migration.sql                         apply            (advisory lock, run, record)
    6. SELECT version FROM schema_migrations         verify
       rollback-migration.sh (verification failed)  undo of apply    (the down script)
    7. migration-<version>-app-update.sh             app_update       (header app-update= only)
    8. maintenance-mode.sh disable                   maintenance_off  (--maintenance only)
    9. post-migration-tests.sh                       post_migration_tests

What the steps do differently from the seed, on purpose:

- ``psql --dry-run`` does not exist: ``validate`` runs the file in a transaction that is always
  rolled back, with short lock and statement timeouts (``procedures.migrations.runner``). It
  also refuses a migration already applied (same checksum) or changed since (other checksum),
  and a file that changed since the request was approved (its checksum is in the request).
- Validation comes first, before anything changes anywhere; then the rehearsal on staging, then
  the backup, so a broken file costs neither a staging change nor a dump.
- **Staging first.** When the target environment is promoted from another one
  (``environments.<env>.promoted_from``, e.g. production from staging) that has a
  ``database_url``, ``staging_first`` validates and applies the same file (same checksum; that
  environment's own ``migrations_dir`` if it has one, else the target's) on its database.
  Already applied there: said and skipped. It is not undone if the target fails later (a
  rehearsal database is where a failed rehearsal may stay); it refuses to run if both name the
  same database.
- **Drain.** With ``--maintenance``, ``maintenance_on`` waits ``DRAIN`` (the seed's 30 s) after
  turning maintenance mode on, so requests in flight finish before the schema changes.
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
- **Rolling back (the seed's ``rollback-migration.sh``).** When a step after ``apply`` fails
  (verification, the app update, the post-migration tests) or the run is cancelled, the undo of
  ``apply`` runs the migration's **down script** and removes its ``schema_migrations`` record,
  then maintenance mode ends: the run is ROLLED_BACK and the thread says what ran. The down
  script is the team's own inverse, and ``validate`` already ran it after the file. The
  ``pg_dump`` backup is never restored automatically: a restore puts *every* table back to
  the moment of the dump and silently discards every write made since. So with no down
  script, the undo fails on purpose: the run NEEDS ATTENTION (paged, environment locked), and
  the thread names the backup and the ``pg_restore`` command for a person to decide.
- **App update and post-migration tests** (seed steps 7 and 9). A file whose header names
  ``app-update=/path`` gets a POST there on the live slot after verification
  (:class:`~procedures.migrations.app_update.AppUpdateHook`); the post-migration tests are the
  environment's health and smoke paths on its public URL, after maintenance mode is off.
- **Migration types.** ``-- qlp: type=data`` gives a data migration the longer
  ``MigrationTimeouts.data_statement``; ``schema`` (the default) and ``performance`` run under
  ``apply_statement``.
- **Long statements.** The file runs in a thread; the step waits for it through ``ctx.sleep``,
  so the run keeps heartbeating, and a cancel or the step's deadline cancels the statement on
  the server (``MigrationRunner.cancel``) instead of leaving it running.
- **Resume.** ``apply`` may run again after a crash: a ``schema_migrations`` row written by this
  very run (``applied_by`` names the run) counts as done.

The playbook uses ``ctx.environment`` (``database_url``, ``migrations_dir``, ``health``,
``smoke``), the optional :class:`~procedures.platforms.base.SupportsMaintenance` of
``ctx.platform`` (only with ``--maintenance``), psycopg, ``pg_dump`` and HTTP. It imports no
cloud SDK. The standard deployment runs a version's migration with these same steps
(:mod:`procedures.playbooks.deploy_migration`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, timedelta
from pathlib import Path
from typing import Any, TypeVar

from procedures.checks.http import HttpChecker
from procedures.durations import format_duration
from procedures.errors import StepFailure
from procedures.migrations.app_update import AppUpdateHook
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
from procedures.playbooks.final_validation import report_probes
from procedures.policy import Policy

__all__ = ["DRAIN", "MigrationSteps", "RunnerFactory", "migration_playbook",
           "rehearsal_environment", "rehearses_on_staging"]

# The seed's "Waiting for active connections to drain... sleep 30" after maintenance mode on.
DRAIN = timedelta(seconds=30)
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


def rehearsal_environment(policy: Policy, environment: str) -> str | None:
    """The environment a migration of ``environment`` is applied on first: the one it is
    promoted from (``environments.<env>.promoted_from``), when that one has a database."""
    source = policy.promoted_from(environment)
    settings = policy.environments.get(source) if source else None
    return source if settings is not None and settings.database_url else None


def rehearses_on_staging(policy: Policy, environment: str) -> bool:
    """Whether a migration of ``environment`` is applied on the environment it is promoted
    from first (:func:`rehearsal_environment`)."""
    return rehearsal_environment(policy, environment) is not None


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

    ``backups_dir`` is where dumps go (``<backups_dir>/<env>/<timestamp>-<name>.dump``; None
    where another step backs up, as the standard deployment's snapshot does);
    ``runner_for`` builds a :class:`MigrationRunner` (tests pass their own timeouts);
    ``poll`` is how often (seconds, wall time) a waiting step looks at its thread or pg_dump;
    ``drain`` is the wait after maintenance mode on; ``http`` runs the post-migration tests and
    ``hook`` the app-update POST.
    """

    def __init__(self, *, backups_dir: Path | None = None, pg_dump: PgDump | None = None,
                 timeouts: MigrationTimeouts | None = None,
                 runner_for: RunnerFactory | None = None, poll: float = 0.2,
                 drain: timedelta = DRAIN, http: HttpChecker | None = None,
                 hook: AppUpdateHook | None = None) -> None:
        self.backups_dir = backups_dir
        self.pg_dump = pg_dump or PgDump()
        self.timeouts = timeouts or MigrationTimeouts()
        self._runner_for = runner_for
        self.poll = poll
        self.drain = drain
        self._http = http
        self.hook = hook or AppUpdateHook()

    @property
    def http(self) -> HttpChecker:
        if self._http is None:  # built on first use: most runs never need it
            self._http = HttpChecker()
        return self._http

    # -- helpers --------------------------------------------------------------------------------

    def runner(self, ctx: StepContext, url: str, where: str = "") -> MigrationRunner:
        label = f"#{ctx.deployment_id}"
        if self._runner_for is not None:
            return self._runner_for(url, label, where)
        return MigrationRunner(url, label=label, timeouts=self.timeouts, where=where)

    def _load(self, ctx: StepContext, target: _Target,
              directory: MigrationDirectory | None = None, *, name: str | None = None,
              checksum_option: str = "checksum") -> MigrationFile:
        directory = directory or target.directory
        if directory is None:
            raise StepFailure(f"{target.environment} has no migrations directory: set "
                              f"environments.{target.environment}.migrations_dir in the policy")
        migration = directory.load(name or _name(ctx))
        expected = ctx.options.get(checksum_option)
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
        limit = format_duration(self.timeouts.statement_for(up))
        ctx.report(f"Validated {up.path.name} on {ctx.environment_name}: {validation.note}. "
                   f"It {how}; {up.migration_type} migration (statement limit {limit}); "
                   f"checksum {up.checksum[:12]}; down script: {down}.")
        if invalid:
            ctx.report(f"Note: {ctx.environment_name} already has INVALID indexes: "
                       f"{', '.join(sorted(invalid))}.")
        return {"name": up.name, "checksum": up.checksum, "transactional": up.transactional,
                "outside_transaction": up.outside_transaction, "dry_run": validation.executed,
                "note": validation.note, "down": migration.down is not None,
                "invalid_indexes": sorted(invalid), "type": up.migration_type,
                "app_update": up.app_update}

    def staging_first(self, ctx: StepContext) -> StepResult:
        """Validate and apply the same file on the database of the environment the target is
        promoted from (:func:`rehearsal_environment`) before the target's."""
        return self.rehearse(ctx, None, "checksum")

    def rehearse(self, ctx: StepContext, name: str | None, checksum_option: str) -> StepResult:
        """:meth:`staging_first` for migration ``name`` (the run's, when None)."""
        source = rehearsal_environment(ctx.policy, ctx.environment_name)
        if source is None:
            raise StepFailure(f"{ctx.environment_name} is promoted from no environment with a "
                              "database_url: nothing to rehearse on")
        target = _target(ctx.policy, ctx.environment_name)
        staging = _target(ctx.policy, source)
        if same_database(staging.url, target.url):
            raise StepFailure(f"{source} and {ctx.environment_name} have the same "
                              f"database_url; a rehearsal there would be the real thing",
                              hint=f"Give {source} its own database.")
        migration = self._load(ctx, target, staging.directory or target.directory, name=name,
                               checksum_option=checksum_option)
        runner = self.runner(ctx, staging.url, f" on {source}")
        try:
            runner.check_not_applied(migration.up)
        except MigrationAlreadyApplied as already:
            ctx.report(f"{migration.name} was applied on {source} already "
                       f"({already.applied.describe()}): not again.")
            return {"staging": "already applied", "environment": source,
                    "applied_at": already.applied.applied_at}
        validation = self._blocking(ctx, runner, lambda: runner.validate(migration))
        result = self._blocking(ctx, runner, lambda: runner.apply(
            migration, applied_by=_applied_by(ctx), known_invalid=runner.invalid_indexes()))
        ctx.report(f"Rehearsed on {source}: validated ({validation.note}) and applied "
                   f"{migration.name}. {source} keeps it even if {ctx.environment_name} "
                   "fails.")
        return {"staging": "applied", "environment": source, "applied_at": result.applied_at}

    def backup(self, ctx: StepContext) -> StepResult:
        """``pg_dump`` of the target database into the bot's backups directory."""
        target = _target(ctx.policy, ctx.environment_name)
        name = _name(ctx)
        if self.backups_dir is None:  # the standard deployment backs up in its snapshot
            raise StepFailure("no backups directory is configured for migration backups")
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
        if self.drain > timedelta(0):
            ctx.report(f"Waiting {format_duration(self.drain)} for active connections to "
                       "drain before the migration.")
            ctx.sleep(self.drain.total_seconds())
        return {"maintenance": True, "drained_s": self.drain.total_seconds()}

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

    def undo_apply(self, ctx: StepContext) -> None:
        """The seed's ``rollback-migration.sh``: run the down script, remove the record."""
        name = ctx.result_of("apply").get("name")
        if name:
            self.roll_back(ctx, str(name), "checksum", ctx.result_of("backup").get("path"))

    def roll_back(self, ctx: StepContext, name: str, checksum_option: str,
                  backup: str | None) -> None:
        """Undo migration ``name`` that this run applied (see the module docstring): its down
        script and record, or, without a down script, a failure naming the backup."""
        target = _target(ctx.policy, ctx.environment_name)
        migration = self._load(ctx, target, name=name, checksum_option=checksum_option)
        env = ctx.environment_name
        if migration.down is None:
            where = backup or "not taken"
            raise StepFailure(
                f"{migration.name} stays applied on {env}: it has no down script, and the bot "
                f"does not restore the backup ({where}) by itself, because a restore discards "
                "every write made since it was taken",
                hint=(f"Decide: restore with `pg_restore --clean --if-exists --single-transaction "
                      f"--dbname=<{env} database> {where}`, or roll forward with a new "
                      "migration."))
        runner = self.runner(ctx, target.url)
        done = self._blocking(ctx, runner, lambda: runner.roll_back(
            migration, applied_by=_applied_by(ctx)))
        kept = f" The backup {backup} is kept." if backup else ""
        ctx.report(f"Migration rolled back on {env}: {done}.{kept}", broadcast=True)

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
                f"migration verification failed: {failure.message}; the migration is rolled "
                "back with its down script where it has one",
                hint=f"Look at schema_migrations; the backup is {backup or 'missing'}.",
            ) from None
        ctx.report(f"schema_migrations: {row.name}, checksum {row.checksum[:12]}, applied "
                   f"{row.describe()}.")
        return {"name": row.name, "checksum": row.checksum, "applied_at": row.applied_at,
                "applied_by": row.applied_by}

    def app_update(self, ctx: StepContext) -> StepResult:
        """Seed step 7: POST to the migration's ``app-update`` path on the live slot."""
        path = ctx.result_of("validate").get("app_update")
        if not path:
            return {"app_update": None}
        traffic = ctx.platform.traffic()
        if traffic.live is None:
            ctx.report(f"App update {path}: nothing is live on {ctx.environment_name}, so "
                       "there is no application to tell.")
            return {"app_update": path, "called": False}
        answer = self.hook.call(ctx.platform.slot_url(traffic.live), str(path), _name(ctx))
        if not answer.ok:
            raise StepFailure(f"the application update failed: {answer.describe()}"
                              + (f" ({answer.detail})" if answer.detail and answer.status
                                 else ""),
                              hint="the migration is rolled back", retryable=answer.status
                              is None or answer.status >= 500)
        ctx.report(f"App update: {answer.describe()}.")
        return {"app_update": path, "called": True, "status": answer.status,
                "url": answer.url}

    def post_migration_tests(self, ctx: StepContext) -> StepResult:
        """Seed step 9: every health and smoke path answers 2xx on the public URL."""
        env = ctx.environment
        paths = list(dict.fromkeys([*env.health, *env.smoke]))
        probes = self.http.check_paths(env.url, paths)
        report_probes(ctx, f"Post-migration tests on {env.url}", probes)
        failed = [probe for probe in probes if not probe.ok]
        if failed:
            raise StepFailure(
                "post-migration tests failed: " + "; ".join(p.describe() for p in failed),
                hint="the migration is rolled back", retryable=True)
        return {"url": env.url, "checks": [{"url": p.url, "status": p.status,
                                            "ms": p.elapsed_ms} for p in probes]}


def _maintenance_requested(ctx: StepContext) -> bool:
    return bool(ctx.options.get("maintenance"))


def _rehearse(ctx: StepContext) -> bool:
    return rehearses_on_staging(ctx.policy, ctx.environment_name)


def _has_app_update(ctx: StepContext) -> bool:
    return bool(ctx.result_of("validate").get("app_update"))


def migration_playbook(*, backups_dir: Path, pg_dump: PgDump | None = None,
                       timeouts: MigrationTimeouts | None = None,
                       runner_for: RunnerFactory | None = None,
                       poll: float = 0.2, drain: timedelta = DRAIN,
                       http: HttpChecker | None = None,
                       hook: AppUpdateHook | None = None) -> Playbook:
    """The database migration (``ProcedureKind.MIGRATION``); see the module docstring."""
    steps = MigrationSteps(backups_dir=backups_dir, pg_dump=pg_dump, timeouts=timeouts,
                           runner_for=runner_for, poll=poll, drain=drain, http=http, hook=hook)
    # A data migration's statement may run up to data_statement; the step allows for it.
    apply_for = steps.timeouts.longest_apply + timedelta(minutes=5)
    external = RetryPolicy(attempts=3, backoff=timedelta(seconds=5))
    return Playbook(
        kind=ProcedureKind.MIGRATION,
        title="Database migration",
        steps=(
            Step("validate", "Validate the migration (rolled back)", steps.validate,
                 timeout=timedelta(minutes=5), retry=external),
            Step("staging_first", "Rehearse on the promoted-from environment", steps.staging_first,
                 timeout=apply_for + timedelta(minutes=5), retry=external, when=_rehearse),
            Step("backup", "Back up the database (pg_dump)", steps.backup,
                 timeout=timedelta(minutes=60), retry=RetryPolicy(attempts=2)),
            Step("maintenance_on", "Maintenance mode on, then drain", steps.maintenance_on,
                 undo=steps.undo_maintenance_on, timeout=drain + timedelta(minutes=1),
                 retry=RetryPolicy(attempts=3), when=_maintenance_requested),
            Step("apply", "Apply the migration (advisory lock)", steps.apply,
                 undo=steps.undo_apply, timeout=apply_for, retry=external),
            Step("verify", "Verify schema_migrations", steps.verify,
                 timeout=timedelta(minutes=1), retry=external),
            Step("app_update", "Update the application (app-update hook)", steps.app_update,
                 timeout=timedelta(minutes=2), retry=RetryPolicy(attempts=2),
                 when=_has_app_update),
            Step("maintenance_off", "Maintenance mode off", steps.maintenance_off,
                 timeout=timedelta(minutes=1), retry=RetryPolicy(attempts=3),
                 when=_maintenance_requested),
            Step("post_migration_tests", "Post-migration tests on the public URL",
                 steps.post_migration_tests, timeout=timedelta(minutes=3),
                 retry=RetryPolicy(attempts=3, backoff=timedelta(seconds=5))),
        ),
    )
