"""The ARM double's core: the HTTPS server, the request log, dispatch, long-running operations.

Each Azure service the bot calls lives in its own module of this package as a mixin
(``aci``, ``frontdoor``, ``keyvault``, ``logs``, ``metrics``, ``backups``) that declares its
``ROUTES`` and handles them; :class:`tests.azure.arm_double.ArmDouble` puts them together.

A :class:`Route` with an ``api_version`` is an ARM resource: the core checks the bearer token and
the api-version, then calls ``_<kind>_<method>(match, body)``. A route without one (data planes:
Key Vault, Logs; and ARM paths with their own rules) is handed whole to ``_<kind>_request(req)``.
Throttles (``throttle``) and injected conflicts (``conflict_next``) are applied before anything
else, to every route.

A long-running operation is ``InProgress`` for ``polls`` polls and, when it has a ``ready_at``
(model seconds on ``clock``), until the clock reaches it: provisioning that takes time.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import itertools
import json
import re
import ssl
import threading
import time
from collections.abc import Callable, Iterator
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
RG_PATTERN = r"^/subscriptions/(?P<sub>[^/]+)/resourceGroups/(?P<rg>[^/]+)/providers/"


@dataclass(frozen=True)
class Route:
    """A path the double answers: ``kind`` names the handler, ``api_version`` (ARM resources)
    is checked by the core; ``None`` hands the whole :class:`Request` to the handler."""

    kind: str
    pattern: re.Pattern[str]
    api_version: str | None = None


@dataclass
class Request:
    """One request as a handler without a fixed api-version sees it."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any
    match: re.Match[str]

    @property
    def authorized(self) -> bool:
        return self.headers.get("authorization") == f"Bearer {TOKEN}"


OPERATION_ROUTE = Route("operation", re.compile(
    r"^/subscriptions/[^/]+/providers/(?P<provider>[^/]+)/locations/(?P<loc>[^/]+)/"
    r"(?P<kind>operations|operationResults)/(?P<id>[^/]+)$", re.I))


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
    # The request's headers, names in lower case, without Authorization (tests read what the
    # client sent, e.g. Log Analytics' Prefer, and no test needs the token).
    headers: dict[str, str] = field(default_factory=dict)


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
    started_at: float = 0.0  # model time of the request that started it
    ready_at: float | None = None  # not done before this model time (None: polls only)


@dataclass
class Conflict:
    """Answer the next ``times`` matching requests with 409 ``Conflict``."""

    method: str
    path_contains: str
    times: int


CONFLICT_MESSAGE = ("The request failed due to conflict with a concurrent request. To resolve it, "
                    "please refer to https://aka.ms/activitylog to get more details on the "
                    "conflicting requests.")


@dataclass
class Answer:
    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)


def _error(status: int, code: str, message: str, **headers: str) -> Answer:
    return Answer(status, {"error": {"code": code, "message": message}}, dict(headers))




class ArmCore:
    """The server, the request log and dispatch; the services come from the mixins."""

    ROUTES: tuple[Route, ...] = (OPERATION_ROUTE,)

    def __init__(self, cert_path: Path, key_path: Path, *, polls: int = 2,
                 clock: Callable[[], float] = time.monotonic, roles: str = "bot") -> None:
        self.cert_path = cert_path
        self.polls = polls  # InProgress answers before an operation finishes
        # Model time in seconds: what provisioning and propagation durations are measured on.
        # Tests share one clock with the platform they drive (a fake or a scaled clock).
        self.clock = clock
        self.lock = threading.RLock()
        self.calls: list[Call] = []
        self.operations: dict[str, Operation] = {}
        self.throttles: list[Throttle] = []
        self.conflicts: list[Conflict] = []
        # Role assignments to start with: "bot" (what a correctly set-up bot has, see the
        # authorization mixin's grant_bot_roles) or "none".
        self.roles_preset = roles
        self._ids = itertools.count(1)
        self._setup()
        self._routes = self._collect_routes()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert_path, key_path)
        self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,),
                                        daemon=True)

    def _setup(self) -> None:
        """Each mixin sets up its state here (calling ``super()._setup()`` first)."""

    def _collect_routes(self) -> list[Route]:
        routes: list[Route] = []
        for klass in type(self).__mro__:
            for route in vars(klass).get("ROUTES", ()):
                if route not in routes:
                    routes.append(route)
        return routes

    # -- life ------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> Any:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    # -- seeding and injection -------------------------------------------------------------

    def rg_path(self, rg: str) -> str:
        return f"/subscriptions/{SUBSCRIPTION}/resourceGroups/{rg}/providers"

    def throttle(self, method: str, path_contains: str, *, times: int = 1,
                 retry_after: str = "7") -> None:
        with self.lock:
            self.throttles.append(Throttle(method.upper(), path_contains, times, retry_after))

    def conflict_next(self, method: str, path_contains: str, *, times: int = 1) -> None:
        """Answer the next ``times`` ``method`` requests whose path contains ``path_contains``
        with ARM's 409 ``Conflict`` (a concurrent request on the resource)."""
        with self.lock:
            self.conflicts.append(Conflict(method.upper(), path_contains, times))

    def check_access(self, action: str, scope: str) -> Answer | None:
        """ARM's authorization: None when the caller may perform ``action`` (e.g.
        ``Microsoft.ContainerInstance/containerGroups/write``) at ``scope`` (a resource ID),
        else the 403 answer. Everything is allowed here; the authorization mixin narrows it to
        the role assignments the test world grants."""
        return None

    def linked_access(self, action: str, scope: str, linked_action: str,
                      linked_scopes: list[str]) -> Answer | None:
        """ARM's check of the resources a write links to: None when allowed, else the 403
        answer. Everything is allowed here; the authorization mixin narrows it."""
        return None

    def missing_resource_group(self, rg: str) -> Answer | None:
        """ARM's 404 when resource group ``rg`` does not exist, else None. Every group exists
        here; the resources mixin keeps the ones that do."""
        return None

    def data_access(self, action: str, resource: str, *, vault: str) -> Answer | None:
        """A data-plane authorization check (Key Vault): None when allowed, else the 403
        answer. Everything is allowed here; the authorization mixin narrows it."""
        return None

    def calls_to(self, kind: str, method: str | None = None) -> list[Call]:
        with self.lock:
            return [c for c in self.calls
                    if c.kind == kind and (method is None or c.method == method)]

    # -- dispatch --------------------------------------------------------------------------

    def handle(self, method: str, raw_path: str, headers: dict[str, str], body: Any) -> Answer:
        parts = urlsplit(raw_path)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        path = parts.path
        route, match = None, None
        for candidate in self._routes:
            match = candidate.pattern.match(path)
            if match:
                route = candidate
                break
        authorized = headers.get("authorization") == f"Bearer {TOKEN}"
        with self.lock:
            self.calls.append(Call(method, path, query, body, authorized,
                                   route.kind if route else None,
                                   {k: v for k, v in headers.items() if k != "authorization"}))
            for throttle in self.throttles:
                if (throttle.times > 0 and throttle.method == method
                        and throttle.path_contains in path):
                    throttle.times -= 1
                    return _error(429, "TooManyRequests",
                                  "The request is being throttled.",
                                  **{"Retry-After": throttle.retry_after})
            for conflict in self.conflicts:
                if (conflict.times > 0 and conflict.method == method
                        and conflict.path_contains in path):
                    conflict.times -= 1
                    return _error(409, "Conflict", CONFLICT_MESSAGE)
            if route is None or match is None:
                return _error(404, "NotFound", f"no route for {method} {path}")
            if route.api_version is None:
                request = Request(method, path, query, headers, body, match)
                answer: Answer = getattr(self, f"_{route.kind}_request")(request)
                return answer
            if not authorized:
                return _error(401, "AuthenticationFailed", "missing or wrong bearer token")
            if query.get("api-version") != route.api_version:
                return _error(400, "InvalidApiVersionParameter",
                              f"api-version {query.get('api-version')} is not "
                              f"{route.api_version}")
            handler = getattr(self, f"_{route.kind}_{method.lower()}", None)
            if handler is None:
                return _error(405, "MethodNotAllowed", f"{method} {route.kind}")
            answer = handler(match, body)
            return answer

    # -- long-running operations -----------------------------------------------------------

    def _new_operation(self, kind: str, target: Any, provider: str, location: str,
                       *, header: str = "Azure-AsyncOperation",
                       error: dict[str, str] | None = None) -> tuple[Operation, dict[str, str]]:
        op = Operation(id=f"op-{next(self._ids)}", kind=kind, target=target, polls=self.polls,
                       error=error, started_at=self.clock())
        self.operations[op.id] = op
        segment = "operations" if header == "Azure-AsyncOperation" else "operationResults"
        api = {"Microsoft.ContainerInstance": "aci", "Microsoft.Network": "frontdoor",
               "Microsoft.Cdn": "cdn"}[provider]
        url = (f"{self.url}/subscriptions/{SUBSCRIPTION}/providers/{provider}/locations/"
               f"{location}/{segment}/{op.id}?api-version={API_VERSIONS[api]}")
        return op, {header: url, "Retry-After": "0"}

    def time_has_come(self, op: Operation) -> bool:
        """Whether ``op``'s model time is over (always, for an operation without a ready_at)."""
        return op.ready_at is None or self.clock() >= op.ready_at

    def settle(self, op: Operation) -> None:
        """End ``op`` (Succeeded, or Failed with its error) and apply its outcome, once."""
        if op.done:
            return
        op.done, op.polls = True, 0
        op.status = "Failed" if op.error else "Succeeded"
        finish = getattr(self, f"_finish_{op.kind}", None)
        if finish is not None:
            finish(op)

    def _operation_request(self, request: Request) -> Answer:
        if not request.authorized:
            return _error(401, "AuthenticationFailed", "missing or wrong bearer token")
        match = request.match
        op = self.operations.get(match["id"])
        if op is None:
            return _error(404, "OperationNotFound", match["id"])
        location_style = match["kind"].lower() == "operationresults"
        if not op.done and (op.polls > 0 or not self.time_has_come(op)):
            op.polls = max(op.polls - 1, 0)
            progress = getattr(self, f"_progress_{op.kind}", None)
            if progress is not None:
                progress(op)
            if location_style:
                return Answer(202, None, {"Location": f"{self.url}{match.group(0)}",
                                          "Retry-After": "0"})
            return Answer(200, {"id": op.id, "name": op.id, "status": "InProgress",
                                "startTime": "2026-12-01T11:00:00Z"}, {"Retry-After": "0"})
        self.settle(op)
        if location_style:
            return Answer(204)
        body: dict[str, Any] = {"id": op.id, "name": op.id, "status": op.status}
        if op.error is not None:
            body["error"] = dict(op.error)
        return Answer(200, body)


def _handler_for(double: ArmCore) -> type[BaseHTTPRequestHandler]:
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


def iter_bodies(double: ArmCore, kind: str, method: str) -> Iterator[Any]:
    """The JSON bodies of the recorded ``method`` requests of ``kind``."""
    for call in double.calls_to(kind, method):
        yield call.body


