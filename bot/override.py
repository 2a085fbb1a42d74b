"""Break-glass overrides, and the facts the policy decision (``procedures.decision``) is given.

The flow, for ``/qlp deploy v1.2.3 --override "why"`` when the window is closed, a freeze is
on or a person holds the environment's lock (never past a deployment under way):

1. The request is created PENDING_APPROVAL with ``options["override"] = {"reason",
   "requested_by", "rules"}``; the card notes that a break-glass override is needed and who may
   grant it. Without ``--override`` the same request is refused, and the refusal says
   ``--override`` would allow it.
2. The card's Approve button serves both roles. A click by someone in ``approvals.override``
   (not the requester) while no override is granted *grants* it: an ``override`` row in the
   approvals table, bound to the plan like any approval, audited (``override.granted``, with a
   follow-up item) and broadcast to the channel. Anyone else in the kind's approval rule
   *approves* the deployment as usual. One person plays one role: whoever granted the override
   does not also count as an approver, and the requester is neither.
3. The request is queued once the override is granted *and* the normal approvals are in,
   whatever the order. Each click first records its row and then checks for completeness, and
   the move to QUEUED is one conditional update, so of two simultaneous last clicks exactly one
   queues it. If the override lifted a person's lock, that lock is released (audited and
   broadcast) so the run can take the environment.
4. The grant is valid :data:`~procedures.decision.OVERRIDE_TTL` (2 hours) for this deployment
   only. A later approval finds it expired: the request ends EXPIRED and the thread says the
   override expired; asking again with ``--override`` starts over.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from bot.commands.requesting import open_request
from bot.flows import Moment
from bot.flows.gate import OVERRIDE_OPTION
from bot.formatting import escape, local_time
from bot.membership import describe_rule
from procedures.decision import (
    OVERRIDE_KIND,
    OVERRIDE_TTL,
    Override,
    Verdict,
)
from procedures.durations import format_duration
from procedures.errors import ConflictError, PolicyRefusal
from procedures.model import DeploymentState, ProcedureKind
from procedures.policy import ApprovalRule
from procedures.store import DeploymentRecord
from storage.decisions import Outcome

if TYPE_CHECKING:
    from bot.context import HandlerContext

OPTION = OVERRIDE_OPTION
"""The key of the override request in a deployment's ``options`` (``bot.flows.gate`` owns it)."""


# -- requesting -------------------------------------------------------------------------------


def request_with_override(ctx: HandlerContext, *, kind: ProcedureKind, version: str | None,
                          environment: str, reason: str, verdict: Verdict,
                          options: dict[str, Any]) -> str:
    """Create the PENDING_APPROVAL request that waits for an override grant and approvals."""
    policy = ctx.services.policy
    user = ctx.request.user_id
    grantors = describe_rule(policy.approval_rule(OVERRIDE_KIND, environment))
    rule = policy.approval_rule(kind.value, environment)
    note = (f"Break-glass override needed ({verdict.rule}): {_plain(verdict.reason)}. It "
            f"must be granted by {_plain(grantors)} (not the requester), for this deployment "
            f"only, valid {format_duration(OVERRIDE_TTL)} from the grant.")
    options = {**options, OPTION: {"reason": reason, "requested_by": user,
                                   "rules": [verdict.rule]},
               "notes": [note]}
    needs = _needs(rule)
    deployment, created = open_request(
        ctx, kind=kind, version=version, environment=environment, reason=reason,
        options=options,
        audit=[("override.requested", {"reason": reason, "rule": verdict.rule,
                                       "refusal": verdict.reason})],
        announce=lambda _: (
            f":rotating_light: <@{user}> asks to break glass: {version} to {environment} "
            f"although {verdict.reason} (rule: {verdict.rule}). Reason: {escape(reason)}. "
            f"Needs a break-glass override from {grantors} and {needs}."))
    if not created:
        return f"This request was already received: it is deployment #{deployment.id}."
    return (f"Deployment #{deployment.id} requested with a break-glass override: {version} to "
            f"{environment}. {grantors} (not you) must grant the override, and it needs "
            f"{needs} as usual. The card is in <#{policy.channel}>.")


def _plain(text: str) -> str:
    """A verdict's mrkdwn as the plain text a card note is (the card escapes its notes once):
    mentions as ``@U123`` / ``@S123``, entities back to the characters they stand for."""
    plain = _MENTION.sub(lambda m: "@" + m.group(1), text)
    return plain.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


_MENTION = re.compile(r"<[@!](?:subteam\^)?([A-Z0-9]+)>")


def _needs(rule: ApprovalRule) -> str:
    plural = "s" if rule.required > 1 else ""
    return f"{rule.required} approval{plural} from {describe_rule(rule)}"


# -- reading an override back -------------------------------------------------------------------


def may_refuse(ctx: HandlerContext, deployment: DeploymentRecord, user: str) -> bool:
    """May ``user`` reject this request as an override approver (refusing to break glass)?"""
    return ctx.services.flows.gate.may_grant_override(deployment, user)


# -- the Approve button on a request with an override ---------------------------------------------


def approve(ctx: HandlerContext, deployment: DeploymentRecord,
            refresh_plan: Callable[[HandlerContext, DeploymentRecord], None]) -> str:
    """Grant the override or approve the deployment, by who presses; queue it when complete."""
    services = ctx.services
    policy = services.policy
    user = ctx.request.user_id
    assert deployment.id is not None
    kind_rule = policy.approval_rule(deployment.kind, deployment.environment)
    override_rule = policy.approval_rule(OVERRIDE_KIND, deployment.environment)
    if user == deployment.requester:
        raise _refuse(ctx, deployment, f"You requested #{deployment.id}; someone else must "
                      "grant its override and someone else must approve it.",
                      "no-self-approval", f"Override: {describe_rule(override_rule)}. "
                      f"Approval: {describe_rule(kind_rule)}.")
    refresh_plan(ctx, deployment)
    deployment = services.deployments.get(deployment.id) or deployment
    assert deployment.id is not None
    gate = services.flows.gate
    grant = gate.grant_of(deployment)
    granter = grant[0] if grant else None
    approvers = gate.approvers_of(deployment)
    if granter is None and gate.may_grant_override(deployment, user):
        if user in approvers:
            raise _refuse(ctx, deployment, f"You approved #{deployment.id} already; the "
                          "override must come from someone else.", "one-role",
                          f"Override: {describe_rule(override_rule)}.")
        return _grant(ctx, deployment)
    if user == granter:
        raise ConflictError(f"You granted the override of #{deployment.id}; another approver "
                            f"must approve the deployment itself ({describe_rule(kind_rule)}).")
    if user in approvers:
        raise ConflictError(f"You already approved #{deployment.id}.")
    if not gate.check_approver(deployment, user).allowed:
        what = ("approve it" if granter else
                f"approve it, and {describe_rule(override_rule)} grants its override")
        raise _refuse(ctx, deployment, f"You may not approve #{deployment.id}.", "approvers",
                      f"{describe_rule(kind_rule)} may {what}.")
    return _approve(ctx, deployment)


def _grant(ctx: HandlerContext, deployment: DeploymentRecord) -> str:
    services = ctx.services
    user = ctx.request.user_id
    assert deployment.id is not None
    now = services.clock.now()
    asked = services.flows.gate.override_of(deployment)
    assert asked is not None
    override = Override.grant(asked.reason, asked.requested_by, user, now,
                              deployment_id=deployment.id)
    verdict = _verdict(ctx, deployment, override)
    if not verdict.allowed:
        raise _refuse(ctx, deployment, f"{verdict.reason}.", verdict.rule,
                      verdict.what_would_allow or None)
    plan = deployment.plan_hash or ""
    services.approvals.record(deployment.id, user, "override", plan, asked.reason)
    first = services.flows.gate.grant_of(deployment)
    if first is not None and first[0] != user:
        raise ConflictError(f"<@{first[0]}> granted the override of #{deployment.id} first.")
    expires = now + OVERRIDE_TTL
    zone = services.policy.zone
    lifted = ", ".join(verdict.overridden) or "nothing now (no rule refuses it any more)"
    services.audit.append(user, "override.granted", deployment_id=deployment.id,
                          environment=deployment.environment,
                          detail={"reason": asked.reason, "requested_by": asked.requested_by,
                                  "lifts": list(verdict.overridden),
                                  "expires_at": expires.isoformat(),
                                  "plan_hash": plan,
                                  "follow_up": f"review why #{deployment.id} needed a "
                                               "break-glass override"})
    _note(ctx, deployment, f"Break-glass override granted by @{user} until "
                           f"{local_time(expires, zone)} (lifts: {lifted}).")
    run = services.views.snapshot(deployment.id)
    services.reporter.run_changed(run)
    services.reporter.event(
        run, f":rotating_light: Break-glass override of #{deployment.id} granted by <@{user}>"
             f", requested by <@{asked.requested_by}>: {escape(asked.reason)}. It lifts "
             f"{lifted} for this deployment only, until {local_time(expires, zone)}.",
        broadcast=True)
    if _queue_if_complete(ctx, deployment.id):
        return f"You granted the override of #{deployment.id}; it is starting."
    rule = services.policy.approval_rule(deployment.kind, deployment.environment)
    have = len(services.flows.gate.approvers_of(deployment))
    if have >= rule.required:  # the approvals are in, yet it was not queued: say why
        now_verdict = _verdict(ctx, deployment, override)
        why = (f": {now_verdict.reason}" if not now_verdict.allowed
               else " (another click queued it)")
        return (f"You granted the override of #{deployment.id} until "
                f"{local_time(expires, zone)}. It has its {rule.required} approval"
                f"{'s' if rule.required > 1 else ''} but does not start now{why}.")
    return (f"You granted the override of #{deployment.id} until {local_time(expires, zone)}. "
            f"It still needs {rule.required - have} approval"
            f"{'s' if rule.required - have > 1 else ''} from {describe_rule(rule)}.")


def _approve(ctx: HandlerContext, deployment: DeploymentRecord) -> str:
    services = ctx.services
    user = ctx.request.user_id
    assert deployment.id is not None
    override = services.flows.gate.override_of(deployment)
    verdict = _verdict(ctx, deployment, override)
    if not verdict.allowed and verdict.rule == "override-expired":
        _expire(ctx, deployment, verdict)
        raise _refuse(ctx, deployment, f"{verdict.reason}.", verdict.rule,
                      verdict.what_would_allow or None)
    if not verdict.allowed and verdict.rule != "override-pending":
        raise _refuse(ctx, deployment, f"{verdict.reason}.", verdict.rule,
                      verdict.what_would_allow or None)
    rule = services.policy.approval_rule(deployment.kind, deployment.environment)
    granted = override is not None and override.granted
    waiting = ""
    if not verdict.allowed:  # override-pending: the grant is still missing
        grantors = describe_rule(services.policy.approval_rule(OVERRIDE_KIND,
                                                                  deployment.environment))
        waiting = f" Waiting for the break-glass override from {grantors}."
    # Counted in one serialised transaction with its audit row: the count never passes the
    # rule's number ("2 of 1"); an approval once the count is complete is not recorded.
    decision = services.decisions.count_approval(
        deployment.id, user, required=rule.required,
        not_counting=override.approver if override else None,
        detail={"override_granted": granted})
    if decision.outcome is Outcome.ALREADY_DECIDED:
        raise ConflictError(f"You already approved #{deployment.id}.")
    if decision.outcome is Outcome.ENOUGH:
        who = ", ".join(f"<@{a}>" for a in decision.approvers)
        needed = f"{rule.required} approval{'s' if rule.required > 1 else ''}"
        raise ConflictError(f"#{deployment.id} already has the {needed} it needs ({who}); "
                            "yours was not counted." + waiting)
    if decision.outcome is not Outcome.RECORDED:
        raise ConflictError(f"#{deployment.id} is no longer waiting for approval; there is "
                            "nothing to approve.")
    count = len(decision.approvers)
    if _queue_if_complete(ctx, deployment.id):
        return f"You approved #{deployment.id}; it is starting."
    run = services.views.snapshot(deployment.id)
    services.reporter.run_changed(run)
    services.reporter.event(run, f"Approved by <@{user}> ({count}/{rule.required}).{waiting}")
    return (f"Your approval of #{deployment.id} is recorded ({count} of {rule.required})."
            + waiting)


def _queue_if_complete(ctx: HandlerContext, deployment_id: int) -> bool:
    """Queue the request once the approvals are in and the decision allows it: with the
    granted override, or without one if no rule refuses it any more. True if this call queued
    it (a conditional update: of two racing calls exactly one wins)."""
    services = ctx.services
    deployment = services.deployments.get(deployment_id)
    if deployment is None or deployment.state is not DeploymentState.PENDING_APPROVAL:
        return False
    gate = services.flows.gate
    override = gate.override_of(deployment)
    if override is not None and not override.granted:
        override = None
    approvers = gate.approvers_of(deployment)
    rule = services.policy.approval_rule(deployment.kind, deployment.environment)
    if len(approvers) < rule.required:
        return False
    verdict = _verdict(ctx, deployment, override)
    if not verdict.allowed:
        if verdict.rule == "override-expired":
            _expire(ctx, deployment, verdict)
        return False
    if not services.deployments.transition(deployment_id, [DeploymentState.PENDING_APPROVAL],
                                           DeploymentState.QUEUED):
        return False
    who = ", ".join(f"<@{a}>" for a in approvers)
    if override is not None and verdict.overridden:
        services.audit.append(ctx.request.user_id, "override.used", deployment_id=deployment_id,
                              environment=deployment.environment,
                              detail={"override_by": override.approver, "approvers": approvers,
                                      "lifts": list(verdict.overridden),
                                      "follow_up": f"review the break-glass use of "
                                                   f"#{deployment_id} after the run"})
        text = f"Approved by {who} with the break-glass override of <@{override.approver}>."
    else:
        text = f"Approved by {who}; no rule refuses it any more, so no override is used."
    run = services.views.snapshot(deployment_id)
    services.reporter.run_changed(run)
    services.reporter.event(run, f"{text} Starting.")
    services.wake_worker()
    return True


def _expire(ctx: HandlerContext, deployment: DeploymentRecord, verdict: Verdict) -> None:
    services = ctx.services
    assert deployment.id is not None
    if not services.deployments.transition(deployment.id, [DeploymentState.PENDING_APPROVAL],
                                           DeploymentState.EXPIRED, error=verdict.reason):
        return
    services.audit.append(ctx.request.user_id, "override.expired", deployment_id=deployment.id,
                          environment=deployment.environment, detail={"reason": verdict.reason})
    run = services.views.snapshot(deployment.id)
    services.reporter.run_changed(run)
    services.reporter.event(run, f":hourglass: #{deployment.id} will not run: "
                                 f"{verdict.reason}. {verdict.what_would_allow}",
                            broadcast=True)


def _verdict(ctx: HandlerContext, deployment: DeploymentRecord,
             override: Override | None) -> Verdict:
    """The gate's verdict at this approval, with ``override`` (granted or not)."""
    return ctx.services.flows.gate.judge(
        deployment.kind, deployment.requester, deployment.environment, Moment.APPROVAL,
        deployment_id=deployment.id, override=override)


def _note(ctx: HandlerContext, deployment: DeploymentRecord, note: str) -> None:
    services = ctx.services
    assert deployment.id is not None
    current = services.deployments.get(deployment.id) or deployment
    options = dict(current.options)
    options["notes"] = [*options.get("notes", []), note][-5:]
    services.deployments.update_fields(deployment.id, options=options)


def _refuse(ctx: HandlerContext, deployment: DeploymentRecord, message: str, rule: str,
            hint: str | None = None) -> PolicyRefusal:
    ctx.services.audit.append(ctx.request.user_id, "approval.refused",
                              deployment_id=deployment.id, environment=deployment.environment,
                              detail={"rule": rule, "message": message})
    return PolicyRefusal(message, rule=rule, hint=hint)
