"""The age of the newest backup of an Azure Database for PostgreSQL flexible server.

The seed's *verify backups* check, for environments whose ``azure:`` section names
``postgres_server``. :class:`FlexibleServerBackups` lists the server's backups with
``GET /subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.DBforPostgreSQL/
flexibleServers/{name}/backups?api-version=2024-08-01`` (Backups Automatic and On Demand - List
By Server), following ``nextLink``, and keeps the one with the latest ``completedTime``,
whatever its ``backupType`` (``Full`` for the automatic daily backups, ``Customer On-Demand``
for on-demand ones). Entries without a ``completedTime`` are ignored.

azure-mgmt-postgresqlflexibleservers is not a dependency: the call goes through azure-mgmt-core's
``ARMPipelineClient`` with the same credential, ARM endpoint and transport options
(``connection_verify``...) as the environment's other clients, and the JSON is read here.
Errors are translated by :func:`procedures.platforms.azure.errors.translate` (403 without the
``Microsoft.DBforPostgreSQL/flexibleServers/backups/read`` permission, 404 for an unknown
server, 429/5xx retryable).

:class:`BackupAge` is the verdict: ``fresh`` when the newest backup is at most
``max_backup_age`` old (26 hours by default: a daily backup plus slack). ``final_validation``
reports it and fails the step on a stale backup or none at all.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from azure.core.exceptions import AzureError, HttpResponseError, map_error
from azure.core.rest import HttpRequest
from azure.mgmt.core.exceptions import ARMErrorFormat

from procedures.durations import format_duration
from procedures.errors import ExternalServiceError
from procedures.platforms.azure.errors import translate
from procedures.platforms.azure.settings import AzureSettings

if TYPE_CHECKING:
    from azure.mgmt.core import ARMPipelineClient

    from procedures.platforms.azure.clients import AzureClients

__all__ = [
    "API_VERSION",
    "Backup",
    "BackupAge",
    "FlexibleServerBackups",
    "arm_pipeline",
    "latest_backup",
]

SERVICE = "Azure Database for PostgreSQL"
API_VERSION = "2024-08-01"
DEFAULT_SCOPE = "https://management.azure.com/.default"
MAX_PAGES = 50


@dataclass(frozen=True)
class Backup:
    """One completed backup: its name, ``backupType``, ``source`` and ``completedTime``."""

    name: str
    backup_type: str
    completed: datetime
    source: str | None = None

    def describe(self) -> str:
        kind = self.backup_type + (f", {self.source.lower()}" if self.source else "")
        return f"{self.completed.astimezone(UTC):%Y-%m-%d %H:%M} UTC ({kind})"


@dataclass(frozen=True)
class BackupAge:
    """The newest backup of ``server`` (None: there is none) as seen at ``checked_at``."""

    server: str
    latest: Backup | None
    checked_at: datetime
    max_age: timedelta
    count: int = 0

    @property
    def age(self) -> timedelta | None:
        if self.latest is None:
            return None
        return max(self.checked_at - self.latest.completed, timedelta(0))

    @property
    def fresh(self) -> bool:
        age = self.age
        return age is not None and age <= self.max_age

    def describe(self) -> str:
        """``PostgreSQL server qlp-db: latest backup 2026-12-01 03:00 UTC (Full) (8h old)``."""
        where = f"PostgreSQL server {self.server}"
        limit = format_duration(self.max_age)
        if self.latest is None or self.age is None:
            return f"{where}: no completed backup at all (at most {limit} old is allowed)"
        line = (f"{where}: latest backup {self.latest.describe()} "
                f"({format_duration(self.age)} old)")
        if not self.fresh:
            line += f", older than the {limit} allowed"
        return line


def arm_pipeline(clients: AzureClients) -> ARMPipelineClient[Any, Any]:
    """An ``ARMPipelineClient`` with the environment's credential, ARM endpoint and options,
    built the way the generated management clients build theirs (the caller closes it)."""
    from azure.core.pipeline import policies
    from azure.mgmt.core import ARMPipelineClient
    from azure.mgmt.core.policies import (
        ARMAutoResourceProviderRegistrationPolicy,
        ARMChallengeAuthenticationPolicy,
        ARMHttpLoggingPolicy,
    )

    kwargs = clients._arm_kwargs()  # same package: the shared options
    scopes = list(kwargs.pop("credential_scopes", None) or [DEFAULT_SCOPE])
    kwargs.pop("polling_interval", None)
    pipeline_policies: list[Any] = [
        policies.RequestIdPolicy(**kwargs),
        policies.HeadersPolicy(**kwargs),
        policies.UserAgentPolicy(sdk_moniker="qlp-chatops", **kwargs),
        policies.ProxyPolicy(**kwargs),
        policies.ContentDecodePolicy(**kwargs),
        ARMAutoResourceProviderRegistrationPolicy(),
        policies.RedirectPolicy(**kwargs),
        policies.RetryPolicy(**kwargs),
        ARMChallengeAuthenticationPolicy(clients.credential, *scopes, **kwargs),
        policies.CustomHookPolicy(**kwargs),
        policies.NetworkTraceLoggingPolicy(**kwargs),
        policies.DistributedTracingPolicy(**kwargs),
        ARMHttpLoggingPolicy(**kwargs),
    ]
    return ARMPipelineClient(clients.base_url, policies=pipeline_policies, **kwargs)


class FlexibleServerBackups:
    """Reads the backups of the environment's PostgreSQL flexible server."""

    def __init__(self, settings: AzureSettings, client: ARMPipelineClient[Any, Any]) -> None:
        if not settings.postgres_server:
            raise ValueError("the azure settings name no postgres_server")
        self.settings = settings
        self.server: str = settings.postgres_server
        self._client = client

    @property
    def path(self) -> str:
        s = self.settings
        return (f"/subscriptions/{s.subscription_id}/resourceGroups/{s.resource_group}"
                f"/providers/Microsoft.DBforPostgreSQL/flexibleServers/{self.server}/backups")

    def backups(self) -> list[Backup]:
        """Every completed backup of the server; raises ExternalServiceError."""
        what = f"list the backups of PostgreSQL server {self.server}"
        try:
            return list(self._list())
        except AzureError as exc:
            raise translate(exc, service=SERVICE, what=what) from exc
        except ValueError as exc:  # not JSON, or not the documented shape
            raise ExternalServiceError(SERVICE, f"{what}: unexpected answer: {exc}",
                                       code="InvalidResponse") from exc

    def age(self, now: datetime) -> BackupAge:
        """The newest backup and its age at ``now``; raises ExternalServiceError."""
        found = self.backups()
        latest = max(found, key=lambda backup: backup.completed, default=None)
        return BackupAge(self.server, latest, now, self.settings.max_backup_age, len(found))

    def _list(self) -> Iterator[Backup]:
        request = HttpRequest("GET", self._client.format_url(self.path),
                              params={"api-version": API_VERSION})
        for _ in range(MAX_PAGES):
            response = self._client.send_request(request)
            if response.status_code != 200:
                map_error(status_code=response.status_code, response=response, error_map={})
                raise HttpResponseError(response=response, error_format=ARMErrorFormat)
            body = response.json()
            if not isinstance(body, Mapping):
                raise ValueError("the answer is not a JSON object")
            for item in body.get("value") or []:
                backup = _backup(item)
                if backup is not None:
                    yield backup
            next_link = body.get("nextLink")
            if not next_link:
                return
            request = HttpRequest("GET", str(next_link))
        raise ValueError(f"more than {MAX_PAGES} pages of backups")


def latest_backup(platform: object, now: datetime) -> BackupAge | None:
    """The backup age of ``platform``'s PostgreSQL server when ``platform`` is an Azure
    platform (its ``settings`` are :class:`AzureSettings`) whose settings name
    ``postgres_server``, else None.

    Raises ExternalServiceError when Azure cannot answer. The platform is recognised by its
    settings, not its class: ``procedures.platforms.azure.platform`` imports this module.
    """
    settings = getattr(platform, "settings", None)
    clients: AzureClients | None = getattr(platform, "_clients", None)  # same package
    if not isinstance(settings, AzureSettings) or clients is None:
        return None
    return backup_age(settings, clients, now)


def backup_age(settings: AzureSettings, clients: AzureClients,
               now: datetime) -> BackupAge | None:
    """The backup age of the PostgreSQL flexible server ``settings`` name (None: none named),
    read with ``clients``' credential. Raises ExternalServiceError when Azure cannot answer."""
    if not settings.postgres_server:
        return None
    client = arm_pipeline(clients)
    try:
        return FlexibleServerBackups(settings, client).age(now)
    finally:
        client.close()


def _backup(item: Any) -> Backup | None:
    if not isinstance(item, Mapping):
        raise ValueError("a backup is not a JSON object")
    properties = item.get("properties") or {}
    completed = properties.get("completedTime")
    if not completed:
        return None
    moment = datetime.fromisoformat(str(completed))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return Backup(name=str(item.get("name") or "?"),
                  backup_type=str(properties.get("backupType") or "unknown type"),
                  completed=moment, source=properties.get("source"))
