"""Azure Container Instances: one container group per colour (``<prefix>-blue|green``).

:func:`build_group` turns the settings, a colour, a version and the resolved secrets into the
``ContainerGroup`` to PUT: the image from the registry pulled with the user-assigned identity
(the same identity in ``identity`` and ``imageRegistryCredentials``), CPU, memory, ports, a
public IP with a DNS label whose scope is ``TenantReuse`` (never the SDK's default ``Unsecure``,
which lets a released name be taken over), the restart policy, plain and secure environment
variables (with the colour's telemetry identity, ``OTEL_SERVICE_NAME`` and
``APPLICATIONINSIGHTS_ROLE_NAME``), and tags that record the colour and the version.

:class:`ContainerGroups` creates (``begin_create_or_update``: only the PUT is retried, then the
long-running operation is followed within a timeout), reads (:class:`GroupState`, with
``None`` where Azure has not filled a field in yet) and deletes groups (bounded too). A
long-running operation is followed in short slices (:class:`SlicedPolling`: one status read,
then a wait through the platform's sleep, which a step lends so that its deadline or a cancel
stops the wait between two reads), never by blocking in ``poller.result(timeout=...)``.
Secure values are sent once, in the PUT body; Azure never returns them and nothing here logs
or repeats them.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from azure.core.exceptions import AzureError, ResourceNotFoundError
from azure.mgmt.containerinstance.models import (
    Container,
    ContainerGroup,
    ContainerGroupIdentity,
    ContainerPort,
    EnvironmentVariable,
    ImageRegistryCredential,
    IpAddress,
    Port,
    ResourceRequests,
    ResourceRequirements,
    UserAssignedIdentities,
)

from procedures.clock import Clock, SystemClock
from procedures.durations import format_duration
from procedures.errors import ExternalServiceError, StepFailure
from procedures.platforms.azure.clients import AzureClients
from procedures.platforms.azure.errors import AzureCalls, SlicedPolling, translate
from procedures.platforms.azure.settings import AzureSettings

__all__ = ["ContainerGroups", "ContainerView", "GroupState", "ProvisioningFailed", "build_group"]

log = logging.getLogger(__name__)

SERVICE = "Azure Container Instances"
TAG_COLOUR = "qlp-colour"
TAG_VERSION = "qlp-version"
TAG_ENVIRONMENT = "qlp-environment"


@dataclass(frozen=True)
class ContainerView:
    """One container of a group as Azure reports it (``None``: not reported yet)."""

    name: str
    image: str | None
    state: str | None  # Running, Waiting (starting or crash-loop back-off), Terminated
    restart_count: int
    detail: str | None = None
    exit_code: int | None = None
    last_event: str | None = None


@dataclass(frozen=True)
class GroupState:
    """A container group read back from Azure."""

    name: str
    provisioning_state: str | None  # Pending, Creating, Succeeded, Failed, ...
    state: str | None  # the instance view's state: Running, Stopped, Pending, ...
    containers: tuple[ContainerView, ...] = ()
    fqdn: str | None = None
    ip: str | None = None
    tags: Mapping[str, str] = field(default_factory=dict)
    events: tuple[str, ...] = ()

    @property
    def version(self) -> str | None:
        """The version the bot deployed (its tag), else the tag of the first image."""
        tagged = self.tags.get(TAG_VERSION)
        if tagged:
            return tagged
        for container in self.containers:
            if container.image and ":" in container.image.rsplit("/", 1)[-1]:
                return container.image.rsplit(":", 1)[-1]
        return None

    @property
    def host(self) -> str | None:
        """Where the group answers: its FQDN (public) or its IP (private)."""
        return self.fqdn or self.ip

    @property
    def succeeded(self) -> bool:
        return (self.provisioning_state or "").lower() == "succeeded"

    @property
    def failed(self) -> bool:
        return (self.provisioning_state or "").lower() == "failed"

    @property
    def running(self) -> bool:
        """Provisioned, the group Running and every container Running."""
        return (self.succeeded and (self.state or "").lower() == "running"
                and bool(self.containers)
                and all((c.state or "").lower() == "running" for c in self.containers))

    @property
    def restarts(self) -> int:
        return max((c.restart_count for c in self.containers), default=0)

    def describe(self) -> str:
        """One line: provisioning, state, each container's state and restarts."""
        parts = [f"provisioning {self.provisioning_state or 'unknown'}",
                 f"group {self.state or 'not started'}"]
        for container in self.containers:
            text = f"{container.name} {container.state or 'not started'}"
            if container.detail:
                text += f" ({container.detail})"
            if container.restart_count:
                text += f", {container.restart_count} restarts"
            parts.append(text)
        return ", ".join(parts)

    def last_events(self, count: int = 3) -> list[str]:
        """The last events of the group and its containers, newest last."""
        events = list(self.events)
        events.extend(c.last_event for c in self.containers if c.last_event)
        return events[-count:]


def build_group(settings: AzureSettings, colour: str, version: str,
                secrets: Mapping[str, str], *, environment_name: str) -> ContainerGroup:
    """The container group to PUT for ``colour`` running ``version``."""
    identity_id = settings.identity_id
    variables = [EnvironmentVariable(name=name, value=value)
                 for name, value in settings.environment.items()]
    role = settings.role_name(colour)
    variables += [
        EnvironmentVariable(name="QLP_SLOT", value=colour),
        EnvironmentVariable(name="SLOT_NAME", value=colour),
        EnvironmentVariable(name="QLP_VERSION", value=version),
        # The colour's telemetry identity: OpenTelemetry and the Application Insights SDKs
        # report it as the cloud role name, which the Logs queries filter on per colour.
        EnvironmentVariable(name="OTEL_SERVICE_NAME", value=role),
        EnvironmentVariable(name="APPLICATIONINSIGHTS_ROLE_NAME", value=role),
    ]
    variables += [EnvironmentVariable(name=name, secure_value=value)
                  for name, value in secrets.items()]
    container = Container(
        name=settings.container,
        image=settings.image_for(version),
        command=list(settings.command) if settings.command else None,
        resources=ResourceRequirements(requests=ResourceRequests(
            cpu=settings.cpu, memory_in_gb=settings.memory_gb)),
        ports=[ContainerPort(port=port, protocol="TCP") for port in settings.ports],
        environment_variables=variables,
    )
    ports = [Port(port=port, protocol="TCP") for port in settings.ports]
    # Always a public IP (the settings refuse a subnet: Front Door cannot reach a private
    # IP), so the DNS label and its scope always go together.
    ip_address = IpAddress(type="Public", ports=ports,
                           dns_name_label=settings.dns_label(colour),
                           auto_generated_domain_name_label_scope=settings.dns_label_scope)
    tags = {**settings.tags, TAG_COLOUR: colour, TAG_VERSION: version,
            TAG_ENVIRONMENT: environment_name}
    return ContainerGroup(
        location=settings.location,
        os_type=settings.os_type,
        restart_policy=settings.restart_policy,
        tags=tags,
        identity=ContainerGroupIdentity(
            type="UserAssigned", user_assigned_identities={identity_id: UserAssignedIdentities()}),
        image_registry_credentials=[ImageRegistryCredential(server=settings.registry,
                                                            identity=identity_id)],
        containers=[container],
        ip_address=ip_address,
    )


Watch = Callable[[timedelta], None]


class ContainerGroups:
    """Create, read and delete the container groups of one environment.

    ``clock`` and ``sleep`` time the following of a long-running operation (a status read
    every ``poll_interval``, or when Azure's ``Retry-After`` says); the platform passes its
    :class:`~procedures.platforms.azure.errors.Sleeper`, so a step's sleep bounds the wait.
    """

    def __init__(self, clients: AzureClients, settings: AzureSettings, calls: AzureCalls, *,
                 clock: Clock | None = None,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self._clients = clients
        self._settings = settings
        self._calls = calls
        self._clock = clock or SystemClock()
        self._sleep = sleep

    @property
    def _rg(self) -> str:
        return self._settings.resource_group

    def get(self, name: str) -> GroupState | None:
        """The group, or None if it does not exist."""
        operations = self._clients.container_instances.container_groups

        def read() -> GroupState | None:
            try:
                return _state(operations.get(self._rg, name))
            except ResourceNotFoundError:
                return None

        return self._calls.call(f"read container group {name}", read)

    def create(self, name: str, group: ContainerGroup, *, timeout: timedelta,
               watch: Watch | None = None) -> GroupState:
        """PUT the group and follow the long-running operation to its end.

        Only the PUT is retried (a 429 or 5xx on it: nothing was accepted yet). Then the
        operation's status is read in slices, ``watch(elapsed)`` called after each read that
        finds it still going (the platform reports progress from there), and the wait between
        reads goes through ``sleep``: a step's sleep raises at the step's deadline, which
        stops the following here (the PUT stands; the next attempt follows the group). Then:

        - the PUT refused (403, 409, 400...): ExternalServiceError with Azure's code and
          message; nothing was created by this call and nothing is deleted here;
        - provisioning ended Failed (``InaccessibleImage``, quota...): :class:`ProvisioningFailed`
          with Azure's code and message and the group's last events as the hint (the failed
          group stays in Azure: the caller deletes it);
        - still provisioning after ``timeout``, or reading its status failed (a 429 or 5xx):
          a retryable StepFailure. The operation goes on in Azure; the next attempt follows
          the group (it is never PUT again while it is being created).
        """
        operations = self._clients.container_instances.container_groups
        what = f"create container group {name}"
        polling = SlicedPolling(self._settings.poll_interval.total_seconds())
        self._calls.call(what, lambda: operations.begin_create_or_update(
            self._rg, name, group, polling=polling))
        try:
            ended = self._follow(polling, timeout, watch)
            result = polling.resource() if ended else None
        except AzureError as exc:
            return self._after_polling_error(name, what, exc)
        if not ended:
            raise StepFailure(
                f"container group {name} is still provisioning ({polling.status()}) after "
                f"{format_duration(timeout)}", retryable=True,
                hint="Azure goes on provisioning it; the next attempt follows it (no new PUT)")
        state = _state(result) if result is not None else self.get(name)
        if state is None:
            raise ExternalServiceError(SERVICE, f"{what}: the group is gone after its creation",
                                       code="ResourceNotFound")
        log.info("container group %s provisioned: %s", name, state.describe())
        return state

    def _follow(self, polling: SlicedPolling, timeout: timedelta, watch: Watch | None) -> bool:
        """Read the operation's status until it ends (True) or ``timeout`` is over (False);
        between reads, ``sleep`` (it raises at a step's deadline or on cancel)."""
        started = self._clock.now()
        while not polling.advance():
            elapsed = self._clock.now() - started
            if watch is not None:
                watch(elapsed)
            remaining = (timeout - elapsed).total_seconds()
            if remaining <= 0:
                return False
            wait = min(polling.next_wait(), remaining)
            if wait > 0:
                self._sleep(wait)
        return True

    def _after_polling_error(self, name: str, what: str, exc: AzureError) -> GroupState:
        """Polling the creation failed: the group's own state says what happened."""
        error = translate(exc, service=SERVICE, what=what)
        try:
            state = self.get(name)
        except ExternalServiceError as read_error:
            raise StepFailure(
                f"lost track of the creation of container group {name} ({error.message}) and "
                f"could not read it ({read_error.message})", retryable=True,
                hint="the next attempt reads the group's state") from exc
        if state is not None and state.failed:
            failed = ProvisioningFailed(SERVICE, error.message.removeprefix(f"{SERVICE}: "),
                                        code=error.code)
            failed.hint = self._events_hint(state) or error.hint
            raise failed from exc
        if state is not None and state.succeeded:
            log.info("container group %s provisioned (read after a polling error: %s)", name,
                     error.message)
            return state
        if state is None:
            raise StepFailure(f"container group {name} disappeared while it was being created "
                              f"({error.message})", retryable=True) from exc
        raise StepFailure(
            f"lost track of the creation of container group {name} ({error.message}); it is "
            f"{state.describe()}", retryable=True,
            hint="Azure goes on provisioning it; the next attempt follows it") from exc

    def delete(self, name: str) -> None:
        """Delete the group and wait until it is gone; a group that is not there is fine.

        Waits at most ``operation_timeout``, in slices through ``sleep`` like ``create``:
        still deleting then is a retryable StepFailure.
        """
        operations = self._clients.container_instances.container_groups
        timeout = self._settings.operation_timeout

        def delete_and_follow() -> None:
            # ARM answers 204 for a group that is not there; a 404 means the same. Deleting
            # is idempotent, so retrying the whole call (DELETE and polling) is safe.
            polling = SlicedPolling(self._settings.poll_interval.total_seconds())
            with contextlib.suppress(ResourceNotFoundError):
                operations.begin_delete(self._rg, name, polling=polling)
                if not self._follow(polling, timeout, None):
                    raise _StillRunning(polling.status())

        try:
            self._calls.call(f"delete container group {name}", delete_and_follow)
        except _StillRunning as running:
            raise StepFailure(
                f"container group {name} is still being deleted ({running.status}) after "
                f"{format_duration(timeout)}", retryable=True,
                hint="Azure goes on deleting it; the next attempt checks again") from None
        log.info("container group %s deleted", name)

    @staticmethod
    def _events_hint(state: GroupState) -> str | None:
        """What the failed group's events say (pull errors name the image)."""
        events = state.last_events()
        return ("Azure's last events: " + " | ".join(events)) if events else None


class ProvisioningFailed(ExternalServiceError):
    """The group's provisioning itself ended Failed (not the request): Azure's code and
    message; the group is left in Azure in state Failed until deleted."""


class _StillRunning(Exception):
    """A long-running operation not done within its timeout (raised inside a call)."""

    def __init__(self, status: str) -> None:
        super().__init__(status)
        self.status = status


def _state(group: ContainerGroup) -> GroupState:
    containers = []
    for container in group.containers or []:
        view = container.instance_view
        current = view.current_state if view is not None else None
        containers.append(ContainerView(
            name=container.name,
            image=container.image,
            state=current.state if current is not None else None,
            restart_count=int(view.restart_count or 0) if view is not None else 0,
            detail=(current.detail_status or None) if current is not None else None,
            exit_code=current.exit_code if current is not None else None,
            last_event=_event_text(view.events[-1]) if view is not None and view.events else None,
        ))
    instance = group.instance_view
    address = group.ip_address
    return GroupState(
        name=str(group.name),
        provisioning_state=group.provisioning_state,
        state=instance.state if instance is not None else None,
        containers=tuple(containers),
        fqdn=address.fqdn if address is not None else None,
        ip=address.ip if address is not None else None,
        tags=dict(group.tags or {}),
        events=tuple(_event_text(e) for e in (instance.events or [])) if instance else (),
    )


def _event_text(event: Any) -> str:
    name = getattr(event, "name", None) or getattr(event, "type", None) or "event"
    message = " ".join(str(getattr(event, "message", "") or "").split())
    return f"{name}: {message}"[:300] if message else str(name)

