"""PostgreSQL flexible server backups in the double: ``GET .../Microsoft.DBforPostgreSQL/
flexibleServers/{name}/backups?api-version=2024-08-01`` (Backups Automatic and On Demand - List
By Server), in pages of ``BACKUPS_PAGE_SIZE`` entries joined by an absolute ``nextLink``; 404
``ResourceGroupNotFound`` when the server's resource group does not exist."""

from __future__ import annotations

import re
from typing import Any

from tests.azure.arm_double.core import RG_PATTERN, Answer, ArmCore, Request, Route, _error

BACKUPS_API_VERSION = "2024-08-01"
BACKUPS_PAGE_SIZE = 2


class BackupsMixin(ArmCore):
    """The backups of flexible servers."""

    ROUTES: tuple[Route, ...] = (Route("backups", re.compile(
        RG_PATTERN + r"Microsoft\.DBforPostgreSQL/flexibleServers/(?P<name>[^/]+)/backups$",
        re.I)),)

    def _setup(self) -> None:
        super()._setup()
        self.backup_lists: dict[str, list[tuple[str, str, str | None]]] = {}
        self.backup_failures: list[tuple[int, str, str]] = []

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
