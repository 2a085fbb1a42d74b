"""Post-deployment monitoring (the seed's Phase 4.1 and its rollback decision matrix) as a pure
evaluator.

The seed's ``post-deployment-monitoring.sh`` probes the public URL every 30 s for 30 minutes,
rolls back at ``ALERT_THRESHOLD`` (10) failed health checks and only *counts warnings* for a
slow response (> 2000 ms), errors (> 5 per 5 minutes) and slow database queries (> 100 ms),
saying at the end to investigate when there were more than 20. Its decision matrix adds the
automatic triggers "health check failures (>50% in 5 minutes)", "error rate spike (>10x
baseline)", "critical functionality broken" and "database connection failures", and lists
"performance degradation (>2x baseline)" among the *manual* rollback scenarios.

Here the loop lives in the playbook's ``monitor`` step, which collects one :class:`Sample` per
interval; :func:`evaluate` looks at the samples after each one and says three things
(:class:`Verdict`): whether to roll back (``rollback``, with the reasons), which warnings the
newest check raised (``warnings``), and whether a person should consider a manual rollback
(``manual``).

Automatic rollback (each reason carries its numbers):

1. **Health ratio**: more than ``health_failure_ratio`` of the health checks within the last
   ``health_window`` failed; only once at least 2 samples exist in that window, so one failed
   first check is not "100 % failed".
2. **Health total**: ``health_failures`` failed health checks since monitoring began (the
   seed's ``ALERT_THRESHOLD``), however spread out.
3. **Error rate**: errors / requests since the switch exceed ``error_rate_ratio`` times the
   baseline's rate. Only once ``MIN_REQUESTS_FOR_RATE`` requests were seen (2 errors in 3
   requests is no rate), and a baseline rate of zero is floored at ``ERROR_RATE_FLOOR``
   (0.1 %), since any error would otherwise be an infinite ratio. No baseline: the rule has
   nothing to compare with and does not act (the monitor says so).
4. **Database connection failures**: a ``database_health`` path failed ``critical_failures``
   checks in a row.
5. **Critical functionality broken**: a smoke path failed ``critical_failures`` checks in a row.

Warnings (the newest check's; the monitor tallies them):

- **Slow response**: the slowest probe of the check, or the platform's p95 (once
  ``MIN_LATENCY_REQUESTS`` requests were counted), exceeds ``response_time_ms``.
- **Errors**: more than ``error_threshold`` errors within the last ``error_window`` (error
  data is cumulative since the switch; the window's errors are the newest count less the count
  at the window's start).
- **Slow database**: the average query time exceeds ``db_query_ms`` (where measured).

Manual: the median of the last 3 checks' response time exceeds ``response_time_ratio`` times the
baseline's median, or the platform's p95 that many times the baseline's p95. A baseline faster
than ``RESPONSE_FLOOR_MS`` (50 ms) compares as 50 ms: 4 ms becoming 9 ms is noise, not a
degradation.

No error data at all leaves the verdict ``inconclusive`` (neither ok nor a rollback): the
error-rate rule could not be applied. The monitor decides what that means (``no_data``).
A sample whose metrics could not be read (``Sample.unavailable``: a 403, a query error, a
partial result, with the platform's code and message) is no data too, and the reason says why.
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
    "MIN_LATENCY_REQUESTS",
    "MIN_REQUESTS_FOR_RATE",
    "RESPONSE_SAMPLES",
    "MonitoringThresholds",
    "Sample",
    "Summary",
    "Verdict",
    "baseline_error_rate",
    "describe_matrix",
    "evaluate",
    "percentile",
    "summarize",
]

HEALTH_WINDOW = timedelta(minutes=5)
MIN_HEALTH_SAMPLES = 2
RESPONSE_SAMPLES = 3
MIN_REQUESTS_FOR_RATE = 20
MIN_LATENCY_REQUESTS = 20  # a platform p95 over fewer requests is a maximum, not a p95
ERROR_RATE_FLOOR = 0.001
RESPONSE_FLOOR_MS = 50.0  # a baseline faster than this compares as this (4 ms -> 9 ms is noise)

# Warning kinds, as counted in the monitor's tally.
SLOW_RESPONSE, ERRORS, SLOW_DATABASE = "slow response", "errors", "slow database"


@dataclass(frozen=True)
class MonitoringThresholds:
    """The decision matrix's numbers; built from the policy's ``monitoring`` section."""

    duration: timedelta
    interval: timedelta
    health_failure_ratio: float
    response_time_ms: int
    error_threshold: int
    response_time_ratio: float | None = None
    error_rate_ratio: float | None = None
    health_window: timedelta = HEALTH_WINDOW
    health_failures: int = 10
    critical_failures: int = 2
    error_window: timedelta = timedelta(minutes=5)
    db_query_ms: float = 100.0
    warnings_investigate: int = 20

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
            health_window=monitoring.health_window,
            health_failures=monitoring.health_failures,
            critical_failures=monitoring.critical_failures,
            error_window=monitoring.error_window,
            db_query_ms=monitoring.db_query_ms,
            warnings_investigate=monitoring.warnings_investigate,
        )


@dataclass(frozen=True)
class Sample:
    """One monitoring check: the probes of the public URL and the platform's figures.

    ``health_ok`` is whether every health path answered 2xx; ``response_ms`` the slowest probe
    of the check. ``smoke_failed`` and ``database_failed`` name the smoke and database paths
    that did not answer 2xx. ``errors`` and ``requests`` are cumulative since the switch; None
    means the platform had no data at that moment. ``unavailable`` is why the platform's
    metrics could not be read at all (``MetricsUnavailable.reason``), None when they could.
    ``p95_ms`` is the platform's p95 request duration since the switch and ``db_query_ms`` the
    average database query time, each None where not measured.
    """

    at: datetime
    health_ok: bool
    response_ms: float
    errors: int | None
    requests: int | None = None
    unavailable: str | None = None
    smoke_failed: tuple[str, ...] = ()
    database_failed: tuple[str, ...] = ()
    p95_ms: float | None = None
    db_query_ms: float | None = None


@dataclass(frozen=True)
class Verdict:
    """The decision after a sample. ``rollback`` is the one that acts; ``warnings`` are the
    newest check's warnings (kind, text); ``manual`` is why a person should consider a manual
    rollback (None: no reason)."""

    ok: bool
    inconclusive: bool
    reason: str
    warnings: tuple[tuple[str, str], ...] = ()
    manual: str | None = None

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
        """``60 checks, 0 failed, p95 120 ms, 0 errors`` (``no error data``: never "0")."""
        p95 = "no times"
        if self.response_ms_p95 is not None:
            p95 = f"p95 {self.response_ms_p95:.0f} ms"
        errors = "no error data" if self.errors is None else _plural(self.errors, "error")
        return f"{_plural(self.checks, 'check')}, {self.failed} failed, {p95}, {errors}"


def describe_matrix(t: MonitoringThresholds) -> str:
    """The decision matrix in one sentence, for a plan shown before anything runs (the dry
    run); the monitor's own opening report adds the baseline and the paths it probes."""
    automatic = [f"more than {t.health_failure_ratio:.0%} of health checks fail within "
                 f"{format_duration(t.health_window)}",
                 f"{t.health_failures} fail in total"]
    if t.error_rate_ratio:
        automatic.append(f"the error rate exceeds {t.error_rate_ratio:g}x the previous "
                         "version's baseline")
    automatic.append(f"a smoke or database path fails {t.critical_failures} checks in a row")
    manual = (f"; a person decides on responses over {t.response_time_ratio:g}x the baseline"
              if t.response_time_ratio else "")
    return (f"automatic rollback if {', '.join(automatic[:-1])} or {automatic[-1]}; warnings "
            f"(never a rollback): responses over {t.response_time_ms} ms, more than "
            f"{t.error_threshold} errors in {format_duration(t.error_window)}, database "
            f"queries over {t.db_query_ms:g} ms{manual}")


def evaluate(
    samples: Sequence[Sample],
    thresholds: MonitoringThresholds,
    baseline: Mapping[str, Any] | None = None,
) -> Verdict:
    """Decide from ``samples`` (oldest first); see the module docstring."""
    if not samples:
        return Verdict(False, True, "no monitoring samples yet")
    warnings = tuple(_warnings(samples, thresholds))
    manual = _manual(samples, thresholds, baseline)
    breaches = [reason for reason in (
        _health_rule(samples, thresholds),
        _health_total_rule(samples, thresholds),
        _error_rate_rule(samples, thresholds, baseline),
        _critical_rule(samples, thresholds, "database_failed",
                       "database connection failures: {path} failed {n} checks in a row"),
        _critical_rule(samples, thresholds, "smoke_failed",
                       "critical functionality broken: {path} failed {n} checks in a row"),
    ) if reason]
    if breaches:
        return Verdict(False, False, "; ".join(breaches), warnings, manual)
    summary = summarize(samples)
    if summary.errors is None:
        why = next((s.unavailable for s in reversed(samples) if s.unavailable), None)
        if why is not None:
            return Verdict(False, True,
                           f"the platform's metrics could not be read ({why}): no error data, "
                           f"the error rule is inconclusive ({summary.describe()})",
                           warnings, manual)
        return Verdict(False, True,
                       f"no error data from the platform: the error rule is inconclusive "
                       f"({summary.describe()})", warnings, manual)
    return Verdict(True, False, f"within thresholds: {summary.describe()}", warnings, manual)


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


# -- automatic rollback: each returns the reason to roll back, or None ------------------------


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


def _health_total_rule(samples: Sequence[Sample],
                       thresholds: MonitoringThresholds) -> str | None:
    failed = sum(1 for sample in samples if not sample.health_ok)
    if failed < thresholds.health_failures:
        return None
    return (f"{failed} health checks failed in total (the alert threshold is "
            f"{thresholds.health_failures})")


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


def _critical_rule(samples: Sequence[Sample], thresholds: MonitoringThresholds,
                   field: str, template: str) -> str | None:
    needed = thresholds.critical_failures
    if len(samples) < needed:
        return None
    recent = [set(getattr(sample, field)) for sample in samples[-needed:]]
    failing = set.intersection(*recent)
    if not failing:
        return None
    newest: tuple[str, ...] = getattr(samples[-1], field)
    return "; ".join(template.format(path=path, n=needed) for path in newest
                     if path in failing)


# -- warnings and the manual scenario ---------------------------------------------------------


def _warnings(samples: Sequence[Sample],
              thresholds: MonitoringThresholds) -> list[tuple[str, str]]:
    newest = samples[-1]
    found: list[tuple[str, str]] = []
    limit = thresholds.response_time_ms
    slow = [f"a check took {newest.response_ms:.0f} ms"] if newest.response_ms > limit else []
    if (newest.p95_ms is not None and newest.p95_ms > limit
            and (newest.requests is None or newest.requests >= MIN_LATENCY_REQUESTS)):
        slow.append(f"the platform's p95 is {newest.p95_ms:.0f} ms")
    if slow:
        found.append((SLOW_RESPONSE, f"slow response: {' and '.join(slow)} (> {limit} ms)"))
    recent = _recent_errors(samples, thresholds.error_window)
    if recent is not None and recent > thresholds.error_threshold:
        found.append((ERRORS, f"elevated errors: {_plural(recent, 'error')} in the last "
                              f"{format_duration(thresholds.error_window)} "
                              f"(> {thresholds.error_threshold})"))
    if newest.db_query_ms is not None and newest.db_query_ms > thresholds.db_query_ms:
        found.append((SLOW_DATABASE, f"slow database queries: {newest.db_query_ms:.0f} ms "
                                     f"average (> {thresholds.db_query_ms:g} ms)"))
    return found


def _recent_errors(samples: Sequence[Sample], window: timedelta) -> int | None:
    """Errors within ``window`` before the newest sample: the newest cumulative count less the
    count at the window's start (0 when monitoring is younger than the window)."""
    if samples[-1].errors is None:
        return None
    start = samples[-1].at - window
    before = [s.errors for s in samples[:-1] if s.at <= start and s.errors is not None]
    return max(samples[-1].errors - (before[-1] if before else 0), 0)


def _manual(samples: Sequence[Sample], thresholds: MonitoringThresholds,
            baseline: Mapping[str, Any] | None) -> str | None:
    ratio = thresholds.response_time_ratio
    if ratio is None or not baseline:
        return None
    of = f" ({baseline['version']})" if baseline.get("version") else ""
    reference = _number(baseline.get("response_ms_p50"))
    median = _recent_median(samples)
    if (reference is not None and reference > 0 and median is not None
            and median > ratio * max(reference, RESPONSE_FLOOR_MS)):
        return (f"performance degradation: the median response time of the last "
                f"{RESPONSE_SAMPLES} checks is {median:.0f} ms, {median / reference:.1f}x the "
                f"baseline's {reference:.0f} ms{of} (> {ratio:g}x)")
    newest = samples[-1]
    reference = _number(baseline.get("platform_p95_ms"))
    if (reference is not None and reference > 0 and newest.p95_ms is not None
            and newest.p95_ms > ratio * max(reference, RESPONSE_FLOOR_MS)
            and (newest.requests is None or newest.requests >= MIN_LATENCY_REQUESTS)):
        return (f"performance degradation: the platform's p95 is {newest.p95_ms:.0f} ms, "
                f"{newest.p95_ms / reference:.1f}x the baseline's {reference:.0f} ms{of} "
                f"(> {ratio:g}x)")
    return None


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
