"""The policy gate as a table: every kind x every rule x each moment answers allow or the rule.

Through the service layer (``bot.flows.gate.Gate``) on a real database, with no Slack: a
request is judged as ``/qlp <kind>`` judges it, an approval as the Approve button does (who
presses, then the gate at the approval moment), a run start as the worker's run queue does
before it claims a queued run. The kinds are the five procedures plus ``override``: a
standard deployment asked for with ``--override`` (break glass), granted by ``approvals.override``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest

from bot.flows.gate import OVERRIDE_OPTION, Gate, Moment
from procedures.clock import FixedClock
from procedures.decision import OVERRIDE_TTL, Override
from procedures.model import DeploymentState as S
from procedures.model import ProcedureKind as K
from procedures.windows import WindowPolicy, WindowRule
from storage.approvals import ApprovalRepository
from storage.db import Database
from storage.deployments import DeploymentRepository
from storage.environments import EnvironmentStateRepository
from tests.fakes.groups import FakeGroups
from tests.fakes.policies import make_policy

ENV = "production"
OPEN = datetime(2026, 12, 1, 11, 0, tzinfo=UTC)  # Tue, inside the preferred window
MOMENTS = (Moment.REQUEST, Moment.APPROVAL, Moment.RUN_START)
KINDS = ("standard", "hotfix", "migration", "emergency", "rollback", "override")
A = "allow"

# When each rule is in force (the clock); every other rule runs at OPEN.
AT = {
    "window": datetime(2026, 12, 3, 11, 0, tzinfo=UTC),  # Thu: not a preferred day
    "avoided-day": datetime(2026, 12, 4, 11, 0, tzinfo=UTC),  # Fri
    "holiday-week": datetime(2026, 11, 24, 11, 0, tzinfo=UTC),  # Tue of Thanksgiving week
    "freeze": datetime(2026, 12, 22, 11, 0, tzinfo=UTC),  # Tue, in the year-end freeze
}
WINDOW_RULE = {"window": WindowRule.OUTSIDE_HOURS, "avoided-day": WindowRule.AVOIDED_DAY,
               "holiday-week": WindowRule.HOLIDAY_WEEK, "freeze": WindowRule.FREEZE}


def _all(answer: str) -> tuple[str, str, str]:
    return (answer, answer, answer)


ONE = "one-at-a-time"
LOCK = "environment-lock"
# rule -> kind -> (request, approval, run start)
TABLE: dict[str, dict[str, tuple[str, str, str]]] = {
    "none": {kind: _all(A) for kind in KINDS},
    # Neither preferred nor avoided: the seed's "allowed" tier (marked; see below).
    "window": {kind: _all(A) for kind in KINDS},
    "avoided-day": {"standard": _all("avoided-day"), "migration": _all("avoided-day"),
                    "hotfix": _all(A), "emergency": _all(A), "rollback": _all(A),
                    "override": _all(A)},
    "holiday-week": {"standard": _all("holiday-week"), "migration": _all("holiday-week"),
                     "hotfix": _all(A), "emergency": _all(A), "rollback": _all(A),
                     "override": _all(A)},
    "freeze": {"standard": _all("freeze"), "migration": _all("freeze"),
               "hotfix": _all("freeze"), "emergency": _all(A), "rollback": _all(A),
               "override": _all(A)},
    "person's lock": {"standard": _all(LOCK), "migration": _all(LOCK), "hotfix": _all(LOCK),
                      "emergency": _all(LOCK), "rollback": _all(LOCK), "override": _all(A)},
    # An emergency waits in line behind a run under way; an override never lifts this rule.
    "active run": {"standard": _all(ONE), "migration": _all(ONE), "hotfix": _all(ONE),
                   "emergency": _all(A), "rollback": _all(ONE), "override": _all(ONE)},
    # Another request waiting for approval holds back a new request, not an approval or a
    # start (and never an emergency or a rollback).
    "pending request": {"standard": (ONE, A, A), "migration": (ONE, A, A),
                        "hotfix": (ONE, A, A), "emergency": _all(A), "rollback": _all(A),
                        "override": (ONE, A, A)},
    "approvers": {kind: (A, "approvers", "approvers") for kind in KINDS},
    "self-approval": {kind: (A, "no-self-approval", "no-self-approval") for kind in KINDS},
    "N-of-M": {kind: (A, A, "approvals") for kind in KINDS},
}


@dataclass
class World:
    """The bot's own state, the gate over it, and who presses."""

    gate: Gate
    deployments: DeploymentRepository
    environments: EnvironmentStateRepository
    approvals: ApprovalRepository
    clock: FixedClock
    groups: FakeGroups


def _world(database: Database, rule: str) -> World:
    approvers = {"users": ["U0LEAD1"], "groups": ["S0RELEASE"], "required": 1}
    rollback = {"users": ["U0LEAD1", "U0LEAD2"], "required": 1}
    if rule == "N-of-M":
        approvers = {**approvers, "required": 2}
        rollback = {**rollback, "required": 2}
    policy = make_policy(approvals={"standard": approvers, "rollback": rollback,
                                    "override": {"users": ["U0HEAD1"], "required": 1}})
    clock = FixedClock(AT.get(rule, OPEN))
    windows = WindowPolicy.from_policy(policy)
    if rule in WINDOW_RULE:  # the clock really is where the rule says
        assert windows.verdict(clock.now()).rule is WINDOW_RULE[rule]
    else:
        assert windows.verdict(clock.now()).open
    deployments = DeploymentRepository(database, clock)
    environments = EnvironmentStateRepository(database, clock)
    approvals = ApprovalRepository(database, clock)
    groups = FakeGroups({"S0RELEASE": {"U0LEAD2"}})
    gate = Gate(policy=policy, windows=windows, environments=environments,
                deployments=deployments, approvals=approvals, groups=groups, clock=clock)
    return World(gate, deployments, environments, approvals, clock, groups)


def _kind(kind: str) -> K:
    return K.STANDARD if kind == "override" else K(kind)


def _set_up(world: World, rule: str) -> None:
    """What else is true of the environment under ``rule``."""
    if rule == "person's lock":
        assert world.environments.acquire_lock(ENV, "U0OPS", "db maintenance", None, None)
    elif rule == "active run":
        other = world.deployments.create(K.STANDARD, "v1.1.0", ENV, "U0OTHER", state=S.RUNNING)
        assert world.environments.acquire_lock(ENV, "U0OTHER", f"deployment #{other.id}",
                                               other.id, "w1")
    elif rule == "pending request":
        world.deployments.create(K.STANDARD, "v1.1.0", ENV, "U0OTHER",
                                 state=S.PENDING_APPROVAL)


def _request(world: World, kind: str) -> str:
    """As ``/qlp <kind>`` (``--override "why"`` for the override kind) is judged."""
    override = Override("checkout is down", "U0DEV") if kind == "override" else None
    verdict = world.gate.judge(_kind(kind), "U0DEV", ENV, Moment.REQUEST, override=override)
    if verdict.allowed:
        return A
    if kind == "override" and verdict.rule == "override-pending":
        return A  # the break-glass request is written; it waits for its grant
    return verdict.rule


def _deployment(world: World, kind: str, state: S) -> int:
    options = ({OVERRIDE_OPTION: {"reason": "checkout is down", "requested_by": "U0DEV"}}
               if kind == "override" else {})
    record = world.deployments.create(_kind(kind), "v1.2.3", ENV, "U0DEV", state=state,
                                      options=options, plan_hash="plan-1")
    assert record.id is not None
    return record.id


def _presser(rule: str) -> str:
    return {"approvers": "U0STRANGER", "self-approval": "U0DEV"}.get(rule, "U0LEAD1")


def _approval(world: World, kind: str, rule: str) -> str:
    """As the Approve button decides a press (``bot.interactions`` / ``bot.override``)."""
    deployment = world.deployments.get(_deployment(world, kind, S.PENDING_APPROVAL))
    assert deployment is not None
    gate, user = world.gate, _presser(rule)
    if kind == "override":
        if user == deployment.requester:
            return "no-self-approval"
        grantor = "U0HEAD1" if rule not in ("approvers", "self-approval") else user
        if gate.may_grant_override(deployment, grantor):
            asked = gate.override_of(deployment)
            assert asked is not None
            grant = Override.grant(asked.reason, asked.requested_by, grantor,
                                   world.clock.now(), deployment_id=deployment.id)
            verdict = gate.judge(deployment.kind, deployment.requester, ENV, Moment.APPROVAL,
                                 deployment_id=deployment.id, override=grant)
            return A if verdict.allowed else verdict.rule
    check = gate.check_approver(deployment, user)
    if not check.allowed:
        return check.rule
    verdict = gate.judge_deployment(deployment, Moment.APPROVAL)
    if verdict.allowed or verdict.rule == "override-pending":
        return A  # recorded (a break-glass request then waits for its grant)
    return verdict.rule


def _run_start(world: World, kind: str, rule: str) -> str:
    """As the run queue asks before it claims a queued run."""
    deployment_id = _deployment(world, kind, S.QUEUED)
    if kind == "override":
        world.approvals.record(deployment_id, "U0HEAD1", "override", "plan-1")
    world.approvals.record(deployment_id, _presser(rule), "approve", "plan-1")
    deployment = world.deployments.get(deployment_id)
    assert deployment is not None
    verdict = world.gate.ready_to_start(deployment)
    return A if verdict.allowed else verdict.rule


ASK = {Moment.REQUEST: lambda w, kind, rule: _request(w, kind),
       Moment.APPROVAL: _approval, Moment.RUN_START: _run_start}

CASES = [(rule, kind, moment) for rule in TABLE for kind in KINDS for moment in MOMENTS]


def test_the_table_covers_every_kind_rule_and_moment() -> None:
    assert len(CASES) == 11 * 6 * 3
    assert all(set(row) == set(KINDS) for row in TABLE.values())


@pytest.mark.parametrize(("rule", "kind", "moment"), CASES,
                         ids=[f"{r}-{k}-{m.value}".replace(" ", "_").replace("'", "")
                              for r, k, m in CASES])
def test_gate(sqlite_database: Database, rule: str, kind: str, moment: Moment) -> None:
    world = _world(sqlite_database, rule)
    _set_up(world, rule)
    expected = TABLE[rule][kind][MOMENTS.index(moment)]
    assert ASK[moment](world, kind, rule) == expected


# -- beyond the table: what changes between two moments --------------------------------------


@pytest.fixture
def world(database: Database) -> Iterator[World]:
    yield _world(database, "none")


def test_a_person_removed_from_the_group_cannot_approve_at_the_next_press(world: World) -> None:
    deployment = world.deployments.get(_deployment(world, "standard", S.PENDING_APPROVAL))
    assert deployment is not None
    assert world.gate.check_approver(deployment, "U0LEAD2").allowed
    world.groups.set("S0RELEASE", set())  # taken out of the release group in Slack
    check = world.gate.check_approver(deployment, "U0LEAD2")
    assert (check.allowed, check.rule) == (False, "approvers")
    assert world.groups.reads == 2  # read at each press, never from a cache


def test_an_approval_that_lapsed_before_the_start_does_not_start_the_run(world: World) -> None:
    deployment_id = _deployment(world, "standard", S.QUEUED)
    world.approvals.record(deployment_id, "U0LEAD2", "approve", "plan-1")
    deployment = world.deployments.get(deployment_id)
    assert deployment is not None
    assert world.gate.ready_to_start(deployment).allowed
    world.groups.set("S0RELEASE", set())
    verdict = world.gate.ready_to_start(deployment)
    assert (verdict.allowed, verdict.rule) == (False, "approvers")
    assert "<@U0LEAD2>" in verdict.reason and "no longer counts" in verdict.reason


def test_an_override_that_expired_while_queued_does_not_start(database: Database) -> None:
    world = _world(database, "avoided-day")
    deployment_id = _deployment(world, "override", S.QUEUED)
    world.approvals.record(deployment_id, "U0HEAD1", "override", "plan-1")
    world.approvals.record(deployment_id, "U0LEAD1", "approve", "plan-1")
    deployment = world.deployments.get(deployment_id)
    assert deployment is not None
    verdict = world.gate.ready_to_start(deployment)
    assert verdict.allowed and verdict.overridden == ("avoided-day",)
    world.clock.advance(OVERRIDE_TTL + timedelta(seconds=1))
    verdict = world.gate.ready_to_start(deployment)
    assert (verdict.allowed, verdict.rule) == (False, "override-expired")


def test_a_scheduled_approval_is_judged_at_its_moment_not_on_what_runs_now(
        world: World) -> None:
    world.deployments.create(K.STANDARD, "v1.1.0", ENV, "U0OTHER", state=S.RUNNING)
    later = world.deployments.create(K.STANDARD, "v1.2.3", ENV, "U0DEV",
                                     scheduled_at=OPEN + timedelta(days=1), plan_hash="p")
    assert world.gate.judge_deployment(later, Moment.APPROVAL).allowed  # Wed 11:00: open
    friday = world.deployments.create(K.STANDARD, "v1.2.4", ENV, "U0DEV",
                                      scheduled_at=OPEN + timedelta(days=3), plan_hash="p")
    verdict = world.gate.judge_deployment(friday, Moment.APPROVAL)
    assert (verdict.allowed, verdict.rule) == (False, "avoided-day")


def test_an_emergency_behind_a_run_is_told_it_waits(world: World) -> None:
    _set_up(world, "active run")
    verdict = world.gate.judge(K.EMERGENCY, "U0DEV", ENV, Moment.REQUEST)
    assert verdict.allowed and verdict.waits_for == 1


@pytest.mark.parametrize(("mode", "answer", "required"), [
    ("allow", A, 1), ("extra-approval", A, 2), ("refuse", "outside-hours", 1)])
def test_outside_the_preferred_window_follows_the_policy(
        sqlite_database: Database, mode: str, answer: str, required: int) -> None:
    world = _world(sqlite_database, "window")
    world.gate.policy = make_policy(windows={**world.gate.policy.model_dump()["windows"],
                                             "outside_preferred": mode})
    verdict = world.gate.judge(K.STANDARD, "U0DEV", ENV, Moment.REQUEST)
    assert (A if verdict.allowed else verdict.rule) == answer
    assert verdict.required == required
    assert verdict.outside_preferred is verdict.allowed
    hotfix = world.gate.judge(K.HOTFIX, "U0DEV", ENV, Moment.REQUEST)
    assert hotfix.allowed and not hotfix.outside_preferred  # a hotfix ignores the window
