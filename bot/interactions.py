"""Button handlers: Approve, Reject, Cancel, Roll back.

Every click is resolved from the database, never from memory, so buttons keep working across
restarts and replicas. These handlers run after the ack, on ``bot.clicks``' threads: a click is
stored by its listener (which also recognises a Slack retry of the same click, same
action_ts, and drops it) and decided here, where reading a user group from Slack may take
seconds. Two people or a double click race through an atomic transition and the losers are told
what happened. Refusals are ephemeral and audited. ``bot.listeners.BUTTONS`` names each by its
action id.
"""

from __future__ import annotations

import re
from typing import Any

from bot import override as break_glass
from bot.commands.cancel import cancel_deployment
from bot.commands.checklist import tick_checklist
from bot.commands.registry import run_command
from bot.commands.rollback import rollback_from_card
from bot.context import HandlerContext
from bot.flows import Moment
from bot.formatting import escape, local_time
from bot.grammar import parse
from bot.membership import describe_rule
from bot.plan import describe_change, reset_plan
from procedures.errors import ConflictError, PolicyRefusal, UserError
from procedures.model import HOLDING_STATES, DeploymentState
from procedures.store import DeploymentRecord
from storage.decisions import Outcome

# A deployment number as the cards write it: ASCII digits (str.isdigit() also takes '١٢' and
# '²'), short enough for a database id (int() of a 10,000-digit string raises ValueError).
_DEPLOYMENT_VALUE = re.compile(r"[0-9]{1,18}")


def _deployment(ctx: HandlerContext, action: dict[str, Any]) -> DeploymentRecord:
    value = str(action.get("value") or "")
    if _DEPLOYMENT_VALUE.fullmatch(value) is None:
        raise UserError("This button does not name a deployment; it may be from an older "
                        "version of the bot.")
    deployment = ctx.services.deployments.get(int(value))
    if deployment is None:
        raise UserError(f"Deployment #{value} does not exist (any more).")
    # A card's buttons are pressed where the card is: the deployment's channel (cards are
    # posted in the policy's channel when the row names none). A click naming another channel
    # is not a press on that card (issue 13, finding 6).
    card_channel = deployment.channel or ctx.services.policy.channel
    if ctx.request.channel_id != card_channel:
        raise _refuse(ctx, deployment, "click", f"This button was pressed in "
                      f"{_channel(ctx.request.channel_id)}, but #{deployment.id}'s card is in "
                      f"<#{card_channel}>; it was not acted on.", "channel",
                      f"Use the buttons on the card in <#{card_channel}>.")
    return deployment


def _channel(channel: str) -> str:
    """A channel id as a link when it looks like one, else as escaped text."""
    return f"<#{channel}>" if re.fullmatch(r"[CGD][A-Z0-9]{2,20}", channel) else \
        f"`{escape(channel or 'no channel')}`"


def _refuse(ctx: HandlerContext, deployment: DeploymentRecord, action: str, message: str,
            rule: str, hint: str | None = None) -> PolicyRefusal:
    ctx.services.audit.append(ctx.request.user_id, f"{action}.refused",
                              deployment_id=deployment.id, environment=deployment.environment,
                              detail={"rule": rule, "message": message})
    return PolicyRefusal(message, rule=rule, hint=hint)


def approve(ctx: HandlerContext, action: dict[str, Any]) -> str | None:
    """Count an approval; the one that completes the count queues the run."""
    services = ctx.services
    user = ctx.request.user_id
    deployment = _deployment(ctx, action)
    assert deployment.id is not None
    if deployment.state is not DeploymentState.PENDING_APPROVAL:
        return _not_pending(ctx, deployment)
    if deployment.options.get(break_glass.OPTION):
        # A break-glass request: the click grants the override or approves, by who clicks.
        return break_glass.approve(ctx, deployment, _refresh_plan)
    rule = services.policy.approval_rule(deployment.kind, deployment.environment)
    gate = services.flows.gate
    # Who may approve is read now (group membership from Slack): no cached answer decides.
    check = gate.check_approver(deployment, user)
    if not check.allowed:
        raise _refuse(ctx, deployment, "approval", check.message, check.rule,
                      check.hint or None)
    # The one gate, at the approval moment (at its scheduled moment when that is ahead).
    verdict = gate.judge_deployment(deployment, Moment.APPROVAL)
    if not verdict.allowed:
        raise _refuse(ctx, deployment, "approval", f"{verdict.reason}.", verdict.rule,
                      verdict.what_would_allow.split(" Or break glass:", 1)[0] or None)
    _refresh_plan(ctx, deployment)
    # The count the gate asks for (one more outside the preferred window when the policy
    # says so), shown everywhere below as "N of M".
    rule = rule.model_copy(update={"required": verdict.required})
    decision = services.decisions.approve(deployment.id, user, required=rule.required)
    run = services.views.snapshot(deployment.id)
    if decision.outcome is Outcome.SCHEDULED:
        assert deployment.scheduled_at is not None
        when = local_time(deployment.scheduled_at, services.policy.zone)
        services.reporter.run_changed(run)
        services.reporter.event(run, f"Approved by <@{user}> "
                                     f"({len(decision.approvers)}/{rule.required}). "
                                     f"It starts at {when}.")
        return f"You approved #{deployment.id}; it starts at {when}."
    if decision.outcome is Outcome.QUEUED:
        ahead = _under_way(ctx, deployment)
        services.reporter.run_changed(run)
        if ahead is None:
            services.reporter.event(run, f"Approved by <@{user}> "
                                         f"({len(decision.approvers)}/{rule.required}). Starting.")
            services.wake_worker()
            return f"You approved #{deployment.id}; it is starting."
        # One run at a time per environment: it waits in line (bot.runner says so in the
        # thread too), never "starting" and then dropped.
        services.reporter.event(run, f"Approved by <@{user}> "
                                     f"({len(decision.approvers)}/{rule.required}). It waits "
                                     f"for #{ahead}, under way on {deployment.environment}, "
                                     "and starts when it has ended.")
        services.wake_worker()
        return f"You approved #{deployment.id}; it starts when #{ahead} has ended."
    if decision.outcome is Outcome.RECORDED:
        services.reporter.run_changed(run)
        services.reporter.event(run, f"Approved by <@{user}> "
                                     f"({len(decision.approvers)}/{rule.required}).")
        return (f"Your approval of #{deployment.id} is recorded "
                f"({len(decision.approvers)} of {rule.required}).")
    if decision.outcome is Outcome.ALREADY_DECIDED:
        raise ConflictError(f"You already approved #{deployment.id}.")
    refreshed = services.deployments.get(deployment.id)
    return _not_pending(ctx, refreshed or deployment, decided_by=decision.decided_by)


def _refresh_plan(ctx: HandlerContext, deployment: DeploymentRecord) -> None:
    """If what the request was judged on changed, earlier approvals stop counting."""
    services = ctx.services
    assert deployment.id is not None
    old = dict(deployment.options.get("evidence") or {})
    new = services.flows.requests.evidence(deployment.environment, at=deployment.scheduled_at,
                                           kind=deployment.kind)
    if old == new:
        return
    note = f"Approvals reset: {describe_change(old, new)} since the request."
    options, digest = reset_plan(deployment.kind, deployment.version, deployment.environment,
                                 deployment.options, new, note)
    services.deployments.update_fields(deployment.id, options=options, plan_hash=digest)
    services.audit.append("bot", "plan.changed", deployment_id=deployment.id,
                          environment=deployment.environment,
                          detail={"old": old, "new": new, "plan_hash": digest})
    run = services.views.snapshot(deployment.id)
    services.reporter.run_changed(run)
    services.reporter.event(run, f":warning: {note}")


def _not_pending(ctx: HandlerContext, deployment: DeploymentRecord,
                 decided_by: str | None = None) -> str:
    approvers = ctx.services.views.snapshot(deployment.id or 0).approvers
    if deployment.state in (DeploymentState.QUEUED, DeploymentState.RUNNING,
                            DeploymentState.SUCCEEDED) and approvers:
        who = ", ".join(f"<@{a}>" for a in approvers)
        raise ConflictError(f"#{deployment.id} was already approved by {who}; "
                            f"it is {deployment.state.value.replace('_', ' ')}.")
    by = f" by <@{decided_by}>" if decided_by else ""
    raise ConflictError(f"#{deployment.id} is {deployment.state.value.replace('_', ' ')}"
                        f"{by}; there is nothing to approve.")


def reject(ctx: HandlerContext, action: dict[str, Any]) -> str | None:
    """End a pending request (an approver, or the requester withdrawing it)."""
    services = ctx.services
    user = ctx.request.user_id
    deployment = _deployment(ctx, action)
    assert deployment.id is not None
    rule = services.policy.approval_rule(deployment.kind, deployment.environment)
    if user != deployment.requester \
            and not services.flows.gate.check_approver(deployment, user).allowed \
            and not break_glass.may_refuse(ctx, deployment, user):
        raise _refuse(ctx, deployment, "rejection", f"You may not reject #{deployment.id}.",
                      "approvers", f"Approvers: {describe_rule(rule)}, or the requester.")
    decision = services.decisions.reject(deployment.id, user)
    if decision.outcome is not Outcome.REJECTED:
        return _not_pending(ctx, services.deployments.get(deployment.id) or deployment,
                            decided_by=decision.decided_by)
    run = services.views.snapshot(deployment.id)
    services.reporter.run_changed(run)
    services.reporter.event(run, f"Rejected by <@{user}>. Nothing was deployed.")
    return f"You rejected #{deployment.id}."


def cancel(ctx: HandlerContext, action: dict[str, Any]) -> str | None:
    """Stop a run and undo what it did (the requester or an approver; ``/qlp cancel`` too)."""
    return cancel_deployment(ctx, _deployment(ctx, action))


def rollback(ctx: HandlerContext, action: dict[str, Any]) -> str | None:
    """Request a manual rollback of the card's environment to the version before this one
    (confirmed in Slack's dialog first; approved by ``approvals.rollback``, not the presser)."""
    return rollback_from_card(ctx, _deployment(ctx, action))


def run_offer(ctx: HandlerContext, action: dict[str, Any]) -> str | None:
    """A refusal's one-click alternative (``procedures.errors.Offer``): run the offered
    command as the person who pressed, exactly as if they had typed it. Only a scheduled
    deployment is ever offered, so only that is accepted (a forged value runs nothing else);
    a double click creates one request (the click's key is the request's key)."""
    text = str(action.get("value") or "")
    try:
        command = parse(text)
    except UserError:
        command = None
    if command is None or command.name != "deploy" or command.at is None or command.dry_run:
        raise UserError("This button does not carry a command the bot offers; nothing was "
                        "done.", hint="Type the command instead, e.g. `/qlp deploy v1.2.3 at "
                                      "2026-12-08 10:00`.")
    return run_command(ctx, text)


def checklist_tick(ctx: HandlerContext, action: dict[str, Any]) -> str | None:
    """A press on ``/qlp checklist``'s boxes: tick or untick items (bot.commands.checklist)."""
    return tick_checklist(ctx, action)


def _under_way(ctx: HandlerContext, deployment: DeploymentRecord) -> int | None:
    """The run that holds ``deployment``'s environment now (running or rolling back), if any."""
    for other in ctx.services.deployments.list_in_states(HOLDING_STATES,
                                                     environment=deployment.environment):
        if other.id is not None and other.id != deployment.id:
            return other.id
    return None
