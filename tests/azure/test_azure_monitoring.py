"""AzureMetrics with the real LogsQueryClient against the Logs endpoint of the local double.

The client trusts the double's self-signed certificate and gets a static token; the double
answers ``POST /v1/workspaces/{id}/query`` (and ``/v1{resourceId}/query``) from the request
counts and p95 duration each cloud role name was given. The last tests run the standard
playbook's ``monitor`` step (``StepRunner`` from the step tests, HTTP checks over a mock
transport) with a metrics source that also ``ProvidesLatency``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import httpx
import pytest

from procedures.checks.http import HttpChecker
from procedures.clock import FixedClock
from procedures.errors import ConfigError, ExternalServiceError, MetricsUnavailable
from procedures.model import Slot
from procedures.platforms.azure.monitoring import AzureMetrics, request_counts_query
from procedures.platforms.azure.settings import AzureSettings, parse_azure_settings
from procedures.platforms.base import Platform
from procedures.playbook import MetricsSource, ProvidesLatency
from procedures.playbooks import standard_playbook
from procedures.playbooks.standard import MIN_LATENCY_REQUESTS
from tests.azure.arm_double import SUBSCRIPTION, ArmDouble
from tests.azure.arm_double.logs import DEFAULT_COMPONENT
from tests.azure.test_azure_platform import StaticTokenCredential
from tests.playbooks.test_standard_steps import StepRunner, step_policy

pytestmark = pytest.mark.slow  # starts an HTTPS server

WORKSPACE = "11111111-2222-3333-4444-555555555555"
COMPONENT = DEFAULT_COMPONENT
NOW = datetime(2026, 12, 1, 11, 0, tzinfo=UTC)



@pytest.fixture
def double(certificate: tuple[Path, Path]) -> Iterator[ArmDouble]:
    arm = ArmDouble(*certificate).start()
    yield arm
    arm.stop()


def settings(double: ArmDouble, **insights: Any) -> AzureSettings:
    return parse_azure_settings({
        "subscription_id": SUBSCRIPTION, "resource_group": "prod-qlp-rg", "location": "eastus",
        "container_group_prefix": "qlp", "registry": "prodqlpacr", "image": "qlp",
        "identity": "qlp-acr-pull", "dns_name_label": "qlp-prod",
        "front_door": {"kind": "standard", "profile": "p", "endpoint": "e", "route": "r",
                       "origin_groups": {"blue": "b", "green": "g"}},
        "app_insights": {"endpoint": double.url, **(insights or {"workspace_id": WORKSPACE})},
    }, where="environments.production.azure")


def metrics(double: ArmDouble, certificate: tuple[Path, Path], clock: FixedClock,
            **insights: Any) -> AzureMetrics:
    return AzureMetrics(settings(double, **insights), credential=StaticTokenCredential(),
                        client_kwargs={"connection_verify": str(certificate[0]),
                                       "retry_total": 0},
                        clock=clock)


def test_counts_per_colour_from_a_workspace_query(double: ArmDouble,
                                                  certificate: tuple[Path, Path]) -> None:
    clock = FixedClock(NOW)
    source = metrics(double, certificate, clock)
    typed: MetricsSource = source
    assert typed is source
    double.set_requests("qlp-green", total=240, failed=37)
    double.set_requests("qlp-blue", total=500, failed=1)
    since = NOW - timedelta(minutes=5)

    assert source.error_count(Slot.GREEN, since) == 37
    assert source.request_count(Slot.GREEN, since) == 240
    assert source.error_count(Slot.BLUE, since) == 1
    calls = double.calls_to("logs", "POST")
    # One query answers both figures of a slot (reused while fresh): green once, blue once.
    assert len(calls) == 2
    first = calls[0]
    assert first.path == f"/v1/workspaces/{WORKSPACE}/query" and first.authorized
    assert 'AppRoleName == "qlp-green"' in first.body["query"]
    assert "sumif(ItemCount, Success == false)" in first.body["query"]
    assert first.body["timespan"].startswith("2026-12-01T10:55:00")

    # Later, the answer is asked again (not cached forever).
    clock.advance(timedelta(seconds=6))
    double.set_requests("qlp-green", total=300, failed=40)
    assert source.error_count(Slot.GREEN, since) == 40
    source.close()


def test_no_rows_and_no_requests_are_no_data_a_failure_raises(
        double: ArmDouble, certificate: tuple[Path, Path]) -> None:
    clock = FixedClock(NOW)
    source = metrics(double, certificate, clock, resource_id=COMPONENT)
    since = NOW - timedelta(minutes=5)

    # No rows for the role: None (inconclusive), never 0.
    assert source.error_count(Slot.GREEN, since) is None
    assert source.request_count(Slot.GREEN, since) is None
    call = double.calls_to("logs", "POST")[-1]
    assert call.path == f"/v1{COMPONENT}/query"
    assert 'cloud_RoleName == "qlp-green"' in call.body["query"]
    assert "sumif(itemCount, tobool(success) == false)" in call.body["query"]

    # A row saying no requests at all: still no data.
    clock.advance(timedelta(seconds=10))
    double.set_requests("qlp-green", total=0, failed=0)
    assert source.error_count(Slot.GREEN, since) is None

    # The query fails: not "no data" but a failure with Azure's code (kept while fresh).
    clock.advance(timedelta(seconds=10))
    double.set_requests("qlp-green", total=100, failed=2)
    double.logs_failures.append(400)
    with pytest.raises(MetricsUnavailable) as caught:
        source.error_count(Slot.GREEN, since)
    assert caught.value.code == "ServiceError" and not caught.value.retryable
    assert caught.value.reason == ("ServiceError (the query is the bot's: report it): the "
                                   "query failed (400)")
    with pytest.raises(MetricsUnavailable):
        source.request_count(Slot.GREEN, since)
    assert len(double.calls_to("logs", "POST")) == 3  # the failure is reused while fresh
    clock.advance(timedelta(seconds=10))
    assert source.error_count(Slot.GREEN, since) == 2
    source.close()


def test_without_app_insights_every_reading_is_none(double: ArmDouble) -> None:
    plain = settings(double).model_copy(update={"app_insights": None})
    source = AzureMetrics(plain, clock=FixedClock(NOW))
    assert source.error_count(Slot.BLUE, NOW) is None
    assert source.request_count(Slot.BLUE, NOW) is None
    assert double.calls_to("logs") == []


def test_app_insights_settings_are_checked(double: ArmDouble) -> None:
    with pytest.raises(ConfigError) as caught:
        settings(double, role_name_prefix="api")
    assert caught.value.key == "environments.production.azure.app_insights"
    assert "set workspace_id" in str(caught.value)
    both = settings(double, workspace_id=WORKSPACE, resource_id=COMPONENT)
    assert both.app_insights is not None
    assert f'| where _ResourceId =~ "{COMPONENT.lower()}"' in request_counts_query(
        both.app_insights, "qlp-blue")
    with pytest.raises(ConfigError) as caught:
        settings(double, workspace_id="not-a-guid")
    assert caught.value.key == "environments.production.azure.app_insights.workspace_id"
    with pytest.raises(ConfigError) as caught:
        settings(double, workspace_id=WORKSPACE, role_prefix="x")
    assert "did you mean role_name_prefix" in str(caught.value)
    custom = settings(double, workspace_id=WORKSPACE, role_name_prefix="api")
    assert custom.role_name("green") == "api-green"
    assert custom.app_insights is not None
    assert 'AppRoleName == "api-blue"' in request_counts_query(custom.app_insights, "api-blue")


# -- the p95 duration ----------------------------------------------------------------------


def test_p95_duration_per_colour_comes_with_the_counts(double: ArmDouble,
                                                       certificate: tuple[Path, Path]) -> None:
    clock = FixedClock(NOW)
    source = metrics(double, certificate, clock)
    assert isinstance(source, ProvidesLatency) and source.latency_source == "Application Insights"
    double.set_requests("qlp-green", total=240, failed=3, p95_ms=2400.5)
    double.set_requests("qlp-blue", total=500, failed=0, p95_ms=180.0)
    since = NOW - timedelta(minutes=5)

    assert source.duration_p95_ms(Slot.GREEN, since) == pytest.approx(2400.5)
    assert source.error_count(Slot.GREEN, since) == 3
    assert source.request_count(Slot.GREEN, since) == 240
    assert source.duration_p95_ms(Slot.BLUE, since) == pytest.approx(180.0)
    calls = double.calls_to("logs", "POST")
    assert len(calls) == 2  # one query per slot answers all three figures
    assert "percentilew(DurationMs, ItemCount, 95)" in calls[0].body["query"]

    # The classic component: the requests table's duration column.
    component = metrics(double, certificate, clock, resource_id=COMPONENT)
    assert component.duration_p95_ms(Slot.GREEN, since) == pytest.approx(2400.5)
    assert "percentilew(duration, itemCount, 95)" in double.calls_to("logs", "POST")[-1] \
        .body["query"]
    source.close()
    component.close()


def test_no_p95_is_none(double: ArmDouble, certificate: tuple[Path, Path]) -> None:
    clock = FixedClock(NOW)
    source = metrics(double, certificate, clock)
    since = NOW - timedelta(minutes=5)

    # No rows: no figures at all.
    assert source.duration_p95_ms(Slot.GREEN, since) is None
    # Counts but a null duration: the counts stand, the p95 is None.
    clock.advance(timedelta(seconds=10))
    double.set_requests("qlp-green", total=50, failed=1, p95_ms=None)
    assert source.duration_p95_ms(Slot.GREEN, since) is None
    assert source.error_count(Slot.GREEN, since) == 1
    # No requests at all: None even with a duration.
    clock.advance(timedelta(seconds=10))
    double.set_requests("qlp-green", total=0, failed=0, p95_ms=900.0)
    assert source.duration_p95_ms(Slot.GREEN, since) is None
    # The query fails: MetricsUnavailable (the monitor step reads it as no p95).
    clock.advance(timedelta(seconds=10))
    double.set_requests("qlp-green", total=50, failed=0, p95_ms=900.0)
    double.logs_failures.append(500)
    with pytest.raises(MetricsUnavailable) as caught:
        source.duration_p95_ms(Slot.GREEN, since)
    assert caught.value.retryable
    clock.advance(timedelta(seconds=10))
    assert source.duration_p95_ms(Slot.GREEN, since) == pytest.approx(900.0)
    # Without app_insights: None, no query.
    plain = AzureMetrics(settings(double).model_copy(update={"app_insights": None}),
                         clock=clock)
    before = len(double.calls_to("logs"))
    assert plain.duration_p95_ms(Slot.GREEN, since) is None
    assert len(double.calls_to("logs")) == before
    source.close()


# -- the monitor step with a platform p95 ------------------------------------------------------


class Latency:
    """A metrics source with counts and a p95 duration, as Application Insights gives them."""

    latency_source = "Application Insights"

    def __init__(self, p95: float | None, *, requests: int = 1000, errors: int = 0,
                 failing: bool = False) -> None:
        self.p95, self.requests, self.errors, self.failing = p95, requests, errors, failing
        self.asked: list[tuple[Slot, datetime]] = []

    def error_count(self, slot: Slot, since: datetime) -> int | None:
        return self.errors

    def request_count(self, slot: Slot, since: datetime) -> int | None:
        return self.requests

    def duration_p95_ms(self, slot: Slot, since: datetime) -> float | None:
        self.asked.append((slot, since))
        if self.failing:
            raise ExternalServiceError("Azure Monitor Logs", "Logs is down")
        return self.p95


SWITCHED = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)


@pytest.fixture
def monitored() -> Iterator[tuple[StepRunner, Any]]:
    """A runner just after ``switch_traffic`` (green live since SWITCHED), health checks
    answered 200 by a mock transport; 10 s of monitoring at 1 s, response_time_ms 2000."""
    http = HttpChecker(transport=httpx.MockTransport(lambda request: httpx.Response(200)))
    clock = FixedClock(SWITCHED)
    ctx = StepRunner(cast(Platform, None), Latency(None), step_policy(), clock, "v1.1.0")
    ctx.results["snapshot"] = {"live_slot": "blue", "live_version": "v1.0.0",
                               "target_slot": "green"}
    ctx.results["switch_traffic"] = {"switched_at": SWITCHED.isoformat()}
    try:
        yield ctx, standard_playbook(http=http, monitoring=ctx.policy.monitoring)
    finally:
        http.close()


def test_a_high_platform_p95_is_a_warning_not_a_rollback(
        monitored: tuple[StepRunner, Any]) -> None:
    ctx, playbook = monitored
    source = Latency(2400.0)
    ctx.metrics = source
    result = ctx.run(playbook, "monitor")  # the seed warns on a response over 2000 ms
    assert result is not None and result["warning_kinds"] == {"slow response": 10}
    assert source.asked[0] == (Slot.GREEN, SWITCHED)
    assert any("Warning (check 1/10): slow response: the platform's p95 is 2400 ms (> 2000 ms)"
               in r for r in ctx.reports), ctx.reports
    assert "(probe or p95 from Application Insights)" in ctx.reports[0]


def test_monitor_passes_with_a_low_p95_and_keeps_it_as_evidence(
        monitored: tuple[StepRunner, Any]) -> None:
    ctx, playbook = monitored
    ctx.metrics = Latency(180.0)
    result = ctx.run(playbook, "monitor")
    assert result is not None
    assert result["platform_p95_ms"] == 180.0
    assert result["platform_p95_source"] == "Application Insights"
    assert result["platform_p95_readings"] == [180.0] * 10
    assert any(re.fullmatch(r"Monitored 10s: 10 checks, 0 failed, p95 \d+ ms, 0 errors, "
                            r"p95 180 ms from Application Insights; 0 warnings\.", r)
               for r in ctx.reports)


def test_no_platform_p95_is_no_data_but_not_a_failure(
        monitored: tuple[StepRunner, Any]) -> None:
    ctx, playbook = monitored
    for source in (Latency(None), Latency(5000.0, failing=True)):
        ctx.reports.clear()
        ctx.metrics = source
        result = ctx.run(playbook, "monitor")
        assert result is not None
        assert result["platform_p95_ms"] is None
        assert result["platform_p95_readings"] == [None] * 10
        said = [r for r in ctx.reports if "no p95 from Application Insights yet" in r]
        assert len(said) == 1 and "no data" in said[0]
        assert ctx.reports[-1].endswith(
            "no p95 from Application Insights (no data); 0 warnings.")


def test_a_p95_over_too_few_requests_is_not_a_warning(
        monitored: tuple[StepRunner, Any]) -> None:
    ctx, playbook = monitored
    ctx.metrics = Latency(2400.0, requests=MIN_LATENCY_REQUESTS - 1)
    result = ctx.run(playbook, "monitor")
    assert result is not None and result["platform_p95_ms"] == 2400.0
    assert result["warnings"] == 0
