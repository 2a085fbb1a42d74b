"""``/qlp hotfix <version> [to <env>] --reason "..." [--maintenance] [--dry-run]``: request an
urgent fix. Allowed outside the preferred window, never in a freeze and never past a manual
lock (the gate, ``bot.flows.gate``, says so); approved by ``approvals.hotfix`` (not the
requester); runs the hotfix playbook (the standard steps without the long comparison phases,
``procedures.playbooks.hotfix``). It runs on every platform; ``--maintenance`` is refused for
an Azure environment, whose platform has no maintenance mode.

The listener only validates, asks the gate, writes the request and answers; the card, the
approvals and the run happen elsewhere (buttons, the worker).
"""

from __future__ import annotations

from bot.commands.deploy import refuse_maintenance_on_azure
from bot.commands.requesting import (
    approvals_needed,
    judge_request,
    open_request,
    refuse_unless_allowed,
    refused,
    steps_listing,
)
from bot.context import HandlerContext
from bot.formatting import escape
from bot.grammar import Command
from bot.lookup import environment_of
from procedures.durations import format_duration
from procedures.model import ProcedureKind
from procedures.playbooks.hotfix import HOTFIX_SKIPPED, describe_hotfix_plan, hotfix_monitoring

# -- /qlp hotfix ------------------------------------------------------------------------------


def hotfix_text(ctx: HandlerContext, command: Command) -> str:
    """Validate, refuse with the rule, or create the hotfix request and post its card."""
    env = environment_of(ctx.services.policy, command.environment)
    return refused(ctx, "hotfix", env, lambda: _hotfix(ctx, command, env))


def _hotfix(ctx: HandlerContext, command: Command, env: str) -> str:
    services = ctx.services
    policy = services.policy
    assert command.version is not None
    if command.maintenance:
        refuse_maintenance_on_azure(
            ctx, env, "the hotfix",
            f"`/qlp hotfix {command.version} to {env} --reason \"...\"` (the live version "
            "keeps serving until the switch)")
    if command.dry_run:
        return _dry_run(ctx, command, env)
    refuse_unless_allowed(ctx, ProcedureKind.HOTFIX, env)
    user = ctx.request.user_id
    needed = approvals_needed(ctx, ProcedureKind.HOTFIX, env)
    window = services.flows.gate.windows_for(env).verdict(services.clock.now())
    outside = ("" if window.open else
               f" It is outside the preferred window ({escape(window.reason)}), which a hotfix "
               "may be.")
    reason = command.reason or ""

    def announce(_: int) -> str:
        return (f"<@{user}> requested hotfix {command.version} to {env}: {escape(reason)}."
                f"{outside}\n{describe_hotfix_plan(policy.monitoring)}\nWaiting for "
                f"{needed} (not the requester).")

    deployment, created = open_request(
        ctx, kind=ProcedureKind.HOTFIX, version=command.version, environment=env,
        reason=reason, options={"maintenance": command.maintenance}, announce=announce)
    if not created:
        return f"This request was already received: it is hotfix #{deployment.id}."
    return (f"Hotfix #{deployment.id} requested: {command.version} to {env}. It needs "
            f"{needed} (not you). The card is in <#{policy.channel}>.")


def _dry_run(ctx: HandlerContext, command: Command, env: str) -> str:
    services = ctx.services
    policy = services.policy
    verdict = judge_request(ctx, ProcedureKind.HOTFIX, env)
    allowed = (f"allowed ({verdict.reason})" if verdict.allowed else
               f"*refused*: {verdict.reason} (rule: {verdict.rule})")
    skip = {name for name, _ in HOTFIX_SKIPPED}
    if not command.maintenance:
        skip |= {"maintenance_on", "maintenance_off"}
    short = hotfix_monitoring(policy.monitoring)
    lines = [
        f"*Dry run: hotfix {command.version} to {env}* (nothing was changed)",
        f"Hotfix now: {allowed}",
        f"Approval: {approvals_needed(ctx, ProcedureKind.HOTFIX, env)}, not the requester",
        "Skipped: " + "; ".join(text for _, text in HOTFIX_SKIPPED),
        f"Monitoring: {format_duration(short.duration)} every "
        f"{format_duration(short.interval)} (standard: "
        f"{format_duration(policy.monitoring.duration)})",
        "Steps:", *steps_listing(ctx, ProcedureKind.HOTFIX, skip),
    ]
    return "\n".join(lines)
