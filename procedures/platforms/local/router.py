"""The local traffic router: a small reverse proxy in front of the blue and green slots.

Run it as::

    python -m procedures.platforms.local.router --listen 127.0.0.1:8080 \\
        --state-file state/production/router.json --upstream blue=9001 --upstream green=9002

Every request is forwarded (method, path, query, headers, body) to ``127.0.0.1:<port>`` of the
live colour and the upstream's status, headers and body come back with ``X-QLP-Slot: <colour>``
added. An upstream that is down gives 502 (504 if it times out), no live colour gives 503; both
with a JSON ``{"error": ...}`` body. In maintenance mode every data-plane request gets 503 with
the JSON body ``{"maintenance": true}`` (and ``Retry-After``), without reaching a slot.

The router counts, per colour and in memory only, the requests it forwarded and how many of them
ended in a 5xx (the upstream's own, or the router's 502/504 for that colour). The counters start
at zero with each router process (``started`` and ``pid`` tell incarnations apart), so a reader
such as ``procedures.platforms.local.metrics.LocalMetrics`` works with differences between two
readings. Maintenance answers and the no-live-colour 503 belong to no colour and are not counted.

The control plane shares the port under the reserved prefix ``/_qlp/`` and answers loopback
clients only (403 otherwise):

- ``GET /_qlp/router``: ``{"live": "blue"|null, "upstreams": {"blue": 9001, "green": 9002},
  "maintenance": false, "pid": 1234, "started": "2026-11-24T10:00:00.123456+00:00",
  "stats": {"blue": {"requests": 120, "errors": 0}, "green": {"requests": 0, "errors": 0}}}``
- ``PUT /_qlp/router`` with ``{"live": "green"}``, ``{"maintenance": true}`` or both
  (``Content-Type: application/json``, which a browser cannot send cross-site without a
  preflight we never answer): persists the state file atomically (temporary file, fsync,
  ``os.replace``), then swaps the in-memory state, both under one lock, and only then answers
  200. A request already being forwarded finishes on the colour it started with; the next one
  goes to the new colour.

The state file (``{"live": ..., "upstreams": {...}, "maintenance": ...}``) is read at start, so a
restarted router serves the colour (and keeps the maintenance mode) it had before;
``--upstream`` options override its ports. A state file that cannot be read stops the router
(exit 2) rather than guess a colour. SIGTERM stops it cleanly.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import ipaddress
import json
import os
import signal
import socket
import sys
import threading
from collections.abc import Sequence
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType
from typing import Any

CONTROL_PREFIX = "/_qlp/"
CONTROL_PATH = "/_qlp/router"
SLOT_HEADER = "X-QLP-Slot"
COLOURS = ("blue", "green")
UPSTREAM_TIMEOUT = 30.0
MAX_BODY = 64 * 1024 * 1024
# RFC 9110 7.6.1: connection-specific headers are not forwarded by a proxy.
HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "proxy-connection",
    "te", "trailer", "trailers", "transfer-encoding", "upgrade",
})


class StateFileError(Exception):
    """The router's state file exists but cannot be understood."""


class RouterState:
    """The live colour, the upstream ports and the maintenance flag, guarded by a lock and
    mirrored in a file; plus the per-colour request counters (memory only)."""

    def __init__(self, state_file: Path, live: str | None, upstreams: dict[str, int],
                 maintenance: bool = False) -> None:
        self.state_file = state_file
        self._live = live
        self._upstreams = dict(upstreams)
        self._maintenance = maintenance
        self._lock = threading.Lock()
        self._started = datetime.now(UTC).isoformat()
        self._stats = {colour: {"requests": 0, "errors": 0} for colour in COLOURS}
        self._stats_lock = threading.Lock()

    @classmethod
    def load(cls, state_file: Path, upstreams: dict[str, int]) -> RouterState:
        """Read ``state_file`` (if any); ``upstreams`` override the ports it records."""
        live: str | None = None
        maintenance: Any = False
        recorded: dict[str, int] = {}
        if state_file.exists():
            try:
                data = json.loads(state_file.read_text(encoding="utf-8"))
                live = data.get("live")
                maintenance = data.get("maintenance", False)
                recorded = {str(k): int(v) for k, v in (data.get("upstreams") or {}).items()}
            except (OSError, ValueError, TypeError, AttributeError) as exc:
                raise StateFileError(f"{state_file}: {exc}") from exc
            if live is not None and live not in COLOURS:
                raise StateFileError(f"{state_file}: live is {live!r}, not blue, green or null")
            if not isinstance(maintenance, bool):
                raise StateFileError(f"{state_file}: maintenance is {maintenance!r}, "
                                     "not true or false")
        recorded.update(upstreams)
        return cls(state_file, live, recorded, maintenance)

    def snapshot(self) -> tuple[str | None, int | None]:
        """The live colour and its port, read together."""
        with self._lock:
            live = self._live
            return live, (self._upstreams.get(live) if live else None)

    @property
    def maintenance(self) -> bool:
        with self._lock:
            return self._maintenance

    def describe(self) -> dict[str, Any]:
        with self._lock:
            described: dict[str, Any] = {
                "live": self._live, "upstreams": dict(self._upstreams),
                "maintenance": self._maintenance, "pid": os.getpid(), "started": self._started,
            }
        described["stats"] = self.stats()
        return described

    def stats(self) -> dict[str, dict[str, int]]:
        """Requests forwarded and 5xx answers per colour since this router process started."""
        with self._stats_lock:
            return {colour: dict(counts) for colour, counts in self._stats.items()}

    def count(self, colour: str, status: int) -> None:
        """Count one answer given on behalf of ``colour``; a 5xx counts as an error."""
        with self._stats_lock:
            counts = self._stats.setdefault(colour, {"requests": 0, "errors": 0})
            counts["requests"] += 1
            if status >= 500:
                counts["errors"] += 1

    def switch(self, live: str) -> None:
        """Persist ``live`` durably, then make it the live colour."""
        self.update(live=live)

    def update(self, *, live: str | None = None, maintenance: bool | None = None) -> None:
        """Persist the new live colour and/or maintenance flag durably, then apply them."""
        with self._lock:
            new_live = self._live if live is None else live
            new_maintenance = self._maintenance if maintenance is None else maintenance
            self._persist(new_live, self._upstreams, new_maintenance)
            self._live, self._maintenance = new_live, new_maintenance

    def save(self) -> None:
        with self._lock:
            self._persist(self._live, self._upstreams, self._maintenance)

    def _persist(self, live: str | None, upstreams: dict[str, int], maintenance: bool) -> None:
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.state_file.with_name(f".{self.state_file.name}.{os.getpid()}.tmp")
        with open(tmp, "w", encoding="utf-8") as handle:
            json.dump({"live": live, "upstreams": upstreams, "maintenance": maintenance}, handle)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, self.state_file)


class Router(ThreadingHTTPServer):
    """The threaded HTTP server that proxies to the live slot."""

    daemon_threads = True

    def __init__(self, host: str, port: int, state: RouterState) -> None:
        self.state = state
        if ":" in host:
            self.address_family = socket.AF_INET6
        super().__init__((host, port), _Handler)


def _is_loopback(host: str) -> bool:
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


class _Handler(BaseHTTPRequestHandler):
    server: Router
    server_version = "QLPRouter/1"

    def do_GET(self) -> None:
        self._dispatch()

    do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = do_GET

    def _dispatch(self) -> None:
        path = self.path.split("?", 1)[0]
        if path.startswith(CONTROL_PREFIX) or path == CONTROL_PREFIX.rstrip("/"):
            self._control(path)
        else:
            self._forward()

    # -- control plane ---------------------------------------------------------------------

    def _control(self, path: str) -> None:
        if not _is_loopback(self.client_address[0]):
            self._json(403, {"error": "the router control plane answers loopback clients only"})
            return
        if path != CONTROL_PATH:
            self._json(404, {"error": f"no such control path: {path}"})
            return
        state = self.server.state
        if self.command == "GET":
            self._json(200, state.describe())
        elif self.command == "PUT":
            content_type = self.headers.get("Content-Type", "").split(";", 1)[0].strip()
            if content_type != "application/json":
                self._json(415, {"error": "send the new state as application/json"})
                return
            expected = 'expected JSON {"live": "blue"|"green"} and/or {"maintenance": true|false}'
            try:
                request = json.loads(self._read_body() or b"null")
            except ValueError:
                request = None
            if (not isinstance(request, dict) or not request
                    or not set(request) <= {"live", "maintenance"}):
                self._json(400, {"error": expected})
                return
            live = request.get("live")
            maintenance = request.get("maintenance")
            if "live" in request and live not in COLOURS:
                self._json(400, {"error": f"live must be blue or green, not {live!r}"})
                return
            if "maintenance" in request and not isinstance(maintenance, bool):
                self._json(400, {"error": f"maintenance must be true or false, not "
                                          f"{maintenance!r}"})
                return
            try:
                state.update(live=live, maintenance=maintenance)
            except OSError as exc:
                self._json(500, {"error": f"cannot persist {state.state_file}: {exc}"})
                return
            if live is not None:
                self.log_message("switched live slot to %s", live)
            if maintenance is not None:
                self.log_message("maintenance mode %s", "on" if maintenance else "off")
            self._json(200, state.describe())
        else:
            self._json(405, {"error": f"{self.command} is not allowed on {path}"})

    # -- data plane ------------------------------------------------------------------------

    def _forward(self) -> None:
        state = self.server.state
        if state.maintenance:
            self._json(503, {"maintenance": True}, headers={"Retry-After": "60"})
            return
        live, port = state.snapshot()
        if live is None or port is None:
            self._json(503, {"error": "no live slot: nothing has been switched in yet"})
            return
        self._proxy(live, port)

    def _proxy(self, live: str, port: int) -> None:
        """Forward the request to ``port`` and relay the answer, counting it for ``live``
        before anything is sent (so a client that hangs up is still counted)."""
        count = self.server.state.count
        try:
            body = self._read_body()
        except ValueError as exc:
            count(live, 400)
            self._json(400, {"error": str(exc)}, slot=live)
            return
        except OverflowError:
            count(live, 413)
            self._json(413, {"error": f"request body over {MAX_BODY} bytes"}, slot=live)
            return
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=UPSTREAM_TIMEOUT)
        try:
            connection.putrequest(self.command, self.path, skip_host=True,
                                  skip_accept_encoding=True)
            has_host = False
            for name, value in self.headers.items():
                lower = name.lower()
                if lower in HOP_BY_HOP or lower == "content-length":
                    continue
                has_host = has_host or lower == "host"
                connection.putheader(name, value)
            if not has_host:
                connection.putheader("Host", f"127.0.0.1:{port}")
            connection.putheader("X-Forwarded-For", self.client_address[0])
            connection.putheader("X-Forwarded-Proto", "http")
            if body or "Content-Length" in self.headers or "Transfer-Encoding" in self.headers:
                connection.putheader("Content-Length", str(len(body)))
            connection.endheaders(body or None)
            response = connection.getresponse()
            data = response.read()
            headers = response.getheaders()
            status, reason = response.status, response.reason
        except TimeoutError:
            count(live, 504)
            self._json(504, {"error": f"upstream {live} (127.0.0.1:{port}) timed out"}, slot=live)
            return
        except (OSError, http.client.HTTPException) as exc:
            count(live, 502)
            self._json(502, {"error": f"upstream {live} (127.0.0.1:{port}) is down: {exc}"},
                       slot=live)
            return
        finally:
            connection.close()
        count(live, status)
        self.send_response_only(status, reason)
        for name, value in headers:
            lower = name.lower()
            if lower in HOP_BY_HOP or lower == SLOT_HEADER.lower():
                continue
            if lower == "content-length" and self.command != "HEAD":
                continue  # set below from the body actually read
            self.send_header(name, value)
        if self.command != "HEAD" and not (100 <= status < 200 or status in (204, 304)):
            self.send_header("Content-Length", str(len(data)))
        self.send_header(SLOT_HEADER, live)
        self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)
        self.log_request(status, len(data))

    # -- helpers ---------------------------------------------------------------------------

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return self._read_chunked()
        raw = self.headers.get("Content-Length")
        if raw is None:
            return b""
        try:
            length = int(raw)
        except ValueError:
            raise ValueError(f"bad Content-Length: {raw!r}") from None
        if length < 0:
            raise ValueError(f"bad Content-Length: {raw!r}")
        if length > MAX_BODY:
            raise OverflowError
        return self.rfile.read(length)

    def _read_chunked(self) -> bytes:
        chunks: list[bytes] = []
        total = 0
        while True:
            line = self.rfile.readline(65537)
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise ValueError("bad chunked request body") from None
            if size == 0:
                while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                    pass  # trailers are dropped
                return b"".join(chunks)
            total += size
            if total > MAX_BODY:
                raise OverflowError
            chunks.append(self.rfile.read(size))
            self.rfile.readline(3)

    def _json(self, status: int, body: dict[str, Any], *, slot: str | None = None,
              headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if slot:
            self.send_header(SLOT_HEADER, slot)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)


def _listen_address(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host:
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST:PORT")
    try:
        return host.strip("[]"), int(port)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: {port!r} is not a port") from None


def _upstream(text: str) -> tuple[str, int]:
    colour, sep, port = text.partition("=")
    if not sep or colour not in COLOURS:
        raise argparse.ArgumentTypeError(f"{text!r} is not blue=PORT or green=PORT")
    try:
        return colour, int(port)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: {port!r} is not a port") from None


def main(argv: Sequence[str] | None = None) -> int:
    """Serve until SIGTERM/SIGINT; return the exit status."""
    parser = argparse.ArgumentParser(description="QLP local blue-green router")
    parser.add_argument("--listen", type=_listen_address, required=True, help="HOST:PORT")
    parser.add_argument("--state-file", type=Path, required=True)
    parser.add_argument("--upstream", type=_upstream, action="append", default=[],
                        help="COLOUR=PORT, e.g. blue=9001 (repeat for green)")
    args = parser.parse_args(argv)
    host, port = args.listen
    try:
        state = RouterState.load(args.state_file, dict(args.upstream))
        state.save()
    except (StateFileError, OSError) as exc:
        print(f"router: cannot use the state file: {exc}", file=sys.stderr, flush=True)
        return 2
    try:
        router = Router(host, port, state)
    except OSError as exc:
        print(f"router: cannot listen on {host}:{port}: {exc}", file=sys.stderr, flush=True)
        return 1

    def _terminate(signum: int, frame: FrameType | None) -> None:
        # shutdown() waits for serve_forever to return, so it must run off the main thread.
        threading.Thread(target=router.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGINT, _terminate)
    described = state.describe()
    print(f"router pid {described['pid']} listening on {host}:{port}, live "
          f"{described['live']}, upstreams {described['upstreams']}", file=sys.stderr, flush=True)
    try:
        router.serve_forever(poll_interval=0.2)
    finally:
        with contextlib.suppress(OSError):
            router.server_close()
    print("router stopped", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
