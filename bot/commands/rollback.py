"""``/qlp rollback [<version>] [in <env>] --reason "..." [--dry-run]`` and the Roll back button
of a card: request a manual rollback.

Allowed any time, in a freeze too (not past a manual lock, and not while another deployment is
queued or running: the gate, ``bot.flows.gate``, says so); approved by
``approvals.rollback``, never the requester. The button asks for confirmation with a Slack
confirm dialog (``bot.cards``) before it gets here. The run is a blue-green deployment of the
earlier version (``procedures.playbooks.rollback``).

Which version: the one named, or else the version that was live before the current one, read
from the deployment history (the most recent SUCCEEDED deployment of the environment with a
version other than the live one), never from ``previous_version`` of the environment's state,
which after an automatic rollback names the version that failed. A rollback across a database
migration marked irreversible (a migration that SUCCEEDED after the target's deployment, with
``options["irreversible"]``) is refused: roll forward instead, or have an override approver
allow it.
"""

from __future__ import annotations

from dataclasses import dataclass

from bot.commands.requesting import (
    approvals_needed,
    open_request,
    refuse_unless_allowed,
    refused,
    steps_listing,
)
from bot.context import HandlerContext
from bot.formatting import escape
from bot.grammar import Command
from bot.lookup import environment_of
from bot.membership import describe_rule
from procedures.errors import PolicyRefusal
from procedures.model import DeploymentState, ProcedureKind
from procedures.store import DeploymentRecord

HISTORY_LIMIT = 500  # deployments of one environment searched for the target version
ROLLBACK_SOURCES = (ProcedureKind.STANDARD, ProcedureKind.HOTFIX, ProcedureKind.EMERGENCY,
                    ProcedureKind.ROLLBACK)


@dataclass(frozen=True)
class RollbackPlan:
    """What a rollback would do: from the live version to ``target``, the deployment that
    last brought ``target`` here, and the irreversible migrations in between."""

    environment: str
    live_version: str
    target: str
    target_deployment: DeploymentRecord
    irreversible: tuple[DeploymentRecord, ...]


def rollback_text(ctx: HandlerContext, command: Command) -> str:
    """Validate, refuse with the rule, or create the rollback request and post its card."""
    env = environment_of(ctx.services.policy, command.environment)
    reason = command.reason or ""
    return refused(ctx, "rollback", env, lambda: request_rollback(
        ctx, env, command.version, reason, dry_run=command.dry_run))


def rollback_from_card(ctx: HandlerContext, deployment: DeploymentRecord) -> str:
    """The Roll back button of ``deployment``'s card (confirmed in Slack's dialog already):
    request a rollback of its environment from its version to the one before it."""
    return refused(ctx, "rollback", deployment.environment,
                   lambda: _from_card(ctx, deployment))


def _from_card(ctx: HandlerContext, deployment: DeploymentRecord) -> str:
    env = deployment.environment
    if deployment.state is not DeploymentState.SUCCEEDED or \
            deployment.kind not in ROLLBACK_SOURCES:
        raise PolicyRefusal(
            f"#{deployment.id} ({deployment.kind.value}, "
            f"{deployment.state.value.replace('_', ' ')}) is not a succeeded deployment, so "
            "there is nothing to roll back from its card.", rule="rollback-source",
            hint=f"`/qlp rollback [version] in {env} --reason \"...\"` rolls {env} back.")
    state = ctx.services.environments.get(env)
    live = state.live_version if state else None
    if live != deployment.version:
        raise PolicyRefusal(
            f"#{deployment.id} ({deployment.version}) is no longer live on {env} (live: "
            f"{live or 'nothing'}), so its card cannot roll it back.", rule="rollback-source",
            hint=f"`/qlp rollback [version] in {env} --reason \"...\"` rolls back what is live "
                 "now.")
    return request_rollback(
        ctx, env, None, f"rollback of #{deployment.id} requested from its card",
        request_key=f"click:{ctx.request.request_key}" if ctx.request.request_key else None)


def plan_rollback(ctx: HandlerContext, env: str, version: str | None) -> RollbackPlan:
    """Find the target and what lies between; refuse when there is nothing to go back to."""
    services = ctx.services
    state = services.environments.get(env)
    live = state.live_version if state else None
    if not live:
        raise PolicyRefusal(
            f"Nothing is live on {env} according to the bot's records, so there is nothing "
            "to roll back.", rule="nothing-to-roll-back",
            hint="`/qlp status` shows what the bot knows; `/qlp deploy &lt;version&gt;` deploys.")
    history = services.deployments.list_recent(env, limit=HISTORY_LIMIT)
    succeeded = [d for d in history if d.state is DeploymentState.SUCCEEDED
                 and d.kind in ROLLBACK_SOURCES and d.version]
    if version is None:
        target = next((d for d in succeeded if d.version != live), None)
        if target is None:
            raise PolicyRefusal(
                f"No version other than {live} ever succeeded on {env}, so there is no earlier "
                "version to roll back to.", rule="rollback-target",
                hint=f"Fix forward: `/qlp hotfix &lt;version&gt; to {env} --reason \"...\"`.")
    else:
        if version == live:
            raise PolicyRefusal(f"{version} is already live on {env}; there is nothing to roll "
                                "back.", rule="rollback-target",
                                hint="`/qlp status` shows what is live.")
        target = next((d for d in succeeded if d.version == version), None)
        if target is None:
            earlier = list(dict.fromkeys(d.version for d in succeeded if d.version != live))
            known = (f"Versions that ran on {env}: " + ", ".join(f"{v}" for v in earlier[:5])
                     + ". " if earlier else "")
            raise PolicyRefusal(
                f"{version} never succeeded on {env}, so a rollback cannot return to it.",
                rule="rollback-target",
                hint=f"{known}To ship a version that never ran here, use `/qlp hotfix` or "
                     "`/qlp deploy`.")
    assert target.version is not None
    crossing = tuple(d for d in history
                     if d.kind is ProcedureKind.MIGRATION and d.state is DeploymentState.SUCCEEDED
                     and d.options.get("irreversible") is True and _after(d, target))
    return RollbackPlan(env, live, target.version, target, crossing)


def _after(migration: DeploymentRecord, target: DeploymentRecord) -> bool:
    """Did ``migration`` finish after ``target`` (the deployment that brought the target)?
    Ties and missing times are decided by the ids (the order of the requests)."""
    if migration.finished_at is not None and target.finished_at is not None \
            and migration.finished_at != target.finished_at:
        return migration.finished_at > target.finished_at
    return (migration.id or 0) > (target.id or 0)


def _migration_name(migration: DeploymentRecord) -> str:
    name = migration.options.get("migration") or migration.version or "?"
    return f"`{escape(str(name))}` (#{migration.id})"


def refuse_irreversible(ctx: HandlerContext, plan: RollbackPlan) -> None:
    """Rolling back across an irreversible migration leaves the old code on the new schema."""
    if not plan.irreversible:
        return
    names = ", ".join(_migration_name(m) for m in plan.irreversible)
    override = ctx.services.policy.approval_rule("override", plan.environment)
    plural = "s" if len(plan.irreversible) > 1 else ""
    raise PolicyRefusal(
        f"Rolling {plan.environment} back to {plan.target} would cross the database "
        f"migration{plural} {names}, marked irreversible: {plan.target} may not work on the "
        "schema it left behind. Roll forward instead; nothing was done.",
        rule="irreversible-migration",
        hint=f"Fix forward: `/qlp hotfix &lt;version&gt; to {plan.environment} --reason \"...\"`. "
             f"Only an override approver ({describe_rule(override)}) can allow this rollback "
             "with a break-glass override.")


def request_rollback(ctx: HandlerContext, env: str, version: str | None, reason: str, *,
                     dry_run: bool = False, request_key: str | None = None) -> str:
    """Plan, refuse or create the rollback request; the reply text."""
    services = ctx.services
    policy = services.policy
    plan = plan_rollback(ctx, env, version)
    if dry_run:
        return _dry_run(ctx, plan)
    refuse_irreversible(ctx, plan)
    refuse_unless_allowed(ctx, ProcedureKind.ROLLBACK, env)
    user = ctx.request.user_id
    needed = approvals_needed(ctx, ProcedureKind.ROLLBACK, plan.environment)

    def announce(_: int) -> str:
        return (f"<@{user}> requested a *rollback* of {env} from {plan.live_version} to "
                f"{plan.target} (last deployed by #{plan.target_deployment.id}): "
                f"{escape(reason)}.\nPlan: snapshot, blue-green deployment of {plan.target}, "
                f"switch, post-rollback verification on {policy.environments[env].url}, then "
                f"stop {plan.live_version}. Waiting for {needed} (not the requester).")

    deployment, created = open_request(
        ctx, kind=ProcedureKind.ROLLBACK, version=plan.target, environment=env, reason=reason,
        options={"target_version": plan.target, "from_version": plan.live_version,
                 "target_deployment": plan.target_deployment.id},
        announce=announce, broadcast=True, request_key=request_key)
    if not created:
        return f"This request was already received: it is rollback #{deployment.id}."
    return (f"Rollback #{deployment.id} requested: {env} from {plan.live_version} back to "
            f"{plan.target}. It needs {needed} (not you). The card is in "
            f"<#{policy.channel}>.")


def _dry_run(ctx: HandlerContext, plan: RollbackPlan) -> str:
    crossing = ("*refused*: crosses irreversible migration(s) "
                + ", ".join(_migration_name(m) for m in plan.irreversible)
                + " (rule: irreversible-migration)") if plan.irreversible else "none"
    lines = [
        f"*Dry run: rollback of {plan.environment}* (nothing was changed)",
        f"From {plan.live_version} (live) to {plan.target} (last deployed by "
        f"#{plan.target_deployment.id})",
        f"Irreversible migrations in between: {crossing}",
        f"Approval: {approvals_needed(ctx, ProcedureKind.ROLLBACK, plan.environment)}, not "
        "the requester",
        "Steps:", *steps_listing(ctx, ProcedureKind.ROLLBACK),
    ]
    return "\n".join(lines)
