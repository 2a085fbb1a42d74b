"""Log Analytics in the double: ``POST /v1/workspaces/{id}/query`` (a workspace-based
Application Insights' ``AppRequests``) and ``POST /v1{componentId}/query`` (a resource-centric
query of a component: the classic ``requests`` table), answering the KQL itself.

Telemetry is kept as request rows (role, success, item count, duration, result code, name,
time, component) and shown through each schema's own column names and types, taken from
Microsoft's table references (Azure Monitor Logs reference "AppRequests"; Application Insights
``requests``, where ``success`` is a *string*, as in Microsoft's legacy-to-workspace mapping
``success string -> Success bool``). The query is parsed and evaluated by
:mod:`tests.azure.arm_double.kql`, so a wrong table or column name, or ``success == false`` on
the classic table, gets Log Analytics' error envelope::

    400 {"error": {"message": "The request had some invalid properties",
                   "code": "BadArgumentError", "correlationId": ...,
                   "innererror": {"code": "SemanticError", "message": "A semantic error occurred.",
                                  "innererror": {"code": "SEM0100", "message": "'where' operator:
                                      Failed to resolve column or scalar expression named
                                      'Sucess'"}}}}

and the result's columns are named as the query names them. The request's ``timespan`` (the
ISO 8601 interval ``azure-monitor-query`` sends) bounds the rows that carry a time.

The body is checked against the published ``queryBody`` definition (``tests/azure/specs/
loganalytics-2022-10-27.json``: ``query`` a string, required; ``timespan`` a string;
``workspaces`` an array of strings). A body outside it gets the envelope Log Analytics' query
API answers for an invalid request property (seen for its sister API, a missing ``id``:
microsoft/ApplicationInsights-Home#313)::

    400 {"error": {"message": "The request had some invalid properties",
                   "code": "BadArgumentError", "correlationId": ...,
                   "innererror": {"code": "QueryValidationError",
                                  "message": "'query' property is required"}}}

(the message for a wrong type, "'timespan' property must be a string", is ours: plausible,
not seen). A ``null`` optional property counts as absent, and properties the definition does
not declare are ignored rather than refused: nothing published says the service refuses them,
and a double must not refuse more than the service (the bot's own body is checked strictly in
``tests/azure/test_request_bodies.py``).

Seeding and injection: ``set_requests(role, total, failed, p95_ms)`` (rows for a role, of the
default component unless ``component=`` says otherwise; ``at=`` stamps them, else they fall in
any window), ``clear_requests``; ``logs_failures`` (HTTP statuses for the next queries),
``logs_partial_next(message)`` (the next answer is a partial result: ``tables`` plus an
``error``, which the SDK turns into ``LogsQueryPartialResult``); ``workspace_ids`` maps a
workspace GUID to its resource ID (an unknown GUID: 404 ``WorkspaceNotFoundError``).
Authorization goes through the core's ``check_access``: ``Microsoft.OperationalInsights/
workspaces/query/read`` on the workspace, or ``Microsoft.Insights/components/query/read`` on
the component for a resource-centric query.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from tests.azure.arm_double.authz import COMPONENT_ID, WORKSPACE_ID
from tests.azure.arm_double.core import Answer, ArmCore, Request, Route, _error
from tests.azure.arm_double.kql import (
    KqlError,
    NotImplementedInDouble,
    Schema,
    run_query,
)
from tests.azure.spec_validation import definitions, validate

# The published Log Analytics query API definitions (basePath /v1) the request body is read by.
LOGS_SPEC = "loganalytics-2022-10-27"

DEFAULT_WORKSPACE_GUID = "11111111-2222-3333-4444-555555555555"
# The test world's workspace and component: the ones the bot's roles are granted on.
DEFAULT_WORKSPACE = WORKSPACE_ID
DEFAULT_COMPONENT = COMPONENT_ID

# Azure Monitor Logs reference, table AppRequests (workspace-based Application Insights).
APP_REQUESTS = Schema("AppRequests", (
    ("AppRoleInstance", "string"), ("AppRoleName", "string"), ("AppVersion", "string"),
    ("_BilledSize", "real"), ("ClientBrowser", "string"), ("ClientCity", "string"),
    ("ClientCountryOrRegion", "string"), ("ClientIP", "string"), ("ClientModel", "string"),
    ("ClientOS", "string"), ("ClientStateOrProvince", "string"), ("ClientType", "string"),
    ("DurationMs", "real"), ("Id", "string"), ("IKey", "string"), ("_IsBillable", "string"),
    ("ItemCount", "int"), ("Measurements", "dynamic"), ("Name", "string"),
    ("OperationId", "string"), ("OperationName", "string"), ("ParentId", "string"),
    ("PerformanceBucket", "string"), ("Properties", "dynamic"), ("ReferencedItemId", "string"),
    ("ReferencedType", "string"), ("ResourceGUID", "string"), ("_ResourceId", "string"),
    ("ResultCode", "string"), ("SDKVersion", "string"), ("SessionId", "string"),
    ("Source", "string"), ("SourceSystem", "string"), ("Success", "bool"),
    ("SyntheticSource", "string"), ("_SubscriptionId", "string"), ("TenantId", "string"),
    ("TimeGenerated", "datetime"), ("Type", "string"), ("Url", "string"),
    ("UserAccountId", "string"), ("UserAuthenticatedId", "string"), ("UserId", "string"),
))

# Application Insights' classic ``requests`` table (component scope); ``success`` is a string.
REQUESTS = Schema("requests", (
    ("timestamp", "datetime"), ("id", "string"), ("source", "string"), ("name", "string"),
    ("url", "string"), ("success", "string"), ("resultCode", "string"), ("duration", "real"),
    ("performanceBucket", "string"), ("itemType", "string"), ("customDimensions", "dynamic"),
    ("customMeasurements", "dynamic"), ("operation_Name", "string"),
    ("operation_Id", "string"), ("operation_ParentId", "string"),
    ("operation_SyntheticSource", "string"), ("session_Id", "string"), ("user_Id", "string"),
    ("user_AuthenticatedId", "string"), ("user_AccountId", "string"),
    ("application_Version", "string"), ("client_Type", "string"), ("client_Model", "string"),
    ("client_OS", "string"), ("client_IP", "string"), ("client_City", "string"),
    ("client_StateOrProvince", "string"), ("client_CountryOrRegion", "string"),
    ("client_Browser", "string"), ("cloud_RoleName", "string"),
    ("cloud_RoleInstance", "string"), ("appId", "string"), ("appName", "string"),
    ("iKey", "string"), ("sdkVersion", "string"), ("itemId", "string"), ("itemCount", "int"),
    ("_ResourceId", "string"),
))


@dataclass(frozen=True)
class TelemetryRow:
    """One request row as Application Insights stores it (``item_count`` requests when
    sampled), before a schema names its columns."""

    role: str
    success: bool
    item_count: int
    duration_ms: float | None
    component: str
    at: datetime | None = None
    result_code: str = "200"
    name: str = "GET /"

    def as_app_requests(self) -> dict[str, Any]:
        return {"AppRoleName": self.role, "Success": self.success, "ItemCount": self.item_count,
                "DurationMs": self.duration_ms, "_ResourceId": self.component.lower(),
                "TimeGenerated": self.at, "ResultCode": self.result_code, "Name": self.name,
                "OperationName": self.name, "Type": "AppRequests"}

    def as_requests(self) -> dict[str, Any]:
        return {"cloud_RoleName": self.role, "success": "True" if self.success else "False",
                "itemCount": self.item_count, "duration": self.duration_ms,
                "_ResourceId": self.component.lower(), "timestamp": self.at,
                "resultCode": self.result_code, "name": self.name, "operation_Name": self.name,
                "itemType": "request"}


class LogsMixin(ArmCore):
    """Request telemetry, queried with KQL through Log Analytics' query API."""

    ROUTES: tuple[Route, ...] = (
        Route("logs", re.compile(r"^/v1/workspaces/(?P<workspace>[^/]+)/query$", re.I)),
        Route("logs", re.compile(r"^/v1(?P<resource>/subscriptions/.+)/query$", re.I)),
    )

    def _setup(self) -> None:
        super()._setup()
        self.telemetry: list[TelemetryRow] = []
        self.workspace_ids: dict[str, str] = {DEFAULT_WORKSPACE_GUID: DEFAULT_WORKSPACE}
        # Components whose telemetry goes to each workspace (workspace-based Application
        # Insights); a component not listed here sends to the default workspace.
        self.component_workspaces: dict[str, str] = {}
        self.logs_failures: list[int] = []  # HTTP statuses for the next Logs queries
        self.logs_partials: list[str] = []  # messages of the next partial results

    # -- seeding and injection ----------------------------------------------------------------

    def set_requests(self, role: str, total: int, failed: int = 0,
                     p95_ms: float | None = None, *, component: str = DEFAULT_COMPONENT,
                     at: datetime | None = None) -> None:
        """Replace ``role``'s rows of ``component``: ``total`` requests, ``failed`` of them
        failed, all lasting ``p95_ms`` (None: rows without a duration), as two sampled rows
        (``ItemCount`` = the number of requests each stands for). ``total=0`` leaves one row
        standing for no request; ``clear_requests`` removes the role's rows."""
        rows = [TelemetryRow(role, True, total - failed, p95_ms, component, at),
                TelemetryRow(role, False, failed, p95_ms, component, at, "500")]
        with self.lock:
            self.telemetry = [r for r in self.telemetry if not (
                r.role == role and r.component.lower() == component.lower())]
            self.telemetry.extend(row for row in rows
                                  if row.item_count > 0 or (total == 0 and row.success))

    def add_requests(self, *rows: TelemetryRow) -> None:
        """Append rows as they are (times, components, result codes of their own)."""
        with self.lock:
            self.telemetry.extend(rows)

    def clear_requests(self, role: str) -> None:
        with self.lock:
            self.telemetry = [r for r in self.telemetry if r.role != role]

    def logs_partial_next(self, message: str) -> None:
        """The next query answers 200 with its tables and an ``error`` saying ``message``."""
        with self.lock:
            self.logs_partials.append(message)

    # -- the query API ----------------------------------------------------------------------

    def _logs_request(self, request: Request) -> Answer:
        if not request.authorized:
            return _error(401, "AuthenticationFailed", "missing or wrong bearer token")
        body: Any = request.body
        if request.method != "POST":
            return _error(405, "MethodNotAllowed", f"{request.method} query")
        invalid = _invalid_query_body(body)
        if invalid is not None:
            return invalid
        scope = self._logs_scope(request)
        if isinstance(scope, Answer):
            return scope
        resource, schema, action = scope
        denied = self.check_access(action, resource)
        if denied is not None:
            return denied
        if self.logs_failures:
            status = self.logs_failures.pop(0)
            return _error(status, "ServiceError", f"the query failed ({status})")
        window = _timespan(body.get("timespan"))
        if isinstance(window, Answer):
            return window
        try:
            result = run_query(
                body["query"], lambda name: schema if name == schema.name else None,
                lambda _: self._rows(schema, resource, window))
        except KqlError as exc:
            return _logs_error(400, "BadArgumentError", "The request had some invalid "
                               "properties", {"code": exc.kind, "message": (
                                   "A semantic error occurred." if exc.kind == "SemanticError"
                                   else "A syntax error occurred."),
                                   "innererror": {"code": exc.code, "message": exc.message}})
        except NotImplementedInDouble as exc:
            return _error(501, "NotImplementedInDouble",
                          f"the ARM double's KQL does not implement {exc}")
        table = {"name": "PrimaryResult",
                 "columns": [{"name": name, "type": kind} for name, kind in result.columns],
                 "rows": result.rows}
        answer: dict[str, Any] = {"tables": [table]}
        with self.lock:
            partial = self.logs_partials.pop(0) if self.logs_partials else None
        if partial is not None:
            answer["error"] = {
                "code": "PartialError",
                "message": "There were some errors when processing your query.",
                "details": [{"code": "EngineError",
                             "message": "Something went wrong processing your query on the "
                                        "server.",
                             "innererror": {"code": "-2133196790", "message": partial,
                                            "severity": 2, "severityName": "Error"}}]}
        return Answer(200, answer)

    def _logs_scope(self, request: Request) -> tuple[str, Schema, str] | Answer:
        """The resource the query reads, its table, and the action it needs."""
        groups = request.match.groupdict()
        if groups.get("workspace"):
            guid = groups["workspace"].lower()
            workspace = {k.lower(): v for k, v in self.workspace_ids.items()}.get(guid)
            if workspace is None:
                return _logs_error(404, "WorkspaceNotFoundError",
                                   f"The workspace {groups['workspace']} could not be found")
            return workspace, APP_REQUESTS, \
                "Microsoft.OperationalInsights/workspaces/query/read"
        resource = groups["resource"]
        if not re.match(r"^/subscriptions/[^/]+/resourceGroups/[^/]+/providers/"
                        r"Microsoft\.Insights/components/[^/]+$", resource, re.I):
            return _error(501, "NotImplementedInDouble", "the ARM double answers "
                          f"resource-centric queries of Application Insights components "
                          f"only, not {resource}")
        return resource, REQUESTS, "Microsoft.Insights/components/query/read"

    def _rows(self, schema: Schema, resource: str,
              window: tuple[datetime, datetime] | None) -> list[dict[str, Any]]:
        with self.lock:
            rows = list(self.telemetry)
        chosen = []
        for row in rows:
            if schema is APP_REQUESTS:
                home = self.component_workspaces.get(row.component.lower(), DEFAULT_WORKSPACE)
                if home.lower() != resource.lower():
                    continue
            elif row.component.lower() != resource.lower():
                continue
            if window is not None and row.at is not None and not (
                    window[0] <= row.at < window[1]):
                continue
            chosen.append(row.as_app_requests() if schema is APP_REQUESTS
                          else row.as_requests())
        return chosen


def _invalid_query_body(body: Any) -> Answer | None:
    """400 ``BadArgumentError`` / ``QueryValidationError`` when ``body`` is not a published
    ``queryBody``, or its query is blank (nothing to run); None when it is one."""
    if not isinstance(body, dict):
        return _query_validation_error("The request body must be a JSON object")
    declared = definitions(LOGS_SPEC)["queryBody"]["properties"]
    # What the service reads: the declared properties that are not null.
    read = {name: value for name, value in body.items()
            if name in declared and value is not None}
    for problem in validate(read, "queryBody", spec=LOGS_SPEC):
        where, what = problem.split(": ", 1)
        name = where.removeprefix("$.").split(".", 1)[0].split("[", 1)[0]
        if what == "required property missing":
            return _query_validation_error(f"'{name}' property is required")
        kind = "an array of strings" if name == "workspaces" else "a string"
        return _query_validation_error(f"'{name}' property must be {kind}")
    if not read["query"].strip():
        return _query_validation_error("'query' property is required")
    return None


def _query_validation_error(message: str) -> Answer:
    return _logs_error(400, "BadArgumentError", "The request had some invalid properties",
                       {"code": "QueryValidationError", "message": message})


def _logs_error(status: int, code: str, message: str,
                inner: dict[str, Any] | None = None) -> Answer:
    """Log Analytics' error envelope (its data-plane shape, with a correlation ID)."""
    error: dict[str, Any] = {"message": message, "code": code,
                             "correlationId": str(uuid.uuid4())}
    if inner is not None:
        error["innererror"] = inner
    return Answer(status, {"error": error})


def _timespan(value: Any) -> tuple[datetime, datetime] | Answer | None:
    """The ``timespan`` azure-monitor-query sends: ``start/end``, ``start/PT<n>S`` or
    ``PT<n>S`` (ending now); None when absent."""
    if value in (None, ""):
        return None
    text = str(value)
    try:
        if "/" in text:
            first, second = text.split("/", 1)
            start = _instant(first)
            end = start + _duration(second) if second.upper().startswith("P") \
                else _instant(second)
            return start, end
        end = datetime.now(UTC)
        return end - _duration(text), end
    except ValueError:
        return _logs_error(400, "BadArgumentError", "The request had some invalid properties",
                           {"code": "InvalidTimespan",
                            "message": f"'{text}' is not a valid ISO 8601 timespan"})


def _instant(text: str) -> datetime:
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _duration(text: str) -> timedelta:
    match = re.fullmatch(r"P(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:([\d.]+)S)?)?", text.upper())
    if not match or text.upper() in ("P", "PT"):
        raise ValueError(text)
    days, hours, minutes, seconds = (float(g) if g else 0.0 for g in match.groups())
    return timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds)
