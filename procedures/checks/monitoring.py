"""Post-deployment monitoring (the seed's Phase 4.1) as a pure evaluator.

The seed's ``post-deployment-monitoring.sh`` curls the health endpoint and a status endpoint
every 30 s for 30 minutes, counts failures and rolls back at a fixed count; its decision matrix
says "health check failures (>50% in 5 minutes)", "error rate spike" and "performance
degradation" against a baseline. Here the loop lives in the playbook's ``monitor`` step, which
collects one :class:`Sample` per interval; :func:`evaluate` decides after each sample, from the
samples alone, whether the new version must be rolled back. The rules, each with the numbers in
its reason:

1. **Health**: roll back when the share of failed health checks within the last
   ``health_window`` (5 minutes, as in the seed's decision matrix) exceeds
   ``health_failure_ratio``; only once at least 2 samples exist in that window, so one failed
   first check is not "100 % failed".
2. **Response time**: roll back when the *median of the last 3 samples* exceeds
   ``response_time_ms``. The median of three ignores one slow blip (a GC pause, a cold cache)
   but catches a version that is slow twice in a row; the rule applies once 3 samples exist.
   A failed probe counts with the time it took (a timeout is slow, a refusal is fast, and the
   health rule catches the latter).
3. **Errors**: roll back when the errors the platform counted for the new slot since the switch
   exceed ``error_threshold``. Error data is cumulative, so the newest sample that has any is
   used. When *no* sample has error data the rule is **inconclusive**: the verdict is neither
   ok nor a rollback, and the caller must not treat it as a pass (it holds, pages or fails).
   A sample whose metrics could not be read (``Sample.unavailable``: a 403, a query error, a
   partial result, with the platform's code and message) is no data too, but the verdict says
   why instead of "no error data".
4. **Response-time ratio** (when ``response_time_ratio`` is set and a baseline has
   ``response_ms_p50``): roll back when the median of the last 3 samples exceeds that many times
   the baseline's median.
5. **Error-rate ratio** (when ``error_rate_ratio`` is set and a baseline has an error rate):
   roll back when errors / requests since the switch exceeds that many times the baseline's
   rate. Only once ``MIN_REQUESTS_FOR_RATE`` requests were seen (2 errors in 3 requests is no
   rate), and a baseline rate of zero is floored at ``ERROR_RATE_FLOOR`` (0.1 %), since any
   error would otherwise be an infinite ratio; the absolute error threshold still applies.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from procedures.durations import format_duration
from procedures.policy import Monitoring

__all__ = [
    "ERROR_RATE_FLOOR",
    "HEALTH_WINDOW",
    "MIN_HEALTH_SAMPLES",
    "MIN_REQUESTS_FOR_RATE",
    "RESPONSE_SAMPLES",
    "MonitoringThresholds",
    "Sample",
    "Summary",
    "Verdict",
    "baseline_error_rate",
    "evaluate",
    "percentile",
    "summarize",
]

HEALTH_WINDOW = timedelta(minutes=5)
MIN_HEALTH_SAMPLES = 2
RESPONSE_SAMPLES = 3
MIN_REQUESTS_FOR_RATE = 20
ERROR_RATE_FLOOR = 0.001


@dataclass(frozen=True)
class MonitoringThresholds:
    """What makes a new version roll back; built from the policy's ``monitoring`` section."""

    duration: timedelta
    interval: timedelta
    health_failure_ratio: float
    response_time_ms: int
    error_threshold: int
    response_time_ratio: float | None = None
    error_rate_ratio: float | None = None
    health_window: timedelta = HEALTH_WINDOW

    @classmethod
    def from_policy(cls, monitoring: Monitoring) -> MonitoringThresholds:
        return cls(
            duration=monitoring.duration,
            interval=monitoring.interval,
            health_failure_ratio=monitoring.health_failure_ratio,
            response_time_ms=monitoring.response_time_ms,
            error_threshold=monitoring.error_threshold,
            response_time_ratio=monitoring.response_time_ratio,
            error_rate_ratio=monitoring.error_rate_ratio,
        )


@dataclass(frozen=True)
class Sample:
    """One monitoring check: the health probe, and the platform's counts since the switch.

    ``errors`` and ``requests`` are cumulative since the switch; None means the platform had
    no data at that moment. ``unavailable`` is why the platform's metrics could not be read
    at all (``MetricsUnavailable.reason``: Azure's code and message), None when they could.
    """

    at: datetime
    health_ok: bool
    response_ms: float
    errors: int | None
    requests: int | None = None
    unavailable: str | None = None


@dataclass(frozen=True)
class Verdict:
    """The decision after a sample. ``rollback`` is the one that acts."""

    ok: bool
    inconclusive: bool
    reason: str

    @property
    def rollback(self) -> bool:
        return not self.ok and not self.inconclusive


@dataclass(frozen=True)
class Summary:
    """Figures over a set of samples, for reports and the performance baseline."""

    checks: int
    failed: int
    response_ms_p50: float | None
    response_ms_p95: float | None
    errors: int | None
    requests: int | None

    @property
    def error_rate(self) -> float | None:
        if self.errors is None or not self.requests:
            return None
        return self.errors / self.requests

    def describe(self) -> str:
        """``60 checks, 0 failed, p95 120 ms, 0 errors``."""
        p95 = "no times"
        if self.response_ms_p95 is not None:
            p95 = f"p95 {self.response_ms_p95:.0f} ms"
        errors = "no error data" if self.errors is None else _plural(self.errors, "error")
        return f"{_plural(self.checks, 'check')}, {self.failed} failed, {p95}, {errors}"


def evaluate(
    samples: Sequence[Sample],
    thresholds: MonitoringThresholds,
    baseline: Mapping[str, Any] | None = None,
) -> Verdict:
    """Decide from ``samples`` (oldest first) whether to roll back; see the module docstring."""
    if not samples:
        return Verdict(False, True, "no monitoring samples yet")
    breaches = [reason for reason in (
        _health_rule(samples, thresholds),
        _response_rule(samples, thresholds),
        _error_rule(samples, thresholds),
        _response_ratio_rule(samples, thresholds, baseline),
        _error_rate_rule(samples, thresholds, baseline),
    ) if reason]
    if breaches:
        return Verdict(False, False, "; ".join(breaches))
    summary = summarize(samples)
    if summary.errors is None:
        why = next((s.unavailable for s in reversed(samples) if s.unavailable), None)
        if why is not None:
            return Verdict(False, True,
                           f"the platform's metrics could not be read ({why}): the error rule "
                           f"is inconclusive ({summary.describe()})")
        return Verdict(False, True,
                       f"no error data from the platform: the error rule is inconclusive "
                       f"({summary.describe()})")
    return Verdict(True, False, f"within thresholds: {summary.describe()}")


def summarize(samples: Sequence[Sample]) -> Summary:
    """Checks, failures, p50/p95 response time and the newest error/request counts."""
    times = [sample.response_ms for sample in samples]
    return Summary(
        checks=len(samples),
        failed=sum(1 for sample in samples if not sample.health_ok),
        response_ms_p50=percentile(times, 50),
        response_ms_p95=percentile(times, 95),
        errors=_latest(samples, "errors"),
        requests=_latest(samples, "requests"),
    )


def percentile(values: Sequence[float], q: float) -> float | None:
    """The nearest-rank ``q``-th percentile (0 < q <= 100) of ``values``; None if empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def baseline_error_rate(baseline: Mapping[str, Any] | None) -> float | None:
    """The baseline's errors per request: its ``error_rate``, else ``error_count`` /
    ``request_count``; None when it has neither."""
    if not baseline:
        return None
    rate = _number(baseline.get("error_rate"))
    if rate is not None:
        return rate
    errors = _number(baseline.get("error_count"))
    requests = _number(baseline.get("request_count"))
    if errors is None or not requests:
        return None
    return errors / requests


# -- the rules: each returns the reason to roll back, or None -------------------------------


def _health_rule(samples: Sequence[Sample], thresholds: MonitoringThresholds) -> str | None:
    newest = samples[-1].at
    window = [sample for sample in samples if sample.at >= newest - thresholds.health_window]
    if len(window) < MIN_HEALTH_SAMPLES:
        return None
    failed = sum(1 for sample in window if not sample.health_ok)
    ratio = failed / len(window)
    if ratio <= thresholds.health_failure_ratio:
        return None
    scope = (f" in the last {format_duration(thresholds.health_window)}"
             if len(window) < len(samples) else "")
    return (f"{failed} of {len(window)} health checks failed{scope} "
            f"({_percent(ratio)} > {_percent(thresholds.health_failure_ratio)})")


def _response_rule(samples: Sequence[Sample], thresholds: MonitoringThresholds) -> str | None:
    median = _recent_median(samples)
    if median is None or median <= thresholds.response_time_ms:
        return None
    return (f"the median response time of the last {RESPONSE_SAMPLES} checks was "
            f"{median:.0f} ms (> {thresholds.response_time_ms} ms)")


def _error_rule(samples: Sequence[Sample], thresholds: MonitoringThresholds) -> str | None:
    errors = _latest(samples, "errors")
    if errors is None or errors <= thresholds.error_threshold:
        return None
    return (f"{_plural(errors, 'error')} since the switch "
            f"(> {thresholds.error_threshold} allowed)")


def _response_ratio_rule(
    samples: Sequence[Sample], thresholds: MonitoringThresholds,
    baseline: Mapping[str, Any] | None,
) -> str | None:
    ratio = thresholds.response_time_ratio
    reference = _number(baseline.get("response_ms_p50")) if baseline else None
    median = _recent_median(samples)
    if ratio is None or not reference or reference <= 0 or median is None:
        return None
    if median <= ratio * reference:
        return None
    return (f"the median response time of the last {RESPONSE_SAMPLES} checks was "
            f"{median:.0f} ms, {median / reference:.1f}x the baseline's {reference:.0f} ms "
            f"(> {ratio:g}x)")


def _error_rate_rule(
    samples: Sequence[Sample], thresholds: MonitoringThresholds,
    baseline: Mapping[str, Any] | None,
) -> str | None:
    ratio = thresholds.error_rate_ratio
    reference = baseline_error_rate(baseline)
    errors = _latest(samples, "errors")
    requests = _latest(samples, "requests")
    if (ratio is None or reference is None or errors is None or requests is None
            or requests < MIN_REQUESTS_FOR_RATE):
        return None
    rate = errors / requests
    floor = max(reference, ERROR_RATE_FLOOR)
    if rate <= ratio * floor:
        return None
    return (f"error rate {_percent(rate, 1)} ({errors} of {requests} requests) is "
            f"{rate / floor:.1f}x the baseline's {_percent(reference, 1)} (> {ratio:g}x)")


# -- helpers --------------------------------------------------------------------------------


def _recent_median(samples: Sequence[Sample]) -> float | None:
    if len(samples) < RESPONSE_SAMPLES:
        return None
    return float(statistics.median(s.response_ms for s in samples[-RESPONSE_SAMPLES:]))


def _latest(samples: Sequence[Sample], field: str) -> int | None:
    for sample in reversed(samples):
        value = getattr(sample, field)
        if value is not None:
            return int(value)
    return None


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _percent(ratio: float, digits: int = 0) -> str:
    return f"{ratio * 100:.{digits}f}%"


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"
