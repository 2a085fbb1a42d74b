"""Front Door in the double: classic (``Microsoft.Network/frontDoors``: GET and a whole-object
PUT validated against the published ``FrontDoor`` definition of 2025-10-01, including the
``@odata.type`` of each routing rule's ``routeConfiguration``; 202 +
``Azure-AsyncOperation``) and Standard/Premium (``Microsoft.Cdn``: profile GET, origin groups
GET and list, route GET/PATCH, origin GET/PATCH and list, every write 202 +
``Azure-AsyncOperation`` as the published examples answer).

Like Azure Front Door, a write is two things that end at different times:

- the ARM operation, which finishes after ``polls`` polls (core);
- the propagation to the edge, on the model clock (``clock``): the route's or origin's
  ``deploymentStatus`` stays ``InProgress`` until the operation finished and
  ``propagation_seconds`` of model time passed since the write, then reads ``Succeeded``; until
  then the edge keeps serving the previous configuration (``served_origin_group``,
  ``served_origins``/``served_origin``, ``classic_served_pool``), while the resource already
  reads the new one (``route_origin_group``, ``origin``, ``classic_pool``). A rollout made to
  fail (``fail_deployment``) reads ``deploymentStatus: Failed`` once its time is over and never
  reaches the edge.

The PATCH bodies are validated against the published ``Microsoft.Cdn`` definitions kept in
``tests/azure/specs`` (``RouteUpdateParameters``, ``AFDOriginUpdateParameters``, through
``tests.azure.spec_validation``): unknown properties, enum values and ranges (weight 1..1000,
priority 1..5, ports 1..65535) are refused with 400 ``BadRequest``. Read-only properties are
ignored, as ARM ignores them on a PUT or PATCH (a raw GET-then-PUT works): they are neither
checked nor stored, and the server-owned values (``provisioningState``, ``resourceState``,
``cname``, ``frontdoorId``, each part's ``type``, a frontend endpoint's HTTPS state...) stay
the service's. A route may only
point at an existing origin group of its own profile that has an enabled origin (AFD's message:
"Please make sure that the originGroup is created successfully and at least one enabled origin
is created under the origin group.", reported in Azure/bicep#12276).

Every handler asks ``check_access`` with the real action name first, as ARM authorizes before
the resource provider sees the request.

Seeding leniency kept for older fixtures: ``add_route`` and ``add_origin`` create a missing
origin group implicitly, and a profile whose origin groups were all created that way stays
lenient (a route PATCH to a group never declared creates it, with no origin check). A profile
with any origin group declared by ``add_origin_group`` (as ``tests.azure.fresh_world`` does) is
strict.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from typing import Any

from tests.azure.arm_double.core import (
    API_VERSIONS,
    RG_PATTERN,
    Answer,
    Operation,
    Route,
    _error,
)
from tests.azure.arm_double.resources import ResourcesMixin, resource_not_found
from tests.azure.spec_validation import strip_read_only, validate

CDN = RG_PATTERN + r"Microsoft\.Cdn/profiles/(?P<profile>[^/]+)/"
CDN_SPEC = f"cdn-{API_VERSIONS['cdn']}"

ENABLED = ("Enabled", "Disabled")
# Enum values, to store them as the service spells them.
ENUMS: dict[str, tuple[str, ...]] = {
    "forwardingProtocol": ("HttpOnly", "HttpsOnly", "MatchRequest"),
    "linkToDefaultDomain": ENABLED, "httpsRedirect": ENABLED, "enabledState": ENABLED}
ORIGIN_GROUP_MISSING = ("Please make sure that the originGroup is created successfully and at "
                        "least one enabled origin is created under the origin group.")

# The parts of a classic Front Door's whole object, and their resource types.
CLASSIC_PARTS = {"routingRules": "RoutingRules", "backendPools": "BackendPools",
                 "frontendEndpoints": "FrontendEndpoints",
                 "loadBalancingSettings": "LoadBalancingSettings",
                 "healthProbeSettings": "HealthProbeSettings"}

# What a classic Front Door owns in its answers: read-only in a request, ignored there and kept
# as they were by a PUT (FrontDoorProperties' and FrontendEndpointProperties' readOnly ones).
CLASSIC_SERVER_OWNED = ("provisioningState", "resourceState", "cname", "frontdoorId",
                        "rulesEngines", "extendedProperties")
ENDPOINT_SERVER_OWNED = ("customHttpsProvisioningState", "customHttpsProvisioningSubstate",
                         "customHttpsConfiguration")

# What the edge uses of an origin: the properties whose change has to propagate.
EDGE_ORIGIN_FIELDS = ("hostName", "httpPort", "httpsPort", "originHostHeader", "priority",
                      "weight", "enabledState")


@dataclass
class _Change:
    """One configuration written at model time ``at`` by ``op``; the edge serves it once the
    operation finished and the propagation delay passed."""

    at: float
    value: Any
    op: Operation | None = None
    failed: bool = False  # the rollout to the edge fails: never served, deploymentStatus Failed


@dataclass
class _DeploymentFailure:
    """An injected rollout failure: the next route or origin write of ``profile`` that
    matches (a None field matches anything) ends with ``deploymentStatus: Failed``."""

    kind: str  # "route" | "origin" | "any"
    profile: str
    first: str | None  # endpoint (route) or origin group (origin)
    second: str | None  # route or origin name


def _bad_request(message: str) -> Answer:
    return _error(400, "BadRequest", message)


class FrontDoorMixin(ResourcesMixin):
    """Classic Front Door, and Standard/Premium profiles, origin groups, routes and origins."""

    ROUTES: tuple[Route, ...] = (
        Route("frontdoor", re.compile(
            RG_PATTERN + r"Microsoft\.Network/frontDoors/(?P<name>[^/]+)$", re.I),
            API_VERSIONS["frontdoor"]),
        Route("profile", re.compile(
            RG_PATTERN + r"Microsoft\.Cdn/profiles/(?P<profile>[^/]+)$", re.I),
            API_VERSIONS["cdn"]),
        Route("route", re.compile(
            CDN + r"afdEndpoints/(?P<endpoint>[^/]+)/routes/(?P<route>[^/]+)$", re.I),
            API_VERSIONS["cdn"]),
        Route("origingroups", re.compile(CDN + r"originGroups$", re.I), API_VERSIONS["cdn"]),
        Route("origingroup", re.compile(CDN + r"originGroups/(?P<group>[^/]+)$", re.I),
              API_VERSIONS["cdn"]),
        Route("origins", re.compile(CDN + r"originGroups/(?P<group>[^/]+)/origins$", re.I),
              API_VERSIONS["cdn"]),
        Route("origin", re.compile(
            CDN + r"originGroups/(?P<group>[^/]+)/origins/(?P<origin>[^/]+)$", re.I),
            API_VERSIONS["cdn"]),
    )

    def _setup(self) -> None:
        super()._setup()
        # Model seconds a Front Door change takes to reach the edge after its write.
        self.propagation_seconds: float = 0.0
        self.front_doors: dict[str, dict[str, Any]] = {}
        self.routes: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.origin_groups: dict[tuple[str, str], dict[str, Any]] = {}
        self.origins: dict[tuple[str, str, str], dict[str, Any]] = {}
        self._lenient_profiles: set[str] = set()
        self._route_edge: dict[tuple[str, str, str], list[_Change]] = {}
        self._origin_edge: dict[tuple[str, str, str], list[_Change]] = {}
        self._classic_edge: dict[tuple[str, str], list[_Change]] = {}
        self._deployment_failures: list[_DeploymentFailure] = []

    # -- propagation ---------------------------------------------------------------------------

    def _propagated(self, change: _Change) -> bool:
        """Whether the rollout of ``change`` is over (successfully or not)."""
        if change.op is not None and not change.op.done:
            return False
        return bool(self.clock() >= change.at + self.propagation_seconds)

    def _served(self, history: list[_Change]) -> Any:
        """The newest configuration the edge has (the seed is always there); a change whose
        rollout failed never reaches it."""
        for change in reversed(history):
            if not change.failed and self._propagated(change):
                return change.value
        return history[0].value

    def _deployment_status(self, history: list[_Change]) -> str:
        if not self._propagated(history[-1]):
            return "InProgress"
        return "Failed" if history[-1].failed else "Succeeded"

    def fail_deployment(self, profile: str, *, endpoint: str | None = None,
                        route: str | None = None, origin_group: str | None = None,
                        origin: str | None = None) -> None:
        """The next write to a route (``endpoint``/``route``) or an origin
        (``origin_group``/``origin``) of the Standard/Premium ``profile`` is accepted by ARM
        (its operation Succeeds) but its rollout to the edge fails: once the propagation time
        is over the resource reads ``deploymentStatus: Failed`` and the edge keeps serving the
        previous configuration. Without a route or origin argument, the next route or origin
        write of the profile fails so. A later write rolls out normally."""
        routes = endpoint is not None or route is not None
        origins = origin_group is not None or origin is not None
        if routes and origins:
            raise ValueError("fail_deployment: a route or an origin, not both")
        kind = "route" if routes else "origin" if origins else "any"
        first, second = (endpoint, route) if routes else (origin_group, origin)
        with self.lock:
            self._deployment_failures.append(_DeploymentFailure(
                kind, profile.lower(), first and first.lower(), second and second.lower()))

    def _take_deployment_failure(self, kind: str, key: tuple[str, str, str]) -> bool:
        """Whether an injected rollout failure matches this write (and use it up)."""
        for index, failure in enumerate(self._deployment_failures):
            if (failure.kind in (kind, "any") and failure.profile == key[0]
                    and failure.first in (None, key[1]) and failure.second in (None, key[2])):
                del self._deployment_failures[index]
                return True
        return False

    @staticmethod
    def _provisioning_state(history: list[_Change]) -> str:
        op = history[-1].op
        return "Updating" if op is not None and not op.done else "Succeeded"

    # -- classic Front Door: seeding and reading -----------------------------------------------

    def add_classic_front_door(self, rg: str, name: str, *, rule: str,
                               pools: dict[str, str], live: str,
                               hosts: dict[str, str] | None = None, http_port: int = 80) -> None:
        """A classic Front Door whose routing rule ``rule`` forwards to pool ``pools[live]``;
        each pool has one backend at ``hosts[colour]`` (default ``<pool>.example.net``) and
        ``http_port``."""
        fd_id = f"{self.rg_path(rg)}/Microsoft.Network/frontdoors/{name}"
        hosts = hosts or {}
        backend_pools = [{
            "id": f"{fd_id}/backendPools/{pool}", "name": pool,
            "type": "Microsoft.Network/Frontdoors/BackendPools",
            "properties": {
                "backends": [{"address": hosts.get(colour, f"{pool}.example.net"),
                              "httpPort": http_port, "httpsPort": 443, "priority": 1,
                              "weight": 50,
                              "enabledState": "Enabled",
                              "backendHostHeader": hosts.get(colour, f"{pool}.example.net")}],
                "loadBalancingSettings": {"id": f"{fd_id}/loadBalancingSettings/lb"},
                "healthProbeSettings": {"id": f"{fd_id}/healthProbeSettings/probe"},
                "resourceState": "Enabled"},
        } for colour, pool in pools.items()]
        with self.lock:
            self.front_doors[name.lower()] = {
                "id": fd_id, "name": name, "type": "Microsoft.Network/frontdoors",
                "location": "Global", "tags": {"team": "qlp"},
                "properties": {
                    "routingRules": [{
                        "id": f"{fd_id}/routingRules/{rule}", "name": rule,
                        "type": "Microsoft.Network/Frontdoors/RoutingRules",
                        "properties": {
                            "frontendEndpoints": [{"id": f"{fd_id}/frontendEndpoints/default"}],
                            "acceptedProtocols": ["Https"], "patternsToMatch": ["/*"],
                            "enabledState": "Enabled", "resourceState": "Enabled",
                            "routeConfiguration": {
                                "@odata.type": "#Microsoft.Azure.FrontDoor.Models."
                                               "FrontdoorForwardingConfiguration",
                                "forwardingProtocol": "HttpOnly",
                                "backendPool": {"id": f"{fd_id}/backendPools/{pools[live]}"}}}}],
                    "backendPools": backend_pools,
                    "frontendEndpoints": [{
                        "id": f"{fd_id}/frontendEndpoints/default", "name": "default",
                        "properties": {"hostName": f"{name}.azurefd.net",
                                       "sessionAffinityEnabledState": "Disabled"}}],
                    "loadBalancingSettings": [{"id": f"{fd_id}/loadBalancingSettings/lb",
                                               "name": "lb",
                                               "properties": {"sampleSize": 4,
                                                              "successfulSamplesRequired": 2}}],
                    "healthProbeSettings": [{"id": f"{fd_id}/healthProbeSettings/probe",
                                             "name": "probe",
                                             "properties": {"path": "/health",
                                                            "protocol": "Http",
                                                            "intervalInSeconds": 30}}],
                    "enabledState": "Enabled", "provisioningState": "Succeeded",
                    "resourceState": "Enabled", "cname": f"{name}.azurefd.net",
                },
            }
            self._classic_edge[(name.lower(), rule.lower())] = [
                _Change(float("-inf"), pools[live])]

    @staticmethod
    def _rule_pools(front_door: dict[str, Any]) -> dict[str, str]:
        """Routing rule name (lower case) -> the backend pool name it forwards to."""
        pools: dict[str, str] = {}
        for item in (front_door.get("properties") or {}).get("routingRules") or []:
            configuration = (item.get("properties") or {}).get("routeConfiguration") or {}
            pool_id = (configuration.get("backendPool") or {}).get("id")
            if pool_id:
                pools[str(item.get("name", "")).lower()] = str(pool_id).rsplit("/", 1)[-1]
        return pools

    def classic_pool(self, name: str, rule: str) -> str:
        """The backend pool the classic Front Door's rule is configured to forward to."""
        with self.lock:
            pools = self._rule_pools(self.front_doors[name.lower()])
            if rule.lower() not in pools:
                raise KeyError(rule)
            return pools[rule.lower()]

    def classic_served_pool(self, name: str, rule: str) -> str:
        """The backend pool the edge forwards the rule's traffic to now (the previous one
        while a change propagates)."""
        with self.lock:
            return str(self._served(self._classic_edge[(name.lower(), rule.lower())]))

    def classic_backends(self, name: str, pool: str) -> list[dict[str, Any]]:
        """The backends of a classic Front Door's pool, as configured."""
        with self.lock:
            fd = self.front_doors[name.lower()]
            for item in fd["properties"]["backendPools"]:
                if item["name"].lower() == pool.lower():
                    return copy.deepcopy(item["properties"]["backends"])
        raise KeyError(pool)

    # -- Standard/Premium: seeding -------------------------------------------------------------

    def _profile_id(self, rg: str, profile: str) -> str:
        return f"{self.rg_path(rg)}/Microsoft.Cdn/profiles/{profile}"

    def _new_origin_group(self, rg: str, profile: str, name: str, *,
                          probe_path: str = "/health") -> None:
        self.origin_groups[(profile.lower(), name.lower())] = {
            "id": f"{self._profile_id(rg, profile)}/originGroups/{name}", "name": name,
            "type": "Microsoft.Cdn/profiles/origingroups",
            "properties": {
                "loadBalancingSettings": {"sampleSize": 4, "successfulSamplesRequired": 3,
                                          "additionalLatencyInMilliseconds": 50},
                "healthProbeSettings": {"probePath": probe_path, "probeRequestType": "GET",
                                        "probeProtocol": "Http", "probeIntervalInSeconds": 100},
                "sessionAffinityState": "Disabled", "provisioningState": "Succeeded",
                "deploymentStatus": "Succeeded"},
        }

    def add_origin_group(self, rg: str, profile: str, name: str, *,
                         probe_path: str = "/health") -> None:
        """Declare an origin group of ``profile``; the profile becomes strict (routes may only
        point at its declared groups)."""
        with self.lock:
            self._new_origin_group(rg, profile, name, probe_path=probe_path)
            self._lenient_profiles.discard(profile.lower())

    def _ensure_origin_group(self, rg: str, profile: str, name: str) -> None:
        """The older seeding's leniency: a group named by a seed exists implicitly."""
        if (profile.lower(), name.lower()) in self.origin_groups:
            return
        if not any(p == profile.lower() for p, _ in self.origin_groups):
            self._lenient_profiles.add(profile.lower())
        self._new_origin_group(rg, profile, name)

    def add_route(self, rg: str, profile: str, endpoint: str, route: str,
                  origin_group: str) -> None:
        """A Standard/Premium route forwarding to ``origin_group``. A group not declared
        (``add_origin_group``) is created implicitly, for older fixtures."""
        with self.lock:
            self._ensure_origin_group(rg, profile, origin_group)
            key = (profile.lower(), endpoint.lower(), route.lower())
            profile_id = self._profile_id(rg, profile)
            self.routes[key] = {
                "id": f"{profile_id}/afdEndpoints/{endpoint}/routes/{route}", "name": route,
                "type": "Microsoft.Cdn/profiles/afdendpoints/routes",
                "properties": {
                    "endpointName": endpoint,
                    "originGroup": {"id": f"{profile_id}/originGroups/{origin_group}"},
                    "supportedProtocols": ["Https"], "patternsToMatch": ["/*"],
                    "forwardingProtocol": "HttpOnly", "linkToDefaultDomain": "Enabled",
                    "httpsRedirect": "Enabled", "enabledState": "Enabled"},
            }
            self._route_edge[key] = [_Change(float("-inf"), origin_group.lower())]

    def add_origin(self, rg: str, profile: str, group: str, origin: str, *, host: str,
                   enabled: bool, weight: int = 1000, priority: int = 1,
                   http_port: int = 8080) -> None:
        """An origin of ``group`` at ``host``:``http_port``. A group not declared
        (``add_origin_group``) is created implicitly, for older fixtures."""
        with self.lock:
            self._ensure_origin_group(rg, profile, group)
            key = (profile.lower(), group.lower(), origin.lower())
            self.origins[key] = {
                "id": f"{self._profile_id(rg, profile)}/originGroups/{group}/origins/{origin}",
                "name": origin, "type": "Microsoft.Cdn/profiles/origingroups/origins",
                "properties": {
                    "originGroupName": group,
                    "hostName": host, "httpPort": http_port, "httpsPort": 443,
                    "originHostHeader": host, "priority": priority, "weight": weight,
                    "enabledState": "Enabled" if enabled else "Disabled",
                    "enforceCertificateNameCheck": True},
            }
            self._origin_edge[key] = [_Change(float("-inf"), self._edge_fields(key))]

    # -- Standard/Premium: reading -------------------------------------------------------------

    def route_origin_group(self, profile: str, endpoint: str, route: str) -> str:
        """The origin group the route is configured to forward to (what ARM answers)."""
        with self.lock:
            item = self.routes[(profile.lower(), endpoint.lower(), route.lower())]
            return str(item["properties"]["originGroup"]["id"]).rsplit("/", 1)[-1]

    def served_origin_group(self, profile: str, endpoint: str, route: str) -> str:
        """The origin group the edge forwards the route's traffic to now (lower case; the
        previous one while a change propagates)."""
        with self.lock:
            return str(self._served(
                self._route_edge[(profile.lower(), endpoint.lower(), route.lower())]))

    def origin(self, profile: str, group: str, origin: str) -> dict[str, Any]:
        """The origin as ARM answers it now."""
        with self.lock:
            key = (profile.lower(), group.lower(), origin.lower())
            return self._origin_view(key)

    def served_origins(self, profile: str, group: str) -> list[dict[str, Any]]:
        """The origins of ``group`` the edge sends traffic to now: enabled ones of the lowest
        priority number, as the edge knows them (``name`` added to each), highest weight
        first. Health probes are not modelled."""
        with self.lock:
            served = []
            for key in sorted(self.origins):
                if key[:2] != (profile.lower(), group.lower()):
                    continue
                fields = dict(self._served(self._origin_edge[key]))
                if fields.get("enabledState") == "Enabled":
                    served.append({"name": self.origins[key]["name"], **fields})
            if not served:
                return []
            best = min(int(o.get("priority") or 1) for o in served)
            chosen = [o for o in served if int(o.get("priority") or 1) == best]
            return sorted(chosen, key=lambda o: -int(o.get("weight") or 0))

    def served_origin(self, profile: str, group: str) -> str | None:
        """The origin that gets (nearly) all of ``group``'s traffic at the edge now: None when
        none is enabled or two share the top weight (traffic split evenly)."""
        served = self.served_origins(profile, group)
        if not served:
            return None
        if len(served) > 1 and served[0].get("weight") == served[1].get("weight"):
            return None
        return str(served[0]["name"])

    def _edge_fields(self, key: tuple[str, str, str]) -> dict[str, Any]:
        props = self.origins[key]["properties"]
        return {name: props.get(name) for name in EDGE_ORIGIN_FIELDS}

    def _route_view(self, key: tuple[str, str, str]) -> dict[str, Any]:
        view = copy.deepcopy(self.routes[key])
        history = self._route_edge[key]
        view["properties"]["provisioningState"] = self._provisioning_state(history)
        view["properties"]["deploymentStatus"] = self._deployment_status(history)
        return view

    def _origin_view(self, key: tuple[str, str, str]) -> dict[str, Any]:
        view = copy.deepcopy(self.origins[key])
        history = self._origin_edge[key]
        view["properties"]["provisioningState"] = self._provisioning_state(history)
        view["properties"]["deploymentStatus"] = self._deployment_status(history)
        return view

    # -- classic Front Door: handlers ----------------------------------------------------------

    def _frontdoor_get(self, match: re.Match[str], body: Any) -> Answer:
        denied = self.check_access("Microsoft.Network/frontDoors/read", match.group(0))
        if denied is None:
            denied = self.missing_resource_group(match["rg"])
        if denied is not None:
            return denied
        fd = self.front_doors.get(match["name"].lower())
        if fd is None or not _under(fd["id"], match["rg"]):
            return resource_not_found("Microsoft.Network/frontDoors", match["name"], match["rg"])
        return Answer(200, copy.deepcopy(fd))

    def _frontdoor_put(self, match: re.Match[str], body: Any) -> Answer:
        denied = self.check_access("Microsoft.Network/frontDoors/write", match.group(0))
        if denied is None:
            denied = self.missing_resource_group(match["rg"])
        if denied is not None:
            return denied
        name = match["name"].lower()
        if name not in self.front_doors:
            return _bad_request("classic Front Doors cannot be created any more")
        spec = f"frontdoor-{API_VERSIONS['frontdoor']}"
        invalid = _invalid(body, "FrontDoor", spec=spec)
        if invalid is not None:
            return invalid
        body = strip_read_only(body, "FrontDoor", spec=spec)
        props = body.get("properties") or {}
        for key in CLASSIC_PARTS:
            if not props.get(key):
                # The whole object is the update: a PUT without a part would delete it.
                return _bad_request(f"the PUT lost properties.{key}")
        pool_names = {str(p.get("name", "")).lower() for p in props["backendPools"]}
        new_pools = self._rule_pools(body)
        for rule, pool in new_pools.items():
            if pool.lower() not in pool_names:
                return _bad_request(f"Routing rule {rule} references backend pool {pool}, "
                                    "which is not defined in this Front Door.")
        stored = copy.deepcopy(body)
        existing = self.front_doors[name]
        # The server-owned values stay the service's, whatever the request said of them.
        for key in CLASSIC_SERVER_OWNED:
            if key in existing["properties"]:
                stored["properties"][key] = copy.deepcopy(existing["properties"][key])
        stored["properties"].update(provisioningState="Succeeded", resourceState="Enabled")
        endpoints = {str(e.get("name", "")).lower(): e.get("properties") or {}
                     for e in existing["properties"].get("frontendEndpoints") or []}
        # What Front Door adds to each part in its answers (read-only in a request).
        for key, kind in CLASSIC_PARTS.items():
            for part in stored["properties"][key]:
                part["type"] = f"Microsoft.Network/Frontdoors/{kind}"
                part.setdefault("properties", {})["resourceState"] = "Enabled"
                if key == "frontendEndpoints":
                    before = endpoints.get(str(part.get("name", "")).lower(), {})
                    part["properties"].update({k: copy.deepcopy(before[k])
                                               for k in ENDPOINT_SERVER_OWNED if k in before})
        stored["id"] = existing["id"]
        stored["name"] = existing["name"]
        stored["type"] = "Microsoft.Network/frontdoors"
        old_pools = self._rule_pools(self.front_doors[name])
        self.front_doors[name] = stored
        op, headers = self._new_operation("frontdoor", name, "Microsoft.Network", "global")
        for rule, pool in new_pools.items():
            history = self._classic_edge.setdefault((name, rule), [
                _Change(float("-inf"), old_pools.get(rule, pool))])
            if pool != history[-1].value:
                history.append(_Change(self.clock(), pool, op))
        return Answer(202, None, headers)

    # -- Standard/Premium: the profile ---------------------------------------------------------

    def _profile_get(self, match: re.Match[str], body: Any) -> Answer:
        """Profiles - Get. A profile exists once the test world gave it an origin group (every
        seeded route and origin has one); it is a Standard Front Door profile."""
        profile_id = match.group(0)
        denied = self.check_access("Microsoft.Cdn/profiles/read", profile_id)
        if denied is None:
            denied = self.missing_resource_group(match["rg"])
        if denied is not None:
            return denied
        name = match["profile"].lower()
        if not any(p == name and _under(g["id"], match["rg"])
                   for (p, _), g in self.origin_groups.items()):
            return resource_not_found("Microsoft.Cdn/profiles", match["profile"], match["rg"])
        return Answer(200, {
            "id": profile_id, "name": match["profile"], "type": "Microsoft.Cdn/profiles",
            "location": "Global", "sku": {"name": "Standard_AzureFrontDoor"}, "kind": "frontdoor",
            "properties": {"provisioningState": "Succeeded", "resourceState": "Active",
                           "originResponseTimeoutSeconds": 60}})

    # -- Standard/Premium: origin groups -------------------------------------------------------

    def _origingroup_get(self, match: re.Match[str], body: Any) -> Answer:
        denied = self.check_access("Microsoft.Cdn/profiles/originGroups/read", match.group(0))
        if denied is not None:
            return denied
        group = self.origin_groups.get((match["profile"].lower(), match["group"].lower()))
        if group is None:
            return _error(404, "NotFound", f"Origin group {match['group']} was not found.")
        return Answer(200, copy.deepcopy(group))

    def _origingroups_get(self, match: re.Match[str], body: Any) -> Answer:
        denied = self.check_access("Microsoft.Cdn/profiles/originGroups/read", match.group(0))
        if denied is not None:
            return denied
        profile = match["profile"].lower()
        groups = [copy.deepcopy(g) for (p, _), g in sorted(self.origin_groups.items())
                  if p == profile]
        return Answer(200, {"value": groups})

    # -- Standard/Premium: routes --------------------------------------------------------------

    def _route_key(self, match: re.Match[str]) -> tuple[str, str, str]:
        return match["profile"].lower(), match["endpoint"].lower(), match["route"].lower()

    def _route_get(self, match: re.Match[str], body: Any) -> Answer:
        denied = self.check_access("Microsoft.Cdn/profiles/afdEndpoints/routes/read",
                                   match.group(0))
        if denied is not None:
            return denied
        key = self._route_key(match)
        if key not in self.routes:
            return _error(404, "NotFound", f"Route {match['route']} was not found.")
        return Answer(200, self._route_view(key))

    def _route_patch(self, match: re.Match[str], body: Any) -> Answer:
        denied = self.check_access("Microsoft.Cdn/profiles/afdEndpoints/routes/write",
                                   match.group(0))
        if denied is not None:
            return denied
        key = self._route_key(match)
        route = self.routes.get(key)
        if route is None:
            return _error(404, "NotFound", f"Route {match['route']} was not found.")
        invalid = _invalid(body, "RouteUpdateParameters")
        if invalid is not None:
            return invalid
        body = strip_read_only(body, "RouteUpdateParameters", spec=CDN_SPEC)
        changes = _canonical(dict(body.get("properties") or {}))
        problem = self._route_problem(match, changes)
        if problem is not None:
            return problem
        target = changes.get("originGroup")
        group_name = str(target["id"]).rsplit("/", 1)[-1] if target else None
        if group_name is not None and (match["profile"].lower(),
                                       group_name.lower()) not in self.origin_groups:
            # Only a lenient (older-fixture) profile gets here: see the module docstring.
            self._new_origin_group(match["rg"], match["profile"], group_name)
        route["properties"].update(changes)
        op, headers = self._new_operation("route", key, "Microsoft.Cdn", "global")
        # Every write propagates anew (deploymentStatus), even one that keeps the group.
        self._route_edge[key].append(
            _Change(self.clock(), self.route_origin_group(*key).lower(), op,
                    failed=self._take_deployment_failure("route", key)))
        return Answer(202, self._route_view(key), headers)

    def _route_problem(self, match: re.Match[str], changes: dict[str, Any]) -> Answer | None:
        if "originGroup" not in changes:
            return None
        target = changes["originGroup"]
        target_id = target.get("id") if isinstance(target, dict) else None
        if not isinstance(target_id, str) or not target_id:
            return _bad_request("originGroup.id is required.")
        profile_id = self._profile_id(match["rg"], match["profile"])
        prefix = f"{profile_id}/originGroups/".lower()
        name = target_id[len(prefix):] if target_id.lower().startswith(prefix) else ""
        if not name or "/" in name:
            return _bad_request(f"Origin group {target_id} is not in profile "
                                f"{match['profile']}. {ORIGIN_GROUP_MISSING}")
        profile = match["profile"].lower()
        if profile in self._lenient_profiles:
            return None
        if (profile, name.lower()) not in self.origin_groups:
            return _bad_request(ORIGIN_GROUP_MISSING)
        enabled = [o for k, o in self.origins.items() if k[:2] == (profile, name.lower())
                   and o["properties"].get("enabledState") == "Enabled"]
        if not enabled:
            return _bad_request(ORIGIN_GROUP_MISSING)
        return None

    # -- Standard/Premium: origins -------------------------------------------------------------

    def _origin_key(self, match: re.Match[str]) -> tuple[str, str, str]:
        return match["profile"].lower(), match["group"].lower(), match["origin"].lower()

    def _origin_get(self, match: re.Match[str], body: Any) -> Answer:
        denied = self.check_access("Microsoft.Cdn/profiles/originGroups/origins/read",
                                   match.group(0))
        if denied is not None:
            return denied
        key = self._origin_key(match)
        if key not in self.origins:
            return _error(404, "NotFound", f"Origin {match['origin']} was not found.")
        return Answer(200, self._origin_view(key))

    def _origins_get(self, match: re.Match[str], body: Any) -> Answer:
        denied = self.check_access("Microsoft.Cdn/profiles/originGroups/origins/read",
                                   match.group(0))
        if denied is not None:
            return denied
        group = (match["profile"].lower(), match["group"].lower())
        if group not in self.origin_groups:
            return _error(404, "NotFound", f"Origin group {match['group']} was not found.")
        return Answer(200, {"value": [self._origin_view(k) for k in sorted(self.origins)
                                      if k[:2] == group]})

    def _origin_patch(self, match: re.Match[str], body: Any) -> Answer:
        denied = self.check_access("Microsoft.Cdn/profiles/originGroups/origins/write",
                                   match.group(0))
        if denied is not None:
            return denied
        key = self._origin_key(match)
        origin = self.origins.get(key)
        if origin is None:
            return _error(404, "NotFound", f"Origin {match['origin']} was not found.")
        invalid = _invalid(body, "AFDOriginUpdateParameters")
        if invalid is not None:
            return invalid
        body = strip_read_only(body, "AFDOriginUpdateParameters", spec=CDN_SPEC)
        changes = _canonical(dict(body.get("properties") or {}))
        origin["properties"].update(changes)
        op, headers = self._new_operation("origin", key, "Microsoft.Cdn", "global")
        self._origin_edge[key].append(_Change(self.clock(), self._edge_fields(key), op,
                                              failed=self._take_deployment_failure("origin",
                                                                                   key)))
        return Answer(202, self._origin_view(key), headers)


def _under(resource_id: str, rg: str) -> bool:
    """Whether the resource ID is in resource group ``rg`` (case-insensitive, as ARM)."""
    return f"/resourcegroups/{rg.lower()}/" in resource_id.lower()


def _invalid(body: Any, definition: str, *, spec: str = CDN_SPEC) -> Answer | None:
    """400 ``BadRequest`` when ``body`` does not fit ``definition`` of the published
    definitions the installed SDK's api-version uses (``Microsoft.Cdn`` by default, or the
    classic ``FrontDoor`` of ``Microsoft.Network``): unknown properties, enum values, ranges
    such as weight 1..1000, priority 1..5, ports 1..65535, and the ``@odata.type`` of a routing
    rule's ``routeConfiguration``. The message names each property. Read-only properties are
    not checked: ARM ignores them in a request (the handler strips them)."""
    if not isinstance(body, dict):
        return _bad_request(f"The request content is not a valid {definition}.")
    problems = validate(body, definition, spec=spec, allow_read_only=True)
    if problems:
        return _bad_request(f"The request content is not a valid {definition}: "
                            + "; ".join(problems))
    return None


def _canonical(changes: dict[str, Any]) -> dict[str, Any]:
    """Enum values as the service stores them (ARM compares them case-insensitively)."""
    for name, value in changes.items():
        allowed = ENUMS.get(name)
        if allowed is not None and isinstance(value, str):
            changes[name] = next((a for a in allowed if a.lower() == value.lower()), value)
    return changes
