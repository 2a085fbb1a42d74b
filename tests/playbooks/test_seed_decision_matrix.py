"""The seed's rollback decision matrix, as a table, on both platforms' doubles.

Each row is one line of the seed (Phase 4.1 and "Rollback Decision Matrix"): an automatic
trigger must roll back (the ``monitor`` step raises, so the engine switches back), a warning
must not (the step passes and counts it), and a performance degradation over 2x the baseline
must ask a person (the step passes, and the thread says so, names the rollback approvers and
points at the Roll back button).

The monitor step is driven as in ``test_standard_steps`` (:class:`StepRunner`, just after the
switch to green; the clock advances only through the step's sleeps). The public URL is an
``httpx.MockTransport`` whose answers and latencies the row scripts; the HTTP checker's timer is
the transport's own clock, so a 2500 ms answer costs no wall time.

- **local**: the in-memory :class:`~tests.fakes.platform.FakePlatform` and a metrics source
  with the local router's shape (cumulative error and request counts since the switch; no
  p95, as ``LocalMetrics``).
- **azure**: the real :class:`~procedures.platforms.azure.monitoring.AzureMetrics` (the
  SDK's LogsQueryClient) against the ARM double's Logs endpoint, which answers the Application
  Insights request counts and p95 the row sets for the green container group's role.

Neither platform measures database query time today, so the "slow database" row gives both
sources a ``db_query_ms`` (the optional ``ProvidesDatabaseTime``) in the test.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import httpx
import pytest

from procedures.checks.http import HttpChecker
from procedures.clock import FixedClock
from procedures.errors import StepFailure
from procedures.model import Slot
from procedures.platforms.base import Platform
from procedures.playbook import MetricsSource, ProvidesLatency
from procedures.playbooks import standard_playbook
from procedures.playbooks.standard import ProvidesDatabaseTime
from tests.azure.arm_double import ArmDouble
from tests.azure.conftest import certificate  # noqa: F401 (the ARM double's fixture)
from tests.azure.test_azure_monitoring import metrics as azure_metrics
from tests.fakes.platform import FakePlatform
from tests.fakes.policies import BASE, make_policy
from tests.playbooks.test_standard_steps import StepRunner

SWITCHED = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)
HEALTH, SMOKE, DATABASE = "/health", "/api/v1/status", "/api/v1/health/database"
BASELINE = {"version": "1.0.0", "response_ms_p50": 100.0, "response_ms_p95": 150.0,
            "platform_p95_ms": 200.0, "error_count": 10, "request_count": 1000,
            "error_rate": 0.01, "samples": 60}
APPROVER = "U0LEAD1"  # approvals.rollback of the base policy


@dataclass(frozen=True)
class Row:
    """One line of the matrix: what the world does, and what must happen."""

    expect: str  # rollback | warning | manual
    said: str  # in the failure (rollback), a warning report (warning) or the manual report
    failing: dict[str, Callable[[int], bool]] = field(default_factory=dict)  # path -> check n
    latency_ms: float = 5.0  # every answer's latency
    requests: int = 1000
    errors: int = 0
    p95_ms: float | None = 100.0  # Application Insights only (local has no p95)
    db_query_ms: float | None = None
    baseline: dict[str, Any] | None = field(default_factory=lambda: dict(BASELINE))
    kind: str = ""  # the warning kind counted (expect == warning)


def ALWAYS(check: int) -> bool:
    return True

MATRIX = {
    # -- automatic rollback triggers ---------------------------------------------------------
    "health checks failing > 50% within 5 minutes": Row(
        "rollback", "2 of 2 health checks failed (100% > 50%)", {HEALTH: ALWAYS}),
    "10 health failures in total (ALERT_THRESHOLD)": Row(
        "rollback", "10 health checks failed in total (the alert threshold is 10)",
        {HEALTH: lambda n: n % 3 == 0}),  # one in three: never over 50 %
    "error rate > 10x the previous version's baseline": Row(
        "rollback", "error rate 15.0% (150 of 1000 requests) is 15.0x the baseline's 1.0% "
                    "(> 10x)", errors=150),
    "database connection failures": Row(
        "rollback", f"database connection failures: {DATABASE} failed 2 checks in a row",
        {DATABASE: ALWAYS}),
    "critical functionality broken (a smoke path)": Row(
        "rollback", f"critical functionality broken: {SMOKE} failed 2 checks in a row",
        {SMOKE: ALWAYS}),
    # -- warnings: counted, never a rollback -------------------------------------------------
    "response time > 2000 ms": Row(
        "warning", "slow response: a check took 2500 ms", latency_ms=2500.0, baseline=None,
        kind="slow response"),
    "errors > 5 per 5 minutes": Row(
        "warning", "elevated errors: 8 errors in the last 5m (> 5)", errors=8,
        kind="errors"),
    "database query time > 100 ms": Row(
        "warning", "slow database queries: 150 ms average (> 100 ms)", db_query_ms=150.0,
        kind="slow database"),
    "more than 10 errors since the switch (rolled back before; a warning now)": Row(
        "warning", "elevated errors: 40 errors in the last 5m (> 5)", errors=40,
        kind="errors"),
    # -- the manual scenario -----------------------------------------------------------------
    "performance degradation > 2x baseline asks a person": Row(
        "manual", "performance degradation", latency_ms=300.0, p95_ms=600.0),
}


class Web:
    """The public URL: answers each path as the row says; its clock is the checker's timer."""

    def __init__(self, row: Row) -> None:
        self.row = row
        self.seconds = 0.0
        self.check = 0  # the monitoring check being answered (1-based)

    def timer(self) -> float:
        return self.seconds

    def __call__(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path == HEALTH:
            self.check += 1
        self.seconds += self.row.latency_ms / 1000
        failing = self.row.failing.get(path)
        if failing is not None and failing(self.check):
            return httpx.Response(503, json={"status": "unhealthy"})
        return httpx.Response(200, json={"status": "healthy"})


class RouterCounts:
    """The local router's figures: cumulative counts since the switch, no p95."""

    def __init__(self, row: Row) -> None:
        self.row = row

    def error_count(self, slot: Slot, since: datetime) -> int | None:
        return self.row.errors

    def request_count(self, slot: Slot, since: datetime) -> int | None:
        return self.row.requests


class WithDatabaseTime:
    """A metrics source plus ``db_query_ms`` (no platform measures it yet)."""

    def __init__(self, inner: Any, db_query_ms: float) -> None:
        self.inner, self.value = inner, db_query_ms
        self.latency_source = getattr(inner, "latency_source", None)

    def error_count(self, slot: Slot, since: datetime) -> int | None:
        return cast(int | None, self.inner.error_count(slot, since))

    def request_count(self, slot: Slot, since: datetime) -> int | None:
        return cast(int | None, self.inner.request_count(slot, since))

    def db_query_ms(self, slot: Slot, since: datetime) -> float | None:
        return self.value


class WithDatabaseTimeAndLatency(WithDatabaseTime):
    """The same, for a source that also has a p95 (Application Insights)."""

    def duration_p95_ms(self, slot: Slot, since: datetime) -> float | None:
        return cast(float | None, self.inner.duration_p95_ms(slot, since))


def monitor(row: Row, metrics: MetricsSource) -> tuple[StepRunner, StepFailure | None,
                                                        dict[str, Any] | None]:
    """Run the monitor step just after a switch to green; its failure, or its result."""
    production = dict(BASE["environments"]["production"], smoke=[SMOKE])
    policy = make_policy(environments={"production": production}, monitoring={
        "duration": "40s", "interval": "1s", "database_health": [DATABASE]})
    if row.db_query_ms is not None:
        wrap = (WithDatabaseTimeAndLatency if isinstance(metrics, ProvidesLatency)
                else WithDatabaseTime)
        metrics = cast(MetricsSource, wrap(metrics, row.db_query_ms))
        assert isinstance(metrics, ProvidesDatabaseTime)
    ctx = StepRunner(cast(Platform, FakePlatform()), metrics, policy, FixedClock(SWITCHED),
                     "2.0.0")
    ctx.known_baseline = row.baseline
    ctx.results["snapshot"] = {"live_slot": "blue", "live_version": "1.0.0",
                               "target_slot": "green"}
    ctx.results["switch_traffic"] = {"switched_at": SWITCHED.isoformat()}
    web = Web(row)
    http = HttpChecker(transport=httpx.MockTransport(web), timer=web.timer)
    try:
        result = ctx.run(standard_playbook(http=http, monitoring=policy.monitoring), "monitor")
    except StepFailure as failure:
        return ctx, failure, None
    finally:
        http.close()
    return ctx, None, dict(result or {})


def judge(name: str, row: Row, ctx: StepRunner, failure: StepFailure | None,
          result: dict[str, Any] | None) -> None:
    reports = "\n".join(ctx.reports)
    if row.expect == "rollback":
        assert failure is not None, f"{name}: not rolled back\n{reports}"
        assert row.said in failure.message, failure.message
        assert "traffic goes back to 1.0.0 on blue" in (failure.hint or "")
        assert "(automatic rollback trigger)" in reports
        return
    assert failure is None, f"{name}: rolled back: {failure}"
    assert result is not None
    if row.expect == "warning":
        assert result["warning_kinds"].get(row.kind, 0) >= 1, result["warning_kinds"]
        warned = [r for r in ctx.reports if r.startswith(":large_orange_circle: Warning")]
        assert any(row.said in r and "not a rollback" in r for r in warned), warned
        assert result["manual_rollback"] is None
        return
    manual = [r for r in ctx.reports if "Manual rollback decision needed" in r]
    assert len(manual) == 1, reports  # said once, however long it lasts
    assert row.said in manual[0] and f"<@{APPROVER}>" in manual[0]
    assert "*Roll back* button" in manual[0] and "1.0.0 on blue" in manual[0]
    assert result["manual_rollback"] and row.said in result["manual_rollback"]


# -- the local platform's doubles --------------------------------------------------------------


@pytest.mark.parametrize("name", MATRIX)
def test_local(name: str) -> None:
    row = MATRIX[name]
    judge(name, row, *monitor(row, RouterCounts(row)))


# -- the Azure doubles (Application Insights through the ARM double's Logs) --------------------


@pytest.fixture(scope="module")
def double(certificate: tuple[Path, Path]) -> Iterator[ArmDouble]:  # noqa: F811
    arm = ArmDouble(*certificate).start()
    yield arm
    arm.stop()


@pytest.mark.slow  # an HTTPS server
@pytest.mark.parametrize("name", MATRIX)
def test_azure(name: str, double: ArmDouble,
               certificate: tuple[Path, Path]) -> None:  # noqa: F811
    row = MATRIX[name]
    double.set_requests("qlp-green", total=row.requests, failed=row.errors, p95_ms=row.p95_ms)
    source = azure_metrics(double, certificate, FixedClock(SWITCHED))
    try:
        ctx, failure, result = monitor(row, source)
    finally:
        source.close()
    judge(name, row, ctx, failure, result)
    if failure is None and result is not None:
        assert result["platform_p95_source"] == "Application Insights"
        assert result["platform_p95_ms"] == row.p95_ms
