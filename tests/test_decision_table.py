"""The policy decision as a table: one row per situation, with the expected verdict and a
fragment of its reason. Real policies (``parse_policy``) and the real ``WindowPolicy``; no
mocks. Times are given in UTC and judged in the policy's zone (UTC or Europe/Berlin)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest

from procedures.decision import (
    OVERRIDE_TTL,
    ActiveRun,
    Facts,
    Lock,
    Override,
    Request,
    Verdict,
    decide,
    may_decide,
)
from procedures.model import ProcedureKind
from procedures.policy import ApprovalRule, Policy
from procedures.windows import WindowPolicy
from tests.fakes.policies import BASE, make_policy

K = ProcedureKind

_BERLIN_WINDOWS = {
    "preferred": [{"days": ["tue", "wed"], "start": "10:00", "end": "14:00"}],
    "avoid_days": ["mon", "fri"],
    "holidays": {"country": "DE"},
    "freezes": [{"start": "2026-12-21", "end": "2027-01-04", "reason": "year-end freeze"}],
}
_APPROVALS = BASE["approvals"]

_STRICT = {**BASE["windows"], "outside_preferred": "refuse"}

POLICIES: dict[str, Policy] = {
    # Strict windows: outside the preferred hours is refused (``outside_preferred: refuse``),
    # so the table checks the calendar itself; the seed's tiers have their own policies.
    "utc": make_policy(windows=_STRICT),
    "berlin": make_policy(timezone="Europe/Berlin",
                          windows={**_BERLIN_WINDOWS, "outside_preferred": "refuse"}),
    "seed": make_policy(),  # outside_preferred: allow (the default)
    "extra": make_policy(windows={**BASE["windows"], "outside_preferred": "extra-approval"}),
    # the override rule names a group; the table hands in its members
    "groups": make_policy(windows=_STRICT, approvals={**_APPROVALS,
                                     "override": {"groups": ["S0BREAK"], "required": 1}}),
    # no override rule: approvals.standard decides overrides too
    "no-override-rule": make_policy(windows=_STRICT,
                                    approvals={"standard": _APPROVALS["standard"]}),
    "hotfix-two": make_policy(windows=_STRICT, approvals={**_APPROVALS,
                                         "hotfix": {"users": ["U0LEAD1", "U0LEAD3"],
                                                    "required": 2}}),
}
MEMBERS = {"S0RELEASE": frozenset({"U0LEAD2"}), "S0BREAK": frozenset({"U0HEAD2"})}


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


TUE_OPEN = utc("2026-12-01 11:00")  # Tuesday, inside Tue/Wed 10-14 UTC
FRIDAY = utc("2026-12-04 11:00")  # avoided day
NIGHT = utc("2026-12-01 22:00")  # Tuesday, outside the hours
THANKSGIVING_WEEK = utc("2026-11-24 11:00")  # Tuesday of the week of Thu 26 Nov (US)
FREEZE = utc("2026-12-22 11:00")  # Tuesday inside the year-end freeze
DST_NIGHT = utc("2026-10-25 00:30")  # 02:30 CEST; the clocks go back at 01:00Z

MANUAL_LOCK = Lock("U0OPS", "db maintenance")
RUN_LOCK = Lock("U0DEV", "deployment #7", deployment_id=7, holder_state="running")
RUNNING = ActiveRun(5, "v1.2.2", "running")


def granted(approver: str = "U0HEAD1", at: datetime = FRIDAY - timedelta(minutes=30), *,
            requested_by: str = "U0DEV", deployment_id: int | None = None) -> Override:
    return Override.grant("checkout is down", requested_by, approver, at,
                          deployment_id=deployment_id)


PENDING = Override("checkout is down", "U0DEV")


@dataclass(frozen=True)
class Case:
    """One row: the situation and the expected verdict."""

    id: str
    kind: ProcedureKind
    at: datetime
    allowed: bool
    rule: str
    fragment: str
    policy: str = "utc"
    requester: str = "U0DEV"
    lock: Lock | None = None
    running: ActiveRun | None = None
    override: Override | None = None
    deployment_id: int | None = None
    needs_override: bool = False
    remedy: str = ""  # a fragment of what_would_allow
    approval: tuple[str, int] = ("standard", 1)
    overridden: tuple[str, ...] = field(default_factory=tuple)
    waits_for: int | None = None
    outside_preferred: bool = False
    overrun: str = ""


THURSDAY = utc("2026-12-03 11:00")  # neither preferred nor avoided

CASES = [
    # -- the seed's tiers: preferred, allowed (marked), avoided, freeze ---------------------
    Case("seed-thursday-allowed", K.STANDARD, THURSDAY, True, "outside-preferred",
         "allowed outside the preferred window", policy="seed", outside_preferred=True),
    Case("seed-tuesday-night-allowed", K.STANDARD, NIGHT, True, "outside-preferred",
         "outside the preferred hours", policy="seed", outside_preferred=True),
    Case("seed-migration-thursday", K.MIGRATION, THURSDAY, True, "outside-preferred",
         "allowed outside the preferred window", policy="seed", outside_preferred=True),
    Case("seed-preferred-unmarked", K.STANDARD, TUE_OPEN, True, "preferred",
         "inside the preferred hours", policy="seed"),
    Case("seed-friday-avoided", K.STANDARD, FRIDAY, False, "avoided-day",
         "Friday is an avoided day", policy="seed", needs_override=True),
    Case("seed-holiday-week", K.STANDARD, THANKSGIVING_WEEK, False, "holiday-week",
         "holds a public holiday", policy="seed", needs_override=True),
    Case("seed-freeze", K.STANDARD, FREEZE, False, "freeze", "year-end freeze",
         policy="seed", needs_override=True),
    Case("extra-approval-thursday", K.STANDARD, THURSDAY, True, "outside-preferred",
         "with one more approval than usual", policy="extra", approval=("standard", 2),
         outside_preferred=True),
    Case("extra-approval-preferred", K.STANDARD, TUE_OPEN, True, "preferred",
         "inside the preferred hours", policy="extra"),
    Case("close-to-the-close", K.STANDARD, utc("2026-12-01 13:40"), True, "preferred",
         "inside the preferred hours", policy="seed",
         overrun="it may overrun the window: it closes Tue 2026-12-01 14:00 UTC, 20m from "
                 "now, and a deployment takes about 45m"),
    Case("hotfix-close-to-the-close", K.HOTFIX, utc("2026-12-01 13:40"), True, "preferred",
         "inside the preferred hours", policy="seed"),
    # -- the window, UTC policy ------------------------------------------------------------
    Case("utc-inside", K.STANDARD, TUE_OPEN, True, "preferred", "inside the preferred hours"),
    Case("utc-start-inclusive", K.STANDARD, utc("2026-12-01 10:00"), True, "preferred",
         "inside"),
    Case("utc-before-hours", K.STANDARD, utc("2026-12-01 09:59"), False, "outside-hours",
         "outside the preferred hours (Tue, Wed 10:00-14:00 UTC)", needs_override=True,
         remedy="opens Tue 2026-12-01 10:00 UTC (in 1m)"),
    Case("utc-end-exclusive", K.STANDARD, utc("2026-12-01 14:00"), False, "outside-hours",
         "outside the preferred hours", needs_override=True,
         remedy="Wed 2026-12-02 10:00 UTC (in 20h"),
    Case("utc-thursday", K.STANDARD, utc("2026-12-03 11:00"), False, "outside-hours",
         "not allowed now", needs_override=True, remedy="Tue 2026-12-08 10:00 UTC"),
    Case("utc-friday", K.STANDARD, FRIDAY, False, "avoided-day", "Friday is an avoided day",
         needs_override=True, remedy="Tue 2026-12-08 10:00 UTC"),
    Case("utc-monday", K.STANDARD, utc("2026-11-30 11:00"), False, "avoided-day",
         "Monday is an avoided day", needs_override=True),
    Case("utc-holiday-week", K.STANDARD, THANKSGIVING_WEEK, False, "holiday-week",
         "Thanksgiving Day", needs_override=True, remedy="Tue 2026-12-01 10:00 UTC"),
    Case("utc-freeze", K.STANDARD, FREEZE, False, "freeze", "year-end freeze",
         needs_override=True, remedy="Only an emergency"),
    Case("utc-refusal-offers-override", K.STANDARD, NIGHT, False, "outside-hours",
         "outside the preferred hours", needs_override=True,
         remedy='`--override "why"`; <@U0HEAD1> (not you) must grant it'),
    # -- the window in Europe/Berlin, across both DST changes -------------------------------
    Case("berlin-summer-open", K.STANDARD, utc("2026-10-20 08:30"), True, "preferred",
         "Europe/Berlin", policy="berlin"),
    Case("berlin-summer-after", K.STANDARD, utc("2026-10-20 12:30"), False, "outside-hours",
         "10:00-14:00 Europe/Berlin", policy="berlin", needs_override=True,
         remedy="Wed 2026-10-21 10:00 CEST"),
    Case("berlin-winter-same-utc-closed", K.STANDARD, utc("2026-10-27 08:30"), False,
         "outside-hours", "outside the preferred hours", policy="berlin", needs_override=True,
         remedy="Tue 2026-10-27 10:00 CET (in 30m)"),
    Case("berlin-winter-open", K.STANDARD, utc("2026-10-27 09:30"), True, "preferred",
         "inside", policy="berlin"),
    Case("berlin-monday-utc-is-tuesday", K.STANDARD, utc("2026-11-30 23:30"), False,
         "outside-hours", "outside the preferred hours", policy="berlin", needs_override=True),
    Case("berlin-spring-before-dst", K.STANDARD, utc("2026-03-24 08:30"), False,
         "outside-hours", "outside", policy="berlin", needs_override=True,
         remedy="Tue 2026-03-24 10:00 CET"),
    Case("berlin-spring-after-dst", K.STANDARD, utc("2026-04-14 08:30"), True, "preferred",
         "inside", policy="berlin"),
    Case("berlin-easter-week", K.STANDARD, utc("2027-03-30 08:30"), False, "holiday-week",
         "Easter Monday", policy="berlin", needs_override=True, remedy="CEST"),
    Case("berlin-holiday-week", K.STANDARD, utc("2026-09-29 09:00"), False, "holiday-week",
         "German Unity Day", policy="berlin", needs_override=True),
    Case("berlin-christmas-freeze-first", K.STANDARD, utc("2026-12-22 10:00"), False,
         "freeze", "year-end freeze", policy="berlin", needs_override=True),
    # -- other kinds ---------------------------------------------------------------------------
    Case("hotfix-friday", K.HOTFIX, FRIDAY, True, "hotfix",
         "may run outside the preferred window (Friday is an avoided day)"),
    Case("hotfix-holiday-week", K.HOTFIX, THANKSGIVING_WEEK, True, "hotfix", "Thanksgiving"),
    Case("hotfix-in-window", K.HOTFIX, TUE_OPEN, True, "preferred", "inside"),
    Case("hotfix-freeze", K.HOTFIX, FREEZE, False, "freeze", "A hotfix is not allowed now",
         needs_override=True),
    Case("hotfix-manual-lock", K.HOTFIX, NIGHT, False, "environment-lock",
         "locked by <@U0OPS>: db maintenance", lock=MANUAL_LOCK, needs_override=True,
         remedy="/qlp unlock production"),
    Case("hotfix-approval-rule", K.HOTFIX, NIGHT, True, "hotfix", "outside the preferred",
         policy="hotfix-two", approval=("hotfix", 2)),
    Case("emergency-freeze", K.EMERGENCY, FREEZE, True, "emergency", "at any time"),
    Case("emergency-manual-lock", K.EMERGENCY, NIGHT, False, "environment-lock",
         "An emergency deployment is not allowed now: production is locked by <@U0OPS>",
         lock=MANUAL_LOCK, needs_override=True, remedy="/qlp unlock production"),
    Case("emergency-override-past-lock", K.EMERGENCY, NIGHT, True, "environment-lock",
         "lifts: production is locked", lock=MANUAL_LOCK, override=granted(at=NIGHT),
         needs_override=True, overridden=("environment-lock",)),
    Case("emergency-running-waits-in-line", K.EMERGENCY, NIGHT, True, "emergency",
         "an emergency may run at any time", running=RUNNING, waits_for=5),
    Case("emergency-pending-other", K.EMERGENCY, NIGHT, True, "emergency",
         "an emergency may run at any time",
         running=ActiveRun(6, "v1.2.3", "pending_approval")),
    Case("rollback-freeze-night", K.ROLLBACK, utc("2026-12-26 03:00"), True, "rollback",
         "in a freeze too", approval=("rollback", 1)),
    Case("rollback-running", K.ROLLBACK, TUE_OPEN, False, "one-at-a-time",
         "one deployment at a time", running=RUNNING, approval=("rollback", 1)),
    Case("rollback-manual-lock", K.ROLLBACK, TUE_OPEN, False, "environment-lock",
         "A rollback is not allowed now", lock=MANUAL_LOCK, needs_override=True,
         approval=("rollback", 1)),
    Case("migration-outside", K.MIGRATION, NIGHT, False, "outside-hours",
         "A migration is not allowed now", needs_override=True),
    Case("migration-inside", K.MIGRATION, TUE_OPEN, True, "preferred", "inside"),
    Case("migration-override", K.MIGRATION, NIGHT, True, "outside-hours",
         "allowed by the break-glass override of <@U0HEAD1>",
         override=granted(at=NIGHT - timedelta(minutes=5)), needs_override=True,
         overridden=("outside-hours",)),
    # -- locks and runs ------------------------------------------------------------------------
    Case("manual-lock", K.STANDARD, TUE_OPEN, False, "environment-lock",
         "production is locked by <@U0OPS>: db maintenance", lock=MANUAL_LOCK,
         needs_override=True, remedy="Ask <@U0OPS> to `/qlp unlock production`"),
    Case("own-lock-still-blocks", K.STANDARD, TUE_OPEN, False, "environment-lock",
         "locked by <@U0OPS>", requester="U0OPS", lock=MANUAL_LOCK, needs_override=True),
    Case("lock-held-by-a-run", K.STANDARD, TUE_OPEN, False, "one-at-a-time",
         "Deployment #7 holds the lock on production; one", lock=RUN_LOCK, remedy="/qlp cancel 7"),
    Case("lock-kept-after-needs-attention", K.EMERGENCY, NIGHT, False, "needs-attention",
         "stays locked because deployment #7 needs attention (undo failed)",
         lock=Lock("U0DEV", "undo failed", deployment_id=7, holder_state="needs_attention"),
         override=granted(at=NIGHT), remedy="check production by hand"),
    Case("lock-held-by-this-run", K.STANDARD, TUE_OPEN, True, "preferred", "inside",
         lock=RUN_LOCK, deployment_id=7),
    Case("running", K.STANDARD, TUE_OPEN, False, "one-at-a-time",
         "Deployment #5 (v1.2.2, running) is already under way for production",
         running=RUNNING, remedy="`/qlp cancel 5`"),
    Case("running-is-this-one", K.STANDARD, TUE_OPEN, True, "preferred", "inside",
         running=RUNNING, deployment_id=5),
    Case("pending-request-blocks", K.STANDARD, TUE_OPEN, False, "one-at-a-time",
         "(v1.2.4, pending approval)", running=ActiveRun(6, "v1.2.4", "pending_approval")),
    Case("override-never-lifts-running", K.STANDARD, FRIDAY, False, "one-at-a-time",
         "already under way", running=RUNNING, override=granted(),
         remedy="An override never lifts this rule"),
    # -- break-glass overrides -------------------------------------------------------------------
    Case("override-valid", K.STANDARD, FRIDAY, True, "avoided-day",
         "break-glass override of <@U0HEAD1> (valid until Fri 2026-12-04 12:30 UTC), which "
         "lifts: Friday is an avoided day", override=granted(), needs_override=True,
         overridden=("avoided-day",)),
    Case("override-pending", K.STANDARD, FRIDAY, False, "override-pending",
         "is waiting for <@U0HEAD1>", override=PENDING, needs_override=True),
    Case("override-self-approved", K.STANDARD, FRIDAY, False, "override-self-approval",
         "<@U0DEV> asked for this override and cannot grant it",
         override=granted("U0DEV"), needs_override=True),
    Case("override-wrong-approver", K.STANDARD, FRIDAY, False, "override-approver",
         "<@U0LEAD1> may not grant overrides", override=granted("U0LEAD1"),
         needs_override=True, remedy="granted by <@U0HEAD1>"),
    Case("override-expired", K.STANDARD, FRIDAY, False, "override-expired",
         "expired Fri 2026-12-04 11:00 UTC",
         override=granted(at=FRIDAY - OVERRIDE_TTL), needs_override=True,
         remedy="valid 2h from its grant"),
    Case("override-last-minute", K.STANDARD, FRIDAY, True, "avoided-day", "override",
         override=granted(at=FRIDAY - OVERRIDE_TTL + timedelta(minutes=1)),
         needs_override=True, overridden=("avoided-day",)),
    Case("override-other-deployment", K.STANDARD, FRIDAY, False, "override-scope",
         "granted for deployment #3, not #4", override=granted(deployment_id=3),
         deployment_id=4, needs_override=True),
    Case("override-this-deployment", K.STANDARD, FRIDAY, True, "avoided-day", "override",
         override=granted(deployment_id=4), deployment_id=4, needs_override=True,
         overridden=("avoided-day",)),
    Case("override-freeze", K.STANDARD, FREEZE, True, "freeze", "lifts: deployment freeze",
         override=granted(at=FREEZE), needs_override=True, overridden=("freeze",)),
    Case("override-lock-and-hours", K.STANDARD, NIGHT, True, "outside-hours",
         "outside the preferred hours (Tue, Wed 10:00-14:00 UTC); and production is locked",
         lock=MANUAL_LOCK, override=granted(at=NIGHT), needs_override=True,
         overridden=("outside-hours", "environment-lock")),
    Case("override-group-member", K.STANDARD, FRIDAY, True, "avoided-day", "<@U0HEAD2>",
         policy="groups", override=granted("U0HEAD2"), needs_override=True,
         overridden=("avoided-day",)),
    Case("override-group-non-member", K.STANDARD, FRIDAY, False, "override-approver",
         "a member of <!subteam^S0BREAK>", policy="groups", override=granted("U0HEAD1"),
         needs_override=True),
    Case("override-falls-back-to-standard-rule", K.STANDARD, FRIDAY, True, "avoided-day",
         "<@U0LEAD1>", policy="no-override-rule", override=granted("U0LEAD1"),
         needs_override=True, overridden=("avoided-day",)),
    Case("override-not-needed", K.STANDARD, TUE_OPEN, True, "preferred",
         "no override is needed", override=granted(at=TUE_OPEN)),
    Case("override-across-dst", K.STANDARD, DST_NIGHT + timedelta(minutes=119), True,
         "outside-hours",
         "valid until Sun 2026-10-25 03:30 CET", policy="berlin",
         override=granted(at=DST_NIGHT), needs_override=True, overridden=("outside-hours",)),
    Case("override-across-dst-expired", K.STANDARD, DST_NIGHT + timedelta(hours=2), False,
         "override-expired", "expired Sun 2026-10-25 03:30 CET", policy="berlin",
         override=granted(at=DST_NIGHT), needs_override=True),
]


def _judge(case: Case) -> Verdict:
    policy = POLICIES[case.policy]
    windows = WindowPolicy.from_policy(policy)
    facts = Facts(policy=policy, window=windows.verdict(case.at),
                  freeze=windows.in_freeze(case.at), lock=case.lock, running=case.running,
                  group_members=MEMBERS)
    request = Request(case.kind, case.requester, "production", case.at, override=case.override,
                      deployment_id=case.deployment_id)
    return decide(request, facts)


def test_the_table_is_big_enough() -> None:
    assert len(CASES) >= 40
    assert len({case.id for case in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_decision(case: Case) -> None:
    verdict = _judge(case)
    assert (verdict.allowed, verdict.rule) == (case.allowed, case.rule), verdict
    assert case.fragment in verdict.reason, verdict.reason
    assert verdict.needs_override is case.needs_override, verdict
    assert case.remedy in verdict.what_would_allow, verdict.what_would_allow
    assert (verdict.approval_kind, verdict.required) == case.approval
    assert verdict.overridden == case.overridden
    assert verdict.waits_for == case.waits_for
    assert verdict.outside_preferred is case.outside_preferred
    assert verdict.overrun == case.overrun
    if not verdict.allowed:
        assert verdict.what_would_allow, "every refusal says what would allow it"
    else:
        assert verdict.what_would_allow == ""


RULE = ApprovalRule(users=["U0LEAD1"], groups=["S0RELEASE"], required=1)


@pytest.mark.parametrize(("user", "requester", "members", "ok", "fragment"), [
    ("U0LEAD1", "U0DEV", {}, True, "named in the rule"),
    ("U0LEAD2", "U0DEV", MEMBERS, True, "member of <!subteam^S0RELEASE>"),
    ("U0LEAD2", "U0DEV", {}, False, "not one of the approvers"),
    ("U0STRANGER", "U0DEV", MEMBERS, False, "<@U0LEAD1> or a member of <!subteam^S0RELEASE>"),
    ("U0LEAD1", "U0LEAD1", MEMBERS, False, "cannot approve their own request"),
    ("U0LEAD2", "U0LEAD2", MEMBERS, False, "someone else must"),
], ids=["named", "group-member", "group-unknown", "stranger", "self-named", "self-member"])
def test_may_decide(user: str, requester: str, members: dict[str, frozenset[str]], ok: bool,
                    fragment: str) -> None:
    allowed, reason = may_decide(user, requester, RULE, members)
    assert allowed is ok
    assert fragment in reason
