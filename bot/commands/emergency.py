"""``/qlp emergency <security|outage|critical-bug|compliance> <version> [to <env>]
--reason "..." [--dry-run]``: request an emergency deployment.

Allowed 24/7, even in a freeze, never past a person's lock (the gate, ``bot.flows.gate``, says
so before anything is written). Asked for or approved while another deployment is queued or
running, it waits in line and starts right after it (``bot.runner.RunQueueTask``), and the
request's reply and card say so up front. A
second person in ``approvals.emergency`` presses Approve: the bot records who, so nobody types
an approver's name as the seed's script asked. The request is broadcast to the channel, the
on-call route is paged through the outbox (``bot.paging``: kind ``pagerduty``, delivered by
``bot.notification_sender``),
and the deployment carries the post-emergency review (due within 24 hours) and the seed's
emergency checklist in its options. The run is ``procedures.playbooks.emergency``.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from bot import paging
from bot.commands.requesting import (
    approvals_needed,
    judge_request,
    open_request,
    refuse_unless_allowed,
    refused,
    steps_listing,
)
from bot.context import HandlerContext
from bot.formatting import escape, local_time
from bot.grammar import Command
from bot.lookup import environment_of
from procedures.durations import format_duration
from procedures.model import ProcedureKind
from procedures.playbooks.emergency import (
    BLUE_GREEN_READY,
    FAST_TRACK_READY,
    REVIEW_WITHIN,
    VERIFY_WITHIN,
    checklist_items,
    is_fast_track,
)


def emergency_text(ctx: HandlerContext, command: Command) -> str:
    """Validate, refuse with the rule, or create the emergency request, page and announce."""
    env = environment_of(ctx.services.policy, command.environment)
    return refused(ctx, "emergency", env, lambda: _emergency(ctx, command, env))


# What the emergency's first step does (procedures.playbooks.emergency.EmergencySteps.snapshot).
_PLAN_START = ("a database backup where the environment has a database (else the newest "
               "backup's age where the platform knows it) and a snapshot of the live version")


def _track(category: str, stability: timedelta) -> str:
    if is_fast_track(category):
        return (f"fast track: no smoke tests, ready within {format_duration(FAST_TRACK_READY)}, "
                f"healthy within {format_duration(VERIFY_WITHIN)} after the switch")
    return (f"blue-green: ready within {format_duration(BLUE_GREEN_READY)}, smoke tests, "
            f"healthy within {format_duration(VERIFY_WITHIN)} after the switch, then watched "
            f"for {format_duration(stability)}")


def _emergency(ctx: HandlerContext, command: Command, env: str) -> str:
    services = ctx.services
    policy = services.policy
    category = command.category or ""
    version = command.version or ""
    if command.dry_run:
        return _dry_run(ctx, command, env)
    verdict = refuse_unless_allowed(ctx, ProcedureKind.EMERGENCY, env)
    waits = (f"It waits for #{verdict.waits_for}, under way on {env}, and starts right "
             "after it." if verdict.waits_for is not None else "")
    user = ctx.request.user_id
    reason = command.reason or ""
    now = services.clock.now()
    due = now + REVIEW_WITHIN
    checklist = checklist_items()
    needed = approvals_needed(ctx, ProcedureKind.EMERGENCY, env)
    stability = policy.monitoring.emergency_stability
    options: dict[str, Any] = {
        "category": category, "fast_track": is_fast_track(category),
        "review_due": due.isoformat(), "checklist": checklist,
    }

    def announce(deployment_id: int) -> str:
        return (f":rotating_light: <@{user}> requested an *emergency deployment* "
                f"({category}) of {version} to {env}: {escape(reason)}.\n"
                f"Plan: {_PLAN_START}, then {_track(category, stability)}.\n"
                f"Waiting for {needed} (not the requester). {waits}"
                f"{' ' if waits else ''}The on-call route is paged.\n"
                f"Post-emergency review due by {local_time(due, policy.zone)} (within "
                f"{format_duration(REVIEW_WITHIN)}). The emergency checklist "
                f"({len(checklist)} items) is attached: `/qlp checklist {deployment_id}`.")

    deployment, created = open_request(
        ctx, kind=ProcedureKind.EMERGENCY, version=version, environment=env, reason=reason,
        options=options, announce=announce, broadcast=True)
    assert deployment.id is not None
    # Paged even for a repeated request (the dedup key keeps it to one page): a crash between
    # writing the request and the page must not leave the on-call route uninformed.
    _page_oncall(ctx, deployment.id, category, version, env, reason, due.isoformat(),
                 audit=created)
    if not created:
        return f"This request was already received: it is emergency deployment #{deployment.id}."
    return (f"Emergency deployment #{deployment.id} requested: {version} to {env} "
            f"({category}). It needs {needed} (not you).{' ' + waits if waits else ''} The "
            f"on-call route is paged; the card is in <#{policy.channel}>.")


def _page_oncall(ctx: HandlerContext, deployment_id: int, category: str, version: str,
                 env: str, reason: str, review_due: str, *, audit: bool) -> None:
    """Page the on-call route (``bot.paging``: the deployment's PagerDuty alert, whose routing
    key the sender adds from the policy). Idempotent: one page per emergency, however often
    asked."""
    services = ctx.services
    user = ctx.request.user_id
    summary = (f"Emergency deployment #{deployment_id} ({category}) of {version} to {env} "
               f"requested by {user}: {reason}")
    notification = paging.trigger(
        services.outbox, services.policy, deployment_id=deployment_id, reason="emergency",
        summary=summary, severity="critical" if is_fast_track(category) else "error",
        component=env, event_class=f"emergency/{category}",
        details={"category": category, "version": version, "environment": env,
                 "requester": user, "reason": reason, "review_due": review_due})
    if not audit:
        return
    services.audit.append(user, "oncall.paged", deployment_id=deployment_id, environment=env,
                          detail={"route": paging.ONCALL_ROUTE, "kind": "pagerduty",
                                  "notification": notification, "category": category})


def _dry_run(ctx: HandlerContext, command: Command, env: str) -> str:
    category = command.category or ""
    skip = set() if not is_fast_track(category) else {"smoke_tests", "stability"}
    verdict = judge_request(ctx, ProcedureKind.EMERGENCY, env)
    lines = [
        f"*Dry run: emergency ({category}) {command.version} to {env}* (nothing was changed)",
        "Allowed now: " + (f"yes ({verdict.reason})" if verdict.allowed else
                           f"*refused*: {verdict.reason} (rule: {verdict.rule})"),
        f"Approval: {approvals_needed(ctx, ProcedureKind.EMERGENCY, env)}, not the requester",
        f"Plan: {_PLAN_START}, then "
        f"{_track(category, ctx.services.policy.monitoring.emergency_stability)}",
        f"On request: the channel and the on-call route are notified; a post-emergency review "
        f"is due within {format_duration(REVIEW_WITHIN)}; the emergency checklist is attached",
        "Steps:", *steps_listing(ctx, ProcedureKind.EMERGENCY, skip),
    ]
    return "\n".join(lines)
