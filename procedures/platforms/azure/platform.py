"""Blue-green on Azure Container Instances behind Front Door, behind the ``Platform`` protocol.

- ``traffic()``: each colour's container group from ACI; the live colour is the one Front Door
  routes to, if its group exists and runs (a fresh environment whose route already points at
  blue, with no group yet, has nothing live).
- ``deploy(slot, version)``: never into the live colour (as ``traffic()`` defines it: the
  colour Front Door routes to may be deployed while nothing of it runs). Same version already
  provisioned: left alone. Otherwise the colour's group is deleted (CPU, memory, ports and
  restart policy cannot change in place anyway) and created again, with the Key Vault secrets
  resolved into secure environment values; only the PUT is retried, and the long-running
  operation is followed in short slices within ``provisioning_timeout`` (a status read, then
  a wait through the platform's sleep). A failed provisioning raises with
  Azure's code (``InaccessibleImage``...) and message and the failed group is deleted; a
  refused PUT (403, 409...) deletes nothing. The same-version shortcut does not notice a
  rotated Key Vault secret: a new value reaches the group with the next version.
- ``wait_ready(slot, timeout)``: provisioning Succeeded, the group Running, every container
  Running and not restart-looping (at most ``max_restarts`` restarts, the count unchanged
  across the HTTP check), and the first health path answering 200 through the group's FQDN
  (with the deployed version, when the answer names one).
- ``deploy_watched`` and ``wait_ready_watched`` (the optional ``SupportsWatchedDeploy``) do the
  same while reporting progress in the deployment thread about once a minute ("qlp-green:
  provisioning Creating, pulling the image (1m 10s)") and sleeping only through the step's
  sleep, so a slow Azure never keeps the worker past the step's deadline.
- ``switch(slot)``: the colour's Front Door origins checked against its group's FQDN and port
  (refused with the ``az`` command that fixes them), Front Door repointed (read back), its
  ``deploymentStatus`` awaited until ``Succeeded``, then the public URL confirmed: a stable
  window of good answers (``switch_confirm_answers`` over ``switch_confirm_window``), each on
  a fresh connection with ``Cache-Control: no-cache``, since Front Door takes minutes to reach
  every edge. ``switch_watched`` (the optional ``SupportsWatchedSwitch``) does the same while
  reporting progress in the deployment thread and sleeping through the step.
- ``stop(slot)``: the colour's group deleted (never the live one).
- ``newest_backup(now)`` (the optional ``SupportsBackupAge``): the age of the newest backup of
  the PostgreSQL flexible server named by ``postgres_server`` (read only).
- ``take_backup(name, ...)`` (the optional ``SupportsBackup``): an on-demand backup of that
  server (``db_backups``), before a deployment's switch and first thing in an emergency.
- ``available_versions(limit)`` (the optional ``SupportsVersionList``): the image's tags in the
  registry, newest first (``registry_tags``), for the deploy dialog's version picker.

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
from procedures.durations import format_duration
from procedures.errors import ConfigError, ExternalServiceError, StepFailure
from procedures.model import Slot
from procedures.platforms.azure.backups import BackupAge, backup_age
from procedures.platforms.azure.clients import AzureClients
from procedures.platforms.azure.container_groups import (
    ContainerGroups,
    GroupState,
    ProvisioningFailed,
    build_group,
)
from procedures.platforms.azure.db_backups import NotSupported, take_on_demand
from procedures.platforms.azure.errors import AzureCalls, Sleeper
from procedures.platforms.azure.frontdoor import TrafficSwitch, traffic_switch
from procedures.platforms.azure.keyvault import SecretResolver
from procedures.platforms.azure.registry_tags import registry_tags
from procedures.platforms.azure.settings import AzureSettings, parse_azure_settings
from procedures.platforms.base import DatabaseBackup, SlotStatus, TrafficState
from procedures.policy import Environment

__all__ = ["AzurePlatform"]

log = logging.getLogger(__name__)

BACKUP_WITHIN = timedelta(minutes=25)  # an on-demand backup: minutes, within the step's 30
REPORT_EVERY = timedelta(seconds=60)  # at most one progress line a minute in the thread
# Each probe of the public URL on a new connection (so not always the same edge server), and
# past any cache between the bot and Front Door.
PROBE_HEADERS = {"Cache-Control": "no-cache", "Connection": "close"}
PROBE_TIMEOUT = httpx.Timeout(5.0, connect=2.0)
SlotBase = Callable[[Slot, str], str]
_IN_PROGRESS = frozenset({"Pending", "Creating", "Repairing"})
_IMAGE_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")



class AzurePlatform:
    """One environment on ACI (a container group per colour) behind Front Door.

    ``env`` must be an ``azure`` environment; its ``azure:`` section is validated here
    (ConfigError naming the key). ``clients`` defaults to production clients with
    ``DefaultAzureCredential`` (built on first use). ``slot_base(slot, host)`` gives the base
    URL that reaches a group at ``host`` (its FQDN); default ``http://<host>:<first port>``.
    ``public_url`` replaces ``env.url`` for the switch confirmation. ``http`` is the client for
    both; ``clock`` and ``sleep`` drive every wait (a watched switch sleeps through its step).
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
        # Every wait (polls, Retry-After) goes through this; a watched deploy, wait or switch
        # lends it the step's sleep, which ends the wait at the step's deadline.
        self._sleep = Sleeper(sleep)

        def calls(service: str) -> AzureCalls:
            return AzureCalls(service, attempts=attempts, sleep=self._sleep)

        self.groups = ContainerGroups(self._clients, self.settings,
                                      calls("Azure Container Instances"),
                                      clock=self._clock, sleep=self._sleep)
        self.front_door: TrafficSwitch = traffic_switch(self.settings, self._clients,
                                                        calls("Azure Front Door"))
        self.secrets = SecretResolver(self._clients, calls("Azure Key Vault"))

    # -- the Platform protocol -------------------------------------------------------------

    def traffic(self) -> TrafficState:
        """The live colour and each colour's group (from ACI).

        Live is the colour Front Door routes to, but only when its group exists and runs: in a
        fresh environment Front Door already points somewhere while nothing is deployed.
        """
        routed = self.front_door.live()
        states = {slot: self.groups.get(self.settings.group_name(slot.value)) for slot in Slot}
        slots = {slot: self._status(slot, states[slot]) for slot in Slot}
        live = routed if routed is not None and _serving(states[routed]) else None
        if routed is not None and live is None:
            status = slots[routed]
            slots[routed] = SlotStatus(
                routed, status.running, status.version, status.url,
                detail=f"{status.detail}; {self.front_door.describe()} routes here, but "
                       "nothing serves yet")
        return TrafficState(live=live, slots=slots)

    def deploy(self, slot: Slot, version: str) -> SlotStatus:
        """Create ``version`` in ``slot``'s container group (replacing what ran there)."""
        return self._deploy(Slot(slot), version, self._log, within=None)

    def deploy_watched(self, slot: Slot, version: str, *, report: Callable[[str], None],
                       sleep: Callable[[float], None],
                       within: timedelta | None = None) -> SlotStatus:
        """``deploy``, saying how provisioning goes through ``report`` (about once a minute)
        and sleeping only through ``sleep`` (the step's: it raises at the step's deadline).
        ``within`` bounds the wait for provisioning below ``provisioning_timeout``: past it, a
        retryable StepFailure, and the next attempt follows the group."""
        with self._sleep.using(sleep):
            return self._deploy(Slot(slot), version, report, within=within)

    def _deploy(self, slot: Slot, version: str, report: Callable[[str], None], *,
                within: timedelta | None) -> SlotStatus:
        started = self._clock.now()
        _check_version(version)
        name = self.settings.group_name(slot.value)
        routed = self.front_door.live()
        existing = self.groups.get(name)
        if routed == slot and _serving(existing):
            raise StepFailure(
                f"refusing to deploy {version} into the {slot} slot of {self.name}: it is the "
                f"live slot ({self.front_door.describe()})",
                hint=f"deploy into {slot.other} and switch, or switch away from {slot} first")
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
        timeout = self.settings.provisioning_timeout
        if within is not None:  # what is left of it after the reads and the delete above
            timeout = max(min(timeout, within - (self._clock.now() - started)),
                          timedelta(seconds=1))
        try:
            state = self.groups.create(name, group, timeout=timeout,
                                       watch=self._watch_provisioning(name, report))
        except ProvisioningFailed:
            # Provisioning itself failed: the Failed group stays in Azure unless deleted. A
            # refused PUT (403, 409...) created nothing here and deletes nothing.
            self._delete_failed(name)
            raise
        finally:
            secrets.clear()
        return SlotStatus(slot, state.running, state.version, self._base_or_none(slot, state),
                          detail=f"{name} provisioned ({state.describe()})")

    def wait_ready(self, slot: Slot, timeout: timedelta) -> SlotStatus:
        """Poll the group and its health path until ready; StepFailure at ``timeout``."""
        return self._wait_ready(Slot(slot), timeout, self._log)

    def wait_ready_watched(self, slot: Slot, timeout: timedelta, *,
                           report: Callable[[str], None],
                           sleep: Callable[[float], None]) -> SlotStatus:
        """``wait_ready``, saying what it waits for through ``report`` (about once a minute)
        and sleeping only through ``sleep`` (the step's: it raises at the step's deadline)."""
        with self._sleep.using(sleep):
            return self._wait_ready(Slot(slot), timeout, report)

    def _wait_ready(self, slot: Slot, timeout: timedelta,
                    report: Callable[[str], None]) -> SlotStatus:
        name = self.settings.group_name(slot.value)
        health_path = self.env.health[0]
        started = self._clock.now()
        deadline = started + timeout
        # Quiet while it goes quickly: the first line after a minute.
        progress = _Progress(self._clock, report, started + REPORT_EVERY)
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
                    last = f"{name} runs but has no FQDN yet"
                else:
                    last = state.describe()
                if state.provisioning_state in _IN_PROGRESS:
                    progress.tick(f"{name}: {_provisioning_phase(state)} "
                                  f"({format_duration(self._clock.now() - started)})")
                else:
                    progress.tick(f"{name} not ready yet: {last} "
                                  f"({format_duration(self._clock.now() - started)})")
            remaining = (deadline - self._clock.now()).total_seconds()
            if remaining <= 0:
                break
            self._sleep(min(self.settings.poll_interval.total_seconds(), remaining))
        raise StepFailure(
            f"the {slot} slot of {self.name} ({name}) was not ready within "
            f"{timeout.total_seconds():g} s: {last}", retryable=True)

    def switch(self, slot: Slot) -> None:
        """Point Front Door at ``slot``; done once the public URL answers from it steadily."""
        self._switch(Slot(slot), self._log)

    def switch_watched(self, slot: Slot, *, report: Callable[[str], None],
                       sleep: Callable[[float], None]) -> None:
        """``switch``, saying how the wait goes through ``report`` (about once a minute) and
        sleeping only through ``sleep`` (the step's: it raises at the step's deadline)."""
        with self._sleep.using(sleep):
            self._switch(Slot(slot), report)

    def stop(self, slot: Slot) -> None:
        """Delete the colour's container group (fine if it is gone); never the live one."""
        slot = Slot(slot)
        name = self.settings.group_name(slot.value)
        if self.front_door.live() == slot and _serving(self.groups.get(name)):
            raise StepFailure(f"refusing to stop the {slot} slot of {self.name}: it is the "
                              "live slot", hint=f"switch to {slot.other} first")
        self.groups.delete(name)

    def stop_watched(self, slot: Slot, *, sleep: Callable[[float], None]) -> None:
        """``stop``, sleeping only through ``sleep`` (the step's: it raises at the step's
        deadline), so waiting for Azure to delete the group ends with the step."""
        with self._sleep.using(sleep):
            self.stop(slot)

    def slot_url(self, slot: Slot) -> str:
        """Where the colour's group answers directly (its FQDN)."""
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

        It only reads the server's backups (automatic and on-demand alike); ``take_backup``
        takes one. Raises ExternalServiceError when Azure cannot answer.
        """
        return backup_age(self.settings, self._clients, now)

    def backup_target(self) -> str | None:
        """The PostgreSQL flexible server (``postgres_server``), None when none is named."""
        server = self.settings.postgres_server
        return f"PostgreSQL server {server}" if server else None

    def take_backup(self, name: str, *, report: Callable[[str], None],
                    sleep: Callable[[float], None]) -> DatabaseBackup:
        """An on-demand backup of ``postgres_server`` (``db_backups``), waited for through
        ``sleep`` for at most ``BACKUP_WITHIN``; a server whose tier cannot take one gives
        ``taken=False`` with Azure's reason. Raises ExternalServiceError (403 without
        ``flexibleServers/backups/write``, 404 for an unknown server...)."""
        server = self.settings.postgres_server
        if not server:
            return DatabaseBackup(False, reason="no database configured: nothing to back up")
        started = self._clock.now()
        try:
            done = take_on_demand(self.settings, self._clients, self._clock, name,
                                  within=BACKUP_WITHIN, sleep=sleep, report=report)
        except NotSupported as exc:
            return DatabaseBackup(
                False, name=name, location=f"PostgreSQL server {server}",
                duration=self._clock.now() - started,
                reason=f"PostgreSQL server {server} cannot take an on-demand backup (its "
                       f"tier or state does not allow it): {exc.message}; its automatic "
                       "backups are what there is")
        return DatabaseBackup(True, name=done.name, location=f"PostgreSQL server {server}",
                              size_bytes=None, duration=self._clock.now() - started,
                              restore_hint="restore it from the server's Backup and restore "
                              "page (point in time, or this backup)")

    def available_versions(self, limit: int) -> list[str]:
        """The image's tags in the registry, newest first (the optional
        ``SupportsVersionList``; ``registry_tags``). Raises ExternalServiceError."""
        return registry_tags(self._clients, self.settings, limit)

    @property
    def ready_timeout(self) -> timedelta:
        """How long a new colour may take to get ready (``azure.ready_timeout``)."""
        return self.settings.ready_timeout

    def close(self) -> None:
        """Release the HTTP client and the SDK clients."""
        if self._owns_http:
            self._http.close()
        self._clients.close()

    # -- the switch ------------------------------------------------------------------------

    def _switch(self, slot: Slot, report: Callable[[str], None]) -> None:
        name = self.settings.group_name(slot.value)
        state = self.groups.get(name)
        if state is None or not state.running:
            raise StepFailure(
                f"refusing to switch {self.name} to the {slot} slot: "
                + (f"no container group {name}" if state is None else state.describe()),
                hint="deploy a version into it and wait until it is ready first")
        if not state.fqdn:
            raise StepFailure(f"refusing to switch {self.name} to the {slot} slot: {name} has "
                              "no FQDN yet", retryable=True)
        # Front Door's origins must point at this group, or the switch sends traffic nowhere.
        self.front_door.check_origins(slot, state.fqdn, self.settings.ports[0])
        if self.front_door.live() != slot:
            self.front_door.switch(slot)
            log.info("%s now points at %s", self.front_door.describe(), slot)
        if self.settings.switch_confirm == "off":
            return
        started = self._clock.now()
        progress = _Progress(self._clock, report, started)
        self._await_rollout(slot, started, progress)
        self._confirm_public(slot, state.version, started, progress)

    def _await_rollout(self, slot: Slot, started: datetime, progress: _Progress) -> None:
        """Wait for Front Door's own ``deploymentStatus`` of the change to be ``Succeeded``."""
        timeout = self.settings.switch_confirm_timeout
        while True:
            status = self.front_door.deployment_status()
            if status is None or status.lower() == "succeeded":
                return
            elapsed = self._clock.now() - started
            if status.lower() == "failed":
                raise StepFailure(
                    f"{self.front_door.describe()} reports deploymentStatus Failed for the "
                    f"switch to {slot}", hint="Front Door could not deploy the change: look at "
                    "the route and origins in the Azure portal; the switch is undone")
            progress.tick(f"Front Door still deploying the switch to {slot} ({status}, "
                          f"{format_duration(elapsed)})")
            remaining = (timeout - elapsed).total_seconds()
            if remaining <= 0:
                raise StepFailure(
                    f"{self.front_door.describe()} still reports deploymentStatus {status} "
                    f"{format_duration(timeout)} after the switch to {slot}", retryable=True,
                    hint="Front Door may still be propagating; the switch is retried or undone")
            self._sleep(min(self.settings.poll_interval.total_seconds(), remaining))

    def _confirm_public(self, slot: Slot, version: str | None, started: datetime,
                        progress: _Progress) -> None:
        """A stable window of good answers from the public URL: ``switch_confirm_answers`` in
        a row spanning ``switch_confirm_window``, each on a fresh connection."""
        settings = self.settings
        url = self._public_url + self.env.health[0]
        timeout = settings.switch_confirm_timeout
        answers = settings.switch_confirm_answers
        # The window must fit in the time allowed, or no switch could ever be confirmed.
        window = min(settings.switch_confirm_window, timeout / 2).total_seconds()
        gap = window / (answers - 1) if answers > 1 else 0.0
        streak, first_good, last = 0, started, "no answer yet"
        expected = version or str(slot)
        while True:
            good, last = self._probe_public(url, version)
            now = self._clock.now()
            if good:
                first_good = now if streak == 0 else first_good
                streak += 1
                span = (now - first_good).total_seconds()
                if streak >= answers and span >= window:
                    log.info("%s serves %s (%s) through %s: %d answers over %.0f s", self.name,
                             slot, version, url, streak, span)
                    return
                progress.tick(f"{url} answers from {expected} ({streak} of {answers}, over "
                              f"{span:.0f} s)")
            else:
                streak = 0
                progress.tick(f"{url} does not answer from {expected} yet: {last} "
                              f"({format_duration(now - started)})")
            remaining = (timeout - (now - started)).total_seconds()
            if remaining <= 0:
                break
            wait = gap if streak else settings.poll_interval.total_seconds()
            if wait > 0:
                self._sleep(min(wait, remaining))
        raise StepFailure(
            f"{self.front_door.describe()} points at {slot}, but {url} did not answer from "
            f"{expected} {answers} times in a row over {window:g} s within "
            f"{format_duration(timeout)} (last: {last})", retryable=True,
            hint="Front Door may still be propagating; the switch is retried or undone")

    def _probe_public(self, url: str, version: str | None) -> tuple[bool, str]:
        """One answer of the public URL: good, and what it was."""
        try:
            response = self._http.get(url, headers=PROBE_HEADERS, timeout=PROBE_TIMEOUT)
        except httpx.HTTPError as exc:
            return False, f"{type(exc).__name__}: {exc}".rstrip(": ")
        if not response.is_success:
            return False, f"HTTP {response.status_code}"
        reported = _reported_version(response)
        if version and reported is not None and not _same_version(reported, version):
            return False, f"answered by version {reported}"
        if self.settings.switch_confirm == "version" and version and reported is None:
            return False, (f"HTTP {response.status_code} without a version (switch_confirm: "
                           'version needs a JSON answer {"version": "<tag>"})')
        return True, f"HTTP {response.status_code} from {reported or 'a version that does not say'}"

    # -- helpers ---------------------------------------------------------------------------

    def _log(self, text: str) -> None:
        """Progress of an unwatched call: the log only (nobody reads a thread)."""
        log.info("%s: %s", self.name, text)

    def _watch_provisioning(self, name: str,
                            report: Callable[[str], None]) -> Callable[[timedelta], None]:
        """What ``ContainerGroups.create`` calls while the group is being created: about once
        a minute, the group's phase read from Azure, in the thread."""
        progress = _Progress(self._clock, report, self._clock.now() + REPORT_EVERY)

        def watch(elapsed: timedelta) -> None:
            if not progress.due():
                return
            try:
                state = self.groups.get(name)
            except ExternalServiceError as error:
                # Only a progress line: the operation's own status decides.
                phase = f"provisioning (its state cannot be read: {error.message})"
            else:
                phase = _provisioning_phase(state)
            progress.tick(f"{name}: {phase} ({format_duration(elapsed)})")

        return watch

    def _status(self, slot: Slot, state: GroupState | None) -> SlotStatus:
        name = self.settings.group_name(slot.value)
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
            response = self._http.get(url, timeout=PROBE_TIMEOUT)
        except httpx.HTTPError as exc:
            return False, f"GET {url}: {type(exc).__name__}: {exc}".rstrip(": ")
        if not response.is_success:
            return False, f"GET {url}: HTTP {response.status_code}"
        reported = _reported_version(response)
        if state.version and reported and not _same_version(reported, state.version):
            return False, f"GET {url}: answered by version {reported}, expected {state.version}"
        return True, f"GET {url}: {response.status_code}"

    def _delete_failed(self, name: str) -> None:
        """A failed provisioning leaves the group behind in Azure: remove it (best effort)."""
        try:
            self.groups.delete(name)
        except (ExternalServiceError, StepFailure) as error:
            log.warning("could not delete the failed container group %s: %s", name, error)


class _Progress:
    """Progress lines for the thread: the first at ``first`` (at once for a switch, after a
    minute for a deployment), then at most one per ``REPORT_EVERY``."""

    def __init__(self, clock: Clock, report: Callable[[str], None], first: datetime) -> None:
        self._clock = clock
        self._report = report
        self._next = first

    def due(self) -> bool:
        """Whether the next ``tick`` would report."""
        return self._clock.now() >= self._next

    def tick(self, text: str) -> None:
        now = self._clock.now()
        if now >= self._next:
            self._report(text)
            self._next = now + REPORT_EVERY


def _provisioning_phase(state: GroupState | None) -> str:
    """Where a group being created is, in words: "provisioning Creating, pulling the image"."""
    if state is None:
        return "not there (yet)"
    text = f"provisioning {state.provisioning_state or 'unknown'}"
    events = [(c.last_event or "").split(":", 1)[0] for c in state.containers]
    if "Pulling" in events:
        text += ", pulling the image"
    elif "Pulled" in events:
        text += ", image pulled, starting the containers"
    elif any((c.state or "").lower() == "waiting" for c in state.containers):
        text += ", containers starting"
    return text


def _serving(state: GroupState | None) -> bool:
    """Whether a colour's group can be serving traffic: it exists, did not fail, and its
    group runs (a container may be restarting: still treated as serving, to be safe)."""
    return (state is not None and not state.failed
            and (state.state or "").lower() == "running")


def _same_version(reported: str, version: str) -> bool:
    """``1.2.3`` and ``v1.2.3`` name the same version."""
    def bare(text: str) -> str:
        text = text.strip()
        return text[1:] if text[:1] in ("v", "V") else text

    return bare(reported) == bare(version)


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
