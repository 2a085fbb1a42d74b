"""A local Azure Resource Manager and Key Vault double, over HTTPS with a self-signed certificate.

It implements exactly the endpoints the platform's SDK calls use (paths and api-versions as the
installed SDKs send them, see ``../shared/research/azure.md`` §6.3):

- ACI container groups: PUT (201 + ``Azure-AsyncOperation``, polled ``InProgress`` a few times,
  then ``Succeeded`` or ``Failed`` with an ARM error), GET, DELETE (202 + ``Location``, polled);
- classic Front Door: GET and a whole-object PUT (202 + ``Azure-AsyncOperation``);
- Front Door Standard/Premium: route GET/PATCH (202 + ``Azure-AsyncOperation``) and origin
  GET/PATCH (200 with the updated origin: done at once);
- Key Vault: ``GET /secrets/{name}/[{version}]``, with the 401 challenge a real vault sends to a
  request without a token;
- Log Analytics: ``POST /v1/workspaces/{id}/query`` and ``POST /v1{resourceId}/query`` with
  request counts per cloud role name (``set_requests``; ``logs_failures`` injects errors).

State is kept per resource, every request is recorded in ``calls`` (method, path, query, JSON
body, whether it carried the expected bearer token), ARM requests without the token get 401,
and failures are injected on demand: ``fail_next_create`` (a provisioning that ends ``Failed``
with, say, ``InaccessibleImage``), ``throttle`` (429 + ``Retry-After``), ``set_container``
(e.g. a container that restart-loops). Like ARM, a GET never returns a ``secureValue``.
"""

from __future__ import annotations

import copy
import datetime as dt
import hashlib
import ipaddress
import itertools
import json
import re
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

SUBSCRIPTION = "00000000-0000-0000-0000-0000000000aa"
TOKEN = "test-token"  # the bearer token the static test credential hands out
API_VERSIONS = {"aci": "2023-05-01", "frontdoor": "2025-10-01", "cdn": "2026-10-01"}

_RG = r"^/subscriptions/(?P<sub>[^/]+)/resourceGroups/(?P<rg>[^/]+)/providers/"
ROUTES: list[tuple[str, re.Pattern[str]]] = [
    ("group", re.compile(_RG + r"Microsoft\.ContainerInstance/containerGroups/(?P<name>[^/]+)$",
                         re.I)),
    ("operation", re.compile(r"^/subscriptions/[^/]+/providers/(?P<provider>[^/]+)/locations/"
                             r"(?P<loc>[^/]+)/(?P<kind>operations|operationResults)/"
                             r"(?P<id>[^/]+)$", re.I)),
    ("frontdoor", re.compile(_RG + r"Microsoft\.Network/frontDoors/(?P<name>[^/]+)$", re.I)),
    ("route", re.compile(_RG + r"Microsoft\.Cdn/profiles/(?P<profile>[^/]+)/afdEndpoints/"
                         r"(?P<endpoint>[^/]+)/routes/(?P<route>[^/]+)$", re.I)),
    ("origin", re.compile(_RG + r"Microsoft\.Cdn/profiles/(?P<profile>[^/]+)/originGroups/"
                          r"(?P<group>[^/]+)/origins/(?P<origin>[^/]+)$", re.I)),
    ("secret", re.compile(r"^/secrets/(?P<name>[^/]+)/?(?P<version>[^/]*)$")),
    ("logs", re.compile(r"^/v1/workspaces/(?P<workspace>[^/]+)/query$", re.I)),
    ("logs", re.compile(r"^/v1(?P<resource>/subscriptions/.+)/query$", re.I)),
]


def make_certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and localhost: (certificate, key) PEM paths.

    The certificate doubles as its own CA, so clients verify it by being given it
    (``connection_verify=<path>``) instead of turning verification off.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "qlp arm double")])
    now = dt.datetime.now(dt.UTC)
    public = key.public_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name).public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]),
            critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
            key_encipherment=False, data_encipherment=False, key_agreement=False,
            encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]),
                       critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(public),
                       critical=False)
        .sign(key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = directory / "arm-double.pem", directory / "arm-double.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


@dataclass
class Call:
    """One request the double received."""

    method: str
    path: str
    query: dict[str, str]
    body: Any
    authorized: bool
    kind: str | None = None


@dataclass
class Throttle:
    """Answer the next ``times`` matching requests with 429 + Retry-After."""

    method: str
    path_contains: str
    times: int
    retry_after: str


@dataclass
class Operation:
    """A long-running operation: ``polls`` more InProgress answers, then its outcome."""

    id: str
    kind: str  # create | delete | frontdoor | route
    target: Any
    polls: int
    error: dict[str, str] | None = None
    done: bool = False
    status: str = "InProgress"
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Answer:
    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)


def _error(status: int, code: str, message: str, **headers: str) -> Answer:
    return Answer(status, {"error": {"code": code, "message": message}}, dict(headers))


class ArmDouble:
    """The double: ``url`` is its base URL, ``cert_path`` the certificate to trust."""

    def __init__(self, cert_path: Path, key_path: Path, *, polls: int = 2) -> None:
        self.cert_path = cert_path
        self.polls = polls  # InProgress answers before an operation finishes
        self.lock = threading.RLock()
        self.calls: list[Call] = []
        self.groups: dict[str, dict[str, Any]] = {}
        self.operations: dict[str, Operation] = {}
        self.front_doors: dict[str, dict[str, Any]] = {}
        self.routes: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.origins: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.secrets: dict[str, dict[str, str]] = {}  # name -> {version: value}, last = latest
        self.create_failures: list[tuple[str | None, dict[str, str]]] = []
        self.throttles: list[Throttle] = []
        self.container_overrides: dict[str, dict[str, Any]] = {}
        self.request_counts: dict[str, tuple[int, int]] = {}  # role -> (total, failed)
        self.logs_failures: list[int] = []  # HTTP statuses for the next Logs queries
        self._ids = itertools.count(1)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert_path, key_path)
        self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,),
                                        daemon=True)

    # -- life ------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> ArmDouble:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    # -- seeding and injection ----------------------------------------------------------------

    def rg_path(self, rg: str) -> str:
        return f"/subscriptions/{SUBSCRIPTION}/resourceGroups/{rg}/providers"

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

    def add_secret(self, name: str, value: str, version: str = "0a1b2c3d") -> None:
        self.secrets.setdefault(name, {})[version] = value

    def fail_next_create(self, code: str, message: str, *, name: str | None = None) -> None:
        """The next creation (of ``name``, or of any group) ends Failed with this error."""
        with self.lock:
            self.create_failures.append((name, {"code": code, "message": message}))

    def throttle(self, method: str, path_contains: str, *, times: int = 1,
                 retry_after: str = "7") -> None:
        with self.lock:
            self.throttles.append(Throttle(method.upper(), path_contains, times, retry_after))

    def set_container(self, group: str, **view: Any) -> None:
        """Override the containers' instance view once the group runs: ``state``,
        ``restart_count``, ``detail``."""
        with self.lock:
            self.container_overrides[group] = view
            if group in self.groups and self.groups[group]["properties"].get(
                    "provisioningState") == "Succeeded":
                self._apply_running(self.groups[group])

    def set_requests(self, role: str, total: int, failed: int = 0) -> None:
        """What the Logs double answers for ``role``: ``total`` requests, ``failed`` of them
        failed (``clear_requests`` for no rows)."""
        with self.lock:
            self.request_counts[role] = (total, failed)

    def clear_requests(self, role: str) -> None:
        with self.lock:
            self.request_counts.pop(role, None)

    def _logs_query(self, method: str, match: re.Match[str], body: Any) -> Answer:
        return _logs_query(self, method, match, body)

    def calls_to(self, kind: str, method: str | None = None) -> list[Call]:
        with self.lock:
            return [c for c in self.calls
                    if c.kind == kind and (method is None or c.method == method)]

    # -- dispatch ----------------------------------------------------------------------------

    def handle(self, method: str, raw_path: str, headers: dict[str, str], body: Any) -> Answer:
        parts = urlsplit(raw_path)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        path = parts.path
        kind, match = None, None
        for name, pattern in ROUTES:
            match = pattern.match(path)
            if match:
                kind = name
                break
        authorized = headers.get("authorization") == f"Bearer {TOKEN}"
        with self.lock:
            self.calls.append(Call(method, path, query, body, authorized, kind))
            for throttle in self.throttles:
                if (throttle.times > 0 and throttle.method == method
                        and throttle.path_contains in path):
                    throttle.times -= 1
                    return _error(429, "TooManyRequests",
                                  "The request is being throttled.",
                                  **{"Retry-After": throttle.retry_after})
            if kind is None or match is None:
                return _error(404, "NotFound", f"no route for {method} {path}")
            if kind == "secret":
                return self._secret(method, match, headers, query)
            if not authorized:
                return _error(401, "AuthenticationFailed", "missing or wrong bearer token")
            if kind == "operation":
                return self._operation(match)
            if kind == "logs":
                return self._logs_query(method, match, body)
            expected = API_VERSIONS.get({"group": "aci", "frontdoor": "frontdoor",
                                         "route": "cdn", "origin": "cdn"}[kind])
            if query.get("api-version") != expected:
                return _error(400, "InvalidApiVersionParameter",
                              f"api-version {query.get('api-version')} is not {expected}")
            handler = getattr(self, f"_{kind}_{method.lower()}", None)
            if handler is None:
                return _error(405, "MethodNotAllowed", f"{method} {kind}")
            answer: Answer = handler(match, body)
            return answer

    def _new_operation(self, kind: str, target: Any, provider: str, location: str,
                       *, header: str = "Azure-AsyncOperation",
                       error: dict[str, str] | None = None) -> tuple[Operation, dict[str, str]]:
        op = Operation(id=f"op-{next(self._ids)}", kind=kind, target=target, polls=self.polls,
                       error=error)
        self.operations[op.id] = op
        segment = "operations" if header == "Azure-AsyncOperation" else "operationResults"
        api = {"Microsoft.ContainerInstance": "aci", "Microsoft.Network": "frontdoor",
               "Microsoft.Cdn": "cdn"}[provider]
        url = (f"{self.url}/subscriptions/{SUBSCRIPTION}/providers/{provider}/locations/"
               f"{location}/{segment}/{op.id}?api-version={API_VERSIONS[api]}")
        return op, {header: url, "Retry-After": "0"}

    # -- ACI ---------------------------------------------------------------------------------

    def _group_get(self, match: re.Match[str], body: Any) -> Answer:
        group = self.groups.get(match["name"])
        if group is None:
            return _error(404, "ResourceNotFound",
                          f"The Resource 'Microsoft.ContainerInstance/containerGroups/"
                          f"{match['name']}' under resource group '{match['rg']}' was not found.")
        return Answer(200, _without_secure_values(group))

    def _group_put(self, match: re.Match[str], body: Any) -> Answer:
        name = match["name"]
        if not isinstance(body, dict) or "properties" not in body:
            return _error(400, "InvalidRequestContent", "no properties")
        props = copy.deepcopy(body["properties"])
        for container in props.get("containers", []):
            for variable in container.get("properties", {}).get("environmentVariables", []):
                if "value" in variable and "secureValue" in variable:
                    return _error(400, "InvalidEnvironmentVariable",
                                  f"{variable['name']} has both value and secureValue")
        identity = copy.deepcopy(body.get("identity") or {})
        for entry in (identity.get("userAssignedIdentities") or {}).values():
            entry.update(principalId="11111111-0000-0000-0000-000000000001",
                         clientId="22222222-0000-0000-0000-000000000002")
        props.update(provisioningState="Pending", sku="Standard")
        group = {
            "id": f"{match.group(0).split('?')[0]}", "name": name,
            "type": "Microsoft.ContainerInstance/containerGroups",
            "location": body.get("location", "eastus"), "tags": body.get("tags") or {},
            "identity": identity, "properties": props,
        }
        self.groups[name] = group
        failure = None
        for index, (only, error) in enumerate(self.create_failures):
            if only in (None, name):
                failure = error
                del self.create_failures[index]
                break
        _, headers = self._new_operation("create", name, "Microsoft.ContainerInstance",
                                         group["location"], error=failure)
        return Answer(201, _without_secure_values(group), headers)

    def _group_delete(self, match: re.Match[str], body: Any) -> Answer:
        name = match["name"]
        group = self.groups.get(name)
        if group is None:
            return Answer(204)
        group["properties"]["provisioningState"] = "Deleting"
        _, headers = self._new_operation("delete", name, "Microsoft.ContainerInstance",
                                         group["location"], header="Location")
        return Answer(202, None, headers)

    def _finish_create(self, op: Operation) -> None:
        group = self.groups.get(op.target)
        if group is None:
            return
        props = group["properties"]
        if op.error is not None:
            props["provisioningState"] = "Failed"
            props["instanceView"] = {"state": "Pending", "events": [
                {"count": 1, "name": "Failed", "type": "Warning",
                 "message": op.error["message"]}]}
            return
        props["provisioningState"] = "Succeeded"
        address = props.get("ipAddress")
        if address is not None:
            if address.get("type") == "Public":
                address["ip"] = "20.1.2.3"
                label = address.get("dnsNameLabel")
                if label:
                    digest = hashlib.sha256(f"{SUBSCRIPTION}/{label}".encode()).hexdigest()[:12]
                    address["fqdn"] = f"{label}.{digest}.{group['location']}.azurecontainer.io"
            else:
                address["ip"] = "10.0.0.4"
        self._apply_running(group)

    def _apply_running(self, group: dict[str, Any]) -> None:
        props = group["properties"]
        override = self.container_overrides.get(group["name"], {})
        props["instanceView"] = {"state": "Running", "events": []}
        for container in props.get("containers", []):
            state = override.get("state", "Running")
            container["properties"]["instanceView"] = {
                "restartCount": override.get("restart_count", 0),
                "currentState": {"state": state, "startTime": "2026-12-01T11:00:00Z",
                                 "detailStatus": override.get("detail", "")},
                "events": [{"count": 1, "name": "Started", "type": "Normal",
                            "message": f"Started container {container['name']}"}],
            }

    # -- operations --------------------------------------------------------------------------

    def _operation(self, match: re.Match[str]) -> Answer:
        op = self.operations.get(match["id"])
        if op is None:
            return _error(404, "OperationNotFound", match["id"])
        location_style = match["kind"].lower() == "operationresults"
        if not op.done and op.polls > 0:
            op.polls -= 1
            if op.kind == "create" and op.target in self.groups:
                self.groups[op.target]["properties"]["provisioningState"] = "Creating"
            if location_style:
                return Answer(202, None, {"Location": f"{self.url}{match.group(0)}",
                                          "Retry-After": "0"})
            return Answer(200, {"id": op.id, "name": op.id, "status": "InProgress",
                                "startTime": "2026-12-01T11:00:00Z"}, {"Retry-After": "0"})
        if not op.done:
            op.done = True
            op.status = "Failed" if op.error else "Succeeded"
            finish = getattr(self, f"_finish_{op.kind}", None)
            if finish is not None:
                finish(op)
        if location_style:
            return Answer(204)
        body: dict[str, Any] = {"id": op.id, "name": op.id, "status": op.status}
        if op.error is not None:
            body["error"] = dict(op.error)
        return Answer(200, body)

    def _finish_delete(self, op: Operation) -> None:
        self.groups.pop(op.target, None)

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

    # -- Key Vault ---------------------------------------------------------------------------

    def _secret(self, method: str, match: re.Match[str], headers: dict[str, str],
                query: dict[str, str]) -> Answer:
        if "authorization" not in headers:
            return Answer(401, {"error": {"code": "Unauthorized",
                                          "message": "AKV10000: Request is missing a Bearer "
                                                     "or PoP token."}},
                          {"WWW-Authenticate": 'Bearer authorization="https://login.'
                                               'microsoftonline.com/00000000-0000-0000-0000-'
                                               '0000000000bb", resource="https://vault.azure.net"'})
        if headers["authorization"] != f"Bearer {TOKEN}":
            return _error(401, "Unauthorized", "wrong token")
        if method != "GET" or not query.get("api-version"):
            return _error(400, "BadParameter", "GET with an api-version only")
        versions = self.secrets.get(match["name"])
        if not versions:
            return _error(404, "SecretNotFound",
                          f"A secret with (name/id) {match['name']} was not found in this "
                          "key vault.")
        version = match["version"] or list(versions)[-1]
        if version not in versions:
            return _error(404, "SecretNotFound", f"{match['name']}/{version} was not found")
        return Answer(200, {"value": versions[version],
                            "id": f"{self.url}/secrets/{match['name']}/{version}",
                            "attributes": {"enabled": True}})


_ROLE_FILTER = re.compile(r'(?:cloud_RoleName|AppRoleName)\s*==\s*"(?P<role>[^"]*)"')


def _logs_query(double: ArmDouble, method: str, match: re.Match[str], body: Any) -> Answer:
    """Log Analytics ``POST /v1/workspaces/{id}/query`` (or ``/v1{resourceId}/query``).

    Understands the one query shape the bot sends (a role filter, then ``summarize total,
    failed``): one row from ``request_counts[role]``, no rows for a role without data.
    """
    if method != "POST" or not isinstance(body, dict) or not body.get("query"):
        return _error(400, "BadArgumentError", "POST a JSON body with a query")
    if double.logs_failures:
        status = double.logs_failures.pop(0)
        return _error(status, "ServiceError", f"the query failed ({status})")
    found = _ROLE_FILTER.search(str(body["query"]))
    columns = [{"name": "total", "type": "long"}, {"name": "failed", "type": "long"}]
    rows: list[list[int]] = []
    if found and found["role"] in double.request_counts:
        total, failed = double.request_counts[found["role"]]
        rows.append([total, failed])
    return Answer(200, {"tables": [{"name": "PrimaryResult", "columns": columns,
                                    "rows": rows}]})


def _without_secure_values(group: dict[str, Any]) -> dict[str, Any]:
    """What ARM returns: the group with every ``secureValue`` dropped."""
    shown = copy.deepcopy(group)
    for container in shown["properties"].get("containers", []):
        for variable in container.get("properties", {}).get("environmentVariables", []):
            variable.pop("secureValue", None)
    return shown


def _handler_for(double: ArmDouble) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            try:
                body = json.loads(raw) if raw else None
            except ValueError:
                body = raw.decode(errors="replace")
            headers = {k.lower(): v for k, v in self.headers.items()}
            answer = double.handle(self.command, self.path, headers, body)
            payload = b"" if answer.body is None else json.dumps(answer.body).encode()
            self.send_response(answer.status)
            for name, value in answer.headers.items():
                self.send_header(name, value)
            if payload:
                self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(payload)))
            self.send_header("x-ms-request-id", "double")
            self.end_headers()
            if payload:
                self.wfile.write(payload)

        do_GET = do_PUT = do_PATCH = do_DELETE = do_POST = _serve

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


def iter_bodies(double: ArmDouble, kind: str, method: str) -> Iterator[Any]:
    """The JSON bodies of the recorded ``method`` requests of ``kind``."""
    for call in double.calls_to(kind, method):
        yield call.body


# -- Azure Monitor platform metrics (appended: GET {resourceId}/providers/Microsoft.Insights/
# metrics, as azure-mgmt-monitor 7 sends it with api-version 2024-02-01) -------------------------

METRICS_API_VERSION = "2024-02-01"
_METRICS_ROUTE = re.compile(r"^(?P<resource>/subscriptions/.+?)/providers/Microsoft\.Insights/"
                            r"metrics$", re.I)
MetricPoints = dict[str, dict[str, list[tuple[str, float | None, float | None]]]]
_handle_without_metrics = ArmDouble.handle


def set_metrics(double: ArmDouble, resource_id: str, metric: str,
                points: list[tuple[str, float | None, float | None]]) -> None:
    """What the metrics endpoint answers for ``metric`` of ``resource_id``: one time series of
    ``(timeStamp, average, maximum)`` points (an empty list: a metric with no time series)."""
    with double.lock:
        _metric_points(double).setdefault(resource_id.lower(), {})[metric] = list(points)


def _metric_points(double: ArmDouble) -> MetricPoints:
    """The double's metrics: resource id (lower case) -> metric -> [(time, avg, max)]."""
    points: MetricPoints | None = getattr(double, "metric_points", None)
    if points is None:
        points = {}
        double.metric_points = points  # type: ignore[attr-defined]
    return points


def _handle_with_metrics(self: ArmDouble, method: str, raw_path: str,
                         headers: dict[str, str], body: Any) -> Answer:
    parts = urlsplit(raw_path)
    match = _METRICS_ROUTE.match(parts.path)
    if match is None:
        return _handle_without_metrics(self, method, raw_path, headers, body)
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    authorized = headers.get("authorization") == f"Bearer {TOKEN}"
    with self.lock:
        self.calls.append(Call(method, parts.path, query, body, authorized, "metrics"))
        for throttle in self.throttles:
            if (throttle.times > 0 and throttle.method == method
                    and throttle.path_contains in parts.path):
                throttle.times -= 1
                return _error(429, "TooManyRequests", "The request is being throttled.",
                              **{"Retry-After": throttle.retry_after})
        if not authorized:
            return _error(401, "AuthenticationFailed", "missing or wrong bearer token")
        if method != "GET":
            return _error(405, "MethodNotAllowed", f"{method} metrics")
        if query.get("api-version") != METRICS_API_VERSION:
            return _error(400, "InvalidApiVersionParameter",
                          f"api-version {query.get('api-version')} is not "
                          f"{METRICS_API_VERSION}")
        resource = match["resource"]
        known = _metric_points(self).get(resource.lower(), {})
        value = []
        for name in (query.get("metricnames") or "").split(","):
            if not name:
                continue
            data = [{"timeStamp": at, **({"average": avg} if avg is not None else {}),
                     **({"maximum": top} if top is not None else {})}
                    for at, avg, top in known.get(name, [])]
            unit = "Bytes" if name == "MemoryUsage" else "Count"
            value.append({
                "id": f"{resource}/providers/Microsoft.Insights/metrics/{name}",
                "type": "Microsoft.Insights/metrics",
                "name": {"value": name, "localizedValue": name},
                "unit": unit, "errorCode": "Success",
                "timeseries": [{"metadatavalues": [], "data": data}] if data else [],
            })
        return Answer(200, {"cost": 0, "timespan": query.get("timespan", ""),
                            "interval": query.get("interval", "PT1M"),
                            "namespace": query.get("metricnamespace", ""),
                            "resourceregion": "eastus", "value": value})


ArmDouble.handle = _handle_with_metrics  # type: ignore[method-assign]


# -- Application Insights request duration (appended: ``set_requests(..., p95_ms=)`` and a
# ``p95_ms`` column when the KQL asks for a percentile) ------------------------------------------

_set_requests_counts_only = ArmDouble.set_requests
_logs_query_counts_only = ArmDouble._logs_query


def _set_requests_with_p95(self: ArmDouble, role: str, total: int, failed: int = 0,
                           p95_ms: float | None = None) -> None:
    """What the Logs double answers for ``role``: ``total`` requests, ``failed`` of them
    failed and, when the query asks for a percentile, ``p95_ms`` (None: a null duration)."""
    with self.lock:
        _set_requests_counts_only(self, role, total, failed)
        _request_p95(self)[role] = p95_ms


def _request_p95(double: ArmDouble) -> dict[str, float | None]:
    """The double's p95 durations: role -> milliseconds (None answers a null)."""
    durations: dict[str, float | None] | None = getattr(double, "request_p95", None)
    if durations is None:
        durations = {}
        double.request_p95 = durations  # type: ignore[attr-defined]
    return durations


def _logs_query_with_p95(self: ArmDouble, method: str, match: re.Match[str],
                         body: Any) -> Answer:
    answer = _logs_query_counts_only(self, method, match, body)
    query = str(body.get("query", "")) if isinstance(body, dict) else ""
    if answer.status != 200 or not isinstance(answer.body, dict) or "percentile" not in query:
        return answer
    found = _ROLE_FILTER.search(query)
    p95 = _request_p95(self).get(found["role"]) if found else None
    for table in answer.body.get("tables", []):
        table["columns"].append({"name": "p95_ms", "type": "real"})
        for row in table["rows"]:
            row.append(p95)
    return answer


ArmDouble.set_requests = _set_requests_with_p95  # type: ignore[method-assign]
ArmDouble._logs_query = _logs_query_with_p95  # type: ignore[method-assign]


# -- PostgreSQL flexible server backups (appended: GET .../Microsoft.DBforPostgreSQL/
# flexibleServers/{name}/backups?api-version=2024-08-01, Backups Automatic and On Demand - List
# By Server; pages of BACKUPS_PAGE_SIZE entries joined by an absolute nextLink) ------------------

BACKUPS_API_VERSION = "2024-08-01"
BACKUPS_PAGE_SIZE = 2
_BACKUPS_ROUTE = re.compile(_RG + r"Microsoft\.DBforPostgreSQL/flexibleServers/(?P<name>[^/]+)/"
                            r"backups$", re.I)
_handle_without_backups = ArmDouble.handle


def set_backups(double: ArmDouble, server: str,
                backups: list[tuple[str, str, str | None]]) -> None:
    """The backups of ``server``: ``(name, backupType, completedTime or None)``; a server never
    given any is unknown (404 ResourceNotFound)."""
    with double.lock:
        _backup_lists(double)[server.lower()] = list(backups)


def fail_backups(double: ArmDouble, status: int, code: str, message: str) -> None:
    """Answer the next backups list with this ARM error."""
    with double.lock:
        failures: list[tuple[int, str, str]] = getattr(double, "backup_failures", [])
        failures.append((status, code, message))
        double.backup_failures = failures  # type: ignore[attr-defined]


def _backup_lists(double: ArmDouble) -> dict[str, list[tuple[str, str, str | None]]]:
    lists: dict[str, list[tuple[str, str, str | None]]] | None = getattr(
        double, "backup_lists", None)
    if lists is None:
        lists = {}
        double.backup_lists = lists  # type: ignore[attr-defined]
    return lists


def _handle_with_backups(self: ArmDouble, method: str, raw_path: str,
                         headers: dict[str, str], body: Any) -> Answer:
    parts = urlsplit(raw_path)
    match = _BACKUPS_ROUTE.match(parts.path)
    if match is None:
        return _handle_without_backups(self, method, raw_path, headers, body)
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    authorized = headers.get("authorization") == f"Bearer {TOKEN}"
    with self.lock:
        self.calls.append(Call(method, parts.path, query, body, authorized, "backups"))
        for throttle in self.throttles:
            if (throttle.times > 0 and throttle.method == method
                    and throttle.path_contains in parts.path):
                throttle.times -= 1
                return _error(429, "TooManyRequests", "The request is being throttled.",
                              **{"Retry-After": throttle.retry_after})
        failures: list[tuple[int, str, str]] = getattr(self, "backup_failures", [])
        if failures:
            status, code, message = failures.pop(0)
            return _error(status, code, message)
        if not authorized:
            return _error(401, "AuthenticationFailed", "missing or wrong bearer token")
        if method != "GET":
            return _error(405, "MethodNotAllowed", f"{method} backups")
        if query.get("api-version") != BACKUPS_API_VERSION:
            return _error(400, "InvalidApiVersionParameter",
                          f"api-version {query.get('api-version')} is not "
                          f"{BACKUPS_API_VERSION}")
        server = match["name"]
        known = _backup_lists(self).get(server.lower())
        if known is None:
            return _error(404, "ResourceNotFound",
                          f"The Resource 'Microsoft.DBforPostgreSQL/flexibleServers/{server}' "
                          f"under resource group '{match['rg']}' was not found.")
        start = int(query.get("$skipToken") or 0)
        page = known[start:start + BACKUPS_PAGE_SIZE]
        value = [{
            "id": f"{parts.path}/{name}", "name": name,
            "type": "Microsoft.DBforPostgreSQL/flexibleServers/backups",
            "properties": {"backupType": kind,
                           "source": "Automatic" if kind == "Full" else "On-Demand",
                           **({"completedTime": done} if done else {})},
        } for name, kind, done in page]
        answer: dict[str, Any] = {"value": value}
        if start + BACKUPS_PAGE_SIZE < len(known):
            answer["nextLink"] = (f"{self.url}{parts.path}?api-version={BACKUPS_API_VERSION}"
                                  f"&$skipToken={start + BACKUPS_PAGE_SIZE}")
        return Answer(200, answer)


ArmDouble.handle = _handle_with_backups  # type: ignore[method-assign]
