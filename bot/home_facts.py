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

import logging
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from bot.commands.lock import unlock_refusal
from bot.commands.requesting import approvals_needed
from bot.commands.rollback import plan_rollback
from bot.context import HandlerContext, Request
from bot.flows import Gate, Moment
from bot.home import HISTORY, Buttons, EnvironmentHome, Waiting
from bot.membership import SlackGroups
from bot.ports import HandlerServices
from procedures.errors import PolicyRefusal, QlpError
from procedures.model import ACTIVE_STATES, DeploymentState, ProcedureKind
from procedures.policy import ApprovalRule
from procedures.store import DeploymentRecord, EnvironmentRecord
from procedures.windows import WindowRule
from storage.home_viewers import approvals_for, last_finished
from storage.status import StatusReader

__all__ = ["SharedHome", "home_context", "may_deploy", "may_unlock", "read_home", "read_shared",
           "rollback_target", "window_key"]

log = logging.getLogger(__name__)

MEMBERSHIP_AGE = 60.0
"""Seconds a user group's members may be old for drawing buttons (SlackGroups keeps them)."""

WAITING_STATES = (DeploymentState.PENDING_APPROVAL, DeploymentState.SCHEDULED)
_WINDOW_RULES = frozenset(rule.value for rule in WindowRule if rule is not WindowRule.FREEZE)
"""Refusals a scheduled deployment gets past (the dialog can schedule one): the window's
hours, avoided days and holiday weeks, not a freeze, a lock or a deployment under way."""


def home_context(services: HandlerServices, user_id: str, team_id: str | None = None, *,
                 display: bool = False) -> HandlerContext:
    """A handler context for ``user_id`` as if they typed a command in the policy's channel
    (the Home tab has no channel; the commands' announcements go there anyway). ``display``:
    for drawing the Home, where group membership may be up to :data:`MEMBERSHIP_AGE` old
    (``usergroups.users.list`` is Tier 2); a click always reads it now."""
    if display:
        services = cast("HandlerServices", _DisplayServices(services))
    return HandlerContext(Request(user_id=user_id, channel_id=services.policy.channel,
                                  team_id=team_id), services)


class _DisplayGroups:
    """``bot.membership.SlackGroups`` answering from its cache up to :data:`MEMBERSHIP_AGE`."""

    def __init__(self, groups: SlackGroups) -> None:
        self._groups = groups

    def members(self, group: str, *, max_age: float = 0.0) -> frozenset[str]:
        return self._groups.members(group, max_age=max(max_age, MEMBERSHIP_AGE))

    def may_approve(self, user: str, rule: ApprovalRule) -> bool:
        return user in rule.users or any(user in self.members(g) for g in rule.groups)


class _DisplayServices:
    """The services with :class:`_DisplayGroups` for ``groups``; everything else theirs."""

    def __init__(self, services: HandlerServices) -> None:
        self._services = services
        self.groups = _DisplayGroups(services.groups)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._services, name)


def may_deploy(ctx: HandlerContext, env: str, *, gate: Gate | None = None) -> bool:
    """Would the gate take a standard deployment of ``env`` from this person: now, or (when
    only the window's hours or days say no) at the next preferred slot? ``gate``: one judging
    on a snapshot (:class:`SharedHome`), by default the live one."""
    gate = gate or ctx.services.flows.gate
    user = ctx.request.user_id
    verdict = gate.judge(ProcedureKind.STANDARD, user, env, Moment.REQUEST)
    if verdict.allowed:
        return True
    if verdict.rule not in _WINDOW_RULES:
        return False
    slot = gate.windows_for(env).next_open(ctx.services.clock.now())
    return slot is not None and gate.judge(ProcedureKind.STANDARD, user, env, Moment.SCHEDULE,
                                           at=slot).allowed


def rollback_target(ctx: HandlerContext, env: str, *,
                    gate: Gate | None = None) -> str | None:
    """The version a rollback of ``env`` by this person would return to, if the gate would
    take the request now and there is one (no irreversible migration in between)."""
    gate = gate or ctx.services.flows.gate
    verdict = gate.judge(ProcedureKind.ROLLBACK, ctx.request.user_id, env, Moment.REQUEST)
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


def _may_unlock_or_not(ctx: HandlerContext, env: str) -> bool:
    """:func:`may_unlock`, and no button when Slack cannot say who is in an approvers' group
    (the Home is published without it; the command still answers)."""
    try:
        return may_unlock(ctx, env)
    except QlpError as error:
        log.warning("app home: no Unlock button for %s on %s: %s", ctx.request.user_id, env,
                    error)
        return False


def window_key(services: HandlerServices, now: datetime) -> str:
    """Every environment's window state in one string: a Home is republished when it flips."""
    gate = services.flows.gate
    parts = []
    for env in services.policy.environments:
        verdict = gate.windows_for(env).verdict(now)
        parts.append(f"{env}:{int(verdict.open)}:{verdict.rule.value}")
    return "|".join(parts)


@dataclass(frozen=True)
class SharedHome:
    """What every viewer's Home shows alike, read once for all of them: one status snapshot,
    the approvals of its deployments and each environment's last finished deployments. Its
    ``gate`` is the one gate (``bot.flows.gate.Gate``) judging on this snapshot, so the
    buttons of twenty environments cost no query each; a click is judged again on live rows.
    """

    states: Mapping[str, EnvironmentRecord]
    running: Mapping[str, Sequence[DeploymentRecord]]
    waiting: Mapping[str, Sequence[Waiting]]
    recent: Mapping[str, Sequence[DeploymentRecord]]
    gate: Gate


def read_shared(services: HandlerServices) -> SharedHome:
    """Read :class:`SharedHome` (a handful of queries whatever the number of environments)."""
    database = services.database
    names = list(services.policy.environments)
    snapshot = StatusReader(database).snapshot(ACTIVE_STATES + WAITING_STATES)
    rows = _SnapshotDeployments(snapshot.deployments, services.deployments)
    approvals = _SnapshotApprovals(approvals_for(
        database, [d.id for d in snapshot.deployments if d.id is not None]))
    gate = Gate(policy=services.policy, windows=services.windows,
                environments=_SnapshotEnvironments(snapshot.environments),
                deployments=rows, approvals=approvals, groups=services.groups,
                clock=services.clock)
    running: dict[str, list[DeploymentRecord]] = {}
    waiting: dict[str, list[Waiting]] = {}
    anyone = home_context(services, "")
    for deployment in snapshot.deployments:
        if deployment.state in ACTIVE_STATES:
            running.setdefault(deployment.environment, []).append(deployment)
        else:
            waiting.setdefault(deployment.environment, []).append(
                _waiting(anyone, gate, deployment))
    for entries in waiting.values():
        entries.sort(key=lambda w: (w.deployment.scheduled_at or w.deployment.created_at,
                                    w.deployment.id or 0))
    recent = last_finished(database, names, [s for s in DeploymentState if s.terminal],
                           HISTORY)
    return SharedHome(dict(snapshot.environments), running, waiting, recent, gate)


def read_home(ctx: HandlerContext, shared: SharedHome | None = None) -> list[EnvironmentHome]:
    """Every environment of the policy, in its order, as ``ctx``'s person would see it."""
    services = ctx.services
    shared = shared if shared is not None else read_shared(services)
    now = services.clock.now()
    homes = []
    for env in services.policy.environments:
        state = shared.states.get(env)
        buttons = Buttons(deploy=may_deploy(ctx, env, gate=shared.gate),
                          rollback_to=rollback_target(ctx, env, gate=shared.gate),
                          unlock=bool(state is not None and state.lock_holder)
                          and _may_unlock_or_not(ctx, env))
        homes.append(EnvironmentHome(
            name=env, state=state, window=shared.gate.windows_for(env).verdict(now),
            running=shared.running.get(env, ()), waiting=shared.waiting.get(env, ()),
            recent=shared.recent.get(env, ()), buttons=buttons))
    return homes


def _waiting(ctx: HandlerContext, gate: Gate, deployment: DeploymentRecord) -> Waiting:
    approved = tuple(gate.approvers_of(deployment))
    rule = ctx.services.policy.approval_rule(deployment.kind, deployment.environment)
    needs = "" if len(approved) >= rule.required or \
        deployment.state is DeploymentState.SCHEDULED else \
        approvals_needed(ctx, deployment.kind, deployment.environment)
    return Waiting(deployment, approved, needs)


# -- the snapshot, as the gate reads its rows -----------------------------------------------------


class _SnapshotEnvironments:
    """``EnvironmentLocks`` over the snapshot's environment rows."""

    def __init__(self, rows: Mapping[str, Any]) -> None:
        self._rows = rows

    def get(self, environment: str) -> Any:
        return self._rows.get(environment)


class _SnapshotDeployments:
    """``Deployments`` over the snapshot's active and waiting deployments; anything else
    (a finished deployment holding a lock, other states) is read from ``live``."""

    def __init__(self, rows: Sequence[DeploymentRecord], live: Any) -> None:
        self._rows = list(rows)
        self._by_id = {row.id: row for row in self._rows}
        self._states = frozenset(ACTIVE_STATES + WAITING_STATES)
        self._live = live

    def get(self, id: int) -> DeploymentRecord | None:
        found = self._by_id.get(id)
        return found if found is not None else self._live.get(id)

    def list_in_states(self, states: Collection[DeploymentState],
                       environment: str | None = None) -> Sequence[DeploymentRecord]:
        if not set(states) <= self._states:
            return self._live.list_in_states(states, environment=environment)
        return [row for row in self._rows if row.state in states
                and (environment is None or row.environment == environment)]


class _SnapshotApprovals:
    """``ApprovalRows`` over the approvals read with the snapshot."""

    def __init__(self, rows: Mapping[int, list[Any]]) -> None:
        self._rows = rows

    def for_deployment(self, deployment_id: int, plan_hash: str | None = None) -> list[Any]:
        return [row for row in self._rows.get(deployment_id, [])
                if plan_hash is None or row.plan_hash == plan_hash]
