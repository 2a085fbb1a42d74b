"""procedures/stats.py against figures worked out by hand."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from procedures.model import DeploymentState as S
from procedures.model import ProcedureKind as K
from procedures.stats import DeploymentFacts, compute_stats

NOW = datetime(2026, 12, 1, 11, 0, tzinfo=UTC)


def t(day: int, hour: int, minute: int = 0, month: int = 11) -> datetime:
    return datetime(2026, month, day, hour, minute, tzinfo=UTC)


def m(minutes: float) -> timedelta:
    return timedelta(minutes=minutes)


def fact(id: int, state: S, requested: datetime, started: datetime | None = None,
         finished: datetime | None = None, *, kind: K = K.STANDARD, env: str = "production",
         cancelled: bool = False) -> DeploymentFacts:
    return DeploymentFacts(id=id, kind=kind, environment=env, state=state,
                           requested_at=requested, started_at=started, finished_at=finished,
                           cancelled=cancelled)


# A month with every kind of outcome. Worked out by hand:
#   changes requested in the period: 1,2,3,4,6,7,8,9,10,11 (5 is a rollback, 12 is too old)
#   succeeded 1,3,9; failed 2 (rolled back), 4 (failed), 10 (needs attention): completed 6
#   cancelled 6 (before start), 7 (undone after a cancel); not run 8; in progress 11
#   durations of completed changes 30+20+15+1+10+50 = 126m / 6 = 21m
#   rollbacks: automatic 2 (7 was a cancel), manual 5 -> 2 in 30 days = 14/30 a week
#   production successes 1,3 -> 2/30 a day, 14/30 a week
#   lead times 40m, 20m, 10m -> median 20m
#   production: 2 fails 11-03 10:20, 3 succeeds 11:20 -> 1h; 4 fails 11-10 10:01, the rollback
#   5 succeeds 10:41 -> 40m; median of 1h and 40m = 50m. staging: 10 fails, nothing after: open.
MONTH = [
    fact(1, S.SUCCEEDED, t(2, 10), t(2, 10, 10), t(2, 10, 40)),
    fact(2, S.ROLLED_BACK, t(3, 10), t(3, 10), t(3, 10, 20)),
    fact(3, S.SUCCEEDED, t(3, 11), t(3, 11, 5), t(3, 11, 20), kind=K.HOTFIX),
    fact(4, S.FAILED, t(10, 10), t(10, 10), t(10, 10, 1)),
    fact(5, S.SUCCEEDED, t(10, 10, 30), t(10, 10, 31), t(10, 10, 41), kind=K.ROLLBACK),
    fact(6, S.CANCELLED, t(11, 10), None, t(11, 10, 5), cancelled=True),
    fact(7, S.ROLLED_BACK, t(12, 10), t(12, 10), t(12, 10, 30), cancelled=True),
    fact(8, S.REJECTED, t(13, 10), None, t(13, 11)),
    fact(9, S.SUCCEEDED, t(14, 10), t(14, 10), t(14, 10, 10), env="staging"),
    fact(10, S.NEEDS_ATTENTION, t(20, 10), t(20, 10), t(20, 10, 50), env="staging"),
    fact(11, S.RUNNING, t(1, 10, 30, month=12), t(1, 10, 31, month=12)),
    fact(12, S.SUCCEEDED, t(20, 10, month=10), t(20, 10, month=10), t(20, 11, month=10)),
]

CASES: list[tuple[str, list[DeploymentFacts], dict[str, Any]]] = [
    ("a month of everything", MONTH, {
        "deployments": 11, "requests": 10, "completed": 6, "succeeded": 3, "failed": 3,
        "cancelled": 2, "not_run": 1, "in_progress": 1,
        "success_rate": 0.5, "change_failure_rate": 0.5, "mean_duration": m(21),
        "automatic_rollbacks": 1, "manual_rollbacks": 1,
        "rollbacks_per_week": pytest.approx(14 / 30), "production_successes": 2,
        "deployments_per_day": pytest.approx(2 / 30),
        "deployments_per_week": pytest.approx(14 / 30), "lead_time_median": m(20),
        "restore_median": m(50), "restored_incidents": 2, "open_incidents": 1,
    }),
    ("nothing at all", [], {
        "deployments": 0, "requests": 0, "completed": 0,
        "success_rate": None, "change_failure_rate": None, "mean_duration": None,
        "lead_time_median": None, "restore_median": None,
        "deployments_per_day": 0.0, "rollbacks_per_week": 0.0, "open_incidents": 0,
    }),
    ("only requests that never ran", [
        fact(1, S.PENDING_APPROVAL, t(30, 9)), fact(2, S.EXPIRED, t(29, 9), None, t(30, 9)),
    ], {"requests": 2, "completed": 0, "not_run": 1, "in_progress": 1, "success_rate": None,
        "mean_duration": None}),
    # Two failures in a row are one incident, from the first failure to the next success.
    ("consecutive failures are one incident", [
        fact(1, S.FAILED, t(5, 10), t(5, 10), t(5, 10, 10)),
        fact(2, S.ROLLED_BACK, t(5, 11), t(5, 11), t(5, 11, 20)),
        fact(3, S.SUCCEEDED, t(5, 12), t(5, 12), t(5, 12, 40)),
    ], {"failed": 2, "succeeded": 1, "restore_median": m(150), "restored_incidents": 1,
        "open_incidents": 0, "change_failure_rate": pytest.approx(2 / 3),
        "success_rate": pytest.approx(1 / 3), "mean_duration": m((10 + 20 + 40) / 3),
        "lead_time_median": m(40), "automatic_rollbacks": 1}),
    # Ordered by when they finished, not by id: #2 finishes before #1 fails.
    ("a success that finished before the failure does not restore it", [
        fact(1, S.FAILED, t(6, 10), t(6, 10), t(6, 12)),
        fact(2, S.SUCCEEDED, t(6, 10, 30), t(6, 10, 30), t(6, 11), env="production"),
    ], {"restored_incidents": 0, "open_incidents": 1, "restore_median": None}),
    # An undo that failed is a failure even when a person's cancel started the undo.
    ("needs attention after a cancel is a failure; a cancelled run is not", [
        fact(1, S.NEEDS_ATTENTION, t(7, 10), t(7, 10), t(7, 10, 30), cancelled=True),
        fact(2, S.FAILED, t(7, 11), t(7, 11), t(7, 11, 1), cancelled=True),
        fact(3, S.ROLLED_BACK, t(7, 12), t(7, 12), t(7, 12, 1), cancelled=True),
    ], {"failed": 1, "cancelled": 2, "completed": 1, "automatic_rollbacks": 0,
        "change_failure_rate": 1.0, "open_incidents": 1}),
    # Medians: odd count takes the middle, even the mean of the two middle ones.
    ("the median of four lead times", [
        fact(1, S.SUCCEEDED, t(8, 10), t(8, 10), t(8, 10, 10)),
        fact(2, S.SUCCEEDED, t(8, 11), t(8, 11), t(8, 11, 30)),
        fact(3, S.SUCCEEDED, t(8, 12), t(8, 12), t(8, 13)),
        fact(4, S.SUCCEEDED, t(8, 14), t(8, 14), t(8, 16), env="staging"),
    ], {"lead_time_median": m(45), "production_successes": 3,
        "deployments_per_week": pytest.approx(3 / 30 * 7), "success_rate": 1.0,
        "mean_duration": m((10 + 30 + 60 + 120) / 4)}),
    # Boundaries: requested exactly `days` ago counts, a minute earlier does not.
    ("the period starts exactly days before now", [
        fact(1, S.SUCCEEDED, t(1, 11), t(1, 11), t(1, 11, 5)),
        fact(2, S.SUCCEEDED, t(1, 10, 59), t(1, 11), t(1, 11, 5)),
    ], {"requests": 1, "lead_time_median": m(5)}),
]


@pytest.mark.parametrize(("records", "expected"), [(r, e) for _, r, e in CASES],
                         ids=[name for name, _, _ in CASES])
def test_figures(records: list[DeploymentFacts], expected: dict[str, Any]) -> None:
    stats = compute_stats(records, now=NOW, days=30, frequency_environment="production")
    actual = {key: getattr(stats, key) for key in expected}
    assert actual == expected


def test_period_and_emptiness() -> None:
    stats = compute_stats([], now=NOW, days=7, frequency_environment="production")
    assert stats.empty and stats.since == NOW - timedelta(days=7) and stats.until == NOW
    assert not compute_stats(MONTH, now=NOW, days=30, frequency_environment="x").empty
    only_a_rollback = [fact(1, S.FAILED, t(30, 9), t(30, 9), t(30, 10), kind=K.ROLLBACK)]
    stats = compute_stats(only_a_rollback, now=NOW, days=30, frequency_environment="x")
    assert not stats.empty and stats.requests == 0 and stats.success_rate is None


def test_the_frequency_environment_is_the_one_asked_for() -> None:
    stats = compute_stats(MONTH, now=NOW, days=30, frequency_environment="staging")
    assert stats.production_successes == 1
    assert stats.deployments_per_day == pytest.approx(1 / 30)


def test_days_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        compute_stats([], now=NOW, days=0, frequency_environment="production")
