"""Request counts, failures and p95 duration per colour from Application Insights.

:class:`AzureMetrics` (the ``MetricsSource``, and ``ProvidesLatency``) asks Logs
(``azure-monitor-query``'s ``LogsQueryClient``, KQL) how many requests the colour served since a
moment, how many of them failed and the 95th percentile of their duration, filtered on the cloud
role name each colour reports (``<prefix>-<colour>``, see ``AppInsightsSettings``), so the new
colour is measured apart from the old one. One query answers all three figures:

- ``app_insights.resource_id`` (the component): ``requests`` filtered on ``cloud_RoleName``,
  duration in ``duration`` (milliseconds);
- ``app_insights.workspace_id`` (workspace-based): ``AppRequests`` filtered on ``AppRoleName``,
  duration in ``DurationMs``.

The percentile is ``percentilew(duration, itemCount, 95)``: weighted by each row's item count,
so a sampled telemetry stream (one row standing for ``itemCount`` requests) gives the same p95
as the full one, just as the counts use ``sum(itemCount)`` rather than ``count()``.

No rows, no requests at all, a partial result or any error gives ``None``: no data, which the
playbook treats as inconclusive, never as a pass (a row with counts but no duration gives the
counts and a ``None`` p95). Telemetry reaches Logs with a delay of a
minute or more, so a short monitoring window right after a switch may well see no data yet;
that is reported as inconclusive rather than read as "zero errors".
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from azure.core.exceptions import AzureError

from procedures.clock import Clock, SystemClock
from procedures.model import Slot
from procedures.platforms.azure.errors import translate
from procedures.platforms.azure.settings import AppInsightsSettings, AzureSettings

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential
    from azure.monitor.query import LogsQueryClient

__all__ = ["LATENCY_SOURCE", "AzureMetrics", "RequestCounts", "request_counts_query"]

log = logging.getLogger(__name__)

SERVICE = "Azure Monitor Logs"
LATENCY_SOURCE = "Application Insights"


@dataclass(frozen=True)
class RequestCounts:
    """Requests a colour served in a window, how many of them failed and their p95 duration
    (milliseconds; None when the result had no duration)."""

    total: int
    failed: int
    p95_ms: float | None = None


def request_counts_query(insights: AppInsightsSettings, role_name: str) -> str:
    """The KQL that sums a role's requests and failed requests and takes the p95 of their
    duration in milliseconds (one row: total, failed, p95_ms)."""
    if insights.workspace_id is not None:
        table, role, count, success, duration = (
            "AppRequests", "AppRoleName", "ItemCount", "Success", "DurationMs")
    else:
        table, role, count, success, duration = (
            "requests", "cloud_RoleName", "itemCount", "success", "duration")
    # Role names are validated settings (lowercase letters, digits, hyphens); quoted anyway.
    literal = '"' + role_name.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return (f"{table}\n"
            f"| where {role} == {literal}\n"
            f"| summarize total = sum({count}), failed = sumif({count}, {success} == false), "
            f"p95_ms = percentilew({duration}, {count}, 95)")


class AzureMetrics:
    """``MetricsSource`` and ``ProvidesLatency`` for an Azure environment: Application
    Insights through Logs.

    ``client`` is a ``LogsQueryClient`` (built lazily from ``credential``, the settings'
    ``endpoint`` and ``client_kwargs`` when not given). Without an ``app_insights`` section
    every reading is ``None`` (and the thread says there is no error data). One query answers
    ``error_count``, ``request_count`` and ``duration_p95_ms`` of the same slot and moment: the
    result is kept for ``reuse_for``.
    """

    latency_source = LATENCY_SOURCE

    def __init__(
        self,
        settings: AzureSettings,
        *,
        credential: TokenCredential | None = None,
        client: LogsQueryClient | None = None,
        client_kwargs: Mapping[str, Any] | None = None,
        clock: Clock | None = None,
        reuse_for: timedelta = timedelta(seconds=5),
    ) -> None:
        self.settings = settings
        self._credential = credential
        self._client = client
        self._owns_client = client is None
        self._kwargs = dict(client_kwargs or {})
        self._clock = clock or SystemClock()
        self._reuse_for = reuse_for
        self._lock = threading.Lock()
        self._cache: dict[tuple[Slot, datetime], tuple[datetime, RequestCounts | None]] = {}

    # -- MetricsSource ---------------------------------------------------------------------

    def error_count(self, slot: Slot, since: datetime) -> int | None:
        """Failed requests of ``slot`` since ``since``; None when there is no data."""
        counts = self.counts(slot, since)
        return counts.failed if counts is not None else None

    def request_count(self, slot: Slot, since: datetime) -> int | None:
        """Requests of ``slot`` since ``since``; None when there is no data."""
        counts = self.counts(slot, since)
        return counts.total if counts is not None else None

    # -- ProvidesLatency -------------------------------------------------------------------

    def duration_p95_ms(self, slot: Slot, since: datetime) -> float | None:
        """The 95th percentile duration (ms) of ``slot``'s requests since ``since``; None when
        there is no data."""
        counts = self.counts(slot, since)
        return counts.p95_ms if counts is not None else None

    # -- beyond the protocols --------------------------------------------------------------

    def counts(self, slot: Slot, since: datetime) -> RequestCounts | None:
        """All three figures from one query (reused for ``reuse_for``); None: no data."""
        slot = Slot(slot)
        now = self._clock.now()
        key = (slot, since)
        with self._lock:
            cached = self._cache.get(key)
            if cached is not None and now - cached[0] < self._reuse_for:
                return cached[1]
        counts = self._query(slot, since, now)
        with self._lock:
            self._cache = {k: v for k, v in self._cache.items()
                           if now - v[0] < self._reuse_for}
            self._cache[key] = (now, counts)
        return counts

    def close(self) -> None:
        """Close the Logs client if this object built it."""
        with self._lock:
            client, self._client = (self._client, None) if self._owns_client else (None,
                                                                                  self._client)
        if client is not None:
            client.close()

    # -- helpers ---------------------------------------------------------------------------

    def _logs(self) -> LogsQueryClient:
        from azure.monitor.query import LogsQueryClient

        with self._lock:
            if self._client is None:
                insights = self.settings.app_insights
                if self._credential is None or insights is None:
                    raise RuntimeError("AzureMetrics needs a credential and app_insights")
                kwargs: dict[str, Any] = {"retry_total": 2, **self._kwargs}
                kwargs.setdefault("endpoint", insights.endpoint)
                self._client = LogsQueryClient(self._credential, **kwargs)
            return self._client

    def _query(self, slot: Slot, since: datetime, now: datetime) -> RequestCounts | None:
        insights = self.settings.app_insights
        if insights is None:
            log.warning("no app_insights settings: no error data for %s", slot)
            return None
        role = self.settings.role_name(slot.value)
        start = min(since, now)
        query = request_counts_query(insights, role)
        try:
            run: Callable[..., Any]
            target: str
            if insights.workspace_id is not None:
                run, target = self._logs().query_workspace, insights.workspace_id
            else:
                run, target = self._logs().query_resource, insights.resource_id or ""
            result = run(target, query, timespan=(start, max(now, start + timedelta(
                seconds=1))))
        except AzureError as exc:
            error = translate(exc, service=SERVICE, what=f"count requests of {role}")
            log.warning("no request counts for %s: %s", role, error.message)
            return None
        return _counts_of(result, role)


def _counts_of(result: Any, role: str) -> RequestCounts | None:
    from azure.monitor.query import LogsQueryStatus

    if getattr(result, "status", None) != LogsQueryStatus.SUCCESS:
        error = getattr(result, "partial_error", None)
        log.warning("partial Logs result for %s (%s): no data", role, error)
        return None
    tables = list(getattr(result, "tables", None) or [])
    if not tables or not tables[0].rows:
        return None
    table = tables[0]
    columns = [getattr(c, "name", c) for c in (table.columns or [])]
    row = table.rows[0]
    values = dict(zip(columns, list(row), strict=False))
    total, failed = values.get("total"), values.get("failed")
    if total is None or failed is None:
        return None
    try:
        total_n, failed_n = int(total), int(failed)
    except (TypeError, ValueError):
        return None
    if total_n <= 0:
        return None  # no requests at all: no data, not "no errors"
    return RequestCounts(total=total_n, failed=max(failed_n, 0),
                         p95_ms=_milliseconds(values.get("p95_ms")))


def _milliseconds(value: Any) -> float | None:
    """A duration column as float milliseconds; None when missing, NaN or negative."""
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    if math.isnan(number) or math.isinf(number) or number < 0:
        return None
    return number
