"""Blue-green on Azure Container Instances behind Front Door, behind the ``Platform`` protocol.

- ``traffic()``: the live colour from Front Door, each colour's container group from ACI.
- ``deploy(slot, version)``: never into the live colour. Same version already provisioned:
  left alone. Otherwise the colour's group is deleted (CPU, memory, ports and restart policy
  cannot change in place anyway) and created again, with the Key Vault secrets resolved into
  secure environment values, and the long-running operation polled to its end. A failed
  provisioning raises with Azure's code (``InaccessibleImage``...) and message.
- ``wait_ready(slot, timeout)``: provisioning Succeeded, the group Running, every container
  Running and not restart-looping (at most ``max_restarts`` restarts, the count unchanged
  across the HTTP check), and the first health path answering 200 through the group's FQDN
  (with the deployed version, when the answer names one).
- ``switch(slot)``: Front Door repointed (read back), then confirmed through the public URL:
  three answers in a row from the new version (``switch_confirm``), since Front Door takes
  minutes to reach every edge.
- ``stop(slot)``: the colour's group deleted (never the live one).
- ``newest_backup(now)`` (the optional ``SupportsBackupAge``): the age of the newest backup of
  the PostgreSQL flexible server named by ``postgres_server`` (read only: the bot takes no
  on-demand backup on Azure).

Time goes through an injected clock and ``sleep``; where the group's FQDN and the public URL
are reached is injectable (``slot_base``, ``public_url``) so tests can use local servers.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from datetime import datetime, timedelta

import httpx

from procedures.clock import Clock, SystemClock
from procedures.errors import ConfigError, ExternalServiceError, StepFailure
from procedures.model import Slot
from procedures.platforms.azure.backups import BackupAge, latest_backup
from procedures.platforms.azure.clients import AzureClients
from procedures.platforms.azure.container_groups import ContainerGroups, GroupState, build_group
from procedures.platforms.azure.errors import AzureCalls
from procedures.platforms.azure.frontdoor import TrafficSwitch, traffic_switch
from procedures.platforms.azure.keyvault import SecretResolver
from procedures.platforms.azure.settings import AzureSettings, parse_azure_settings
from procedures.platforms.base import SlotStatus, TrafficState
from procedures.policy import Environment

__all__ = ["AzurePlatform"]

log = logging.getLogger(__name__)

CONFIRMATIONS = 3  # answers in a row from the new version before a switch counts as done
CONFIRM_GAP = 1.0  # seconds between those answers
SlotBase = Callable[[Slot, str], str]
_IN_PROGRESS = frozenset({"Pending", "Creating", "Repairing"})
_IMAGE_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")


class AzurePlatform:
    """One environment on ACI (a container group per colour) behind Front Door.

    ``env`` must be an ``azure`` environment; its ``azure:`` section is validated here
    (ConfigError naming the key). ``clients`` defaults to production clients with
    ``DefaultAzureCredential`` (built on first use). ``slot_base(slot, host)`` gives the base
    URL that reaches a group at ``host`` (its FQDN, or IP in a subnet); default
    ``http://<host>:<first port>``. ``public_url`` replaces ``env.url`` for the switch
    confirmation. ``http`` is the client for both; ``clock`` and ``sleep`` drive every wait.
    """

    def __init__(
        self,
        environment_name: str,
        env: Environment,
        *,
        clients: AzureClients | None = None,
        slot_base: SlotBase | None = None,
        public_url: str | None = None,
        http: httpx.Client | None = None,
        clock: Clock | None = None,
        sleep: Callable[[float], None] = time.sleep,
        attempts: int = 4,
    ) -> None:
        if env.platform != "azure" or env.azure is None:
            key = f"environments.{environment_name}.azure"
            raise ConfigError(f"{key}: the azure platform needs an 'azure:' section", key=key)
        self.name = environment_name
        self.env = env
        self.settings: AzureSettings = parse_azure_settings(
            env.azure, where=f"environments.{environment_name}.azure")
        self._clients = clients or AzureClients.for_settings(self.settings)
        self._owns_http = http is None
        self._http = http or httpx.Client(trust_env=False, follow_redirects=False)
        self._slot_base = slot_base
        self._public_url = (public_url or env.url).rstrip("/")
        self._clock = clock or SystemClock()
        self._sleep = sleep

        def calls(service: str) -> AzureCalls:
            return AzureCalls(service, attempts=attempts, sleep=sleep)

        self.groups = ContainerGroups(self._clients, self.settings,
                                      calls("Azure Container Instances"))
        self.front_door: TrafficSwitch = traffic_switch(self.settings, self._clients,
                                                        calls("Azure Front Door"))
        self.secrets = SecretResolver(self._clients, calls("Azure Key Vault"))

    # -- the Platform protocol -------------------------------------------------------------

    def traffic(self) -> TrafficState:
        """The live colour (from Front Door) and each colour's group (from ACI)."""
        live = self.front_door.live()
        return TrafficState(live=live, slots={slot: self._status(slot) for slot in Slot})

    def deploy(self, slot: Slot, version: str) -> SlotStatus:
        """Create ``version`` in ``slot``'s container group (replacing what ran there)."""
        slot = Slot(slot)
        _check_version(version)
        name = self.settings.group_name(slot.value)
        if self.front_door.live() == slot:
            raise StepFailure(
                f"refusing to deploy {version} into the {slot} slot of {self.name}: it is the "
                f"live slot ({self.front_door.describe()})",
                hint=f"deploy into {slot.other} and switch, or switch away from {slot} first")
        existing = self.groups.get(name)
        image = self.settings.image_for(version)
        same = (existing is not None and existing.version == version
                and all(c.image == image for c in existing.containers))
        if existing is not None and same and existing.succeeded:
            return SlotStatus(slot, existing.running, version, self._base_or_none(slot, existing),
                              detail=f"{name} already runs {version} ({existing.describe()})")
        if existing is not None and same and existing.provisioning_state in _IN_PROGRESS:
            # An earlier attempt's creation is still going on in Azure: wait_ready follows it.
            return SlotStatus(slot, False, version, None,
                              detail=f"{name} is still being provisioned ({existing.describe()})")
        if existing is not None:
            log.info("replacing container group %s (%s, %s)", name, existing.version,
                     existing.describe())
            self.groups.delete(name)
        secrets = self.secrets.resolve(self.settings.secrets)
        group = build_group(self.settings, slot.value, version, secrets,
                            environment_name=self.name)
        try:
            state = self.groups.create(name, group, timeout=self.settings.provisioning_timeout)
        except ExternalServiceError as error:
            if not error.retryable:
                self._delete_failed(name)
            raise
        finally:
            secrets.clear()
        return SlotStatus(slot, state.running, state.version, self._base_or_none(slot, state),
                          detail=f"{name} provisioned ({state.describe()})")

    def wait_ready(self, slot: Slot, timeout: timedelta) -> SlotStatus:
        """Poll the group and its health path until ready; StepFailure at ``timeout``."""
        slot = Slot(slot)
        name = self.settings.group_name(slot.value)
        health_path = self.env.health[0]
        started = self._clock.now()
        deadline = started + timeout
        last = "no answer yet"
        while True:
            try:
                state = self.groups.get(name)
            except ExternalServiceError as error:
                if not error.retryable:
                    raise
                state, last = None, error.message
            else:
                if state is None:
                    raise StepFailure(f"nothing is deployed in the {slot} slot of {self.name} "
                                      f"(no container group {name})")
                self._raise_if_broken(slot, state)
                if state.running and state.host:
                    ready, last = self._healthy(slot, state, health_path)
                    if ready:
                        again = self.groups.get(name)
                        if (again is not None and again.running
                                and again.restarts == state.restarts):
                            elapsed = (self._clock.now() - started).total_seconds()
                            return SlotStatus(
                                slot, True, state.version, self._base(slot, state),
                                detail=f"{name} running, healthy after {elapsed:.0f} s")
                        last = ("a container restarted during the health check"
                                if again is not None else f"{name} disappeared")
                elif state.running:
                    last = f"{name} runs but has no FQDN or IP yet"
                else:
                    last = state.describe()
            remaining = (deadline - self._clock.now()).total_seconds()
            if remaining <= 0:
                break
            self._sleep(min(self.settings.poll_interval.total_seconds(), remaining))
        raise StepFailure(
            f"the {slot} slot of {self.name} ({name}) was not ready within "
            f"{timeout.total_seconds():g} s: {last}", retryable=True)

    def switch(self, slot: Slot) -> None:
        """Point Front Door at ``slot``; done once the public URL answers from it."""
        slot = Slot(slot)
        name = self.settings.group_name(slot.value)
        state = self.groups.get(name)
        if state is None or not state.running:
            raise StepFailure(
                f"refusing to switch {self.name} to the {slot} slot: "
                + (f"no container group {name}" if state is None else state.describe()),
                hint="deploy a version into it and wait until it is ready first")
        if self.front_door.live() != slot:
            self.front_door.switch(slot)
            log.info("%s now points at %s", self.front_door.describe(), slot)
        self._confirm_public(slot, state.version)

    def stop(self, slot: Slot) -> None:
        """Delete the colour's container group (fine if it is gone); never the live one."""
        slot = Slot(slot)
        if self.front_door.live() == slot:
            raise StepFailure(f"refusing to stop the {slot} slot of {self.name}: it is the "
                              "live slot", hint=f"switch to {slot.other} first")
        self.groups.delete(self.settings.group_name(slot.value))

    def slot_url(self, slot: Slot) -> str:
        """Where the colour's group answers directly (its FQDN, or IP in a subnet)."""
        slot = Slot(slot)
        name = self.settings.group_name(slot.value)
        state = self.groups.get(name)
        if state is None or not state.host:
            raise StepFailure(f"the {slot} slot of {self.name} has no address: "
                              + ("no container group " + name if state is None
                                 else state.describe()))
        return self._base(slot, state)

    # -- beyond the protocol ---------------------------------------------------------------

    def newest_backup(self, now: datetime) -> BackupAge | None:
        """The newest completed backup of the environment's PostgreSQL flexible server
        (``postgres_server``) and its age at ``now``; None when the section names no server.

        It only reads the server's backups (automatic and on-demand alike): the bot takes no
        backup on Azure. Raises ExternalServiceError when Azure cannot answer.
        """
        return latest_backup(self, now)

    @property
    def ready_timeout(self) -> timedelta:
        """How long a new colour may take to get ready (``azure.ready_timeout``)."""
        return self.settings.ready_timeout

    def close(self) -> None:
        """Release the HTTP client and the SDK clients."""
        if self._owns_http:
            self._http.close()
        self._clients.close()

    # -- helpers ---------------------------------------------------------------------------

    def _status(self, slot: Slot) -> SlotStatus:
        name = self.settings.group_name(slot.value)
        state = self.groups.get(name)
        if state is None:
            return SlotStatus(slot, False, None, None, detail=f"no container group {name}")
        return SlotStatus(slot, state.running, state.version, self._base_or_none(slot, state),
                          detail=f"{name}: {state.describe()}")

    def _base(self, slot: Slot, state: GroupState) -> str:
        host = state.host or ""
        if self._slot_base is not None:
            return self._slot_base(slot, host).rstrip("/")
        return f"http://{host}:{self.settings.ports[0]}"

    def _base_or_none(self, slot: Slot, state: GroupState) -> str | None:
        return self._base(slot, state) if state.host else None

    def _raise_if_broken(self, slot: Slot, state: GroupState) -> None:
        events = state.last_events()
        hint = ("Azure's last events: " + " | ".join(events)) if events else None
        if state.failed:
            raise StepFailure(f"the {slot} slot of {self.name} ({state.name}) failed to "
                              f"provision: {state.describe()}", hint=hint)
        if state.restarts > self.settings.max_restarts:
            raise StepFailure(
                f"the {slot} slot of {self.name} ({state.name}) is restart-looping: "
                f"{state.describe()} (more than {self.settings.max_restarts} restarts)",
                hint=hint)
        for container in state.containers:
            if (container.state or "").lower() == "terminated" and \
                    self.settings.restart_policy != "Always":
                raise StepFailure(
                    f"container {container.name} of {state.name} terminated (exit code "
                    f"{container.exit_code})", hint=hint)

    def _healthy(self, slot: Slot, state: GroupState, path: str) -> tuple[bool, str]:
        url = self._base(slot, state) + path
        try:
            response = self._http.get(url, timeout=httpx.Timeout(5.0, connect=2.0))
        except httpx.HTTPError as exc:
            return False, f"GET {url}: {type(exc).__name__}: {exc}".rstrip(": ")
        if response.status_code != 200:
            return False, f"GET {url}: HTTP {response.status_code}"
        reported = _reported_version(response)
        if state.version and reported and reported != state.version:
            return False, f"GET {url}: answered by version {reported}, expected {state.version}"
        return True, f"GET {url}: 200"

    def _confirm_public(self, slot: Slot, version: str | None) -> None:
        mode = self.settings.switch_confirm
        if mode == "off":
            return
        url = self._public_url + self.env.health[0]
        timeout = self.settings.switch_confirm_timeout
        deadline = self._clock.now() + timeout
        streak, last = 0, "no answer yet"
        while True:
            try:
                response = self._http.get(url, timeout=httpx.Timeout(5.0, connect=2.0))
            except httpx.HTTPError as exc:
                streak, last = 0, f"{type(exc).__name__}: {exc}".rstrip(": ")
            else:
                reported = _reported_version(response)
                if response.status_code != 200:
                    streak, last = 0, f"HTTP {response.status_code}"
                elif mode == "version" and version and reported != version:
                    streak, last = 0, f"answered by version {reported or 'unknown'}"
                else:
                    streak += 1
                    last = f"200 from {reported or 'a version that does not say'}"
                    if streak >= CONFIRMATIONS:
                        log.info("%s serves %s (%s) through %s", self.name, slot, version, url)
                        return
            remaining = (deadline - self._clock.now()).total_seconds()
            if remaining <= 0:
                break
            gap = CONFIRM_GAP if streak else self.settings.poll_interval.total_seconds()
            self._sleep(min(gap, remaining))
        raise StepFailure(
            f"{self.front_door.describe()} points at {slot}, but {url} did not answer from "
            f"{version or slot} {CONFIRMATIONS} times in a row within "
            f"{timeout.total_seconds():g} s (last: {last})", retryable=True,
            hint="Front Door may still be propagating; the switch is retried or undone")

    def _delete_failed(self, name: str) -> None:
        """A failed provisioning leaves the group behind in Azure: remove it (best effort)."""
        try:
            self.groups.delete(name)
        except ExternalServiceError as error:
            log.warning("could not delete the failed container group %s: %s", name, error)


def _reported_version(response: httpx.Response) -> str | None:
    try:
        data = response.json()
    except ValueError:
        return None
    version = data.get("version") if isinstance(data, dict) else None
    return str(version) if version is not None else None


def _check_version(version: str) -> None:
    # The bot validates versions strictly; this only keeps the image tag well-formed.
    if not _IMAGE_TAG.fullmatch(version or ""):
        raise StepFailure(f"{version!r} cannot be an image tag (letters, digits, _ . -, at "
                          "most 128 characters)")
