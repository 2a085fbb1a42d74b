"""``/qlp hotfix <version> [to <env>] --reason "..." [--maintenance] [--dry-run]``: request an
urgent fix. Allowed outside the preferred window, never in a freeze and never past a manual
lock; approved by ``approvals.hotfix`` (not the requester); runs the hotfix playbook (the
standard steps without the long comparison phases, ``procedures.playbooks.hotfix``). It runs
on every platform; ``--maintenance`` is refused for an Azure environment, whose platform has
no maintenance mode.

This module also holds what the three out-of-window commands (hotfix, emergency, rollback)
share: the lock and one-at-a-time refusals and the writing of a request (:func:`open_request`).
The listener only validates, writes the request and answers; the card, the approvals and the
run happen elsewhere (buttons, the worker).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from datetime import datetime, time, timedelta
from typing import Any

from bot.commands.deploy import evidence_for, refuse_maintenance_on_azure
from bot.context import HandlerContext
from bot.formatting import escape, local_time
from bot.grammar import Command
from bot.lookup import environment_of
from bot.membership import describe_rule
from bot.plan import plan_hash
from procedures.durations import format_duration
from procedures.errors import PolicyRefusal
from procedures.model import ACTIVE_STATES, DeploymentState, ProcedureKind
from procedures.playbooks.hotfix import HOTFIX_SKIPPED, describe_hotfix_plan, hotfix_monitoring
from procedures.store import DeploymentRecord

# Deployments that hold (or are about to hold) an environment.
HOLDING = ACTIVE_STATES
# A hotfix also waits for a request still pending approval (as a standard deployment does).
HOTFIX_BLOCKERS = (DeploymentState.PENDING_APPROVAL, *HOLDING)


# -- shared by hotfix, emergency and rollback ---------------------------------------------------


def refused(ctx: HandlerContext, what: str, environment: str | None,
            call: Callable[[], str]) -> str:
    """Run ``call``; a refusal it raises is audited (``<what>.refused``) and passed on."""
    try:
        return call()
    except PolicyRefusal as refusal:
        ctx.services.audit.append(ctx.request.user_id, f"{what}.refused",
                                  environment=environment,
                                  detail={"rule": refusal.rule, "message": refusal.message})
        raise


def refuse_when_locked(ctx: HandlerContext, env: str, what: str) -> None:
    """A manual lock (``/qlp lock``) or one kept after a run that needs attention stops
    ``what``; a lock held by a running deployment is the one-at-a-time rule's business."""
    services = ctx.services
    state = services.environments.get(env)
    if state is None or not state.lock_holder:
        return
    if state.lock_deployment_id is None:
        raise PolicyRefusal(
            f"{what} is not allowed now: {env} is locked by <@{state.lock_holder}>: "
            f"{escape(state.lock_reason or 'no reason given')}.", rule="environment-lock",
            hint=f"Ask <@{state.lock_holder}> to `/qlp unlock {env}` when it is safe.")
    holder = services.deployments.get(state.lock_deployment_id)
    if holder is not None and holder.state is DeploymentState.NEEDS_ATTENTION:
        raise PolicyRefusal(
            f"{what} is not allowed now: {env} stays locked because #{holder.id} needs "
            f"attention ({escape(holder.error or 'an undo failed')}).", rule="needs-attention",
            hint=f"Someone must check {env} by hand, then `/qlp unlock {env}`.")


def refuse_when_busy(ctx: HandlerContext, env: str,
                     states: Collection[DeploymentState] = HOLDING) -> None:
    """One deployment at a time per environment."""
    for other in ctx.services.deployments.list_in_states(states, environment=env):
        what = other.version or other.kind.value
        raise PolicyRefusal(
            f"Deployment #{other.id} ({what}, {other.state.value.replace('_', ' ')}) is "
            f"already under way for {env}; one deployment at a time.", rule="one-at-a-time",
            hint=f"Wait for it to finish, or `/qlp cancel {other.id}`.")


def approvals_needed(ctx: HandlerContext, kind: ProcedureKind) -> str:
    """``1 approval from <@U1> or a member of <!subteam^S1>``."""
    rule = ctx.services.policy.approval_rule(kind)
    plural = "s" if rule.required > 1 else ""
    return f"{rule.required} approval{plural} from {describe_rule(rule)}"


def open_request(
    ctx: HandlerContext, *, kind: ProcedureKind, version: str | None, environment: str,
    reason: str | None, options: Mapping[str, Any], announce: Callable[[int], str],
    broadcast: bool = False, request_key: str | None = None,
) -> tuple[DeploymentRecord, bool]:
    """Write a request awaiting approval, audit it, post its card and its first thread reply.

    ``announce(id)`` is the first reply (``broadcast`` also shows it in the channel). With a
    ``request_key`` seen before (a Slack retry) nothing new happens: the earlier request and
    False are returned.
    """
    services = ctx.services
    user = ctx.request.user_id
    evidence = evidence_for(ctx, environment)
    stored = {**options, "evidence": evidence}
    digest = plan_hash(kind, version, environment, stored, evidence)
    if request_key is None and ctx.request.request_key:
        request_key = f"command:{ctx.request.request_key}"
    deployment, created = services.deployments.create_or_get(
        kind, version, environment, user, state=DeploymentState.PENDING_APPROVAL,
        reason=reason, options=stored, plan_hash=digest, channel=services.policy.channel,
        request_key=request_key)
    assert deployment.id is not None
    if not created:
        return deployment, False
    services.audit.append(user, "deployment.requested", deployment_id=deployment.id,
                          environment=environment,
                          detail={"version": version, "kind": kind.value, "reason": reason,
                                  "options": stored, "plan_hash": digest})
    run = services.views.snapshot(deployment.id)
    services.reporter.run_changed(run)
    services.reporter.event(run, announce(deployment.id), broadcast=broadcast)
    services.wake_worker()
    return deployment, True


def steps_listing(ctx: HandlerContext, kind: ProcedureKind,
                  skip: Collection[str] = ()) -> list[str]:
    """``1. Final validation ...`` for a dry run: the playbook's steps minus ``skip``."""
    playbook = ctx.services.playbooks.get(kind)
    if playbook is None:
        return ["(the playbook is not wired into this bot)"]
    chosen = [step for step in playbook.steps if step.name not in skip]
    return [f"{i}. {step.title}" for i, step in enumerate(chosen, 1)]


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
    _refuse_in_freeze(ctx, command)
    refuse_when_locked(ctx, env, "A hotfix")
    refuse_when_busy(ctx, env, HOTFIX_BLOCKERS)
    user = ctx.request.user_id
    needed = approvals_needed(ctx, ProcedureKind.HOTFIX)
    window = services.windows.verdict(services.clock.now())
    outside = ("" if window.open else
               f" It is outside the preferred window ({window.reason}), which a hotfix may be.")
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


def _refuse_in_freeze(ctx: HandlerContext, command: Command) -> None:
    services = ctx.services
    freeze = services.windows.in_freeze(services.clock.now())
    if freeze is None:
        return
    zone = services.policy.zone
    after = datetime.combine(freeze.end + timedelta(days=1), time(0, 0), tzinfo=zone)
    raise PolicyRefusal(
        f"A hotfix is not allowed during the {escape(freeze.reason)} "
        f"({freeze.start.isoformat()} to {freeze.end.isoformat()}).", rule="freeze",
        hint=f"Hotfixes are possible again from {local_time(after, zone)}. Only an emergency "
             f"deploys during a freeze: `/qlp emergency &lt;category&gt; {command.version} "
             f"--reason \"...\"` (categories: security, outage, critical-bug, compliance).")


def _dry_run(ctx: HandlerContext, command: Command, env: str) -> str:
    services = ctx.services
    policy = services.policy
    now = services.clock.now()
    freeze = services.windows.in_freeze(now)
    window = services.windows.verdict(now)
    allowed = (f"*refused*: in the {escape(freeze.reason)} (rule: freeze)" if freeze else
               "allowed" + ("" if window.open else f" (outside the preferred window: "
                                                  f"{window.reason})"))
    skip = {name for name, _ in HOTFIX_SKIPPED}
    if not command.maintenance:
        skip |= {"maintenance_on", "maintenance_off"}
    short = hotfix_monitoring(policy.monitoring)
    lines = [
        f"*Dry run: hotfix {command.version} to {env}* (nothing was changed)",
        f"Hotfix now: {allowed}",
        f"Approval: {approvals_needed(ctx, ProcedureKind.HOTFIX)}, not the requester",
        "Skipped: " + "; ".join(text for _, text in HOTFIX_SKIPPED),
        f"Monitoring: {format_duration(short.duration)} every "
        f"{format_duration(short.interval)} (standard: "
        f"{format_duration(policy.monitoring.duration)})",
        "Steps:", *steps_listing(ctx, ProcedureKind.HOTFIX, skip),
    ]
    return "\n".join(lines)
