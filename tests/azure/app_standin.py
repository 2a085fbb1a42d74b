"""The application behind the ARM double, over plain HTTP on 127.0.0.1 (a random port):

- ``/hosts/<fqdn>/<path>``: the container group whose public FQDN is ``<fqdn>``, as the bot
  reaches one colour directly;
- ``/public/<path>``: Front Door's public URL. It serves what the double's **edge** serves now
  (``served_origin_group``/``served_origins``, ``classic_served_pool``: the previous
  configuration while a change propagates), reaching a container group through the origin's
  ``hostName`` and ``httpPort`` (the group whose ``ipAddress.fqdn`` and ports match), never by
  guessing from names.

Failures answer as Azure Front Door does: 502 when the origin host is no container group's FQDN
or the port is not one the group exposes (the edge cannot connect), 503 when the group exists
but is not provisioned and running, or when the edge has no enabled origin to send to.

The application answers its health in one of three shapes (``health_mode``): ``"json"``
(``{"status": "ok", "version": "<tag>"}``), ``"plain"`` (``text/plain`` ``OK``) or
``"bare-version"`` (``{"version": "1.2.3"}``, the tag without its leading ``v``); per-colour
``override``s make one colour answer differently from a model time on (e.g. green's
``/health`` 500). Every request is recorded (``seen``) with its headers and the client's port,
so tests can check ``Cache-Control: no-cache`` and that each probe used a fresh connection.
"""

from __future__ import annotations

import itertools
import json
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tests.azure.arm_double import ArmDouble

HEALTH_MODES = ("json", "plain", "bare-version")
ROUTE_FRONT_DOOR: dict[str, Any] = {
    "kind": "standard", "profile": "qlp-frontdoor", "endpoint": "qlp-endpoint",
    "route": "default-route"}
AFD_ERROR_PAGE = "Our services aren't available right now"


@dataclass
class Seen:
    """One request the stand-in answered."""

    via: str  # "public" or "host"
    path: str  # the application path, e.g. /health
    headers: dict[str, str]  # lower-case names
    client_port: int
    status: int
    group: str | None = None  # the container group that answered, if one did


@dataclass
class Override:
    """From model time ``since`` on, ``path`` of ``group`` answers ``status`` with ``body``."""

    group: str
    status: int
    body: Any
    path: str
    since: float


@dataclass
class Reply:
    status: int
    body: bytes
    content_type: str
    headers: dict[str, str] = field(default_factory=dict)


def _json(status: int, body: Any) -> Reply:
    return Reply(status, json.dumps(body).encode(), "application/json")


def _text(status: int, text: str) -> Reply:
    return Reply(status, text.encode(), "text/plain; charset=utf-8")


class AppStandIn:
    """The application behind each container group's FQDN and behind Front Door's public URL.

    ``front_door`` is the environment's ``front_door`` policy section (``kind: standard`` with
    ``profile``/``endpoint``/``route`` and optionally ``switch_by: origins`` with
    ``origin_group``, or ``kind: classic`` with ``name``/``routing_rule``); the default is the
    route ``qlp-frontdoor/qlp-endpoint/default-route``. ``prefix`` names the colours' groups
    (``<prefix>-blue``) for ``override``.
    """

    def __init__(self, double: ArmDouble, front_door: Mapping[str, Any] | None = None, *,
                 health_mode: str = "json", prefix: str = "qlp") -> None:
        if health_mode not in HEALTH_MODES:
            raise ValueError(f"health_mode must be one of {HEALTH_MODES}")
        self.double = double
        self.front_door = dict(front_door or ROUTE_FRONT_DOOR)
        self.health_mode = health_mode
        self.prefix = prefix
        self.broken_hosts: set[str] = set()  # FQDNs whose application answers 503
        self.overrides: list[Override] = []
        self.requests: list[str] = []  # raw request paths, in order
        self.seen: list[Seen] = []
        self._lock = threading.Lock()
        self._split = itertools.count()  # round robin when the edge splits traffic evenly
        self._refs = itertools.count()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def public_url(self) -> str:
        return f"{self.url}/public"

    def host_url(self, fqdn: str) -> str:
        return f"{self.url}/hosts/{fqdn}"

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    # -- test controls -------------------------------------------------------------------------

    def override(self, colour_or_group: str, status: int, *, body: Any = None,
                 path: str = "/health", after: float = 0.0) -> None:
        """From ``after`` model seconds on (the double's clock), ``path`` of the colour's (or
        named) group answers ``status`` with ``body`` (JSON; default an error object)."""
        group = (f"{self.prefix}-{colour_or_group}" if colour_or_group in ("blue", "green")
                 else colour_or_group)
        with self._lock:
            self.overrides.append(Override(
                group, status, body if body is not None else {"status": "error"}, path,
                self.double.clock() + after))

    def seen_public(self, path: str | None = None) -> list[Seen]:
        """The requests that came through the public URL (to ``path`` only, if given)."""
        with self._lock:
            return [s for s in self.seen if s.via == "public" and (path is None or s.path == path)]

    # -- answering -----------------------------------------------------------------------------

    def answer(self, raw_path: str) -> tuple[Reply, str, str, str | None]:
        """(reply, via, application path, the group that answered) for ``raw_path``."""
        path = raw_path.split("?", 1)[0]
        if path.startswith("/hosts/"):
            parts = path.split("/", 3)
            host, app_path = parts[2], "/" + (parts[3] if len(parts) > 3 else "")
            with self.double.lock:
                if host in self.broken_hosts:
                    return _json(503, {"status": "starting"}), "host", app_path, None
                group = self._group_at(host, None)
                if group is None:
                    return _json(502, {"error": "no backend"}), "host", app_path, None
                if not _running(group):
                    return _json(503, {"error": "not running"}), "host", app_path, None
                return self._app_reply(group, app_path), "host", app_path, group["name"]
        if path == "/public" or path.startswith("/public/"):
            app_path = path[len("/public"):] or "/"
            reply, group_name = self._public(app_path)
            reply.headers["X-Azure-Ref"] = f"0stand-in{next(self._refs)}"
            return reply, "public", app_path, group_name
        return _json(404, {"error": "not found"}), "host", path, None

    def _public(self, app_path: str) -> tuple[Reply, str | None]:
        with self.double.lock:
            targets = self._edge_targets()
            if not targets:
                return _text(503, AFD_ERROR_PAGE), None
            top = [t for t in targets if t[2] == targets[0][2]]
            host, port, _ = top[next(self._split) % len(top)]
            if host in self.broken_hosts:
                return _json(503, {"status": "starting"}), None
            group = self._group_at(host, port)
            if group is None:
                return _text(502, AFD_ERROR_PAGE), None
            if not _running(group):
                return _text(503, AFD_ERROR_PAGE), group["name"]
            return self._app_reply(group, app_path), group["name"]

    def _edge_targets(self) -> list[tuple[str, int, int]]:
        """(host, port, weight) of the origins the edge sends to now, highest weight first."""
        fd = self.front_door
        double = self.double
        if fd.get("kind") == "classic":
            pool = double.classic_served_pool(fd["name"], fd["routing_rule"])
            backends = [b for b in double.classic_backends(fd["name"], pool)
                        if b.get("enabledState", "Enabled") == "Enabled"]
            return sorted(((str(b["address"]), int(b.get("httpPort") or 80),
                            int(b.get("weight") or 50)) for b in backends),
                          key=lambda t: -t[2])
        if fd.get("switch_by") == "origins":
            group = str(fd["origin_group"])
        else:
            group = double.served_origin_group(fd["profile"], fd["endpoint"], fd["route"])
        return [(str(o["hostName"]), int(o.get("httpPort") or 80), int(o.get("weight") or 0))
                for o in double.served_origins(fd["profile"], group)]

    def _group_at(self, host: str, port: int | None) -> dict[str, Any] | None:
        """The container group whose FQDN is ``host`` (and that exposes ``port``)."""
        for group in self.double.groups.values():
            address = group["properties"].get("ipAddress") or {}
            if str(address.get("fqdn") or "").lower() != host.lower():
                continue
            ports = {int(p.get("port", 0)) for p in address.get("ports") or []}
            if port is None or port in ports:
                return group
        return None

    def _app_reply(self, group: dict[str, Any], app_path: str) -> Reply:
        now = self.double.clock()
        with self._lock:
            override = next((o for o in reversed(self.overrides)
                             if o.group == group["name"] and o.path == app_path
                             and now >= o.since), None)
        if override is not None:
            return _json(override.status, override.body)
        version = str((group.get("tags") or {}).get("qlp-version") or "")
        if self.health_mode == "plain":
            return _text(200, "OK")
        if self.health_mode == "bare-version":
            return _json(200, {"version": version.removeprefix("v")})
        return _json(200, {"status": "ok", "version": version})

    def _record(self, raw_path: str, seen: Seen) -> None:
        with self._lock:
            self.requests.append(raw_path)
            self.seen.append(seen)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            # Keep-alive is possible, so a client that reuses a connection shows one port.
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                reply, via, app_path, group = stand_in.answer(self.path)
                stand_in._record(self.path, Seen(
                    via, app_path, {k.lower(): v for k, v in self.headers.items()},
                    self.client_address[1], reply.status, group))
                self.send_response(reply.status)
                self.send_header("Content-Type", reply.content_type)
                self.send_header("Content-Length", str(len(reply.body)))
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(reply.body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler


def _running(group: dict[str, Any]) -> bool:
    """Provisioned, and the group and every container running (what accepts connections)."""
    props = group["properties"]
    if props.get("provisioningState") != "Succeeded":
        return False
    if (props.get("instanceView") or {}).get("state", "Running") != "Running":
        return False
    for container in props.get("containers") or []:
        view = (container.get("properties") or {}).get("instanceView") or {}
        if (view.get("currentState") or {}).get("state", "Running") != "Running":
            return False
    return True
