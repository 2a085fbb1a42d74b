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
THRESHOLDS = MonitoringThresholds.from_policy(Monitoring(
    duration=timedelta(minutes=30), interval=timedelta(seconds=30),
    health_failure_ratio=0.5, response_time_ms=2000, error_threshold=10,
))
WITH_RATIOS = MonitoringThresholds.from_policy(Monitoring(
    duration=timedelta(minutes=30), interval=timedelta(seconds=30),
    health_failure_ratio=0.5, response_time_ms=2000, error_threshold=10,
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
) -> list[Sample]:
    """Samples from a compact description: ``health`` is a string of ``+`` (ok) / ``-``."""
    count = len(health)

    def spread(value: Any) -> list[Any]:
        return list(value) if isinstance(value, list | tuple) else [value] * count

    times, errs, reqs = spread(ms), spread(errors), spread(requests)
    return [Sample(at=T0 + every * i, health_ok=mark == "+", response_ms=times[i],
                   errors=errs[i], requests=reqs[i])
            for i, mark in enumerate(health)]


@dataclass(frozen=True)
class Case:
    samples: list[Sample]
    thresholds: MonitoringThresholds = THRESHOLDS
    baseline: Mapping[str, Any] | None = None
    outcome: str = "ok"  # ok | rollback | inconclusive
    reason: str = ""


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
    "one slow blip is ignored": Case(series("++++", ms=[100, 5000, 100, 120], errors=0)),
    "slow twice in a row": Case(series("++++", ms=[100, 100, 2500, 2600], errors=0),
                                outcome="rollback",
                                reason="the median response time of the last 3 checks was "
                                       "2500 ms (> 2000 ms)"),
    "slow needs three samples": Case(series("++", ms=[2500, 2600], errors=0)),
    "errors at the threshold pass": Case(series("+++", errors=[0, 4, 10])),
    "errors over the threshold": Case(series("+++", errors=[0, 4, 11]), outcome="rollback",
                                      reason="11 errors since the switch (> 10 allowed)"),
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
               "expression named 'Sucess'): the error rule is inconclusive (3 checks, 0 "
               "failed, p95 100 ms, no error data)"),
    "a reading after an unreadable one decides": Case(
        [dataclasses.replace(series("+", errors=None)[0], unavailable="PartialError: x"),
         *series("++", errors=12)[1:]], outcome="rollback",
        reason="12 errors since the switch (> 10 allowed)"),
    "newest data counts when the last sample has none": Case(
        series("+++", errors=[0, 12, None]), outcome="rollback",
        reason="12 errors since the switch (> 10 allowed)"),
    "health rolls back even without error data": Case(
        series("---", errors=None), outcome="rollback",
        reason="3 of 3 health checks failed (100% > 50%)"),
    "no samples": Case([], outcome="inconclusive", reason="no monitoring samples yet"),
    "several rules at once": Case(series("---", ms=3000, errors=20), outcome="rollback",
                                  reason="3 of 3 health checks failed (100% > 50%); the median "
                                         "response time of the last 3 checks was 3000 ms "
                                         "(> 2000 ms); 20 errors since the switch "
                                         "(> 10 allowed)"),
    "response ratio within": Case(series("+++", ms=140, errors=0), WITH_RATIOS, BASELINE),
    "response ratio crossed": Case(series("+++", ms=[100, 160, 170], errors=0), WITH_RATIOS,
                                   BASELINE, outcome="rollback",
                                   reason="the median response time of the last 3 checks was "
                                          "160 ms, 1.6x the baseline's 100 ms (> 1.5x)"),
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
