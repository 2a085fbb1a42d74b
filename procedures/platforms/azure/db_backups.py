"""On-demand backups of an Azure Database for PostgreSQL flexible server.

The seed's ``create-snapshot.sh`` before a deployment and an emergency, for environments whose
``azure:`` section names ``postgres_server``. :class:`OnDemandBackups` starts one with
``PUT /subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.DBforPostgreSQL/
flexibleServers/{server}/backups/{backupName}?api-version=2025-08-01`` (operation
``BackupsAutomaticAndOnDemand_Create`` of the stable 2025-08-01 spec: no request body,
``202 Accepted`` with ``Azure-AsyncOperation``, ``Location`` and ``Retry-After``), polls the
``Azure-AsyncOperation`` URL until it is ``Succeeded``, ``Failed`` or ``Canceled``, sleeping
only through the caller's sleep (a step's, which ends at its deadline), then reads the backup
(``BackupsAutomaticAndOnDemand_Get``) for its ``completedTime``. Azure does not report a
backup's size: the step says so.

The identity needs ``Microsoft.DBforPostgreSQL/flexibleServers/backups/write`` on the server
(``roles.py``: Contributor on the server, or a custom role with that action). A server whose
tier cannot take on-demand backups answers 400: that is no failure of the step, it is reported
plainly (:class:`NotSupported`), and the automatic backups remain what there is.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from azure.core.exceptions import AzureError, HttpResponseError, map_error
from azure.core.rest import HttpRequest
from azure.mgmt.core.exceptions import ARMErrorFormat

from procedures.clock import Clock
from procedures.durations import format_duration
from procedures.errors import ExternalServiceError
from procedures.platforms.azure.backups import SERVICE, arm_pipeline
from procedures.platforms.azure.errors import AzureCalls, translate
from procedures.platforms.azure.settings import AzureSettings

__all__ = ["CREATE_API_VERSION", "NotSupported", "OnDemandBackup", "OnDemandBackups"]

CREATE_API_VERSION = "2025-08-01"
DEFAULT_POLL = 10.0  # seconds between status reads when Azure names no Retry-After
MAX_POLL = 60.0
TERMINAL = ("succeeded", "failed", "canceled", "cancelled")


class NotSupported(Exception):
    """The server cannot take an on-demand backup (its tier, its state): Azure's 400."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class OnDemandBackup:
    """A finished on-demand backup: its name, the server, when it completed."""

    name: str
    server: str
    completed: datetime | None
    backup_type: str


class OnDemandBackups:
    """Takes on-demand backups of the environment's PostgreSQL flexible server."""

    def __init__(self, settings: AzureSettings, client: Any, clock: Clock) -> None:
        if not settings.postgres_server:
            raise ValueError("the azure settings name no postgres_server")
        self.settings = settings
        self.server: str = settings.postgres_server
        self._client = client
        self._clock = clock

    def path(self, name: str) -> str:
        s = self.settings
        return (f"/subscriptions/{s.subscription_id}/resourceGroups/{s.resource_group}"
                f"/providers/Microsoft.DBforPostgreSQL/flexibleServers/{self.server}"
                f"/backups/{name}")

    def take(self, name: str, *, within: timedelta, sleep: Callable[[float], None],
             report: Callable[[str], None]) -> OnDemandBackup:
        """Start the backup ``name`` and wait for it at most ``within``.

        Raises :class:`NotSupported` on Azure's 400, ExternalServiceError otherwise."""
        what = f"take an on-demand backup of PostgreSQL server {self.server}"
        try:
            return self._take(name, within, sleep, report, what)
        except AzureError as exc:
            if isinstance(exc, HttpResponseError) and exc.status_code == 400:
                raise NotSupported(translate(exc, service=SERVICE, what=what).message) from exc
            raise translate(exc, service=SERVICE, what=what) from exc
        except ValueError as exc:  # not JSON, or not the documented shape
            raise ExternalServiceError(SERVICE, f"{what}: unexpected answer: {exc}",
                                       code="InvalidResponse") from exc

    def _send(self, request: HttpRequest, ok: tuple[int, ...]) -> Any:
        verb = "create" if request.method == "PUT" else "read"
        with AzureCalls(SERVICE).observed(f"{verb} backup of {self.server}"):
            return self._sent(request, ok)

    def _sent(self, request: HttpRequest, ok: tuple[int, ...]) -> Any:
        response = self._client.send_request(request)
        if response.status_code not in ok:
            map_error(status_code=response.status_code, response=response, error_map={})
            raise HttpResponseError(response=response, error_format=ARMErrorFormat)
        return response

    def _take(self, name: str, within: timedelta, sleep: Callable[[float], None],
              report: Callable[[str], None], what: str) -> OnDemandBackup:
        url = self._client.format_url(self.path(name))
        started = self._clock.now()
        response = self._send(HttpRequest("PUT", url, params={
            "api-version": CREATE_API_VERSION}), (200, 201, 202))
        if response.status_code == 202:
            monitor = (response.headers.get("Azure-AsyncOperation")
                       or response.headers.get("Location"))
            if not monitor:
                raise ValueError("202 without Azure-AsyncOperation or Location")
            wait = _retry_after(response.headers)
            reported = started
            while True:
                if self._clock.now() - started >= within:
                    raise ExternalServiceError(
                        SERVICE, f"{what}: not finished after {format_duration(within)}",
                        retryable=False, code="Timeout")
                sleep(wait)
                status_response = self._send(HttpRequest("GET", monitor), (200, 202))
                body = status_response.json() if status_response.content else {}
                status = str((body or {}).get("status") or "InProgress")
                wait = _retry_after(status_response.headers)
                if status.lower() in TERMINAL:
                    break
                now = self._clock.now()
                if now - reported >= timedelta(minutes=1):
                    reported = now
                    report(f"On-demand backup {name} of PostgreSQL server {self.server}: "
                           f"still {status} after {format_duration(now - started)}.")
            if status.lower() != "succeeded":
                error = (body or {}).get("error") or {}
                raise ExternalServiceError(
                    SERVICE, f"{what}: the backup ended {status}: "
                    f"{error.get('code') or 'no code'}: {error.get('message') or 'no message'}",
                    code=str(error.get("code") or status))
        got = self._send(HttpRequest("GET", url, params={"api-version": CREATE_API_VERSION}),
                         (200,)).json()
        if not isinstance(got, Mapping):
            raise ValueError("the backup is not a JSON object")
        properties = got.get("properties") or {}
        completed = properties.get("completedTime")
        moment = datetime.fromisoformat(str(completed)) if completed else None
        if moment is not None and moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return OnDemandBackup(str(got.get("name") or name), self.server, moment,
                              str(properties.get("backupType") or "Customer On-Demand"))


def take_on_demand(settings: AzureSettings, clients: Any, clock: Clock, name: str, *,
                   within: timedelta, sleep: Callable[[float], None],
                   report: Callable[[str], None]) -> OnDemandBackup:
    """One on-demand backup with ``clients``' credential (the pipeline is closed after)."""
    client = arm_pipeline(clients)
    try:
        return OnDemandBackups(settings, client, clock).take(name, within=within, sleep=sleep,
                                                              report=report)
    finally:
        client.close()


def _retry_after(headers: Mapping[str, str]) -> float:
    value = headers.get("Retry-After")
    try:
        seconds = float(value) if value is not None else DEFAULT_POLL
    except ValueError:
        seconds = DEFAULT_POLL
    return min(max(seconds, 0.0), MAX_POLL)
