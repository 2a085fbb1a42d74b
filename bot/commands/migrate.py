"""``/qlp migrate <migration> [to <env>] [--maintenance] [--dry-run]``: request a migration of
the application's database.

The listener only reads the migration file (name checked by the grammar and again against the
migrations directory, see ``procedures.migrations.files``), asks the gate (``bot.flows.gate``: a
migration follows the standard rules: window, freeze, lock, one at a time), writes the request
(kind MIGRATION, version = the migration name, the file's checksum in its options) and answers.
It never connects to the database: validation, the backup and the run are the playbook's
(``procedures.playbooks.migration``), after approval (``approvals.migration``, else
``approvals.standard``) on the same card and buttons as a deployment.
"""

from __future__ import annotations

from typing import Any

from bot.commands.requesting import (
    approvals_needed,
    judge_request,
    open_request,
    refuse_unless_allowed,
    refused,
    steps_listing,
)
from bot.context import HandlerContext
from bot.grammar import Command
from bot.lookup import environment_of
from procedures.errors import PolicyRefusal
from procedures.migrations.files import MigrationDirectory, MigrationFile
from procedures.model import ProcedureKind
from procedures.playbooks.migration import rehearsal_environment

KIND = ProcedureKind.MIGRATION


def migrate_text(ctx: HandlerContext, command: Command) -> str:
    """Validate, refuse with the rule, or create the migration request and post its card."""
    env = environment_of(ctx.services.policy, command.environment)
    return refused(ctx, "migration", env, lambda: _migrate(ctx, command, env))


def _migrate(ctx: HandlerContext, command: Command, env: str) -> str:
    services = ctx.services
    policy = services.policy
    user = ctx.request.user_id
    migration = load_migration(ctx, env, command.migration or "")
    if command.maintenance and policy.environments[env].platform == "azure":
        raise PolicyRefusal(
            f"Maintenance mode on {env} (Azure) is not available in this version of the bot; "
            "nothing was done.", rule="not-implemented",
            hint=f"Migrate without `--maintenance`: `/qlp migrate {migration.name} to {env}`.")
    if command.dry_run:
        return _dry_run(ctx, command, env, migration)
    refuse_unless_allowed(ctx, KIND, env)
    up = migration.up
    source = rehearsal_environment(policy, env)
    staging = source is not None
    options: dict[str, Any] = {
        "migration": migration.name, "checksum": up.checksum,
        "maintenance": command.maintenance, "outside_transaction": up.outside_transaction,
        "down": migration.down is not None, "staging_first": staging, "requested_by": user,
        # Without a down script the schema change cannot be undone: a rollback of the code
        # across it is refused (roll forward instead), see bot/commands/rollback.py.
        "irreversible": migration.down is None,
        # A migration is not rolled back by a button: its down script is a person's call.
        "rollback_available": False,
    }
    needed = approvals_needed(ctx, KIND, env)

    def announce(_: int) -> str:
        return (f"<@{user}> requested migration `{migration.name}` on {env}: {_how(migration)}"
                f"{f'; {source} first' if source else ''}. Waiting for {needed} "
                "(not the requester).")

    deployment, created = open_request(
        ctx, kind=KIND, version=migration.name, environment=env, reason=None, options=options,
        announce=announce)
    if not created:
        return f"This request was already received: it is migration #{deployment.id}."
    return (f"Migration #{deployment.id} requested: `{migration.name}` on {env} "
            f"(checksum {up.checksum[:12]}). It needs {needed} (not you); it is validated "
            f"against the database, backed up and applied after that. The card is in "
            f"<#{policy.channel}>.")


def load_migration(ctx: HandlerContext, env: str, name: str) -> MigrationFile:
    """The migration file of ``env``; a refusal naming the policy key when none is set up."""
    settings = ctx.services.policy.environments[env]
    for key, value in (("database_url", settings.database_url),
                       ("migrations_dir", settings.migrations_dir)):
        if not value:
            raise PolicyRefusal(
                f"{env} has no {'database' if key == 'database_url' else 'migrations'} "
                f"configured: `environments.{env}.{key}` is not set in the policy; nothing was "
                "done.", rule="migration-config",
                hint=f"Set `environments.{env}.database_url` (the application's PostgreSQL, "
                     "e.g. `postgresql://app@db:5432/app`) and `migrations_dir` (a directory "
                     "of `<name>.sql` files) in the policy file, then restart the bot.")
    assert settings.migrations_dir is not None
    return MigrationDirectory(settings.migrations_dir).load(name)


def _how(migration: MigrationFile) -> str:
    up = migration.up
    count = len(up.statements)
    shape = (f"{count} statement{'s' if count > 1 else ''} in one transaction"
             if up.transactional else f"{up.outside_transaction}, alone outside a transaction")
    down = f"down script `{migration.down.path.name}`" if migration.down else "no down script"
    return f"{shape}, {down}, checksum {up.checksum[:12]}"


def _dry_run(ctx: HandlerContext, command: Command, env: str, migration: MigrationFile) -> str:
    services = ctx.services
    policy = services.policy
    decision = judge_request(ctx, KIND, env)
    allowed = ("allowed now" if decision.allowed else
               f"*refused now*: {decision.reason} (rule: {decision.rule})")
    source = rehearsal_environment(policy, env)
    skip = set() if command.maintenance else {"maintenance_on", "maintenance_off"}
    if source is None:
        skip.add("staging_first")
    up = migration.up
    if up.app_update is None:
        skip.add("app_update")
    validation = ("in a transaction that is rolled back" if up.transactional else
                  "its non-concurrent form, in a transaction that is rolled back"
                  if "INDEX" in (up.outside_transaction or "") else
                  "where PostgreSQL allows it in a transaction")
    lines = [
        f"*Dry run: migration `{migration.name}` on {env}* (nothing was changed; the database "
        "was not contacted)",
        f"File: `{up.path.name}`: {_how(migration)}",
        f"Request: {allowed}",
        f"Validation: {validation}, with lock and statement timeouts",
        f"Type: {up.migration_type}"
        + (f"; then POST {up.app_update} on the live slot (app update)" if up.app_update
           else ""),
        f"Rehearsal first: {f'yes, on the {source} database' if source else 'no'}",
        f"Approval: {approvals_needed(ctx, KIND, env)}, not the requester",
        "Steps:", *steps_listing(ctx, KIND, skip),
    ]
    return "\n".join(lines)
