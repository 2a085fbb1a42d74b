"""CPU and memory of a colour's container group, from Azure Monitor platform metrics.

:class:`ContainerGroupMetrics` calls ``MonitorManagementClient.metrics.list`` (azure-mgmt-monitor
7, ``GET {group id}/providers/Microsoft.Insights/metrics?api-version=2024-02-01``) for the
container group's ``CpuUsage`` (millicores) and ``MemoryUsage`` (bytes) at ``PT1M`` with the
``Average`` and ``Maximum`` aggregations, over a window that ends now (15 minutes by default),
and reduces the points to a :class:`ContainerUsage`: the mean of the per-minute averages and the
highest per-minute maximum, next to what the group was given (``cpu`` cores, ``memory_gb``).

Empty ``timeseries`` or points without values mean **no data** (``None``), never zero: a
usage with neither figure is ``inconclusive``. A request Azure Monitor refuses is not "no data"
either: it raises :class:`~procedures.errors.MetricsUnavailable` with Azure's code and message
and the fix (403 ``AuthorizationFailed``: Monitoring Reader on the group; 400 ``BadRequest``,
e.g. "Failed to find metric configuration ... metric: X": the request is the bot's), which
``final_validation`` shows on the finding. Azure Monitor metrics arrive a few minutes late,
so the newest minutes are often empty; that is why the window is wide.

The figures are **evidence, not a gate**: ``final_validation`` reports them for the live colour
of an Azure environment. :attr:`ContainerUsage.near_limit` (an average at or above
``NEAR_LIMIT`` = 90 % of the allocation) adds a warning to the report but does not fail the step:
ACI's allocation is what the group reserved, the application may be sized to run close to it,
and a deployment is the usual fix for a leak rather than something to block.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from azure.core.exceptions import AzureError, HttpResponseError

from procedures.errors import MetricsUnavailable
from procedures.model import Slot
from procedures.platforms.azure.errors import AzureCalls, translate
from procedures.platforms.azure.monitoring import innermost_error
from procedures.platforms.azure.settings import AzureSettings

if TYPE_CHECKING:
    from azure.mgmt.monitor import MonitorManagementClient

    from procedures.platforms.azure.clients import AzureClients

__all__ = [
    "DEFAULT_WINDOW",
    "METRIC_NAMES",
    "NEAR_LIMIT",
    "ContainerGroupMetrics",
    "ContainerUsage",
    "live_usage",
    "monitor_client",
]

SERVICE = "Azure Monitor metrics"
METRIC_NAMES = "CpuUsage,MemoryUsage"
METRIC_NAMESPACE = "Microsoft.ContainerInstance/containerGroups"
DEFAULT_WINDOW = timedelta(minutes=15)
NEAR_LIMIT = 0.9
_GIB = 1024 ** 3


@dataclass(frozen=True)
class ContainerUsage:
    """A container group's CPU (millicores) and memory (bytes) over a window.

    ``*_avg`` is the mean of the per-minute averages, ``*_max`` the highest per-minute maximum;
    None when Azure Monitor had no data. ``cpu_cores`` and ``memory_gb`` are the allocation.
    """

    group: str
    window: timedelta
    cpu_cores: float
    memory_gb: float
    cpu_avg: float | None = None
    cpu_max: float | None = None
    memory_avg: float | None = None
    memory_max: float | None = None
    points: int = 0

    @property
    def inconclusive(self) -> bool:
        return self.cpu_avg is None and self.memory_avg is None

    @property
    def cpu_share(self) -> float | None:
        """Average CPU as a share of the allocated cores."""
        return None if self.cpu_avg is None else self.cpu_avg / (self.cpu_cores * 1000)

    @property
    def memory_share(self) -> float | None:
        """Average memory as a share of the allocated memory."""
        return None if self.memory_avg is None else self.memory_avg / (self.memory_gb * _GIB)

    @property
    def near_limit(self) -> bool:
        return any(share is not None and share >= NEAR_LIMIT
                   for share in (self.cpu_share, self.memory_share))

    def describe(self) -> str:
        """``qlp-blue over 15m: CPU 250 mcores avg (25% of 1 core), max 400; memory ...``."""
        minutes = int(self.window.total_seconds() // 60)
        where = f"{self.group} over the last {minutes} min"
        if self.inconclusive:
            return f"{where}: no CPU or memory data from Azure Monitor (inconclusive)"
        parts = []
        if self.cpu_avg is not None:
            text = (f"CPU {self.cpu_avg:.0f} millicores avg "
                    f"({_percent(self.cpu_share)} of {self.cpu_cores:g} cores)")
            if self.cpu_max is not None:
                text += f", max {self.cpu_max:.0f}"
            parts.append(text)
        else:
            parts.append("CPU: no data")
        if self.memory_avg is not None:
            text = (f"memory {self.memory_avg / 2**20:.0f} MiB avg "
                    f"({_percent(self.memory_share)} of {self.memory_gb:g} GB)")
            if self.memory_max is not None:
                text += f", max {self.memory_max / 2**20:.0f} MiB"
            parts.append(text)
        else:
            parts.append("memory: no data")
        line = f"{where}: " + "; ".join(parts)
        if self.near_limit:
            line += f" (warning: at or above {NEAR_LIMIT:.0%} of the allocation)"
        return line


def monitor_client(clients: AzureClients) -> MonitorManagementClient:
    """A ``MonitorManagementClient`` with the same credential, endpoint and options as the
    environment's other ARM clients (the caller closes it)."""
    from azure.mgmt.monitor import MonitorManagementClient

    return MonitorManagementClient(clients.credential, clients.subscription_id,
                                   base_url=clients.base_url,
                                   **clients._arm_kwargs())  # same package: shared options


class ContainerGroupMetrics:
    """Reads ``CpuUsage`` and ``MemoryUsage`` of the colours' container groups."""

    def __init__(self, settings: AzureSettings, client: MonitorManagementClient) -> None:
        self.settings = settings
        self._client = client

    def resource_id(self, colour: str) -> str:
        s = self.settings
        return (f"/subscriptions/{s.subscription_id}/resourceGroups/{s.resource_group}"
                f"/providers/Microsoft.ContainerInstance/containerGroups/{s.group_name(colour)}")

    def usage(self, colour: str, end: datetime,
              window: timedelta = DEFAULT_WINDOW) -> ContainerUsage:
        """The colour's usage over ``window`` up to ``end``; raises MetricsUnavailable (an
        ExternalServiceError) when Azure Monitor refuses or fails."""
        group = self.settings.group_name(colour)
        start = end - window
        try:
            with AzureCalls(SERVICE).observed(f"read CPU and memory of {group}"):
                response = self._client.metrics.list(
                    self.resource_id(colour),
                    timespan=f"{_iso(start)}/{_iso(end)}",
                    interval="PT1M",
                    metricnames=METRIC_NAMES,
                    aggregation="Average,Maximum",
                    metricnamespace=METRIC_NAMESPACE,
                )
        except AzureError as exc:
            raise self._failure(exc, colour) from exc
        figures: dict[str, float | None] = {}
        points = 0
        for metric in getattr(response, "value", None) or []:
            name = getattr(getattr(metric, "name", None), "value", None)
            values = list(_points(metric))
            points += len(values)
            averages = [avg for avg, _ in values if avg is not None]
            maxima = [top for _, top in values if top is not None]
            prefix = {"CpuUsage": "cpu", "MemoryUsage": "memory"}.get(str(name))
            if prefix is None:
                continue
            figures[f"{prefix}_avg"] = sum(averages) / len(averages) if averages else None
            figures[f"{prefix}_max"] = max(maxima) if maxima else None
        return ContainerUsage(
            group=group, window=window, cpu_cores=self.settings.cpu,
            memory_gb=self.settings.memory_gb, points=points,
            cpu_avg=figures.get("cpu_avg"), cpu_max=figures.get("cpu_max"),
            memory_avg=figures.get("memory_avg"), memory_max=figures.get("memory_max"))


    def _failure(self, exc: AzureError, colour: str) -> MetricsUnavailable:
        group = self.settings.group_name(colour)
        error = translate(exc, service=SERVICE, what=f"read CPU and memory of {group}")
        status = exc.status_code if isinstance(exc, HttpResponseError) else None
        if status is None or not isinstance(exc, HttpResponseError):
            return MetricsUnavailable(SERVICE, error.message.split(": ", 1)[-1],
                                      code=error.code or type(exc).__name__,
                                      retryable=error.retryable, retry_after=error.retry_after)
        code, detail = innermost_error(exc)
        fixes = {
            401: f"grant the bot's identity Monitoring Reader (or Reader) on {group}",
            403: f"grant the bot's identity Monitoring Reader (or Reader) on {group}",
            400: "the metrics request is the bot's: report it",
            404: f"the container group {group} does not exist (yet)",
        }
        fix = fixes.get(status) or ("Azure Monitor is busy or failing: ask again"
                                    if error.retryable else None)
        return MetricsUnavailable(SERVICE, f"{group}: {detail}", code=code or f"HTTP{status}",
                                  fix=fix, retryable=error.retryable,
                                  retry_after=error.retry_after)


def live_usage(platform: object, slot: Slot, end: datetime,
               window: timedelta = DEFAULT_WINDOW) -> ContainerUsage | None:
    """The usage of ``slot``'s group when ``platform`` is an ``AzurePlatform``, else None.

    Raises MetricsUnavailable (an ExternalServiceError) when Azure Monitor cannot answer.
    """
    from procedures.platforms.azure.platform import AzurePlatform

    if not isinstance(platform, AzurePlatform):
        return None
    client = monitor_client(platform._clients)  # same package: the platform's own clients
    try:
        return ContainerGroupMetrics(platform.settings, client).usage(Slot(slot).value, end,
                                                                      window)
    finally:
        client.close()


def _points(metric: Any) -> Iterable[tuple[float | None, float | None]]:
    for series in getattr(metric, "timeseries", None) or []:
        for point in getattr(series, "data", None) or []:
            average, maximum = getattr(point, "average", None), getattr(point, "maximum", None)
            if average is None and maximum is None:
                continue
            yield average, maximum


def _iso(moment: datetime) -> str:
    if moment.utcoffset() is not None:
        moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _percent(share: float | None) -> str:
    return "n/a" if share is None else f"{share:.0%}"
