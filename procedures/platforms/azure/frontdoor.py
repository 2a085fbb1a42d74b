"""The traffic switch: which colour Front Door sends the public URL to, read and changed.

Both kinds of Front Door sit behind one small interface, :class:`TrafficSwitch`:

- :class:`StandardFrontDoor`: Front Door Standard/Premium (``Microsoft.Cdn``, azure-mgmt-cdn).
  ``switch_by: route`` repoints the route at the colour's origin group with one PATCH of
  ``properties.originGroup`` (an atomic 0/100 switch); ``switch_by: origins`` keeps both
  colours' origins in one origin group and enables the target origin before disabling the
  other (the documented blue/green how-to).
- :class:`ClassicFrontDoor`: classic Front Door (``Microsoft.Network/frontDoors``,
  azure-mgmt-frontdoor). It has no routing-rule sub-resource: the switch GETs the whole Front
  Door, points the routing rule's forwarding configuration at the colour's backend pool and
  PUTs the whole object back, as ``az network front-door routing-rule update`` does. Two
  writers racing lose each other's change, which is one more reason for the bot's
  per-environment lock. Classic retires on 2027-03-31 and accepts no new profiles since
  2025-04-01: migrate to Standard/Premium.

The live colour is always read from Front Door itself, never from a file. A finished
long-running operation is not "traffic moved": Front Door propagates to its edges for minutes,
so the platform first waits for :meth:`TrafficSwitch.deployment_status` (the route's or both
origins' ``deploymentStatus``; classic has none) and then confirms through the public URL.

Before a switch, :meth:`TrafficSwitch.check_origins` compares the colour's origins (the
enabled origins of its origin group, its origin, or its classic backend pool's backends) with
the container group's FQDN and first port, and refuses with the ``az`` command that fixes
them. Every write waits at most ``operation_timeout`` (a retryable StepFailure after that: the
next attempt reads the state back).
"""

from __future__ import annotations

from functools import partial
from typing import Any, Protocol

from azure.mgmt.cdn.models import (
    AFDOriginUpdateParameters,
    AFDOriginUpdatePropertiesParameters,
    ResourceReference,
    RouteUpdateParameters,
    RouteUpdatePropertiesParameters,
)
from azure.mgmt.frontdoor.models import SubResource

from procedures.errors import StepFailure
from procedures.model import Slot
from procedures.platforms.azure.clients import AzureClients
from procedures.platforms.azure.errors import AzureCalls
from procedures.platforms.azure.settings import (
    AzureSettings,
    ClassicFrontDoorSettings,
    StandardFrontDoorSettings,
)

__all__ = ["ClassicFrontDoor", "StandardFrontDoor", "TrafficSwitch", "traffic_switch"]

FORWARDING = "#Microsoft.Azure.FrontDoor.Models.FrontdoorForwardingConfiguration"


class TrafficSwitch(Protocol):
    """Reads and sets the colour a Front Door serves."""

    def live(self) -> Slot | None:
        """The colour the public URL is routed to now (None: neither colour)."""
        ...

    def switch(self, slot: Slot) -> None:
        """Route the public URL to ``slot``; verified by reading it back."""
        ...

    def describe(self) -> str:
        """What this switch changes, for messages."""
        ...

    def check_origins(self, slot: Slot, host: str, port: int) -> None:
        """Refuse (StepFailure naming the origin, what it has, what it should have and the
        ``az`` command that fixes it) unless ``slot``'s origins point at ``host``:``port``."""
        ...

    def deployment_status(self) -> str | None:
        """Front Door's own rollout state of what :meth:`switch` changes: ``Succeeded``,
        ``InProgress``, ``NotStarted`` or ``Failed``; None where Front Door has none
        (classic)."""
        ...


def traffic_switch(settings: AzureSettings, clients: AzureClients,
                   calls: AzureCalls) -> TrafficSwitch:
    """The switch for the environment's ``front_door`` settings."""
    front_door = settings.front_door
    if isinstance(front_door, ClassicFrontDoorSettings):
        return ClassicFrontDoor(settings, front_door, clients, calls)
    return StandardFrontDoor(settings, front_door, clients, calls)


def _last_segment(resource_id: str | None) -> str | None:
    if not resource_id:
        return None
    return resource_id.rstrip("/").rsplit("/", 1)[-1]


def _text(value: Any) -> str | None:
    """An SDK enum or string as its plain value."""
    if value is None:
        return None
    return str(getattr(value, "value", value))


def _rollout(statuses: list[str | None]) -> str:
    """One status for several resources: Failed if any failed, Succeeded if all did."""
    known = [status or "NotStarted" for status in statuses]
    for status in ("Failed", "InProgress", "NotStarted"):
        if any(item.lower() == status.lower() for item in known):
            return status
    return "Succeeded"


def _wait(poller: Any, timeout: float) -> None:
    """Wait for a Front Door long-running operation, at most ``timeout`` seconds."""
    poller.result(timeout=timeout)
    if not poller.done():
        raise _StillRunning(poller.status())


class _StillRunning(Exception):
    """A Front Door change not done within ``operation_timeout`` (raised inside a call)."""

    def __init__(self, status: str) -> None:
        super().__init__(status)
        self.status = status


def _still_running(what: str, running: _StillRunning, timeout: float) -> StepFailure:
    return StepFailure(f"{what}: still {running.status} after {timeout:g} s", retryable=True,
                       hint="Front Door goes on applying it; the next attempt reads it back")


def _mismatch(what: str, has: tuple[str | None, int | None], wants: tuple[str, int],
              fix: str) -> StepFailure:
    return StepFailure(
        f"{what} points at {has[0] or 'no host'}:{has[1] if has[1] is not None else '?'}, "
        f"but the container group answers at {wants[0]}:{wants[1]}: the switch would send "
        "traffic to the wrong place", hint=f"fix it in Front Door: {fix}")


class StandardFrontDoor:
    """Front Door Standard/Premium: repoint the route, or flip the colours' origins."""

    def __init__(self, settings: AzureSettings, front_door: StandardFrontDoorSettings,
                 clients: AzureClients, calls: AzureCalls) -> None:
        self._settings = settings
        self._fd = front_door
        self._clients = clients
        self._calls = calls

    @property
    def _profile_id(self) -> str:
        return (f"/subscriptions/{self._settings.subscription_id}/resourceGroups/"
                f"{self._settings.resource_group}/providers/Microsoft.Cdn/profiles/"
                f"{self._fd.profile}")

    def describe(self) -> str:
        fd = self._fd
        if fd.switch_by == "route":
            return f"route {fd.route} of Front Door {fd.profile}/{fd.endpoint}"
        return f"origins of origin group {fd.origin_group} of Front Door {fd.profile}"

    def live(self) -> Slot | None:
        if self._fd.switch_by == "route":
            return self._live_by_route()
        return self._live_by_origins()

    def switch(self, slot: Slot) -> None:
        slot = Slot(slot)
        if self._fd.switch_by == "route":
            self._switch_route(slot)
        else:
            self._switch_origins(slot)
        now = self.live()
        if now != slot:
            raise StepFailure(
                f"{self.describe()} did not take the switch to {slot} (it reads "
                f"{now or 'neither colour'} afterwards)", retryable=True)

    def deployment_status(self) -> str | None:
        fd = self._fd
        rg = self._settings.resource_group
        if fd.switch_by == "route":
            routes = self._clients.cdn.routes
            route = self._calls.call(f"read route {fd.route}",
                                     lambda: routes.get(rg, fd.profile, fd.endpoint, fd.route))
            return _rollout([_text(route.deployment_status)])
        states = self._origin_states()
        return _rollout([_text(origin.deployment_status) for origin in states.values()])

    def check_origins(self, slot: Slot, host: str, port: int) -> None:
        fd = self._fd
        rg = self._settings.resource_group
        origins = self._clients.cdn.afd_origins
        if fd.switch_by == "route":
            assert fd.origin_groups is not None
            group = fd.origin_groups.name_of(slot.value)
            found = self._calls.call(
                f"list the origins of origin group {group}",
                lambda: list(origins.list_by_origin_group(rg, fd.profile, group)))
            enabled = [o for o in found
                       if (_text(o.enabled_state) or "Enabled").lower() == "enabled"]
            if not enabled:
                raise StepFailure(
                    f"origin group {group} of Front Door {fd.profile} ({slot}) has no enabled "
                    "origin: the switch would send traffic nowhere",
                    hint=f"create one: az afd origin create --resource-group {rg} "
                         f"--profile-name {fd.profile} --origin-group-name {group} "
                         f"--origin-name {self._settings.group_name(slot.value)} "
                         f"--host-name {host} --origin-host-header {host} --http-port {port} "
                         "--https-port 443 --priority 1 --weight 1000 --enabled-state Enabled")
        else:
            assert fd.origins is not None and fd.origin_group is not None
            name, group = fd.origins.name_of(slot.value), fd.origin_group
            enabled = [self._calls.call(f"read origin {name} of origin group {group}",
                                        partial(origins.get, rg, fd.profile, group, name))]
            # switch_by origins enables this origin itself: its current state does not matter
        for origin in enabled:
            has = (origin.host_name, origin.http_port)
            if (str(has[0] or "").lower(), has[1]) == (host.lower(), port):
                continue
            raise _mismatch(
                f"origin {origin.name} of origin group {group} ({slot})", has,
                (host, port),
                f"az afd origin update --resource-group {rg} --profile-name {fd.profile} "
                f"--origin-group-name {group} --origin-name {origin.name} "
                f"--host-name {host} --origin-host-header {host} --http-port {port}")

    # -- switch_by: route -------------------------------------------------------------------

    def _live_by_route(self) -> Slot | None:
        fd = self._fd
        rg = self._settings.resource_group
        routes = self._clients.cdn.routes
        route = self._calls.call(f"read route {fd.route}",
                                 lambda: routes.get(rg, fd.profile, fd.endpoint, fd.route))
        reference = route.origin_group
        group = _last_segment(reference.id if reference is not None else None)
        if group is None:
            return None
        assert fd.origin_groups is not None
        colour = fd.origin_groups.colour_of(group)
        if colour is None:
            raise StepFailure(
                f"{self.describe()} sends traffic to origin group {group}, which is neither "
                f"blue ({fd.origin_groups.blue}) nor green ({fd.origin_groups.green})",
                hint="fix front_door.origin_groups in the policy file, or point the route at "
                     "one of them")
        return Slot(colour)

    def _switch_route(self, slot: Slot) -> None:
        fd = self._fd
        assert fd.origin_groups is not None
        target = f"{self._profile_id}/originGroups/{fd.origin_groups.name_of(slot.value)}"
        rg = self._settings.resource_group
        routes = self._clients.cdn.routes
        update = RouteUpdateParameters(properties=RouteUpdatePropertiesParameters(
            origin_group=ResourceReference(id=target)))
        what = f"point route {fd.route} at origin group {fd.origin_groups.name_of(slot.value)}"
        timeout = self._settings.operation_timeout.total_seconds()
        try:
            self._calls.call(what, lambda: _wait(
                routes.begin_update(rg, fd.profile, fd.endpoint, fd.route, update), timeout))
        except _StillRunning as running:
            raise _still_running(what, running, timeout) from None

    # -- switch_by: origins -----------------------------------------------------------------

    def _origin_states(self) -> dict[Slot, Any]:
        fd = self._fd
        assert fd.origins is not None and fd.origin_group is not None
        rg, group = self._settings.resource_group, fd.origin_group
        origins = self._clients.cdn.afd_origins
        states: dict[Slot, Any] = {}
        for slot in Slot:
            name = fd.origins.name_of(slot.value)
            states[slot] = self._calls.call(f"read origin {name} of origin group {group}",
                                            partial(origins.get, rg, fd.profile, group, name))
        return states

    def _live_by_origins(self) -> Slot | None:
        states = self._origin_states()
        enabled = {slot: origin for slot, origin in states.items()
                   if (origin.enabled_state or "Enabled").lower() == "enabled"}
        if len(enabled) == 1:
            return next(iter(enabled))
        if not enabled:
            return None
        # Front Door sends traffic to the lowest priority number that is healthy; weight only
        # shares traffic among origins of that same priority.
        priorities = {slot: origin.priority or 1 for slot, origin in enabled.items()}
        if priorities[Slot.BLUE] != priorities[Slot.GREEN]:
            return min(priorities, key=lambda slot: priorities[slot])
        weights = {slot: origin.weight or 0 for slot, origin in enabled.items()}
        if weights[Slot.BLUE] == weights[Slot.GREEN]:
            raise StepFailure(
                f"both colours are enabled with equal priority and weight "
                f"({weights[Slot.BLUE]}) in {self.describe()}: no colour is live",
                hint="disable one origin (or give it a lower weight) in Front Door")
        return max(weights, key=lambda slot: weights[slot])

    def _switch_origins(self, slot: Slot) -> None:
        fd = self._fd
        assert fd.origins is not None and fd.origin_group is not None
        rg, group = self._settings.resource_group, fd.origin_group
        origins = self._clients.cdn.afd_origins
        enable = AFDOriginUpdatePropertiesParameters(enabled_state="Enabled", weight=fd.weight)
        disable = AFDOriginUpdatePropertiesParameters(enabled_state="Disabled")
        timeout = self._settings.operation_timeout.total_seconds()
        # Enable the new colour first, then disable the old one: never a moment with neither.
        for colour, change, verb in ((slot, enable, "enable"), (slot.other, disable, "disable")):
            name = fd.origins.name_of(colour.value)
            update = AFDOriginUpdateParameters(properties=change)

            def patch(origin: str = name, body: AFDOriginUpdateParameters = update) -> None:
                _wait(origins.begin_update(rg, fd.profile, group, origin, body), timeout)

            what = f"{verb} origin {name} of origin group {group}"
            try:
                self._calls.call(what, patch)
            except _StillRunning as running:
                raise _still_running(what, running, timeout) from None


class ClassicFrontDoor:
    """Classic Front Door: the routing rule's backend pool, written back as a whole object."""

    def __init__(self, settings: AzureSettings, front_door: ClassicFrontDoorSettings,
                 clients: AzureClients, calls: AzureCalls) -> None:
        self._settings = settings
        self._fd = front_door
        self._clients = clients
        self._calls = calls

    def describe(self) -> str:
        return f"routing rule {self._fd.routing_rule} of classic Front Door {self._fd.name}"

    def deployment_status(self) -> str | None:
        return None  # classic Front Door reports no rollout state

    def check_origins(self, slot: Slot, host: str, port: int) -> None:
        rg, name = self._settings.resource_group, self._fd.name
        pool_name = self._fd.backend_pools.name_of(slot.value)
        front_door = self._read()
        pool = next((p for p in front_door.backend_pools or []
                     if (p.name or "").lower() == pool_name.lower()), None)
        if pool is None:
            raise StepFailure(f"classic Front Door {name} has no backend pool {pool_name} "
                              f"({slot})", hint="fix front_door.backend_pools in the policy "
                              "file, or create the pool")
        backends = [b for b in pool.backends or []
                    if (_text(b.enabled_state) or "Enabled").lower() == "enabled"]
        if not backends:
            raise StepFailure(f"backend pool {pool_name} of classic Front Door {name} ({slot}) "
                              "has no enabled backend: the switch would send traffic nowhere",
                              hint=f"add one: az network front-door backend-pool backend add "
                                   f"--resource-group {rg} --front-door-name {name} "
                                   f"--pool-name {pool_name} --address {host} "
                                   f"--backend-host-header {host} --http-port {port}")
        for index, backend in enumerate(pool.backends or [], start=1):
            if backend not in backends:
                continue
            has = (backend.address, backend.http_port)
            if (str(has[0] or "").lower(), has[1]) == (host.lower(), port):
                continue
            raise _mismatch(
                f"backend {index} of backend pool {pool_name} of classic Front Door {name} "
                f"({slot})", has, (host, port),
                f"az network front-door backend-pool backend update --resource-group {rg} "
                f"--front-door-name {name} --pool-name {pool_name} --index {index} "
                f"--address {host} --backend-host-header {host} --http-port {port}")

    def _read(self) -> Any:
        rg, name = self._settings.resource_group, self._fd.name
        front_doors = self._clients.frontdoor.front_doors
        return self._calls.call(f"read Front Door {name}", lambda: front_doors.get(rg, name))

    def _forwarding(self, front_door: Any) -> Any:
        wanted = self._fd.routing_rule.lower()
        rule = next((r for r in (front_door.routing_rules or [])
                     if (r.name or "").lower() == wanted), None)
        if rule is None:
            names = ", ".join(r.name or "?" for r in front_door.routing_rules or []) or "none"
            raise StepFailure(f"classic Front Door {self._fd.name} has no routing rule "
                              f"{self._fd.routing_rule} (it has: {names})",
                              hint="fix front_door.routing_rule in the policy file")
        configuration = rule.route_configuration
        if configuration is None or getattr(configuration, "odata_type", None) != FORWARDING:
            raise StepFailure(f"{self.describe()} does not forward to a backend pool (it "
                              "redirects or has no route configuration)")
        return configuration

    def live(self) -> Slot | None:
        configuration = self._forwarding(self._read())
        pool = configuration.backend_pool
        name = _last_segment(pool.id if pool is not None else None)
        if name is None:
            return None
        colour = self._fd.backend_pools.colour_of(name)
        if colour is None:
            pools = self._fd.backend_pools
            raise StepFailure(
                f"{self.describe()} sends traffic to backend pool {name}, which is neither "
                f"blue ({pools.blue}) nor green ({pools.green})",
                hint="fix front_door.backend_pools in the policy file")
        return Slot(colour)

    def switch(self, slot: Slot) -> None:
        slot = Slot(slot)
        rg, name = self._settings.resource_group, self._fd.name
        pool = self._fd.backend_pools.name_of(slot.value)
        front_doors = self._clients.frontdoor.front_doors

        timeout = self._settings.operation_timeout.total_seconds()

        def read_modify_write() -> None:
            front_door = front_doors.get(rg, name)
            configuration = self._forwarding(front_door)
            configuration.backend_pool = SubResource(id=f"{front_door.id}/backendPools/{pool}")
            _wait(front_doors.begin_create_or_update(rg, name, front_door), timeout)

        what = f"point {self.describe()} at backend pool {pool}"
        try:
            self._calls.call(what, read_modify_write)
        except _StillRunning as running:
            raise _still_running(what, running, timeout) from None
        now = self.live()
        if now != slot:
            raise StepFailure(
                f"{self.describe()} did not take the switch to {slot} (it reads "
                f"{now or 'neither colour'} afterwards)", retryable=True)
