"""Request counts, failures and p95 duration per colour from Application Insights.

:class:`AzureMetrics` (the ``MetricsSource``, and ``ProvidesLatency``) asks Logs
(``azure-monitor-query``'s ``LogsQueryClient``, KQL) how many requests the colour served since a
moment, how many of them failed and the 95th percentile of their duration, filtered on the cloud
role name each colour reports (``AzureSettings.role_name``, which the bot injects into the
colour's group as ``OTEL_SERVICE_NAME``), so the new colour is measured apart from the old one.
One query answers all three figures:

- ``app_insights.workspace_id`` (workspace-based): ``AppRequests`` filtered on ``AppRoleName``,
  duration in ``DurationMs``, failures ``Success == false`` (a bool); with ``resource_id`` also
  set (recommended), kept to that component with ``_ResourceId =~ "<component id>"``, since one
  workspace often collects several components (staging and production both have ``qlp-green``);
- ``app_insights.resource_id`` only: a resource-centric query of the component's classic
  ``requests`` table filtered on ``cloud_RoleName``, duration in ``duration`` (milliseconds),
  failures ``tobool(success) == false``: that table's ``success`` is a *string*, and comparing
  it with ``false`` is a type error in Kusto.

The percentile is ``percentilew(duration, itemCount, 95)``: weighted by each row's item count,
so a sampled telemetry stream (one row standing for ``itemCount`` requests) gives the same p95
as the full one, just as the counts use ``sum(itemCount)`` rather than ``count()``.

**No data and failures are told apart.** No row, or a row saying no request at all, is no data:
``None``, which the checks treat as inconclusive, never as a pass (telemetry reaches Logs a
minute or more late, so a short window right after a switch may well see none yet). A query
that fails raises :class:`~procedures.errors.MetricsUnavailable` with Azure's code and message
and what fixes it: a KQL error (``SemanticError: 'where' operator: Failed to resolve column ...``:
the query is the bot's), a 403 (the identity lacks Log Analytics Reader), a 404 (wrong workspace
or component), throttling or a server error (retryable), or a partial result (Logs answered
only part of the query: its counts are not trusted). The checks show that reason on the finding
and in the thread. Without an ``app_insights`` section every reading is ``None``.
"""

from __future__ import annotations

import json
import logging
import math
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from azure.core.exceptions import AzureError, HttpResponseError

from procedures.clock import Clock, SystemClock
from procedures.errors import MetricsUnavailable
from procedures.model import Slot
from procedures.platforms.azure.errors import AzureCalls, translate
from procedures.platforms.azure.settings import AppInsightsSettings, AzureSettings

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential
    from azure.monitor.query import LogsQueryClient

__all__ = ["LATENCY_SOURCE", "AzureMetrics", "RequestCounts", "innermost_error", "logs_failure",
           "request_counts_query"]

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
    duration in milliseconds (one row: total, failed, p95_ms); see the module docstring for
    the two schemas and the component filter."""
    if insights.workspace_id is not None:
        table, role, count, failed, duration = (
            "AppRequests", "AppRoleName", "ItemCount", "Success == false", "DurationMs")
    else:
        # The classic table's ``success`` is a string ("True"/"False"): tobool() reads it (and
        # would read a bool as well), where ``success == false`` is a Kusto type error.
        table, role, count, failed, duration = (
            "requests", "cloud_RoleName", "itemCount", "tobool(success) == false", "duration")
    lines = [table, f"| where {role} == {_literal(role_name)}"]
    if insights.workspace_id is not None and insights.resource_id is not None:
        # _ResourceId is stored lower case; =~ compares without case anyway.
        lines.append(f"| where _ResourceId =~ {_literal(insights.resource_id.lower())}")
    lines.append(f"| summarize total = sum({count}), failed = sumif({count}, {failed}), "
                 f"p95_ms = percentilew({duration}, {count}, 95)")
    return "\n".join(lines)


def _literal(text: str) -> str:
    """A KQL string literal (role names and resource IDs are validated settings; quoted
    anyway)."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


class AzureMetrics:
    """``MetricsSource`` and ``ProvidesLatency`` for an Azure environment: Application
    Insights through Logs.

    ``client`` is a ``LogsQueryClient`` (built lazily from ``credential``, the settings'
    ``endpoint`` and ``client_kwargs`` when not given). Without an ``app_insights`` section
    every reading is ``None`` (and the thread says there is no error data). One query answers
    ``error_count``, ``request_count`` and ``duration_p95_ms`` of the same slot and moment: the
    result, or the :class:`~procedures.errors.MetricsUnavailable` it raised, is kept for
    ``reuse_for``.
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
        self._cache: dict[tuple[Slot, datetime],
                          tuple[datetime, RequestCounts | MetricsUnavailable | None]] = {}

    # -- MetricsSource ---------------------------------------------------------------------

    def error_count(self, slot: Slot, since: datetime) -> int | None:
        """Failed requests of ``slot`` since ``since``; None when there is no data; raises
        MetricsUnavailable when Logs cannot answer."""
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
        """All three figures from one query (reused for ``reuse_for``); None: no data.

        Raises MetricsUnavailable (with Azure's code and message) when the query fails."""
        slot = Slot(slot)
        now = self._clock.now()
        key = (slot, since)
        with self._lock:
            cached = self._cache.get(key)
        if cached is not None and now - cached[0] < self._reuse_for:
            answer = cached[1]
        else:
            try:
                answer = self._query(slot, since, now)
            except MetricsUnavailable as exc:
                answer = exc
            with self._lock:
                self._cache = {k: v for k, v in self._cache.items()
                               if now - v[0] < self._reuse_for}
                self._cache[key] = (now, answer)
        if isinstance(answer, MetricsUnavailable):
            raise answer
        return answer

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
            with AzureCalls(LATENCY_SOURCE).observed(f"count requests of {role}"):
                result = run(target, query, timespan=(start, max(now, start + timedelta(
                    seconds=1))))
        except AzureError as exc:
            failure = logs_failure(exc, insights, role)
            log.warning("no request counts for %s: %s", role, failure.message)
            raise failure from exc
        return _counts_of(result, role)


def logs_failure(exc: AzureError, insights: AppInsightsSettings,
                 role: str) -> MetricsUnavailable:
    """The failure of a Logs query as a :class:`MetricsUnavailable`: Log Analytics' innermost
    error (``SemanticError`` and its message, rather than the outer "The request had some
    invalid properties"), or ARM's code for a 403, and what fixes it."""
    if not isinstance(exc, HttpResponseError) or exc.status_code is None:
        error = translate(exc, service=LATENCY_SOURCE, what=f"count requests of {role}")
        return MetricsUnavailable(LATENCY_SOURCE, error.message.split(": ", 1)[-1],
                                  code=error.code or type(exc).__name__,
                                  retryable=error.retryable, retry_after=error.retry_after)
    status = exc.status_code
    code, detail = innermost_error(exc)
    workspace = insights.workspace_id is not None
    fix: str | None
    if status in (401, 403):
        fix = ("grant the bot's identity Log Analytics Reader on the workspace of "
               f"app_insights.workspace_id {insights.workspace_id}" if workspace else
               "grant the bot's identity Reader on the Application Insights component "
               f"{insights.resource_id}")
    elif status == 404:
        fix = ("check app_insights.workspace_id (the workspace's GUID, not its name)"
               if workspace else "check app_insights.resource_id")
    elif status == 429 or status >= 500:
        fix = "Log Analytics is busy or failing: ask again in a minute"
    elif status == 400:
        fix = "the query is the bot's: report it"
    else:
        fix = None
    error = translate(exc, service=LATENCY_SOURCE, what="query")
    return MetricsUnavailable(LATENCY_SOURCE, detail, code=code or f"HTTP{status}", fix=fix,
                              retryable=error.retryable, retry_after=error.retry_after)


def innermost_error(exc: HttpResponseError) -> tuple[str | None, str]:
    """(code, message) of the error an Azure answer carries: for Log Analytics' nested
    ``innererror`` chain, the first inner code (``SemanticError``) with the deepest message
    (``'where' operator: Failed to resolve column ...``); else the top-level code and message."""
    body: Any = None
    try:
        response = exc.response
        body = json.loads(response.text()) if response is not None else None
    except (ValueError, TypeError):  # not JSON: fall back to azure-core's view of the error
        body = None
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        error = body if isinstance(body, dict) and "code" in body else None
    if error is None:
        parsed = exc.error
        return (getattr(parsed, "code", None) or None,
                " ".join(str(getattr(parsed, "message", None) or exc.reason
                             or "request failed").split()))
    chain = [error]
    while isinstance(chain[-1].get("innererror"), dict):
        chain.append(chain[-1]["innererror"])
    code = chain[1].get("code") if len(chain) > 1 else error.get("code")
    message = chain[-1].get("message") or error.get("message") or "request failed"
    return (str(code) if code else None), " ".join(str(message).split())


def _counts_of(result: Any, role: str) -> RequestCounts | None:
    from azure.monitor.query import LogsQueryStatus

    if getattr(result, "status", None) != LogsQueryStatus.SUCCESS:
        error = getattr(result, "partial_error", None)
        detail = _partial_detail(error)
        log.warning("partial Logs result for %s: %s", role, detail)
        raise MetricsUnavailable(
            LATENCY_SOURCE, detail, code=str(getattr(error, "code", None) or "PartialError"),
            fix="Logs answered only part of the query, so its counts are not used; ask again",
            retryable=True)
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


def _partial_detail(error: Any) -> str:
    """A partial result's reason: its details' inner messages (the SDK keeps only the outer
    "There were some errors when processing your query.")."""
    messages: list[str] = []
    for detail in getattr(error, "details", None) or []:
        inner = detail  # the SDK's details are mappings, not always plain dicts
        while isinstance(inner, Mapping) and isinstance(inner.get("innererror"), Mapping):
            inner = inner["innererror"]
        if isinstance(inner, Mapping) and inner.get("message"):
            messages.append(str(inner["message"]))
    outer = str(getattr(error, "message", None) or "a partial result")
    if messages:
        outer = f"{outer.rstrip('.')}: {'; '.join(messages)}"
    return " ".join(outer.split())


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
