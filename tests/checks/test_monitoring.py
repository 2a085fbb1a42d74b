"""The monitoring evaluator, table-driven, and the local metrics source over a fake router."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from procedures.checks.monitoring import (
    MonitoringThresholds,
    Sample,
    evaluate,
    percentile,
    summarize,
)
from procedures.clock import FixedClock
from procedures.model import Slot
from procedures.platforms.local.metrics import LocalMetrics
from procedures.policy import Monitoring

T0 = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)
THRESHOLDS = MonitoringThresholds.from_policy(Monitoring())  # the seed's values
WITH_RATIOS = MonitoringThresholds.from_policy(Monitoring(
    duration=timedelta(minutes=30), interval=timedelta(seconds=30),
    health_failure_ratio=0.5, response_time_ms=2000, error_threshold=5,
    response_time_ratio=1.5, error_rate_ratio=2.0,
))
BASELINE = {"response_ms_p50": 100.0, "response_ms_p95": 150.0, "error_count": 1,
            "request_count": 1000, "samples": 60}


def series(
    health: str,
    ms: Sequence[float] | float = 100.0,
    errors: Sequence[int | None] | int | None = 0,
    requests: Sequence[int | None] | int | None = None,
    every: timedelta = timedelta(seconds=30),
    **more: Any,
) -> list[Sample]:
    """Samples from a compact description: ``health`` is a string of ``+`` (ok) / ``-``;
    ``more`` gives further Sample fields, each a value or a list per sample."""
    count = len(health)

    def spread(value: Any) -> list[Any]:
        return list(value) if isinstance(value, list) else [value] * count

    times, errs, reqs = spread(ms), spread(errors), spread(requests)
    extra = {key: spread(value) for key, value in more.items()}
    return [Sample(at=T0 + every * i, health_ok=mark == "+", response_ms=times[i],
                   errors=errs[i], requests=reqs[i],
                   **{key: values[i] for key, values in extra.items()})
            for i, mark in enumerate(health)]


@dataclass(frozen=True)
class Case:
    samples: list[Sample]
    thresholds: MonitoringThresholds = THRESHOLDS
    baseline: Mapping[str, Any] | None = None
    outcome: str = "ok"  # ok | rollback | inconclusive
    reason: str = ""
    warnings: tuple[str, ...] = ()  # the kinds the newest check raised
    manual: str = ""  # a substring of the manual-rollback reason ("" none)


CASES = {
    "healthy": Case(series("+++++", ms=120, errors=0), reason="within thresholds: 5 checks, "
                    "0 failed, p95 120 ms, 0 errors"),
    "one failed check is not a ratio yet": Case(series("-", errors=0)),
    "ratio exactly at the threshold passes": Case(series("+-+-", errors=0)),
    "ratio crossed": Case(series("++---", errors=0), outcome="rollback",
                          reason="3 of 5 health checks failed (60% > 50%)"),
    "two of two failed": Case(series("--", errors=0), outcome="rollback",
                              reason="2 of 2 health checks failed (100% > 50%)"),
    "health ratio counts the last 5 minutes only": Case(
        series("-" * 6 + "+" * 10, errors=0)),  # 6 failures 8 minutes ago, 10 ok since
    "recent failures in the window": Case(
        series("+" * 10 + "-" * 6, errors=0), outcome="rollback",
        reason="6 of 11 health checks failed in the last 5m (55% > 50%)"),
    "nine scattered failures are not the alert threshold": Case(
        series("-++++++" * 9, errors=0)),
    "ten scattered failures are (ALERT_THRESHOLD)": Case(
        series("-++++++" * 10, errors=0), outcome="rollback",
        reason="10 health checks failed in total (the alert threshold is 10)"),
    "one slow check is a warning": Case(series("++++", ms=[100, 5000, 100, 2500], errors=0),
                                        warnings=("slow response",)),
    "slow responses never roll back": Case(series("++++", ms=[3000] * 4, errors=0),
                                           warnings=("slow response",)),
    "a slow platform p95 is a warning": Case(series("++", errors=0, requests=100,
                                                    p95_ms=2400.0),
                                             warnings=("slow response",)),
    "a p95 over too few requests is not": Case(series("++", errors=0, requests=5,
                                                      p95_ms=2400.0)),
    "errors within the window at the threshold": Case(series("+++", errors=[0, 4, 5])),
    "errors over the threshold are a warning": Case(
        series("+++", errors=[0, 4, 11]), warnings=("errors",)),
    "errors count per window, not since the switch": Case(
        series("+" * 14, errors=[0] * 2 + [20] * 12)),  # 20 errors over 5 minutes ago, none since
    "slow database is a warning": Case(series("++", errors=0, db_query_ms=150.0),
                                       warnings=("slow database",)),
    "no error data is inconclusive": Case(series("+++", errors=None), outcome="inconclusive",
                                          reason="no error data from the platform: the error "
                                                 "rule is inconclusive (3 checks, 0 failed, "
                                                 "p95 100 ms, no error data)"),
    "unreadable metrics are inconclusive with their reason": Case(
        [dataclasses.replace(sample, unavailable=(
            "SemanticError (the query is the bot's: report it): 'where' operator: Failed to "
            "resolve column or scalar expression named 'Sucess'"))
         for sample in series("+++", errors=None)], outcome="inconclusive",
        reason="the platform's metrics could not be read (SemanticError (the query is the "
               "bot's: report it): 'where' operator: Failed to resolve column or scalar "
               "expression named 'Sucess'): no error data, the error rule is inconclusive "
               "(3 checks, 0 failed, p95 100 ms, no error data)"),
    "newest data counts when the last sample has none": Case(
        series("+++", errors=[0, 12, None])),
    "health rolls back even without error data": Case(
        series("---", errors=None), outcome="rollback",
        reason="3 of 3 health checks failed (100% > 50%)"),
    "no samples": Case([], outcome="inconclusive", reason="no monitoring samples yet"),
    "a database path failing once is not yet": Case(
        series("++", errors=0, database_failed=[(), ("/db",)])),
    "a database path failing twice in a row": Case(
        series("+++", errors=0, database_failed=[(), ("/db",), ("/db",)]), outcome="rollback",
        reason="database connection failures: /db failed 2 checks in a row"),
    "a smoke path failing twice in a row": Case(
        series("+++", errors=0, smoke_failed=[("/a",), ("/b",), ("/b",)]), outcome="rollback",
        reason="critical functionality broken: /b failed 2 checks in a row"),
    "smoke paths failing in turn are not in a row": Case(
        series("+++", errors=0, smoke_failed=[("/a",), ("/b",), ("/a",)])),
    "several rules at once": Case(series("---", ms=3000, errors=20, requests=100),
                                  baseline=BASELINE, outcome="rollback",
                                  reason="3 of 3 health checks failed (100% > 50%); error "
                                         "rate 20.0% (20 of 100 requests) is 200.0x the "
                                         "baseline's 0.1% (> 10x)",
                                  warnings=("slow response", "errors"),
                                  manual="30.0x the baseline's 100 ms"),
    "response ratio within": Case(series("+++", ms=140, errors=0), WITH_RATIOS, BASELINE),
    "response ratio crossed asks a person": Case(
        series("+++", ms=[100, 160, 170], errors=0), WITH_RATIOS, BASELINE,
        manual="the median response time of the last 3 checks is 160 ms, 1.6x the "
               "baseline's 100 ms (> 1.5x)"),
    "p95 ratio crossed asks a person": Case(
        series("+++", errors=0, requests=100, p95_ms=500.0), THRESHOLDS,
        {**BASELINE, "platform_p95_ms": 200.0, "version": "1.0.0"},
        manual="the platform's p95 is 500 ms, 2.5x the baseline's 200 ms (1.0.0) (> 2x)"),
    "ratios are skipped without a baseline": Case(
        series("+++", ms=[100, 160, 170], errors=0), WITH_RATIOS, None),
    "error rate within": Case(series("+++", errors=[0, 0, 1], requests=[10, 200, 500]),
                              WITH_RATIOS, BASELINE),
    "error rate crossed": Case(series("+++", errors=[0, 1, 3], requests=[10, 100, 300]),
                               WITH_RATIOS, BASELINE, outcome="rollback",
                               reason="error rate 1.0% (3 of 300 requests) is 10.0x the "
                                      "baseline's 0.1% (> 2x)"),
    "error rate needs enough requests": Case(
        series("+++", errors=[0, 1, 2], requests=[1, 3, 10]), WITH_RATIOS, BASELINE),
    "a zero baseline rate is floored": Case(
        series("+++", errors=[0, 0, 1], requests=[100, 400, 1000]), WITH_RATIOS,
        {**BASELINE, "error_count": 0}),
    "explicit baseline error_rate wins": Case(
        series("+++", errors=[0, 2, 5], requests=[100, 100, 100]), WITH_RATIOS,
        {**BASELINE, "error_rate": 0.01}, outcome="rollback",
        reason="error rate 5.0% (5 of 100 requests) is 5.0x the baseline's 1.0% (> 2x)"),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_evaluate(case: Case) -> None:
    verdict = evaluate(case.samples, case.thresholds, case.baseline)
    outcome = ("rollback" if verdict.rollback else
               "inconclusive" if verdict.inconclusive else "ok")
    assert outcome == case.outcome, verdict.reason
    assert verdict.ok is (case.outcome == "ok")
    if case.reason:
        assert verdict.reason == case.reason
    assert tuple(kind for kind, _ in verdict.warnings) == case.warnings, verdict.warnings
    if case.manual:
        assert verdict.manual is not None and case.manual in verdict.manual, verdict.manual
    else:
        assert verdict.manual is None, verdict.manual


def test_summary_and_percentiles() -> None:
    samples = series("+-++", ms=[10, 20, 30, 400], errors=[0, 1, 2, 3], requests=[5, 6, 7, 8])
    summary = summarize(samples)
    assert (summary.checks, summary.failed) == (4, 1)
    assert (summary.response_ms_p50, summary.response_ms_p95) == (20, 400)
    assert (summary.errors, summary.requests, summary.error_rate) == (3, 8, 3 / 8)
    assert summary.describe() == "4 checks, 1 failed, p95 400 ms, 3 errors"
    assert percentile([], 50) is None
    assert percentile([7.0], 95) == 7.0
    assert percentile(list(range(1, 101)), 95) == 95


# -- LocalMetrics over a scripted router ------------------------------------------------------


class ScriptedRouter:
    """Stands in for ``LocalPlatform.router_state``: returns what the test set last."""

    def __init__(self) -> None:
        self.state: dict[str, Any] | None = None

    def set(self, pid: int, blue: tuple[int, int], green: tuple[int, int] = (0, 0),
            started: str = "t0") -> None:
        self.state = {"live": "blue", "pid": pid, "started": started, "stats": {
            "blue": {"requests": blue[0], "errors": blue[1]},
            "green": {"requests": green[0], "errors": green[1]},
        }}

    def router_state(self) -> Mapping[str, Any] | None:
        return self.state


def test_local_metrics_counts_from_the_first_question() -> None:
    router, clock = ScriptedRouter(), FixedClock(T0)
    metrics = LocalMetrics(router, clock=clock)
    router.set(100, blue=(50, 5))
    assert metrics.error_count(Slot.BLUE, T0) == 0  # a window opens when first asked about
    assert metrics.request_count(Slot.BLUE, T0) == 0
    clock.advance(timedelta(seconds=30))
    router.set(100, blue=(80, 7))
    assert metrics.error_count(Slot.BLUE, T0) == 2
    assert metrics.request_count(Slot.BLUE, T0) == 30
    assert metrics.error_count(Slot.GREEN, T0) == 0


def test_local_metrics_answers_older_windows_from_its_readings() -> None:
    router, clock = ScriptedRouter(), FixedClock(T0)
    metrics = LocalMetrics(router, clock=clock)
    for minute, errors in enumerate([0, 1, 3, 6, 10]):
        router.set(100, blue=(100 * minute, errors))
        metrics.error_count(Slot.BLUE, T0)
        clock.advance(timedelta(minutes=1))
    # now = T0+5m; the last reading at or before T0+2m had 3 errors; the current has 10.
    assert metrics.error_count(Slot.BLUE, T0 + timedelta(minutes=2)) == 7
    assert metrics.error_count(Slot.BLUE, T0 - timedelta(hours=1)) == 10  # from the earliest


def test_local_metrics_treats_a_restart_or_a_decrease_as_a_reset() -> None:
    router, clock = ScriptedRouter(), FixedClock(T0)
    metrics = LocalMetrics(router, clock=clock)
    router.set(100, blue=(10, 1))
    assert metrics.error_count(Slot.BLUE, T0) == 0
    router.set(100, blue=(20, 4))
    assert metrics.error_count(Slot.BLUE, T0) == 3
    router.set(200, blue=(30, 5), started="t1")  # another router: bigger, but counts from zero
    assert metrics.error_count(Slot.BLUE, T0) == 8
    router.set(200, blue=(2, 1), started="t1")  # a decrease: a reset we did not see happen
    assert metrics.error_count(Slot.BLUE, T0) == 9
    assert metrics.request_count(Slot.BLUE, T0) == 10 + 30 + 2


def test_local_metrics_without_a_router_has_no_data() -> None:
    router = ScriptedRouter()
    metrics = LocalMetrics(router, clock=FixedClock(T0))
    assert metrics.error_count(Slot.BLUE, T0) is None
    router.state = {"live": None, "pid": 1}  # an old router without counters
    assert metrics.request_count(Slot.BLUE, T0) is None
