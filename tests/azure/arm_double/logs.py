"""Log Analytics in the double: ``POST /v1/workspaces/{id}/query`` and ``POST
/v1{resourceId}/query`` answering request counts (and a p95 duration) per cloud role name
(``set_requests``; ``logs_failures`` injects errors)."""

from __future__ import annotations

import re
from typing import Any

from tests.azure.arm_double.core import Answer, ArmCore, Request, Route, _error

_ROLE_FILTER = re.compile(r'(?:cloud_RoleName|AppRoleName)\s*==\s*"(?P<role>[^"]*)"')


class LogsMixin(ArmCore):
    """Request telemetry per cloud role name."""

    ROUTES = (
        Route("logs", re.compile(r"^/v1/workspaces/(?P<workspace>[^/]+)/query$", re.I)),
        Route("logs", re.compile(r"^/v1(?P<resource>/subscriptions/.+)/query$", re.I)),
    )

    def _setup(self) -> None:
        super()._setup()
        self.request_counts: dict[str, tuple[int, int]] = {}  # role -> (total, failed)
        self.request_p95: dict[str, float | None] = {}  # role -> p95 ms (None: null)
        self.logs_failures: list[int] = []  # HTTP statuses for the next Logs queries

    def set_requests(self, role: str, total: int, failed: int = 0,
                     p95_ms: float | None = None) -> None:
        """What Logs answers for ``role``: ``total`` requests, ``failed`` of them failed and,
        when the query asks for a percentile, ``p95_ms`` (None: a null duration);
        ``clear_requests`` for no rows."""
        with self.lock:
            self.request_counts[role] = (total, failed)
            self.request_p95[role] = p95_ms

    def clear_requests(self, role: str) -> None:
        with self.lock:
            self.request_counts.pop(role, None)

    def _logs_request(self, request: Request) -> Answer:
        if not request.authorized:
            return _error(401, "AuthenticationFailed", "missing or wrong bearer token")
        body: Any = request.body
        if request.method != "POST" or not isinstance(body, dict) or not body.get("query"):
            return _error(400, "BadArgumentError", "POST a JSON body with a query")
        if self.logs_failures:
            status = self.logs_failures.pop(0)
            return _error(status, "ServiceError", f"the query failed ({status})")
        query = str(body["query"])
        found = _ROLE_FILTER.search(query)
        columns = [{"name": "total", "type": "long"}, {"name": "failed", "type": "long"}]
        percentile = "percentile" in query
        if percentile:
            columns.append({"name": "p95_ms", "type": "real"})
        rows: list[list[Any]] = []
        if found and found["role"] in self.request_counts:
            total, failed = self.request_counts[found["role"]]
            row: list[Any] = [total, failed]
            if percentile:
                row.append(self.request_p95.get(found["role"]))
            rows.append(row)
        return Answer(200, {"tables": [{"name": "PrimaryResult", "columns": columns,
                                        "rows": rows}]})
