"""Azure Monitor platform metrics in the double: ``GET {resourceId}/providers/
Microsoft.Insights/metrics``, as azure-mgmt-monitor 7 sends it (api-version 2024-02-01)."""

from __future__ import annotations

import re
from typing import Any

from tests.azure.arm_double.core import Answer, ArmCore, Request, Route, _error

METRICS_API_VERSION = "2024-02-01"
MetricPoints = dict[str, dict[str, list[tuple[str, float | None, float | None]]]]


class MetricsMixin(ArmCore):
    """Time series per resource and metric name."""

    ROUTES = (Route("metrics", re.compile(
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
        known = self.metric_points.get(resource.lower(), {})
        value = []
        for name in (query.get("metricnames") or "").split(","):
            if not name:
                continue
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


def set_metrics(double: MetricsMixin, resource_id: str, metric: str,
                points: list[tuple[str, float | None, float | None]]) -> None:
    """``double.set_metrics(...)``, as a function (older tests call it so)."""
    double.set_metrics(resource_id, metric, points)
