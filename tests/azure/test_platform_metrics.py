"""Container group CPU/memory with the real MonitorManagementClient against the ARM double.

The double answers ``GET {group}/providers/Microsoft.Insights/metrics`` (api-version
2024-02-01) with the points ``set_metrics`` gave it, in the response shape of azure.md §3.2.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from azure.core.exceptions import HttpResponseError

from procedures.errors import ExternalServiceError, MetricsUnavailable
from procedures.model import Slot
from procedures.platforms.azure import AzurePlatform, platform_metrics
from procedures.platforms.azure.platform_metrics import (
    ContainerGroupMetrics,
    ContainerUsage,
    live_usage,
    monitor_client,
)
from tests.azure.arm_double import SUBSCRIPTION, ArmDouble, set_metrics
from tests.azure.arm_double.authz import RESOURCE_GROUP_ID
from tests.azure.test_azure_platform import RG

pytestmark = pytest.mark.slow  # starts an HTTPS server

NOW = datetime(2026, 12, 1, 11, 0, tzinfo=UTC)
GIB = 1024 ** 3



@pytest.fixture
def double(certificate: tuple[Path, Path]) -> Iterator[ArmDouble]:
    arm = ArmDouble(*certificate).start()
    yield arm
    arm.stop()



def group_id(name: str) -> str:
    return (f"/subscriptions/{SUBSCRIPTION}/resourceGroups/{RG}/providers/"
            f"Microsoft.ContainerInstance/containerGroups/{name}")


def test_cpu_and_memory_of_the_live_group(make_platform: Callable[..., AzurePlatform],
                                          double: ArmDouble) -> None:
    platform = make_platform()
    set_metrics(double, group_id("qlp-blue"), "CpuUsage",
                [("2026-12-01T10:50:00Z", 200.0, 300.0), ("2026-12-01T10:51:00Z", 400.0, 900.0),
                 ("2026-12-01T10:52:00Z", None, None)])
    set_metrics(double, group_id("qlp-blue"), "MemoryUsage",
                [("2026-12-01T10:50:00Z", 2.0 * GIB, 2.5 * GIB),
                 ("2026-12-01T10:51:00Z", 4.0 * GIB, 4.5 * GIB)])

    usage = live_usage(platform, Slot.BLUE, NOW)

    assert usage is not None and not usage.inconclusive
    assert usage.group == "qlp-blue"
    assert (usage.cpu_avg, usage.cpu_max) == (300.0, 900.0)
    assert (usage.memory_avg, usage.memory_max) == (3.0 * GIB, 4.5 * GIB)
    assert usage.cpu_share == pytest.approx(0.15)  # 300 millicores of 2 cores
    assert usage.memory_share == pytest.approx(3 / 8)
    assert not usage.near_limit
    assert usage.describe() == (
        "qlp-blue over the last 15 min: CPU 300 millicores avg (15% of 2 cores), max 900; "
        "memory 3072 MiB avg (38% of 8 GB), max 4608 MiB")
    [call] = double.calls_to("metrics", "GET")
    assert call.authorized
    assert call.path == group_id("qlp-blue") + "/providers/Microsoft.Insights/metrics"
    assert call.query["metricnames"] == "CpuUsage,MemoryUsage"
    assert call.query["interval"] == "PT1M"
    assert call.query["aggregation"] == "Average,Maximum"
    assert call.query["timespan"] == "2026-12-01T10:45:00Z/2026-12-01T11:00:00Z"
    assert call.query["metricnamespace"] == "Microsoft.ContainerInstance/containerGroups"


def test_no_rows_is_inconclusive_not_zero(make_platform: Callable[..., AzurePlatform],
                                          double: ArmDouble) -> None:
    platform = make_platform()
    set_metrics(double, group_id("qlp-green"), "CpuUsage", [])
    usage = live_usage(platform, Slot.GREEN, NOW)
    assert usage is not None and usage.inconclusive
    assert usage.cpu_avg is None and usage.memory_avg is None and usage.points == 0
    assert usage.describe() == ("qlp-green over the last 15 min: no CPU or memory data from "
                                "Azure Monitor (inconclusive)")


def test_only_memory_data_and_a_group_near_its_limit(make_platform: Callable[..., AzurePlatform],
                                                     double: ArmDouble) -> None:
    platform = make_platform(memory_gb=1)
    set_metrics(double, group_id("qlp-blue"), "MemoryUsage",
                [("2026-12-01T10:55:00Z", 0.95 * GIB, 0.99 * GIB)])
    usage = live_usage(platform, Slot.BLUE, NOW)
    assert usage is not None and not usage.inconclusive and usage.near_limit
    assert usage.describe().startswith("qlp-blue over the last 15 min: CPU: no data; memory")
    assert usage.describe().endswith("(warning: at or above 90% of the allocation)")


def test_throttling_becomes_a_retryable_error(make_platform: Callable[..., AzurePlatform],
                                              double: ArmDouble) -> None:
    platform = make_platform()
    double.throttle("GET", "/providers/Microsoft.Insights/metrics", retry_after="7")
    with pytest.raises(ExternalServiceError) as caught:
        live_usage(platform, Slot.BLUE, NOW)
    assert caught.value.retryable and caught.value.retry_after == 7.0
    assert caught.value.service == "Azure Monitor metrics"


def test_the_reader_on_its_own_and_a_non_azure_platform(make_platform: Callable[..., AzurePlatform],
                                                        double: ArmDouble) -> None:
    platform = make_platform()
    set_metrics(double, group_id("qlp-green"), "CpuUsage",
                [("2026-12-01T10:59:00Z", 1000.0, 1000.0)])
    client = monitor_client(platform._clients)
    try:
        reader = ContainerGroupMetrics(platform.settings, client)
        usage = reader.usage("green", NOW, timedelta(minutes=5))
    finally:
        client.close()
    assert isinstance(usage, ContainerUsage)
    assert usage.cpu_avg == 1000.0 and usage.memory_avg is None
    assert usage.describe().startswith("qlp-green over the last 5 min: CPU 1000 millicores")
    assert live_usage(object(), Slot.BLUE, NOW) is None


# -- what Azure Monitor refuses is named, never "no data" -------------------------------------


def test_an_unknown_metric_name_is_refused_and_named(make_platform: Callable[..., AzurePlatform],
                                                     double: ArmDouble,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    platform = make_platform()
    monkeypatch.setattr(platform_metrics, "METRIC_NAMES", "CpuUsage,memory_usage_bytes")
    with pytest.raises(MetricsUnavailable) as caught:
        live_usage(platform, Slot.BLUE, NOW)
    assert caught.value.code == "BadRequest" and not caught.value.retryable
    assert caught.value.reason == (
        "BadRequest (the metrics request is the bot's: report it): qlp-blue: Failed to find "
        "metric configuration for provider: Microsoft.ContainerInstance, resource Type: "
        "containerGroups, metric: memory_usage_bytes, Valid metrics: CpuUsage,MemoryUsage,"
        "NetworkBytesReceivedPerSecond,NetworkBytesTransmittedPerSecond")
    # The seed's percentile aggregation is no metrics aggregation either.
    monkeypatch.setattr(platform_metrics, "METRIC_NAMES", "CpuUsage")
    client = monitor_client(platform._clients)
    try:
        with pytest.raises(HttpResponseError, match="Invalid aggregation type: Percentile95"):
            client.metrics.list(group_id("qlp-blue"), metricnames="CpuUsage",
                                aggregation="Average,Percentile95")
        # A PostgreSQL flexible server publishes its own names.
        server = group_id("x").replace("Microsoft.ContainerInstance/containerGroups/x",
                                       "Microsoft.DBforPostgreSQL/flexibleServers/qlp-prod-db")
        assert client.metrics.list(server, metricnames="active_connections,cpu_percent")
        with pytest.raises(HttpResponseError, match="metric: connections_active, Valid metrics: "
                                            "active_connections,"):
            client.metrics.list(server, metricnames="connections_active")
    finally:
        client.close()


def test_no_monitoring_reader_names_the_role(make_platform: Callable[..., AzurePlatform],
                                             double: ArmDouble) -> None:
    platform = make_platform()
    double.revoke(RESOURCE_GROUP_ID, "Monitoring Reader")
    with pytest.raises(MetricsUnavailable) as caught:
        live_usage(platform, Slot.BLUE, NOW)
    assert caught.value.code == "AuthorizationFailed"
    assert caught.value.reason.startswith(
        "AuthorizationFailed (grant the bot's identity Monitoring Reader (or Reader) on "
        "qlp-blue): qlp-blue: The client")
    assert "'Microsoft.Insights/metrics/read'" in caught.value.detail


class _BaselineCtx:
    """What ``record_baseline`` reads of its StepContext: green went live and was watched
    for 30 minutes up to NOW."""

    def __init__(self, platform: AzurePlatform) -> None:
        self.platform = platform
        self.version = "v1.3.0"
        self.reports: list[str] = []
        self.recorded: list[dict[str, object]] = []
        self._results = {
            "snapshot": {"live_slot": "blue", "live_version": "v1.2.0",
                         "target_slot": "green"},
            "monitor": {"response_ms_p50": 80.0, "response_ms_p95": 210.0, "error_count": 1,
                        "request_count": 900, "error_rate": 0.001, "samples": 60,
                        "platform_p95_ms": 190.0, "watched_s": 1800.0},
        }

    def now(self) -> datetime:
        return NOW

    def result_of(self, name: str) -> dict[str, object]:
        return self._results.get(name, {})

    def report(self, text: str, *, broadcast: bool = False) -> None:
        self.reports.append(text)

    def record_baseline(self, metrics: dict[str, object]) -> None:
        self.recorded.append(dict(metrics))


def test_the_baseline_holds_the_new_colours_memory_and_cpu(
        make_platform: Callable[..., AzurePlatform], double: ArmDouble) -> None:
    from procedures.checks.http import HttpChecker
    from procedures.playbooks.standard import StandardSteps

    platform = make_platform()
    set_metrics(double, group_id("qlp-green"), "CpuUsage",
                [("2026-12-01T10:40:00Z", 500.0, 700.0)])
    set_metrics(double, group_id("qlp-green"), "MemoryUsage",
                [("2026-12-01T10:40:00Z", 1.0 * GIB, 1.5 * GIB),
                 ("2026-12-01T10:50:00Z", 3.0 * GIB, 3.5 * GIB)])
    ctx = _BaselineCtx(platform)
    with HttpChecker() as http:
        result = StandardSteps(http).record_baseline(ctx)  # type: ignore[arg-type]
    [recorded] = ctx.recorded
    assert recorded["memory_avg_bytes"] == 2.0 * GIB and recorded["memory_max_bytes"] == 3.5 * GIB
    assert recorded["cpu_avg_millicores"] == 500.0
    assert recorded["platform_p95_ms"] == 190.0  # Application Insights' p95, kept
    assert result is not None and result["recorded"] is True
    assert "Performance baseline for v1.3.0: p50 80 ms, p95 210 ms, memory 2048 MiB avg" \
        in ctx.reports[-1]
    # Over the monitoring period, for the new colour.
    [call] = double.calls_to("metrics", "GET")
    assert call.path.startswith(group_id("qlp-green"))
    assert call.query["timespan"] == "2026-12-01T10:30:00Z/2026-12-01T11:00:00Z"


def test_a_baseline_without_readable_usage_is_still_recorded(
        make_platform: Callable[..., AzurePlatform], double: ArmDouble) -> None:
    from procedures.checks.http import HttpChecker
    from procedures.playbooks.standard import StandardSteps

    double.revoke(RESOURCE_GROUP_ID, "Monitoring Reader")
    ctx = _BaselineCtx(make_platform())
    with HttpChecker() as http:
        StandardSteps(http).record_baseline(ctx)  # type: ignore[arg-type]
    [recorded] = ctx.recorded
    assert "memory_avg_bytes" not in recorded and recorded["response_ms_p95"] == 210.0
    assert any(r.startswith("Baseline: container CPU/memory not read (") for r in ctx.reports)
