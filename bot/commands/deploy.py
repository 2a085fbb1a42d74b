"""``/qlp deploy <version> [to <env>] [--maintenance] [--dry-run] [--override "why"]``: request
a standard deployment. The listener only validates, asks the policy decision
(``procedures.decision``), writes the request and answers; the card, the approvals and the run
happen elsewhere (buttons, the worker). With ``--override`` a refusal that an override can lift
(window, freeze, a person's lock) becomes a request that waits for a break-glass grant
(``bot.override``)."""

from __future__ import annotations

from typing import Any

from bot.commands.requesting import judge_request, open_request
from bot.commands.schedule_request import MIN_LEAD, schedule_text, scheduled_moment
from bot.context import HandlerContext
from bot.flows.gate import refusal
from bot.formatting import escape, local_time
from bot.grammar import Command
from bot.lookup import environment_of
from bot.membership import describe_rule
from bot.override import request_with_override
from procedures.checks.monitoring import MonitoringThresholds, describe_matrix
from procedures.durations import format_duration
from procedures.errors import Offer, PolicyRefusal
from procedures.model import ProcedureKind, Slot
from procedures.playbooks.deploy_migration import (
    CHECKSUM_OPTION,
    FILE_OPTION,
    migration_name,
    request_options,
)
from procedures.playbooks.rehearsal import REHEARSAL_STEPS
from procedures.policy import Environment
from procedures.windows import WindowRule, WindowVerdict

_WINDOW_RULES = frozenset(rule.value for rule in WindowRule)


def refuse_maintenance_on_azure(ctx: HandlerContext, env: str, what: str, instead: str) -> None:
    """The Azure platform has no maintenance mode (nothing makes Front Door answer 503), so
    ``--maintenance`` could only fail after approval, at its step: refuse it now."""
    if ctx.services.policy.environments[env].platform != "azure":
        return
    raise PolicyRefusal(
        f"Maintenance mode is not available on {env}: it runs on Azure, where the bot cannot "
        f"make Front Door answer 503 while {what} deploys. Nothing was done.",
        rule="not-implemented", hint=f"Without `--maintenance`: {instead}.")


def deploy_text(ctx: HandlerContext, command: Command) -> str:
    """Validate, refuse with the rule, or create the request and post its card."""
    services = ctx.services
    policy = services.policy
    env = environment_of(policy, command.environment)
    now = services.clock.now()
    windows = services.flows.gate.windows_for(env)
    verdict = windows.verdict(now)
    rule = policy.approval_rule(ProcedureKind.STANDARD, env)
    if command.maintenance:
        refuse_maintenance_on_azure(ctx, env, "the deployment",
                                    f"`/qlp deploy {command.version} to {env}`")
    if command.at is not None and not command.dry_run:
        return schedule_text(ctx, command, env)
    if command.dry_run:
        if command.at is not None:
            verdict = windows.verdict(scheduled_moment(command, policy.zone)[0])
        return _dry_run(ctx, command, env, verdict)
    user = ctx.request.user_id
    decision = judge_request(ctx, ProcedureKind.STANDARD, env)
    options: dict[str, Any] = {"maintenance": command.maintenance}
    # The version's migration file, if any, and the checksum the approvers approve: the run
    # refuses a file changed since (procedures.playbooks.deploy_migration).
    options.update(request_options(policy.environments[env], command.version))
    if not decision.allowed:
        if command.override and decision.needs_override:
            return request_with_override(
                ctx, kind=ProcedureKind.STANDARD, version=command.version, environment=env,
                reason=command.override, verdict=decision, options=options)
        services.audit.append(user, "deployment.refused", environment=env,
                              detail={"version": command.version, "rule": decision.rule,
                                      "reason": decision.reason,
                                      "override": command.override})
        hint = ("A hotfix or an emergency follows other rules (`/qlp help`)."
                if decision.rule in _WINDOW_RULES else "")
        if command.override:
            hint = "An override never lifts this rule."
        error = refusal(decision, extra_hint=hint)
        if decision.rule in _WINDOW_RULES and not command.override:
            error.offer = _schedule_offer(ctx, command, env)
        raise error
    required = decision.required
    needed = (f"{required} approval{'s' if required > 1 else ''} from "
              f"{describe_rule(rule)}")
    outside = mark = ""
    if decision.outside_preferred:
        mark = ":large_orange_circle: "
        # The seed's "allowed" tier: it goes, and everyone sees that it is not the preferred
        # time (the card keeps the note; approvers read it before they press).
        outside = f" Outside the preferred window: {decision.reason}."
    if decision.overrun:
        mark = ":large_orange_circle: "
        outside = f" Mind the clock: {decision.overrun}."
    if outside:
        options["notes"] = [outside.strip()]
    deployment, created = open_request(
        ctx, kind=ProcedureKind.STANDARD, version=command.version, environment=env,
        reason=None, options=options,
        announce=lambda _: f"{mark}<@{user}> requested {command.version} to {env}.{outside} "
                           f"Waiting for {needed}.")
    if not created:
        return f"This request was already received: it is deployment #{deployment.id}."
    unneeded = (f" No override was needed ({decision.reason}), so none was asked for."
                if command.override else "")
    return (f"Deployment #{deployment.id} requested: {command.version} to {env}.{outside} It "
            f"needs {needed} (not you). The card is in <#{policy.channel}>.{unneeded}")


def _schedule_offer(ctx: HandlerContext, command: Command, env: str) -> Offer | None:
    """"Schedule for <the next preferred slot>": one click creates the scheduled deployment
    the person would otherwise type (``/qlp deploy <version> to <env> at <slot>``)."""
    services = ctx.services
    slot = services.flows.gate.windows_for(env).next_open(services.clock.now() + MIN_LEAD)
    if slot is None:
        return None
    zone = services.policy.zone
    local = slot.astimezone(zone)
    text = (f"deploy {command.version} to {env} at {local:%Y-%m-%d %H:%M} {zone.key}"
            + (" --maintenance" if command.maintenance else ""))
    return Offer(f"Schedule for {local:%a %d %b %H:%M} {local.tzname()}", text)


def _dry_run(ctx: HandlerContext, command: Command, env: str, verdict: WindowVerdict) -> str:
    services = ctx.services
    policy = services.policy
    settings = policy.environments[env]
    state = services.environments.get(env)
    live = Slot(state.live_slot) if state and state.live_slot else None
    target = live.other if live else Slot.BLUE
    rule = policy.approval_rule(ProcedureKind.STANDARD, env)
    playbook = services.playbooks[ProcedureKind.STANDARD]
    window = ("open" + (f", closes {local_time(verdict.closes_at, policy.zone)}"
                        if verdict.closes_at else "")) if verdict.open else \
        f"*closed*: {escape(verdict.reason)} (rule: {verdict.rule.value})"
    chosen = [step for step in playbook.steps
              if step.name not in ("maintenance_on", "maintenance_off") or command.maintenance]
    if policy.promoted_from(env) is None:  # not rehearsed elsewhere first: those steps skip
        chosen = [step for step in chosen if step.name not in REHEARSAL_STEPS]
    steps = [f"{i}. {step.title}" for i, step in enumerate(chosen, 1)]
    monitoring = policy.monitoring
    current = (f"{state.live_version} on {live}" if state and live and state.live_version
               else "nothing yet")
    lines = [
        f"*Dry run: {command.version} to {env}* (nothing was changed)",
        f"Window: {window}",
        f"Live: {current} → deploy to the *{target}* slot, then switch {settings.url}",
        f"Approval: {rule.required} from {describe_rule(rule)}, not the requester",
        f"Checks: health {', '.join(settings.health)}"
        + (f"; smoke {', '.join(settings.smoke)}" if settings.smoke else ""),
        f"Monitoring: {format_duration(monitoring.duration)} every "
        f"{format_duration(monitoring.interval)}; "
        f"{describe_matrix(MonitoringThresholds.from_policy(monitoring))}",
        *_migration_line(settings, command.version),
        "Steps:", *steps,
    ]
    return "\n".join(lines)


def _migration_line(settings: Environment, version: str | None) -> list[str]:
    """The version's migration (seed 3.1 step 4), when the environment has migrations."""
    if not settings.migrations_dir:
        return []
    found = request_options(settings, version)  # a bad file is refused here, as on request
    if not found:
        return [f"Migration: none (no `{migration_name(version or '') or version}.sql`)"]
    return [f"Migration: `{found[FILE_OPTION]}.sql` (checksum {found[CHECKSUM_OPTION][:12]}), "
            "validated, rehearsed and applied before the new slot is deployed"]
