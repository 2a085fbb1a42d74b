r"""PostgreSQL flexible server backups in the double.

- ``GET .../Microsoft.DBforPostgreSQL/flexibleServers/{name}/backups?api-version=2024-08-01``
  (Backups Automatic and On Demand - List By Server), in pages of ``BACKUPS_PAGE_SIZE`` entries
  joined by an absolute ``nextLink``; 404 ``ResourceGroupNotFound`` when the server's resource
  group does not exist.
- ``PUT .../flexibleServers/{name}/backups/{backupName}?api-version=2025-08-01``
  (``BackupsAutomaticAndOnDemand_Create`` of the stable 2025-08-01 spec,
  ``tests/azure/specs/postgresql-2025-08-01.json``): no request body (a body is refused),
  ``backupName`` matching ``^[-\w\._]+$`` (1-128), 403 ``AuthorizationFailed`` without
  ``Microsoft.DBforPostgreSQL/flexibleServers/backups/write`` on the server, 404 for an unknown
  server or resource group, 400 for a server marked with ``refuse_on_demand`` (its tier). Else
  ``202 Accepted`` with ``Azure-AsyncOperation`` (``.../locations/{loc}/azureAsyncOperation/
  {id}``), ``Location`` and ``Retry-After``; the operation is ``InProgress`` for
  ``on_demand_seconds`` of model time (``clock``), then ``Succeeded`` and the backup is listed
  (``Customer On-Demand``, ``completedTime`` from ``backup_wall``).
- ``GET .../backups/{backupName}?api-version=2025-08-01`` (``_Get``): the backup, or 404.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from tests.azure.arm_double.core import (
    RG_PATTERN,
    SUBSCRIPTION,
    Answer,
    ArmCore,
    Operation,
    Request,
    Route,
    _error,
)

BACKUPS_API_VERSION = "2024-08-01"
ON_DEMAND_API_VERSION = "2025-08-01"
BACKUPS_PAGE_SIZE = 2
BACKUP_WRITE = "Microsoft.DBforPostgreSQL/flexibleServers/backups/write"
BACKUP_NAME = re.compile(r"^[-\w\._]+$")


class BackupsMixin(ArmCore):
    """The backups of flexible servers."""

    ROUTES: tuple[Route, ...] = (
        Route("backups", re.compile(
            RG_PATTERN + r"Microsoft\.DBforPostgreSQL/flexibleServers/(?P<name>[^/]+)/backups$",
            re.I)),
        Route("backup", re.compile(
            RG_PATTERN + r"Microsoft\.DBforPostgreSQL/flexibleServers/(?P<name>[^/]+)/backups/"
            r"(?P<backup>[^/]+)$", re.I)),
        # The flexible server's status monitor, answered by the core's operation handler.
        Route("operation", re.compile(
            r"^/subscriptions/[^/]+/providers/(?P<provider>Microsoft\.DBforPostgreSQL)/"
            r"locations/(?P<loc>[^/]+)/(?P<kind>azureAsyncOperation)/(?P<id>[^/]+)$", re.I)),
    )

    def _setup(self) -> None:
        super()._setup()
        self.backup_lists: dict[str, list[tuple[str, str, str | None]]] = {}
        self.backup_failures: list[tuple[int, str, str]] = []
        self.on_demand_refusals: dict[str, tuple[str, str]] = {}
        self.on_demand_seconds = 90.0  # model time an on-demand backup takes
        self.backup_wall: Callable[[], datetime] = lambda: datetime.now(UTC)

    def _backups_request(self, request: Request) -> Answer:
        query, match, path = request.query, request.match, request.path
        if self.backup_failures:
            status, code, message = self.backup_failures.pop(0)
            return _error(status, code, message)
        if not request.authorized:
            return _error(401, "AuthenticationFailed", "missing or wrong bearer token")
        if request.method != "GET":
            return _error(405, "MethodNotAllowed", f"{request.method} backups")
        if query.get("api-version") != BACKUPS_API_VERSION:
            return _error(400, "InvalidApiVersionParameter",
                          f"api-version {query.get('api-version')} is not "
                          f"{BACKUPS_API_VERSION}")
        missing = self.missing_resource_group(match["rg"])
        if missing is not None:
            return missing
        server = match["name"]
        known = self.backup_lists.get(server.lower())
        if known is None:
            return _error(404, "ResourceNotFound",
                          f"The Resource 'Microsoft.DBforPostgreSQL/flexibleServers/{server}' "
                          f"under resource group '{match['rg']}' was not found.")
        start = int(query.get("$skipToken") or 0)
        page = known[start:start + BACKUPS_PAGE_SIZE]
        value = [{
            "id": f"{path}/{name}", "name": name,
            "type": "Microsoft.DBforPostgreSQL/flexibleServers/backups",
            "properties": {"backupType": kind,
                           "source": "Automatic" if kind == "Full" else "On-Demand",
                           **({"completedTime": done} if done else {})},
        } for name, kind, done in page]
        answer: dict[str, Any] = {"value": value}
        if start + BACKUPS_PAGE_SIZE < len(known):
            answer["nextLink"] = (f"{self.url}{path}?api-version={BACKUPS_API_VERSION}"
                                  f"&$skipToken={start + BACKUPS_PAGE_SIZE}")
        return Answer(200, answer)


    # -- on-demand backups: create and get ------------------------------------------------

    def _backup_request(self, request: Request) -> Answer:
        match, query = request.match, request.query
        if not request.authorized:
            return _error(401, "AuthenticationFailed", "missing or wrong bearer token")
        if request.method not in ("PUT", "GET"):
            return _error(405, "MethodNotAllowed", f"{request.method} backup")
        if query.get("api-version") != ON_DEMAND_API_VERSION:
            return _error(400, "InvalidApiVersionParameter",
                          f"api-version {query.get('api-version')} is not "
                          f"{ON_DEMAND_API_VERSION}")
        server, name, rg = match["name"], match["backup"], match["rg"]
        server_id = (f"/subscriptions/{match['sub']}/resourceGroups/{rg}/providers/"
                     f"Microsoft.DBforPostgreSQL/flexibleServers/{server}")
        if request.method == "PUT":
            denied = self.check_access(BACKUP_WRITE, server_id)
            if denied is not None:
                return denied
        missing = self.missing_resource_group(rg)
        if missing is not None:
            return missing
        known = self.backup_lists.get(server.lower())
        if known is None:
            return _error(404, "ResourceNotFound",
                          f"The Resource 'Microsoft.DBforPostgreSQL/flexibleServers/{server}' "
                          f"under resource group '{rg}' was not found.")
        if request.method == "GET":
            for entry_name, kind, done in known:
                if entry_name == name:
                    return Answer(200, _entry(f"{server_id}/backups", entry_name, kind, done))
            return _error(404, "ResourceNotFound", f"The backup '{name}' was not found.")
        if not (1 <= len(name) <= 128 and BACKUP_NAME.match(name)):
            return _error(400, "InvalidParameterValue",
                          f"backupName '{name}' does not match ^[-\\w\\._]+$ (1-128)")
        if request.body not in (None, "", b"", {}):
            return _error(400, "InvalidRequestContent",
                          "BackupsAutomaticAndOnDemand_Create takes no request body")
        refusal = self.on_demand_refusals.get(server.lower())
        if refusal is not None:
            return _error(400, *refusal)
        op = Operation(id=f"op-{next(self._ids)}", kind="on_demand_backup",
                       target=(server.lower(), name), polls=self.polls,
                       started_at=self.clock(), ready_at=self.clock() + self.on_demand_seconds)
        self.operations[op.id] = op
        url = (f"{self.url}/subscriptions/{SUBSCRIPTION}/providers/Microsoft.DBforPostgreSQL/"
               f"locations/westeurope/azureAsyncOperation/{op.id}"
               f"?api-version={ON_DEMAND_API_VERSION}")
        return Answer(202, None, {"Azure-AsyncOperation": url,
                                  "Location": url.replace("azureAsyncOperation",
                                                          "operationResults"),
                                  "Retry-After": "10"})

    def _finish_on_demand_backup(self, op: Operation) -> None:
        server, name = op.target
        self.backup_lists.setdefault(server, []).append(
            (name, "Customer On-Demand", self.backup_wall().isoformat()))


def _entry(path: str, name: str, kind: str, done: str | None) -> dict[str, Any]:
    return {"id": f"{path}/{name}", "name": name,
            "type": "Microsoft.DBforPostgreSQL/flexibleServers/backups",
            "properties": {"backupType": kind,
                           "source": "Automatic" if kind == "Full" else "On-Demand",
                           **({"completedTime": done} if done else {})}}


def refuse_on_demand(double: BackupsMixin, server: str, code: str, message: str) -> None:
    """Answer every on-demand backup of ``server`` with 400 ``code``/``message`` (a server
    whose tier or state cannot take one)."""
    with double.lock:
        double.on_demand_refusals[server.lower()] = (code, message)


def set_backups(double: BackupsMixin, server: str,
                backups: list[tuple[str, str, str | None]]) -> None:
    """The backups of ``server``: ``(name, backupType, completedTime or None)``; a server never
    given any is unknown (404 ResourceNotFound)."""
    with double.lock:
        double.backup_lists[server.lower()] = list(backups)


def fail_backups(double: BackupsMixin, status: int, code: str, message: str) -> None:
    """Answer the next backups list with this ARM error."""
    with double.lock:
        double.backup_failures.append((status, code, message))
