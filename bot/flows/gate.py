"""The one policy gate: every kind of deployment, at every moment of its life before the run.

``procedures.decision.decide`` is the rule book (pure, tested as a table); this module gathers
the facts it judges on, from the bot's own state, for one of three moments:

- **request** (a slash command, a dialog): another deployment waiting for approval or under way
  holds the environment ("one at a time"); an emergency or a rollback is held only by a run
  under way, and an emergency waits in line behind it;
- **schedule** (a request or an approval for a moment still ahead): the window and the freeze
  at that moment; the lock and the runs of then are judged at its start;
- **approval** (each Approve click): judged again, at the scheduled moment when that is still
  ahead, else now; only deployments queued or running hold the environment; the person
  pressing is checked against the kind's approval rule with group membership read now;
- **run start** (the worker's claim, T-0 of a scheduled one): judged again, now; the approvals
  on the current plan are counted and their approvers checked again, so a queued run never
  starts on a window, a freeze, a lock, an override or an approval that no longer holds.

Every command, button, scheduled job and the run queue asks here; nothing else decides.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, Protocol

from procedures.clock import Clock
from procedures.decision import (
    OVERRIDE_KIND,
    ActiveRun,
    Facts,
    Lock,
    Override,
    Request,
    Verdict,
    decide,
    describe_approvers,
    may_decide,
)
from procedures.errors import PolicyRefusal
from procedures.model import (
    ACTIVE_STATES,
    HOLDING_STATES,
    UNDER_WAY_STATES,
    DeploymentState,
    ProcedureKind,
)
from procedures.policy import ApprovalRule, Policy
from procedures.store import DeploymentRecord
from procedures.windows import WindowPolicy

__all__ = ["OVERRIDE_OPTION", "ApproverCheck", "Gate", "Moment", "refusal"]

OVERRIDE_OPTION = "override"
"""The key of a break-glass request in a deployment's ``options``."""


class Moment(StrEnum):
    """When the gate is asked."""

    REQUEST = "request"
    SCHEDULE = "schedule"  # a request or an approval for a moment still ahead
    APPROVAL = "approval"
    RUN_START = "run start"


# Which other deployments hold the environment, per moment ("one at a time").
_HOLDS: Mapping[Moment, tuple[DeploymentState, ...]] = {
    Moment.REQUEST: UNDER_WAY_STATES,
    Moment.SCHEDULE: (),  # what runs now says nothing about the moment: judged again at T-0
    Moment.APPROVAL: ACTIVE_STATES,
    Moment.RUN_START: HOLDING_STATES,
}


# A request still waiting for approval holds back another standard deployment, hotfix or
# migration (``storage.deployments.EXCLUSIVE_KINDS`` closes the race), never an emergency or a
# rollback: those restore service, and the run queue keeps the runs one at a time.
_NOT_HELD_BY_REQUESTS = frozenset({ProcedureKind.EMERGENCY, ProcedureKind.ROLLBACK})


class GroupMembers(Protocol):
    """Slack user groups, read now (``bot.membership.SlackGroups``)."""

    def members(self, group: str, *, max_age: float = 0.0) -> frozenset[str]: ...


class EnvironmentLocks(Protocol):
    """The environment's lock row (``storage.environments``)."""

    def get(self, environment: str) -> Any: ...


class Deployments(Protocol):
    """What the gate reads of deployments (``storage.deployments``)."""

    def get(self, id: int) -> DeploymentRecord | None: ...

    def list_in_states(self, states: Collection[DeploymentState],
                       environment: str | None = None) -> Sequence[DeploymentRecord]: ...


class ApprovalRows(Protocol):
    """The approvals table (``storage.approvals``)."""

    def for_deployment(self, deployment_id: int, plan_hash: str | None = None) -> list[Any]: ...


@dataclass(frozen=True)
class ApproverCheck:
    """May this person decide (approve, grant, reject) this request? ``rule`` names the rule
    that said no; ``hint`` says who may."""

    allowed: bool
    rule: str = ""
    message: str = ""
    hint: str = ""


def refusal(verdict: Verdict, *, extra_hint: str = "") -> PolicyRefusal:
    """The PolicyRefusal of a refused verdict: its reason, its rule, what would allow it."""
    hint = " ".join(part for part in (verdict.what_would_allow, extra_hint) if part)
    return PolicyRefusal(f"{verdict.reason}.", rule=verdict.rule, hint=hint or None)


class Gate:
    """Judges requests and deployments with ``decide``, on facts read at the moment asked."""

    def __init__(self, *, policy: Policy, windows: WindowPolicy, environments: EnvironmentLocks,
                 deployments: Deployments, approvals: ApprovalRows, groups: GroupMembers,
                 clock: Clock) -> None:
        self.policy = policy
        self.windows = windows
        self._windows_of: dict[str, WindowPolicy] = {}
        self._environments = environments
        self._deployments = deployments
        self._approvals = approvals
        self._groups = groups
        self._clock = clock

    def windows_for(self, environment: str) -> WindowPolicy:
        """The calendar of ``environment``: its own windows (``environments.<env>.windows``),
        else the policy's."""
        own = self.policy.windows_for(environment)
        if own is self.policy.windows:
            return self.windows
        if environment not in self._windows_of:
            self._windows_of[environment] = WindowPolicy(own, self.policy.zone)
        return self._windows_of[environment]

    # -- the verdict ------------------------------------------------------------------------

    def judge(self, kind: ProcedureKind, requester: str, environment: str, moment: Moment, *,
              at: datetime | None = None, deployment_id: int | None = None,
              override: Override | None = None) -> Verdict:
        """May ``kind`` by ``requester`` go on in ``environment`` at ``moment``?"""
        kind = ProcedureKind(kind)
        at = at or self._clock.now()
        request = Request(kind, requester, environment, at, override=override,
                          deployment_id=deployment_id)
        members = self.members(self.policy.approval_rule(OVERRIDE_KIND, environment)) \
            if override is not None and override.granted else {}
        return decide(request, self._facts(kind, environment, moment, at, deployment_id,
                                           members))

    def judge_deployment(self, deployment: DeploymentRecord, moment: Moment) -> Verdict:
        """Judge a deployment that exists (approval, run start), with its own override."""
        now = self._clock.now()
        at = now
        if moment is Moment.APPROVAL and deployment.scheduled_at is not None \
                and deployment.scheduled_at > now:
            # Approved ahead of time: judged at its moment, on the window and the freeze (the
            # lock and the runs of then are judged at T-0, its run start).
            at, moment = deployment.scheduled_at, Moment.SCHEDULE
        return self.judge(deployment.kind, deployment.requester, deployment.environment, moment,
                          at=at, deployment_id=deployment.id,
                          override=self.override_of(deployment))

    def ready_to_start(self, deployment: DeploymentRecord) -> Verdict:
        """Run start: the policy verdict now, and the approvals on the current plan complete
        and still valid (not the requester's, each approver still an approver)."""
        verdict = self.judge_deployment(deployment, Moment.RUN_START)
        if not verdict.allowed:
            return verdict
        problem = self._approvals_problem(deployment, verdict.required)
        if problem is None:
            return verdict
        rule, reason, remedy = problem
        return Verdict(False, rule, reason, remedy, False, verdict.approval_kind,
                       verdict.required)

    # -- who may decide ---------------------------------------------------------------------

    def check_approver(self, deployment: DeploymentRecord, user: str, *,
                       rule_kind: str | None = None) -> ApproverCheck:
        """May ``user`` approve ``deployment`` under its kind's rule (or ``rule_kind``'s)?
        Group membership is read from Slack now: no cached answer decides an approval."""
        rule = self.policy.approval_rule(rule_kind or deployment.kind.value,
                                         deployment.environment)
        who = describe_approvers(rule)
        if user == deployment.requester:
            return ApproverCheck(False, "no-self-approval",
                                 f"You requested #{deployment.id}; someone else must approve it.",
                                 f"Approvers: {who}.")
        ok, _ = may_decide(user, deployment.requester, rule, self.members(rule))
        if not ok:
            what = f"{deployment.kind.value} deployments" if rule_kind is None else \
                f"under `approvals.{rule_kind}`"
            return ApproverCheck(False, "approvers", f"You may not approve {what}.",
                                 f"Approvers: {who}.")
        return ApproverCheck(True)

    def may_grant_override(self, deployment: DeploymentRecord, user: str) -> bool:
        """May ``user`` grant (or refuse) this request's break-glass override?"""
        if not deployment.options.get(OVERRIDE_OPTION) or user == deployment.requester:
            return False
        rule = self.policy.approval_rule(OVERRIDE_KIND, deployment.environment)
        return may_decide(user, deployment.requester, rule, self.members(rule))[0]

    # -- reading a deployment's override --------------------------------------------------------

    def override_of(self, deployment: DeploymentRecord) -> Override | None:
        """The deployment's override: None if it asked for none; granted once a grant row
        exists on the current plan (a changed plan voids the grant like any approval)."""
        asked = deployment.options.get(OVERRIDE_OPTION)
        if not asked:
            return None
        reason = str(asked.get("reason") or "")
        requested_by = str(asked.get("requested_by") or deployment.requester)
        grant = self.grant_of(deployment)
        if grant is None:
            return Override(reason, requested_by, deployment_id=deployment.id)
        return Override.grant(reason, requested_by, grant[0], grant[1],
                              deployment_id=deployment.id)

    def grant_of(self, deployment: DeploymentRecord) -> tuple[str, datetime] | None:
        """(granter, when) of the override granted on the current plan, if any."""
        for row in self._rows(deployment):
            if row.decision == "override":
                return row.actor, row.created_at
        return None

    def approvers_of(self, deployment: DeploymentRecord) -> list[str]:
        """Who approved the current plan (the override's granter does not count)."""
        grant = self.grant_of(deployment)
        granter = grant[0] if grant else None
        return [row.actor for row in self._rows(deployment)
                if row.decision == "approve" and row.actor != granter]

    # -- facts --------------------------------------------------------------------------------

    def _facts(self, kind: ProcedureKind, environment: str, moment: Moment, at: datetime,
               exclude: int | None, members: Mapping[str, frozenset[str]]) -> Facts:
        holds = _HOLDS[moment]
        if kind in _NOT_HELD_BY_REQUESTS:
            holds = tuple(s for s in holds if s is not DeploymentState.PENDING_APPROVAL)
        lock = None
        state = self._environments.get(environment) if moment is not Moment.SCHEDULE else None
        if state is not None and state.lock_holder:
            holder = (self._deployments.get(state.lock_deployment_id)
                      if state.lock_deployment_id is not None else None)
            lock = Lock(state.lock_holder, state.lock_reason, state.lock_deployment_id,
                        holder.state.value if holder is not None else None)
        running = None
        for other in self._deployments.list_in_states(holds, environment=environment):
            if other.id is not None and other.id != exclude:
                running = ActiveRun(other.id, other.version, other.state.value)
                break
        windows = self.windows_for(environment)
        return Facts(policy=self.policy, window=windows.verdict(at),
                     freeze=windows.in_freeze(at), lock=lock, running=running,
                     group_members=dict(members),
                     windows=self.policy.windows_for(environment))

    def members(self, rule: ApprovalRule) -> dict[str, frozenset[str]]:
        """The members of the groups ``rule`` names, read from Slack now."""
        return {group: self._groups.members(group) for group in rule.groups}

    def _rows(self, deployment: DeploymentRecord) -> list[Any]:
        assert deployment.id is not None
        return self._approvals.for_deployment(deployment.id, deployment.plan_hash or "")

    def _approvals_problem(self, deployment: DeploymentRecord,
                           required: int) -> tuple[str, str, str] | None:
        rule = self.policy.approval_rule(deployment.kind.value, deployment.environment)
        approvers = self.approvers_of(deployment)
        who = describe_approvers(rule)
        if deployment.requester in approvers:
            return ("no-self-approval",
                    f"#{deployment.id} counts an approval by its requester "
                    f"<@{deployment.requester}>",
                    f"Someone else must approve it: {who}.")
        members = self.members(rule) if rule.groups else {}
        valid = [a for a in approvers
                 if may_decide(a, deployment.requester, rule, members)[0]]
        lapsed = [a for a in approvers if a not in valid]
        if len(valid) >= required:
            return None
        if lapsed:
            names = ", ".join(f"<@{a}>" for a in lapsed)
            return ("approvers",
                    f"the approval of {names} no longer counts: not one of the approvers "
                    f"({who}) any more", f"Ask {who} to approve it again.")
        return ("approvals",
                f"#{deployment.id} has {len(valid)} of the {required} approvals it needs",
                f"{who} must approve it.")
