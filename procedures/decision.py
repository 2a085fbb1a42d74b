"""The one policy decision: may this request run now, by which rule, and what would allow it?

``decide(request, facts)`` is pure: everything it needs (the window verdict, the freeze, the
lock, the deployment already under way, group membership) is handed in as :class:`Facts`, so a
table of cases tests it without a database, Slack or a clock. Every refusal names its rule
and says what would allow the request.

The rules, per kind (checked in this order; the first non-overridable refusal wins, and all
overridable ones are listed together so an override approver sees everything they lift):

=========  ==================  =============  ==========  ====================
kind       one at a time [1]   person's lock  freeze      preferred window [2]
=========  ==================  =============  ==========  ====================
standard   refuses             refuses        refuses     tiers [2]
migration  refuses             refuses        refuses     tiers [2]
hotfix     refuses             refuses        refuses     ignored
rollback   refuses             refuses        ignored     ignored
emergency  waits in line [3]    refuses        ignored     ignored
=========  ==================  =============  ==========  ====================

[1] Another deployment of the environment that is under way (or, for a standard deployment, a
    hotfix or a migration, waiting for approval: the gate, ``bot.flows.gate``, decides which
    deployments it hands in as ``running``), or
    a lock held by another deployment: one deployment at a time, always. A lock kept after a
    run that needs attention (an undo failed) refuses under its own rule, ``needs-attention``:
    someone must check the environment by hand and unlock it. No override lifts either.
[2] Preferred days and hours, avoided days and holiday weeks (``procedures.windows``), in
    tiers as the seed means them: *preferred* goes; *allowed* (neither preferred nor avoided,
    e.g. Thursday 11:00) goes marked "outside the preferred window", or needs one more
    approval, or is refused, as ``windows.outside_preferred`` says (default: goes); *avoided*
    (an avoided day, a holiday week) is refused unless broken glass; *freeze* lets only an
    emergency or a rollback through.
[3] Behind a deployment queued, running or rolling back; a lock kept after a run that needs
    attention refuses an emergency too.

Why these choices:

- A person's lock (``/qlp lock``) stops every kind, an emergency too, and its holder's own
  requests as well. A lock is someone's explicit "hands off": the engine cannot take a lock a
  person holds (a run fails closed on it), so a verdict that let a request past it would only
  fail later. The holder unlocks (one command), or a break-glass override (a second person)
  lifts it for that one deployment: its run *passes* the lock (``procedures.engine``) and
  never takes it over or frees it, so the lock is there, with its holder and reason, when the
  run ends.
- An emergency asked for or approved while another deployment is queued, running or rolling
  back is not refused: the verdict is allowed with ``waits_for`` naming that deployment, and it
  starts right after it (the worker's run queue, ``bot.runner``). A request still waiting for
  approval does not hold an emergency back.
- A rollback restores a known-good version, which is what one wants in a freeze or at night,
  so only a lock and a run under way stop it.
- A hotfix is urgent by definition: it ignores the preferred hours, avoided days and holiday
  weeks, but a freeze and a lock still hold unless overridden.

A **break-glass override** (:class:`Override`) lifts the window, freeze and lock refusals, never
"one at a time". It is valid only when an approver from ``approvals.override`` who is not the
requester granted it, it has not expired (:data:`OVERRIDE_TTL` after the grant), and it was
granted for this deployment. Then the verdict is allowed, ``needs_override`` stays True and
``overridden`` names what it lifted. The override approval comes in addition to the kind's
normal approvals (``approval_kind`` / ``required``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, time, timedelta, tzinfo

from procedures.durations import format_duration
from procedures.model import ProcedureKind
from procedures.mrkdwn import escape
from procedures.policy import ApprovalRule, Freeze, Policy, Windows
from procedures.windows import WindowRule, WindowVerdict

__all__ = [
    "ENVIRONMENT_LOCK",
    "NEEDS_ATTENTION",
    "ONE_AT_A_TIME",
    "OVERRIDE_FLAG",
    "OVERRIDE_KIND",
    "OVERRIDE_TTL",
    "ActiveRun",
    "Facts",
    "Lock",
    "Override",
    "Request",
    "Verdict",
    "decide",
    "describe_approvers",
    "may_decide",
]

OVERRIDE_TTL = timedelta(hours=2)
"""How long a granted override stays valid (from the grant)."""

OVERRIDE_KIND = "override"
"""The ``approvals`` key naming who may grant a break-glass override."""

ONE_AT_A_TIME = "one-at-a-time"
ENVIRONMENT_LOCK = "environment-lock"
NEEDS_ATTENTION = "needs-attention"
OVERRIDE_FLAG = '`--override "why"`'


@dataclass(frozen=True)
class Override:
    """A break-glass override asked for one deployment; granted once ``approver`` is set.

    ``deployment_id`` scopes it: an override granted for one deployment never lifts a refusal
    of another. ``expires_at`` is normally ``granted_at + OVERRIDE_TTL``.
    """

    reason: str
    requested_by: str
    approver: str | None = None
    granted_at: datetime | None = None
    expires_at: datetime | None = None
    deployment_id: int | None = None

    @property
    def granted(self) -> bool:
        return self.approver is not None

    @classmethod
    def grant(cls, reason: str, requested_by: str, approver: str, at: datetime, *,
              deployment_id: int | None = None, ttl: timedelta = OVERRIDE_TTL) -> Override:
        """An override granted by ``approver`` at ``at``, valid for ``ttl``."""
        return cls(reason, requested_by, approver, at, at + ttl, deployment_id)


@dataclass(frozen=True)
class Lock:
    """The environment's lock: a person's (``deployment_id`` None) or a deployment's."""

    holder: str
    reason: str | None = None
    deployment_id: int | None = None
    holder_state: str | None = None  # the holding deployment's state, when a deployment holds it

    @property
    def manual(self) -> bool:
        return self.deployment_id is None


@dataclass(frozen=True)
class ActiveRun:
    """Another deployment of the environment that is under way or waiting for approval."""

    deployment_id: int
    version: str | None = None
    state: str = "running"


@dataclass(frozen=True)
class Request:
    """What is asked: a kind of procedure, by whom, where, when, with what override.

    ``deployment_id`` is the deployment being decided once it exists (approval time, run
    start): it is never "another run" of itself, and an override is checked against it.
    """

    kind: ProcedureKind
    requester: str
    environment: str
    at: datetime
    override: Override | None = None
    deployment_id: int | None = None


@dataclass(frozen=True)
class Facts:
    """What the request is judged on, gathered by the caller (no I/O in here).

    ``window`` is ``WindowPolicy.verdict(request.at)``; ``freeze`` is
    ``WindowPolicy.in_freeze(request.at)``; ``group_members`` maps the user groups of
    ``approvals.override`` (at least) to their members.
    """

    policy: Policy
    window: WindowVerdict
    freeze: Freeze | None = None
    lock: Lock | None = None
    running: ActiveRun | None = None
    group_members: Mapping[str, frozenset[str]] = field(default_factory=dict)
    windows: Windows | None = None  # the environment's own windows, if it has them


@dataclass(frozen=True)
class Verdict:
    """The decision. ``rule`` names the rule that decided; on a refusal ``what_would_allow``
    says how to get a yes. ``needs_override``: only a break-glass override (or a change of the
    facts) gets this request through, or, when allowed, an override is what let it through
    (``overridden`` lists the rules it lifted). ``approval_kind`` / ``required`` are the normal
    approvals (from ``policy.approval_rule``); a needed override is one approval more, from
    ``approvals.override``."""

    allowed: bool
    rule: str
    reason: str
    what_would_allow: str
    needs_override: bool
    approval_kind: str
    required: int
    overridden: tuple[str, ...] = ()
    waits_for: int | None = None
    outside_preferred: bool = False
    """Allowed at a time that is neither preferred nor avoided: the card and the approvers see
    "outside the preferred window" (``windows.outside_preferred``)."""
    overrun: str = ""
    """Allowed inside the preferred window but closer to its close than the planned duration
    (``windows.planned_duration``): says by how much it may overrun."""
    """An allowed emergency that waits in line: it starts right after this deployment (under
    way on the environment now) has ended."""


@dataclass(frozen=True)
class _Refusal:
    rule: str
    reason: str
    remedy: str


def describe_approvers(rule: ApprovalRule) -> str:
    """``<@U1>, <@U2> or a member of <!subteam^S1>`` (Slack mrkdwn, as replies show it)."""
    names = [f"<@{u}>" for u in rule.users] + [f"a member of <!subteam^{g}>" for g in rule.groups]
    if not names:
        return "nobody"
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]


def may_decide(user: str, requester: str, rule: ApprovalRule,
               group_members: Mapping[str, frozenset[str]]) -> tuple[bool, str]:
    """May ``user`` approve (or grant) under ``rule`` a request by ``requester``? And why.

    Never the requester; otherwise a user named in the rule or a member of one of its groups
    (as listed in ``group_members``; a group missing there counts as empty).
    """
    if user == requester:
        return False, "the requester cannot approve their own request; someone else must"
    if user in rule.users:
        return True, f"<@{user}> is named in the rule"
    for group in rule.groups:
        if user in group_members.get(group, frozenset()):
            return True, f"<@{user}> is a member of <!subteam^{group}>"
    return False, f"<@{user}> is not one of the approvers ({describe_approvers(rule)})"


def decide(request: Request, facts: Facts) -> Verdict:
    """Apply the rules in the module docstring to ``request`` given ``facts``."""
    kind = ProcedureKind(request.kind)
    policy = facts.policy
    approval_kind = kind.value if kind.value in policy.approvals else "standard"
    required = policy.approval_rule(kind.value, request.environment).required
    outside = _outside_preferred(kind, facts)
    if outside and _windows(facts).outside_preferred == "extra-approval":
        required += 1

    waits_for = _emergency_waits_for(kind, request, facts)
    if kind is ProcedureKind.EMERGENCY and facts.running is not None \
            and facts.running.deployment_id != request.deployment_id:
        # Behind a run under way it waits in line; a request pending approval never holds it.
        facts = replace(facts, running=None)
    if waits_for is not None and facts.lock is not None and not facts.lock.manual \
            and facts.lock.holder_state != "needs_attention":
        facts = replace(facts, lock=None)  # the run ahead's own lock: it waits for that run

    def verdict(allowed: bool, rule: str, reason: str, remedy: str = "", *,
                needs_override: bool = False, overridden: tuple[str, ...] = ()) -> Verdict:
        return Verdict(allowed, rule, reason, remedy, needs_override, approval_kind, required,
                       overridden, waits_for if allowed else None, outside and allowed,
                       _overrun(kind, request, facts) if allowed else "")

    busy = _one_at_a_time(request, facts)
    if busy is not None:
        remedy = busy.remedy
        if request.override is not None:
            remedy += " An override never lifts this rule."
        return verdict(False, busy.rule, busy.reason, remedy)

    refusals = _overridable(kind, request, facts)
    if not refusals:
        rule, reason = _allowed_by(kind, facts)
        if request.override is not None:
            reason += "; no override is needed"
        return verdict(True, rule, reason)

    first = refusals[0]
    what = _kind_label(kind)
    lifted = tuple(r.rule for r in refusals)
    problems = "; and ".join(r.reason for r in refusals)
    override_rule = policy.approval_rule(OVERRIDE_KIND, request.environment)
    grantors = describe_approvers(override_rule)
    override = request.override
    if override is None:
        remedies = " ".join(dict.fromkeys(r.remedy for r in refusals if r.remedy))
        remedy = (f"{remedies} Or break glass: ask again with {OVERRIDE_FLAG}; {grantors} "
                  "(not you) must grant it, for this deployment only, valid "
                  f"{format_duration(OVERRIDE_TTL)}.").strip()
        return verdict(False, first.rule, f"{what} is not allowed now: {problems}", remedy,
                       needs_override=True)

    problem = _override_problem(request, override, override_rule, facts)
    if problem is not None:
        rule, text, remedy = problem
        return verdict(False, rule, f"{what} is not allowed now: {problems}; {text}", remedy,
                       needs_override=True)
    assert override.approver is not None and override.expires_at is not None
    until = _clock(override.expires_at, facts)
    return verdict(True, first.rule,
                   f"{what} is allowed by the break-glass override of <@{override.approver}> "
                   f"(valid until {until}), which lifts: {problems}",
                   needs_override=True, overridden=lifted)


# -- the rules ------------------------------------------------------------------------------------


def _emergency_waits_for(kind: ProcedureKind, request: Request, facts: Facts) -> int | None:
    """An emergency is not refused by a deployment already queued, running or rolling back:
    it waits in line right after it (the worker's run queue) and the verdict says so. A
    request still waiting for approval never holds an emergency back."""
    if kind is not ProcedureKind.EMERGENCY:
        return None
    running = facts.running
    if running is not None and running.deployment_id != request.deployment_id \
            and running.state != "pending_approval":
        return running.deployment_id
    lock = facts.lock  # a run's lock (not a person's, not one kept after a failed undo)
    if lock is not None and not lock.manual and lock.deployment_id is not None \
            and lock.deployment_id != request.deployment_id \
            and lock.holder_state != "needs_attention":
        return lock.deployment_id
    return None


def _one_at_a_time(request: Request, facts: Facts) -> _Refusal | None:
    env = request.environment
    running = facts.running
    if running is not None and running.deployment_id != request.deployment_id:
        version = f"{running.version}, " if running.version else ""
        state = running.state.replace("_", " ")
        return _Refusal(
            ONE_AT_A_TIME,
            f"Deployment #{running.deployment_id} ({version}{state}) is already under way "
            f"for {env}; one deployment at a time",
            f"Wait for it, or `/qlp cancel {running.deployment_id}`.")
    lock = facts.lock
    if lock is not None and not lock.manual and lock.deployment_id != request.deployment_id \
            and lock.holder_state == "needs_attention":
        return _Refusal(
            NEEDS_ATTENTION,
            f"{env} stays locked because deployment #{lock.deployment_id} needs attention "
            f"({escape(lock.reason or 'an undo failed')})",
            f"Someone must check {env} by hand, then `/qlp unlock {env}`.")
    if lock is not None and not lock.manual and lock.deployment_id != request.deployment_id:
        why = (f" ({escape(lock.reason)})" if lock.reason
               and lock.reason != f"deployment #{lock.deployment_id}" else "")
        return _Refusal(
            ONE_AT_A_TIME,
            f"Deployment #{lock.deployment_id} holds the lock on {env}{why}; one deployment "
            "at a time",
            f"Wait for #{lock.deployment_id} to finish, or `/qlp cancel {lock.deployment_id}`; "
            f"a lock kept after a failed undo is lifted with `/qlp unlock {env}` by an "
            "approver once the environment is checked.")
    return None


def _overridable(kind: ProcedureKind, request: Request, facts: Facts) -> list[_Refusal]:
    """The window, freeze and lock refusals that apply to ``kind``, in reporting order."""
    refusals: list[_Refusal] = []
    window = facts.window
    next_slot = (f"The next preferred slot opens {_clock(window.next_open, facts)} "
                 f"({_relative(window.next_open, request.at)})." if window.next_open
                 else "No preferred slot opens in the next year.")
    freeze = facts.freeze
    if freeze is None and not window.open and window.rule is WindowRule.FREEZE:
        freeze = window.freeze
    frozen_kinds = (ProcedureKind.STANDARD, ProcedureKind.MIGRATION, ProcedureKind.HOTFIX)
    if kind in frozen_kinds and freeze is not None:
        reason = escape(window.reason if window.rule is WindowRule.FREEZE
                        else f"deployment freeze {freeze.start.isoformat()} to "
                             f"{freeze.end.isoformat()}: {freeze.reason}")
        after = datetime.combine(freeze.end + timedelta(days=1), time(0, 0),
                                 tzinfo=_policy_zone(facts))
        refusals.append(_Refusal(
            WindowRule.FREEZE.value, reason,
            f"The freeze ends after {freeze.end.isoformat()}: {_kind_plural(kind)} are possible "
            f"again from {_clock(after, facts)}. Only an emergency (`/qlp emergency "
            "&lt;category&gt; &lt;version&gt; --reason \"...\"`) or a rollback runs in a "
            "freeze."))
    if kind in (ProcedureKind.STANDARD, ProcedureKind.MIGRATION) and not window.open \
            and window.rule is not WindowRule.FREEZE and not _outside_preferred(kind, facts):
        refusals.append(_Refusal(window.rule.value, escape(window.reason), next_slot))
    lock = facts.lock
    if lock is not None and lock.manual:
        refusals.append(_Refusal(
            ENVIRONMENT_LOCK,
            f"{request.environment} is locked by <@{lock.holder}>: "
            f"{escape(lock.reason or 'no reason')}",
            f"Ask <@{lock.holder}> to `/qlp unlock {request.environment}` when it is safe."))
    return refusals


def _overrun(kind: ProcedureKind, request: Request, facts: Facts) -> str:
    """"It may overrun the window" when a standard deployment or a migration starts closer to
    the preferred window's close than the policy's planned duration (seed 3.1: 30-60 min)."""
    window = facts.window
    if kind not in (ProcedureKind.STANDARD, ProcedureKind.MIGRATION) or not window.open \
            or window.closes_at is None:
        return ""
    planned = _windows(facts).planned_duration
    left = window.closes_at - request.at
    if left >= planned:
        return ""
    return (f"it may overrun the window: it closes {_clock(window.closes_at, facts)}, "
            f"{format_duration(left)} from now, and a deployment takes about "
            f"{format_duration(planned)}")


def _windows(facts: Facts) -> Windows:
    """The windows the request is judged by: its environment's own, else the policy's."""
    return facts.windows if facts.windows is not None else facts.policy.windows


def _outside_preferred(kind: ProcedureKind, facts: Facts) -> bool:
    """The "allowed" tier: a standard deployment or a migration at a time that is neither
    preferred nor avoided (no avoided day, holiday week or freeze), which the policy allows."""
    return kind in (ProcedureKind.STANDARD, ProcedureKind.MIGRATION) \
        and facts.window.rule is WindowRule.OUTSIDE_HOURS \
        and _windows(facts).outside_preferred != "refuse"


def _allowed_by(kind: ProcedureKind, facts: Facts) -> tuple[str, str]:
    window = facts.window
    if _outside_preferred(kind, facts):
        extra = (", with one more approval than usual"
                 if _windows(facts).outside_preferred == "extra-approval" else "")
        return ("outside-preferred",
                f"allowed outside the preferred window{extra} ({escape(window.reason)})")
    if kind is ProcedureKind.EMERGENCY:
        return "emergency", "an emergency may run at any time, in a freeze too"
    if kind is ProcedureKind.ROLLBACK:
        return "rollback", "a rollback may run at any time, in a freeze too"
    if kind is ProcedureKind.HOTFIX and not window.open:
        return "hotfix", ("a hotfix may run outside the preferred window "
                          f"({escape(window.reason)})")
    return window.rule.value, escape(window.reason)


def _override_problem(request: Request, override: Override, rule: ApprovalRule,
                      facts: Facts) -> tuple[str, str, str] | None:
    """Why ``override`` does not (yet) lift the refusal: (rule, text, remedy), or None."""
    grantors = describe_approvers(rule)
    if not override.granted:
        return ("override-pending",
                f"the break-glass override ({escape(override.reason)}) is waiting for "
                f"{grantors}",
                f"{grantors} (not the requester) grants the override by approving it.")
    approver = override.approver or ""
    if approver in (request.requester, override.requested_by):
        return ("override-self-approval",
                f"<@{approver}> asked for this override and cannot grant it",
                f"Someone else must grant it: {grantors}.")
    ok, why = may_decide(approver, request.requester, rule, facts.group_members)
    if not ok:
        return ("override-approver",
                f"<@{approver}> may not grant overrides ({why})",
                f"An override is granted by {grantors}.")
    if override.deployment_id is not None and request.deployment_id is not None \
            and override.deployment_id != request.deployment_id:
        return ("override-scope",
                f"the override was granted for deployment #{override.deployment_id}, not "
                f"#{request.deployment_id}; an override is good for one deployment",
                f"Ask for an override of this deployment ({OVERRIDE_FLAG}).")
    if override.expires_at is None or request.at >= override.expires_at:
        when = _clock(override.expires_at, facts) if override.expires_at else "at once"
        return ("override-expired",
                f"the break-glass override granted by <@{approver}> expired {when}",
                f"Ask again with {OVERRIDE_FLAG}; an override is valid "
                f"{format_duration(OVERRIDE_TTL)} from its grant.")
    return None


# -- text helpers ---------------------------------------------------------------------------------


def _kind_label(kind: ProcedureKind) -> str:
    return {
        ProcedureKind.STANDARD: "A standard deployment",
        ProcedureKind.HOTFIX: "A hotfix",
        ProcedureKind.EMERGENCY: "An emergency deployment",
        ProcedureKind.ROLLBACK: "A rollback",
        ProcedureKind.MIGRATION: "A migration",
    }[kind]


def _kind_plural(kind: ProcedureKind) -> str:
    return {ProcedureKind.HOTFIX: "hotfixes", ProcedureKind.MIGRATION: "migrations"}.get(
        kind, "deployments")


def _policy_zone(facts: Facts) -> tzinfo:
    """The policy's time zone (freeze dates are whole days there)."""
    return facts.policy.zone


def _clock(moment: datetime, facts: Facts) -> str:
    """``Tue 2026-12-08 10:00 UTC`` in the policy's zone (as the bot's replies write it)."""
    local = moment.astimezone(facts.policy.zone)
    return f"{local:%a %Y-%m-%d %H:%M} {local.tzname()}"


def _relative(moment: datetime, now: datetime) -> str:
    delta = moment - now
    if abs(delta.total_seconds()) < 60:
        return "now"
    if delta.total_seconds() > 0:
        return f"in {format_duration(delta)}"
    return f"{format_duration(-delta)} ago"
