"""Front Door in the double: classic (``Microsoft.Network/frontDoors``: GET and a whole-object
PUT, 202 + ``Azure-AsyncOperation``) and Standard/Premium (``Microsoft.Cdn``: route GET/PATCH,
202 + ``Azure-AsyncOperation``; origin GET/PATCH)."""

from __future__ import annotations

import copy
import re
from typing import Any

from tests.azure.arm_double.core import (
    API_VERSIONS,
    RG_PATTERN,
    Answer,
    ArmCore,
    Operation,
    Route,
    _error,
)


class FrontDoorMixin(ArmCore):
    """Classic Front Door, and Standard/Premium routes and origins."""

    ROUTES = (
        Route("frontdoor", re.compile(
            RG_PATTERN + r"Microsoft\.Network/frontDoors/(?P<name>[^/]+)$", re.I),
            API_VERSIONS["frontdoor"]),
        Route("route", re.compile(
            RG_PATTERN + r"Microsoft\.Cdn/profiles/(?P<profile>[^/]+)/afdEndpoints/"
            r"(?P<endpoint>[^/]+)/routes/(?P<route>[^/]+)$", re.I), API_VERSIONS["cdn"]),
        Route("origin", re.compile(
            RG_PATTERN + r"Microsoft\.Cdn/profiles/(?P<profile>[^/]+)/originGroups/"
            r"(?P<group>[^/]+)/origins/(?P<origin>[^/]+)$", re.I), API_VERSIONS["cdn"]),
    )

    def _setup(self) -> None:
        super()._setup()
        self.front_doors: dict[str, dict[str, Any]] = {}
        self.routes: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.origins: dict[tuple[str, str, str], dict[str, Any]] = {}

    def add_classic_front_door(self, rg: str, name: str, *, rule: str,
                               pools: dict[str, str], live: str) -> None:
        """A classic Front Door whose routing rule ``rule`` forwards to pool ``pools[live]``."""
        fd_id = f"{self.rg_path(rg)}/Microsoft.Network/frontdoors/{name}"
        backend_pools = [{
            "id": f"{fd_id}/backendPools/{pool}", "name": pool,
            "type": "Microsoft.Network/Frontdoors/BackendPools",
            "properties": {
                "backends": [{"address": f"{pool}.example.net", "httpPort": 80, "httpsPort": 443,
                              "priority": 1, "weight": 50, "enabledState": "Enabled",
                              "backendHostHeader": f"{pool}.example.net"}],
                "loadBalancingSettings": {"id": f"{fd_id}/loadBalancingSettings/lb"},
                "healthProbeSettings": {"id": f"{fd_id}/healthProbeSettings/probe"},
                "resourceState": "Enabled"},
        } for pool in pools.values()]
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
                "frontendEndpoints": [{"id": f"{fd_id}/frontendEndpoints/default",
                                       "name": "default",
                                       "properties": {"hostName": f"{name}.azurefd.net",
                                                      "sessionAffinityEnabledState": "Disabled"}}],
                "loadBalancingSettings": [{"id": f"{fd_id}/loadBalancingSettings/lb",
                                           "name": "lb",
                                           "properties": {"sampleSize": 4,
                                                          "successfulSamplesRequired": 2}}],
                "healthProbeSettings": [{"id": f"{fd_id}/healthProbeSettings/probe",
                                         "name": "probe",
                                         "properties": {"path": "/health", "protocol": "Http",
                                                        "intervalInSeconds": 30}}],
                "enabledState": "Enabled", "provisioningState": "Succeeded",
                "resourceState": "Enabled", "cname": f"{name}.azurefd.net",
            },
        }

    def classic_pool(self, name: str, rule: str) -> str:
        """The backend pool the classic Front Door's rule forwards to now."""
        with self.lock:
            fd = self.front_doors[name.lower()]
            for item in fd["properties"]["routingRules"]:
                if item["name"].lower() == rule.lower():
                    pool_id = item["properties"]["routeConfiguration"]["backendPool"]["id"]
                    return str(pool_id).rsplit("/", 1)[-1]
        raise KeyError(rule)

    def add_route(self, rg: str, profile: str, endpoint: str, route: str,
                  origin_group: str) -> None:
        """A Standard/Premium route forwarding to ``origin_group``."""
        profile_id = f"{self.rg_path(rg)}/Microsoft.Cdn/profiles/{profile}"
        self.routes[(profile.lower(), endpoint.lower(), route.lower())] = {
            "id": f"{profile_id}/afdEndpoints/{endpoint}/routes/{route}", "name": route,
            "type": "Microsoft.Cdn/profiles/afdendpoints/routes",
            "properties": {
                "originGroup": {"id": f"{profile_id}/originGroups/{origin_group}"},
                "supportedProtocols": ["Https"], "patternsToMatch": ["/*"],
                "forwardingProtocol": "HttpOnly", "linkToDefaultDomain": "Enabled",
                "httpsRedirect": "Enabled", "enabledState": "Enabled",
                "provisioningState": "Succeeded", "deploymentStatus": "Succeeded"},
        }

    def route_origin_group(self, profile: str, endpoint: str, route: str) -> str:
        with self.lock:
            item = self.routes[(profile.lower(), endpoint.lower(), route.lower())]
            return str(item["properties"]["originGroup"]["id"]).rsplit("/", 1)[-1]

    def add_origin(self, rg: str, profile: str, group: str, origin: str, *, host: str,
                   enabled: bool, weight: int = 1000) -> None:
        profile_id = f"{self.rg_path(rg)}/Microsoft.Cdn/profiles/{profile}"
        self.origins[(profile.lower(), group.lower(), origin.lower())] = {
            "id": f"{profile_id}/originGroups/{group}/origins/{origin}", "name": origin,
            "type": "Microsoft.Cdn/profiles/origingroups/origins",
            "properties": {
                "hostName": host, "httpPort": 8080, "httpsPort": 443, "originHostHeader": host,
                "priority": 1, "weight": weight,
                "enabledState": "Enabled" if enabled else "Disabled",
                "enforceCertificateNameCheck": True, "provisioningState": "Succeeded",
                "deploymentStatus": "Succeeded"},
        }

    def origin(self, profile: str, group: str, origin: str) -> dict[str, Any]:
        with self.lock:
            return copy.deepcopy(self.origins[(profile.lower(), group.lower(), origin.lower())])


    # -- classic Front Door ------------------------------------------------------------------

    def _frontdoor_get(self, match: re.Match[str], body: Any) -> Answer:
        fd = self.front_doors.get(match["name"].lower())
        if fd is None:
            return _error(404, "ResourceNotFound", f"Front Door {match['name']} was not found")
        return Answer(200, copy.deepcopy(fd))

    def _frontdoor_put(self, match: re.Match[str], body: Any) -> Answer:
        name = match["name"].lower()
        if name not in self.front_doors:
            return _error(400, "BadRequest", "classic Front Doors cannot be created any more")
        props = (body or {}).get("properties") or {}
        for key in ("routingRules", "backendPools", "frontendEndpoints",
                    "loadBalancingSettings", "healthProbeSettings"):
            if not props.get(key):
                # The whole object is the update: a PUT without a part would delete it.
                return _error(400, "BadRequest", f"the PUT lost properties.{key}")
        stored = copy.deepcopy(body)
        stored["properties"].update(provisioningState="Succeeded", resourceState="Enabled",
                                    cname=self.front_doors[name]["properties"]["cname"])
        stored["id"] = self.front_doors[name]["id"]
        stored["name"] = self.front_doors[name]["name"]
        stored["type"] = "Microsoft.Network/frontdoors"
        self.front_doors[name] = stored
        _, headers = self._new_operation("frontdoor", name, "Microsoft.Network", "global")
        return Answer(202, None, headers)

    # -- Front Door Standard/Premium ---------------------------------------------------------

    def _route_key(self, match: re.Match[str]) -> tuple[str, str, str]:
        return match["profile"].lower(), match["endpoint"].lower(), match["route"].lower()

    def _route_get(self, match: re.Match[str], body: Any) -> Answer:
        route = self.routes.get(self._route_key(match))
        if route is None:
            return _error(404, "NotFound", f"route {match['route']} was not found")
        return Answer(200, copy.deepcopy(route))

    def _route_patch(self, match: re.Match[str], body: Any) -> Answer:
        route = self.routes.get(self._route_key(match))
        if route is None:
            return _error(404, "NotFound", f"route {match['route']} was not found")
        changes = (body or {}).get("properties") or {}
        target = (changes.get("originGroup") or {}).get("id", "")
        if target and not target.lower().startswith(route["id"].lower().split(
                "/afdendpoints/")[0] + "/origingroups/"):
            return _error(400, "BadRequest", f"origin group {target} is not in this profile")
        route["properties"].update(changes)
        route["properties"]["deploymentStatus"] = "InProgress"
        _, headers = self._new_operation("route", self._route_key(match), "Microsoft.Cdn",
                                         "global")
        return Answer(202, None, headers)

    def _finish_route(self, op: Operation) -> None:
        self.routes[op.target]["properties"]["deploymentStatus"] = "Succeeded"

    def _origin_get(self, match: re.Match[str], body: Any) -> Answer:
        key = (match["profile"].lower(), match["group"].lower(), match["origin"].lower())
        origin = self.origins.get(key)
        if origin is None:
            return _error(404, "NotFound", f"origin {match['origin']} was not found")
        return Answer(200, copy.deepcopy(origin))

    def _origin_patch(self, match: re.Match[str], body: Any) -> Answer:
        key = (match["profile"].lower(), match["group"].lower(), match["origin"].lower())
        origin = self.origins.get(key)
        if origin is None:
            return _error(404, "NotFound", f"origin {match['origin']} was not found")
        origin["properties"].update((body or {}).get("properties") or {})
        return Answer(200, copy.deepcopy(origin))

