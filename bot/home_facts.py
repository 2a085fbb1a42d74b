"""What one person's App Home shows, read from the bot's state and judged by the one gate.

:func:`read_home` gathers, per environment, the facts ``bot.home.home_view`` draws, and which
buttons the viewer gets. A button is shown only when the same code that decides its click
would let that person through (:func:`may_deploy`, :func:`rollback_target`,
:func:`may_unlock`); the click handlers (``bot.home_buttons``) ask the same functions again
and the commands they run ask the gate once more, so a forged click is refused.

Group membership (an Unlock by an approver) is read from Slack: this runs on the worker's
thread when a Home is published, never on a listener's.
"""

from __future__ import annotations

from datetime import datetime

from bot.commands.lock import unlock_refusal
from bot.commands.requesting import approvals_needed
from bot.commands.rollback import plan_rollback
from bot.context import HandlerContext, Request
from bot.flows import Moment
from bot.home import HISTORY, Buttons, EnvironmentHome, Waiting
from bot.ports import HandlerServices
from procedures.errors import PolicyRefusal
from procedures.model import ACTIVE_STATES, DeploymentState, ProcedureKind
from procedures.store import DeploymentRecord
from procedures.windows import WindowRule
from storage.status import StatusReader

__all__ = ["home_context", "may_deploy", "may_unlock", "read_home", "rollback_target",
           "window_key"]

WAITING_STATES = (DeploymentState.PENDING_APPROVAL, DeploymentState.SCHEDULED)
_WINDOW_RULES = frozenset(rule.value for rule in WindowRule if rule is not WindowRule.FREEZE)
"""Refusals a scheduled deployment gets past (the dialog can schedule one): the window's
hours, avoided days and holiday weeks, not a freeze, a lock or a deployment under way."""
_RECENT = 4 * HISTORY  # rows read to find the last finished ones among waiting requests


def home_context(services: HandlerServices, user_id: str,
                 team_id: str | None = None) -> HandlerContext:
    """A handler context for ``user_id`` as if they typed a command in the policy's channel
    (the Home tab has no channel; the commands' announcements go there anyway)."""
    return HandlerContext(Request(user_id=user_id, channel_id=services.policy.channel,
                                  team_id=team_id), services)


def may_deploy(ctx: HandlerContext, env: str) -> bool:
    """Would the gate take a standard deployment of ``env`` from this person: now, or (when
    only the window's hours or days say no) at the next preferred slot?"""
    gate = ctx.services.flows.gate
    user = ctx.request.user_id
    verdict = gate.judge(ProcedureKind.STANDARD, user, env, Moment.REQUEST)
    if verdict.allowed:
        return True
    if verdict.rule not in _WINDOW_RULES:
        return False
    slot = gate.windows_for(env).next_open(ctx.services.clock.now())
    return slot is not None and gate.judge(ProcedureKind.STANDARD, user, env, Moment.SCHEDULE,
                                           at=slot).allowed


def rollback_target(ctx: HandlerContext, env: str) -> str | None:
    """The version a rollback of ``env`` by this person would return to, if the gate would
    take the request now and there is one (no irreversible migration in between)."""
    verdict = ctx.services.flows.gate.judge(ProcedureKind.ROLLBACK, ctx.request.user_id, env,
                                            Moment.REQUEST)
    if not verdict.allowed:
        return None
    try:
        plan = plan_rollback(ctx, env, None)
    except PolicyRefusal:
        return None
    return None if plan.irreversible else plan.target


def may_unlock(ctx: HandlerContext, env: str) -> bool:
    """Is ``env`` locked, and would ``/qlp unlock`` lift it for this person?"""
    state = ctx.services.environments.get(env)
    if state is None or not state.lock_holder:
        return False
    return unlock_refusal(ctx, env, state) is None


def window_key(services: HandlerServices, now: datetime) -> str:
    """Every environment's window state in one string: a Home is republished when it flips."""
    gate = services.flows.gate
    parts = []
    for env in services.policy.environments:
        verdict = gate.windows_for(env).verdict(now)
        parts.append(f"{env}:{int(verdict.open)}:{verdict.rule.value}")
    return "|".join(parts)


def read_home(ctx: HandlerContext) -> list[EnvironmentHome]:
    """Every environment of the policy, in its order, as ``ctx``'s person would see it."""
    services = ctx.services
    now = services.clock.now()
    snapshot = StatusReader(services.database).snapshot(ACTIVE_STATES + WAITING_STATES)
    running: dict[str, list[DeploymentRecord]] = {}
    waiting: dict[str, list[DeploymentRecord]] = {}
    for deployment in snapshot.deployments:
        bucket = running if deployment.state in ACTIVE_STATES else waiting
        bucket.setdefault(deployment.environment, []).append(deployment)
    homes = []
    for env in services.policy.environments:
        state = snapshot.environments.get(env)
        recent = [d for d in services.deployments.list_recent(env, limit=_RECENT)
                  if d.state.terminal][:HISTORY]
        buttons = Buttons(deploy=may_deploy(ctx, env), rollback_to=rollback_target(ctx, env),
                          unlock=bool(state is not None and state.lock_holder)
                          and may_unlock(ctx, env))
        homes.append(EnvironmentHome(
            name=env, state=state, window=services.flows.gate.windows_for(env).verdict(now),
            running=running.get(env, []),
            waiting=[_waiting(ctx, d) for d in sorted(
                waiting.get(env, []), key=lambda d: (d.scheduled_at or d.created_at, d.id))],
            recent=recent, buttons=buttons))
    return homes


def _waiting(ctx: HandlerContext, deployment: DeploymentRecord) -> Waiting:
    approved = tuple(ctx.services.flows.gate.approvers_of(deployment))
    rule = ctx.services.policy.approval_rule(deployment.kind, deployment.environment)
    needs = "" if len(approved) >= rule.required or \
        deployment.state is DeploymentState.SCHEDULED else \
        approvals_needed(ctx, deployment.kind, deployment.environment)
    return Waiting(deployment, approved, needs)
