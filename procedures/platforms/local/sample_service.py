"""A tiny HTTP service to deploy on the local platform: the stand-in for the QLP application.

Run it as::

    python -m procedures.platforms.local.sample_service --port 9001 --version v1.2.3 --slot blue

Endpoints:

- ``GET /health``: 200 ``{"status": "ok", "version": V, "slot": S}``
- ``GET /api/v1/status``: 200 ``{"status": "ok", "version": V, "slot": S, "uptime_s": ...}``
- ``GET /``: 200 ``QLP sample service V`` (text)

Misbehaviour on demand, so a rollback can be demonstrated from Slack with nothing but a
version string. The words are looked for in the version's prerelease/build part (after the
first ``-`` or ``+``), and they combine (``v2.0.0-slow-unhealthy``):

- ``unhealthy`` (``v1.2.4-unhealthy``): starts fine; ``/health`` answers 200 for the first N
  health requests, then 500 for ever. N comes from the environment variable
  ``QLP_SAMPLE_HEALTHY_FOR`` (default 0, i.e. unhealthy from the first request; set it to a few
  so the version passes readiness and smoke tests and then fails in monitoring).
- ``broken``: the process runs, but ``/health`` answers 500 from the start (never gets ready).
- ``slow``: ``/health`` and ``/api/v1/status`` answer after 2.5 s (trips response-time checks).
- ``apierror``: ``/api/v1/status`` answers 500 (a smoke path failing while ``/health`` is fine;
  the staging rehearsal stops such a version before production).
- ``crash``: exits with status 3 at start, before listening.

SIGTERM (and SIGINT) stop it cleanly with exit status 0.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType
from typing import Any

SLOW_SECONDS = 2.5
CRASH_EXIT_STATUS = 3


@dataclass(frozen=True)
class Behaviour:
    """How the service misbehaves, read from its version string."""

    unhealthy: bool = False
    broken: bool = False
    slow: bool = False
    crash: bool = False
    apierror: bool = False

    @classmethod
    def from_version(cls, version: str) -> Behaviour:
        cut = [i for i in (version.find("-"), version.find("+")) if i >= 0]
        suffix = version[min(cut) + 1 :].lower() if cut else ""
        return cls(
            unhealthy="unhealthy" in suffix,
            broken="broken" in suffix,
            slow="slow" in suffix,
            crash="crash" in suffix,
            apierror="apierror" in suffix,
        )


class SampleService(ThreadingHTTPServer):
    """The HTTP server, holding the version, the slot and the health-request counter."""

    daemon_threads = True

    def __init__(self, port: int, version: str, slot: str, healthy_for: int,
                 host: str = "127.0.0.1") -> None:
        self.version = version
        self.slot = slot
        self.behaviour = Behaviour.from_version(version)
        self.healthy_for = healthy_for
        self.started = time.monotonic()
        self._health_requests = 0
        self._count_lock = threading.Lock()
        super().__init__((host, port), _Handler)

    def next_health_is_ok(self) -> bool:
        if self.behaviour.broken:
            return False
        if not self.behaviour.unhealthy:
            return True
        with self._count_lock:
            self._health_requests += 1
            return self._health_requests <= self.healthy_for


class _Handler(BaseHTTPRequestHandler):
    server: SampleService
    server_version = "QLPSample/1"

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        service = self.server
        if path == "/health":
            if service.behaviour.slow:
                time.sleep(SLOW_SECONDS)
            ok = service.next_health_is_ok()
            self._json(200 if ok else 500, {
                "status": "ok" if ok else "unhealthy",
                "version": service.version,
                "slot": service.slot,
            })
        elif path == "/api/v1/status":
            if service.behaviour.slow:
                time.sleep(SLOW_SECONDS)
            if service.behaviour.apierror:
                self._json(500, {"status": "error", "version": service.version})
                return
            self._json(200, {
                "status": "ok",
                "version": service.version,
                "slot": service.slot,
                "uptime_s": round(time.monotonic() - service.started, 3),
            })
        elif path == "/":
            self._send(200, f"QLP sample service {service.version}\n".encode(),
                       "text/plain; charset=utf-8")
        else:
            self._json(404, {"error": f"no such path: {path}"})

    def do_HEAD(self) -> None:
        self.do_GET()

    def _json(self, status: int, body: dict[str, Any]) -> None:
        self._send(status, json.dumps(body).encode(), "application/json")

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        if not self.path.startswith("/health"):  # readiness polls would drown the log
            super().log_message(format, *args)


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="QLP sample service")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--version", required=True)
    parser.add_argument("--slot", default="")
    parser.add_argument("--host", default="127.0.0.1")
    return parser.parse_args(argv)


def _healthy_for(environ: dict[str, str]) -> int:
    raw = environ.get("QLP_SAMPLE_HEALTHY_FOR", "0").strip() or "0"
    try:
        return max(0, int(raw))
    except ValueError:
        print(f"QLP_SAMPLE_HEALTHY_FOR={raw!r} is not a number; using 0", file=sys.stderr)
        return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Serve until SIGTERM/SIGINT; return the exit status."""
    args = _parse(argv)
    behaviour = Behaviour.from_version(args.version)
    if behaviour.crash:
        print(f"sample service {args.version}: crashing on purpose (exit {CRASH_EXIT_STATUS})",
              file=sys.stderr, flush=True)
        return CRASH_EXIT_STATUS
    service = SampleService(args.port, args.version, args.slot, _healthy_for(dict(os.environ)),
                            host=args.host)

    def _terminate(signum: int, frame: FrameType | None) -> None:
        # shutdown() waits for serve_forever to return, so it must run off the main thread.
        threading.Thread(target=service.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGINT, _terminate)
    print(f"sample service {args.version} (slot {args.slot or '-'}) listening on "
          f"{args.host}:{args.port}, behaviour {behaviour}", file=sys.stderr, flush=True)
    try:
        service.serve_forever(poll_interval=0.2)
    finally:
        service.server_close()
    print("sample service stopped", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
