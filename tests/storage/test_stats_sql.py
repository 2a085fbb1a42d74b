"""``storage.stats_queries`` against ``procedures.stats.totals_of`` (the reference) on both
backends: hand-worked cases, thousands of random deployments, periods over 5,000 rows, periods
whose edges fall anywhere in a day, and the summary kept by random transitions
(``tests/storage/test_stats_summary.py``)."""

from __future__ import annotations

import random
from datetime import datetime, timedelta
from typing import Any

import pytest

from procedures.engine import CANCELLED_BY
from procedures.model import DeploymentState as S
from procedures.model import ProcedureKind as K
from procedures.stats import DeploymentFacts, period_start, totals_of
from storage.db import Database
from storage.models import Approval, Deployment
from storage.stats_queries import StatsQueries
from storage.stats_summary import rebuild
from tests.test_stats import MONTH, NOW

DEPLOYMENTS = Deployment.__table__  # type: ignore[attr-defined]
APPROVALS = Approval.__table__  # type: ignore[attr-defined]
ENVIRONMENTS = ("production", "staging", "dev")


def _row(fact: DeploymentFacts, error: str | None = None) -> dict[str, Any]:
    return {
        "id": fact.id, "kind": fact.kind, "version": "v1.0.0", "environment": fact.environment,
        "requester": "U0DEV", "state": fact.state, "options": {}, "plan_hash": "plan",
        "created_at": fact.requested_at, "updated_at": fact.requested_at,
        "started_at": fact.started_at, "finished_at": fact.finished_at,
        "revision": 0, "error": error if error is not None else (
            f"{CANCELLED_BY}<@U0LEAD1>" if fact.cancelled else None),
    }


def _load(database: Database, facts: list[DeploymentFacts],
          errors: dict[int, str] | None = None) -> None:
    """Insert the rows directly (not through transitions), then rebuild the summary as
    migration 0008 does."""
    rows = [_row(f, (errors or {}).get(f.id)) for f in facts]
    with database.connect() as connection, connection.begin():
        for start in range(0, len(rows), 2000):
            connection.execute(DEPLOYMENTS.insert(), rows[start:start + 2000])
        rebuild(connection)


def _random_facts(count: int, *, now: datetime, span: timedelta,
                  seed: int = 14) -> list[DeploymentFacts]:
    """Deployments of every kind and outcome, requested over ``span`` before ``now``, with
    microsecond times (so medians of even counts round) and ties in finishing times."""
    rng = random.Random(seed)
    states = list(S)
    facts = []
    for id in range(1, count + 1):
        requested = now - timedelta(microseconds=rng.randrange(int(span.total_seconds() * 1e6)))
        state = rng.choice(states)
        started = finished = None
        if state not in (S.PENDING_APPROVAL, S.SCHEDULED, S.QUEUED, S.REJECTED, S.EXPIRED,
                         S.CANCELLED):
            started = requested + timedelta(seconds=rng.randrange(0, 600),
                                            microseconds=rng.randrange(10**6))
        if state.terminal:
            # Whole minutes sometimes, so that several outcomes finish at the same moment.
            finished = (started or requested) + (
                timedelta(minutes=rng.randrange(1, 30)) if rng.random() < 0.3 else
                timedelta(seconds=rng.randrange(1, 3600), microseconds=rng.randrange(10**6)))
            if rng.random() < 0.3:
                finished = finished.replace(second=0, microsecond=0)
                if started is not None and finished < started:
                    finished = started
        kind = K.ROLLBACK if rng.random() < 0.1 else rng.choice(
            [K.STANDARD, K.HOTFIX, K.EMERGENCY, K.MIGRATION])
        facts.append(DeploymentFacts(
            id=id, kind=kind, environment=rng.choice(ENVIRONMENTS), state=state,
            requested_at=requested, started_at=started, finished_at=finished,
            cancelled=state in (S.ROLLED_BACK, S.FAILED, S.NEEDS_ATTENTION, S.CANCELLED)
            and rng.random() < 0.3))
    return facts


def _expected(facts: list[DeploymentFacts], *, now: datetime, days: int,
              environment: str | None, frequency: str) -> Any:
    since = period_start(now, days)
    period = [f for f in facts if since <= f.requested_at <= now
              and (environment is None or f.environment == environment)]
    return totals_of(period, frequency)


def _actual(database: Database, *, now: datetime, days: int, environment: str | None,
            frequency: str) -> Any:
    return StatsQueries(database).totals(since=period_start(now, days), until=now,
                                         environment=environment,
                                         frequency_environment=frequency)


def test_the_hand_worked_month(database: Database) -> None:
    _load(database, MONTH)
    for environment, frequency in ((None, "production"), ("production", "production"),
                                   ("staging", "staging")):
        assert _actual(database, now=NOW, days=30, environment=environment,
                       frequency=frequency) == _expected(MONTH, now=NOW, days=30,
                                                         environment=environment,
                                                         frequency=frequency)
    totals = _actual(database, now=NOW, days=30, environment=None, frequency="production")
    assert (totals.deployments, totals.succeeded, totals.failed, totals.cancelled) == (11, 3, 3, 2)
    assert totals.lead_time_median == timedelta(minutes=20)
    assert totals.restore_median == timedelta(minutes=50)
    assert (totals.restored_incidents, totals.open_incidents) == (2, 1)


def test_nothing_in_the_period(database: Database) -> None:
    _load(database, MONTH)
    totals = _actual(database, now=NOW - timedelta(days=400), days=7, environment=None,
                     frequency="production")
    assert totals == _expected([], now=NOW, days=7, environment=None, frequency="production")
    assert totals.deployments == 0 and totals.lead_time_median is None


def test_the_cancel_prefix_is_exact_and_case_sensitive(database: Database) -> None:
    at = NOW - timedelta(days=1)
    facts = [DeploymentFacts(id=i, kind=K.STANDARD, environment="production",
                             state=S.ROLLED_BACK, requested_at=at, started_at=at,
                             finished_at=at + timedelta(minutes=i)) for i in (1, 2, 3)]
    _load(database, facts, errors={1: "Cancelled by <@U0X>", 2: "not cancelled by <@U0X>",
                                   3: f"{CANCELLED_BY}<@U0X>"})
    totals = _actual(database, now=NOW, days=1, environment=None, frequency="production")
    assert (totals.automatic_rollbacks, totals.cancelled, totals.failed) == (2, 1, 2)


@pytest.mark.parametrize("seed", [1, 2])
@pytest.mark.slow  # 3 s of the fast lane, measured
def test_random_deployments_match_the_reference(database: Database, seed: int) -> None:
    facts = _random_facts(1500, now=NOW, span=timedelta(days=90), seed=seed)
    _load(database, facts)
    for days in (1, 2, 3, 7, 30, 90):
        for environment in (None, "staging"):
            frequency = environment or "production"
            assert _actual(database, now=NOW, days=days, environment=environment,
                           frequency=frequency) == _expected(
                facts, now=NOW, days=days, environment=environment, frequency=frequency), \
                (days, environment)


@pytest.mark.slow  # 4 s of the fast lane, measured
def test_a_period_of_more_than_5000_deployments_is_counted_whole(database: Database) -> None:
    # 6,000 deployments in the last 30 days (and 500 older): every one of them is counted,
    # where the old read of the newest 5,000 rows missed a thousand.
    facts = _random_facts(6000, now=NOW, span=timedelta(days=29), seed=3)
    older = _random_facts(500, now=NOW - timedelta(days=31), span=timedelta(days=10), seed=4)
    facts += [DeploymentFacts(**{**f.__dict__, "id": 6000 + f.id}) for f in older]
    _load(database, facts)
    totals = _actual(database, now=NOW, days=30, environment=None, frequency="production")
    assert totals.deployments == 6000
    assert totals == _expected(facts, now=NOW, days=30, environment=None,
                               frequency="production")


def test_history_reads_the_approvers_of_the_current_plan(database: Database) -> None:
    at = NOW - timedelta(days=1)
    facts = [DeploymentFacts(id=i, kind=K.STANDARD, environment=env, state=S.SUCCEEDED,
                             requested_at=at, started_at=at, finished_at=at)
             for i, env in ((1, "production"), (2, "staging"), (3, "production"))]
    _load(database, facts)
    with database.connect() as connection, connection.begin():
        connection.execute(APPROVALS.insert(), [
            {"deployment_id": 3, "actor": "U0B", "decision": "approve", "plan_hash": "plan",
             "created_at": at},
            {"deployment_id": 3, "actor": "U0A", "decision": "approve", "plan_hash": "plan",
             "created_at": at},
            {"deployment_id": 3, "actor": "U0OLD", "decision": "approve", "plan_hash": "old",
             "created_at": at},
            {"deployment_id": 3, "actor": "U0NO", "decision": "reject", "plan_hash": "plan",
             "created_at": at},
            {"deployment_id": 1, "actor": "U0C", "decision": "approve", "plan_hash": "plan",
             "created_at": at},
        ])
    entries = StatsQueries(database).history(None, 10)
    assert [(e.deployment.id, e.approvers) for e in entries] == [
        (3, ("U0B", "U0A")), (2, ()), (1, ("U0C",))]
    production = StatsQueries(database).history("production", 1)
    assert [e.deployment.id for e in production] == [3]


@pytest.mark.parametrize("seed", [5, 6])
@pytest.mark.slow  # 5 s of the fast lane, measured
def test_periods_ending_anywhere_in_a_day_match_the_reference(database: Database,
                                                               seed: int) -> None:
    # The summary holds whole UTC days; the edges of a period are read from the deployments.
    # Periods ending at random moments (some before deployments requested after them, some
    # at midnight) keep every figure exact.
    facts = _random_facts(1200, now=NOW, span=timedelta(days=40), seed=seed)
    _load(database, facts)
    rng = random.Random(seed)
    ends = [NOW, NOW.replace(hour=0, minute=0, second=0, microsecond=0)] + [
        NOW - timedelta(microseconds=rng.randrange(int(timedelta(days=20).total_seconds()
                                                       * 1e6))) for _ in range(4)]
    for until in ends:
        for days in (1, 2, 5, 30):
            for environment in (None, "production"):
                frequency = environment or "production"
                assert _actual(database, now=until, days=days, environment=environment,
                               frequency=frequency) == _expected(
                    facts, now=until, days=days, environment=environment,
                    frequency=frequency), (until, days, environment)


def test_long_periods_read_through_32_day_blocks_match_the_reference(
        database: Database) -> None:
    # A year and more: whole 32-day blocks from stats_day_blocks, the days around them from
    # stats_days, the edge days from the deployments; periods ending at random moments.
    facts = _random_facts(900, now=NOW, span=timedelta(days=420), seed=32)
    _load(database, facts)
    rng = random.Random(32)
    # 33 consecutive days of ends: every alignment of a period's whole days to the blocks.
    ends = [NOW - timedelta(days=k, microseconds=rng.randrange(86_400 * 10**6))
            for k in range(33)]
    for until in ends:
        for days, environments in ((365, (None, "staging")), (64, (None,))):
            for environment in environments:
                frequency = environment or "production"
                assert _actual(database, now=until, days=days, environment=environment,
                               frequency=frequency) == _expected(
                    facts, now=until, days=days, environment=environment,
                    frequency=frequency), (until, days, environment)
