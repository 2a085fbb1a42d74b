"""Azure Monitor platform metrics in the double: ``GET {resourceId}/providers/
Microsoft.Insights/metrics``, as azure-mgmt-monitor 7 sends it (api-version 2024-02-01).

Like Azure Monitor, it knows which metrics each resource type publishes (``METRICS``: Azure
Container Instances' container groups and PostgreSQL flexible servers, from Microsoft's
"supported metrics" reference) and answers an unknown name with 400 ``BadRequest`` "Failed to
find metric configuration for provider: ..., resource Type: ..., metric: ..., Valid metrics:
...", an unknown ``aggregation`` or a ``metricnamespace`` of another resource type with 400
too, and asks the core's ``check_access`` for ``Microsoft.Insights/metrics/read`` on the
resource (403 when the test world did not grant it). The error body follows the 2024-02-01
definition (``ErrorContract``: ``{"error": {"code", "message"}}``); the live service has also
been seen answering the bare ``{"code", "message"}``, which azure-core reads the same way.
"""

from __future__ import annotations

import re
from typing import Any

from tests.azure.arm_double.core import Answer, ArmCore, Request, Route, _error

METRICS_API_VERSION = "2024-02-01"
MetricPoints = dict[str, dict[str, list[tuple[str, float | None, float | None]]]]

# (provider, resource type) -> the metric names Azure Monitor publishes for it.
METRICS: dict[tuple[str, str], tuple[str, ...]] = {
    ("Microsoft.ContainerInstance", "containerGroups"): (
        "CpuUsage", "MemoryUsage", "NetworkBytesReceivedPerSecond",
        "NetworkBytesTransmittedPerSecond"),
    ("Microsoft.DBforPostgreSQL", "flexibleServers"): (
        "active_connections", "backup_storage_used", "connections_failed",
        "connections_succeeded", "cpu_credits_consumed", "cpu_credits_remaining", "cpu_percent",
        "database_size_bytes", "deadlocks", "disk_bandwidth_consumed_percentage",
        "disk_iops_consumed_percentage", "disk_queue_depth", "iops", "is_db_alive",
        "longest_idle_transaction_time_sec", "longest_query_time_sec",
        "longest_transaction_time_sec", "max_connections", "maximum_used_transactionIDs",
        "memory_percent", "network_bytes_egress", "network_bytes_ingress", "numbackends",
        "read_iops", "read_throughput", "storage_free", "storage_percent", "storage_used",
        "txlogs_storage_used", "write_iops", "write_throughput", "xact_commit",
        "xact_rollback", "xact_total"),
}
AGGREGATIONS = ("None", "Average", "Count", "Minimum", "Maximum", "Total")
_RESOURCE = re.compile(r"^/subscriptions/[^/]+/resourceGroups/[^/]+/providers/"
                       r"(?P<provider>[^/]+)/(?P<type>[^/]+)/[^/]+$", re.I)


class MetricsMixin(ArmCore):
    """Time series per resource and metric name."""

    ROUTES: tuple[Route, ...] = (Route("metrics", re.compile(
        r"^(?P<resource>/subscriptions/.+?)/providers/Microsoft\.Insights/metrics$", re.I)),)

    def _setup(self) -> None:
        super()._setup()
        # resource id (lower case) -> metric -> [(time, avg, max)]
        self.metric_points: MetricPoints = {}

    def set_metrics(self, resource_id: str, metric: str,
                    points: list[tuple[str, float | None, float | None]]) -> None:
        """What the metrics endpoint answers for ``metric`` of ``resource_id``: one time series
        of ``(timeStamp, average, maximum)`` points (an empty list: no time series)."""
        with self.lock:
            self.metric_points.setdefault(resource_id.lower(), {})[metric] = list(points)

    def _metrics_request(self, request: Request) -> Answer:
        query = request.query
        if not request.authorized:
            return _error(401, "AuthenticationFailed", "missing or wrong bearer token")
        if request.method != "GET":
            return _error(405, "MethodNotAllowed", f"{request.method} metrics")
        if query.get("api-version") != METRICS_API_VERSION:
            return _error(400, "InvalidApiVersionParameter",
                          f"api-version {query.get('api-version')} is not "
                          f"{METRICS_API_VERSION}")
        resource = request.match["resource"]
        refused = self._metrics_refusal(resource, query)
        if refused is not None:
            return refused
        known = self.metric_points.get(resource.lower(), {})
        value = []
        for name in (query.get("metricnames") or "").split(","):
            if not name:
                continue
            name = _canonical(name, self._published(resource))
            data = [{"timeStamp": at, **({"average": avg} if avg is not None else {}),
                     **({"maximum": top} if top is not None else {})}
                    for at, avg, top in known.get(name, [])]
            unit = "Bytes" if name == "MemoryUsage" else "Count"
            value.append({
                "id": f"{resource}/providers/Microsoft.Insights/metrics/{name}",
                "type": "Microsoft.Insights/metrics",
                "name": {"value": name, "localizedValue": name},
                "unit": unit, "errorCode": "Success",
                "timeseries": [{"metadatavalues": [], "data": data}] if data else [],
            })
        answer: dict[str, Any] = {"cost": 0, "timespan": query.get("timespan", ""),
                                  "interval": query.get("interval", "PT1M"),
                                  "namespace": query.get("metricnamespace", ""),
                                  "resourceregion": "eastus", "value": value}
        return Answer(200, answer)


    def _published(self, resource: str) -> tuple[str, ...]:
        match = _RESOURCE.match(resource)
        if match is None:
            return ()
        for (provider, kind), names in METRICS.items():
            if (provider.lower(), kind.lower()) == (match["provider"].lower(),
                                                    match["type"].lower()):
                return names
        return ()

    def _metrics_refusal(self, resource: str, query: dict[str, str]) -> Answer | None:
        """What Azure Monitor refuses before reading: no access, a resource type without
        metrics here, an unknown metric, namespace or aggregation."""
        denied = self.check_access("Microsoft.Insights/metrics/read", resource)
        if denied is not None:
            return denied
        match = _RESOURCE.match(resource)
        published = self._published(resource)
        if match is None or not published:
            return _error(501, "NotImplementedInDouble",
                          f"the ARM double publishes no metrics for {resource}")
        provider = next(p for p, t in METRICS if p.lower() == match["provider"].lower())
        kind = next(t for p, t in METRICS if t.lower() == match["type"].lower())
        namespace = query.get("metricnamespace")
        if namespace and namespace.lower() != f"{provider}/{kind}".lower():
            return _error(400, "BadRequest",
                          f"Failed to find metric configuration for provider: {provider}, "
                          f"resource Type: {kind}, metric namespace: {namespace}")
        for name in (query.get("metricnames") or "").split(","):
            if name and _canonical(name, published) not in published:
                return _error(400, "BadRequest",
                              f"Failed to find metric configuration for provider: {provider}, "
                              f"resource Type: {kind}, metric: {name}, Valid metrics: "
                              f"{','.join(published)}")
        for aggregation in (query.get("aggregation") or "").split(","):
            if aggregation and aggregation.strip().lower() not in {
                    a.lower() for a in AGGREGATIONS}:
                return _error(400, "BadRequest",
                              f"Invalid aggregation type: {aggregation}. Valid values are: "
                              f"{', '.join(AGGREGATIONS)}")
        return None


def _canonical(name: str, published: tuple[str, ...]) -> str:
    """Metric names are matched case-insensitively, as Azure Monitor does."""
    return next((known for known in published if known.lower() == name.lower()), name)


def set_metrics(double: MetricsMixin, resource_id: str, metric: str,
                points: list[tuple[str, float | None, float | None]]) -> None:
    """``double.set_metrics(...)``, as a function (older tests call it so)."""
    double.set_metrics(resource_id, metric, points)
