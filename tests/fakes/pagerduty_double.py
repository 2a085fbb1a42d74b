"""``PagerDutyDouble``: a PagerDuty Events API v2 stand-in on 127.0.0.1, for tests.

A real HTTP server (``http.server`` on a free port, one thread per request). ``POST
/v2/enqueue`` with a JSON event is checked as PagerDuty checks it (routing key, action,
payload for a trigger, dedup key for a resolve) and answered ``202`` with
``{"status": "success", "message": "Event processed", "dedup_key": ...}``, or ``400`` with
``{"status": "invalid event", "message": "Event object is invalid", "errors": [...]}``.

- ``events``: the accepted events, in arrival order; ``requests``: every request's JSON body
  (accepted, refused or faulted).
- ``fail_next(status, times=1, retry_after=None)``: the next ``times`` requests are answered
  ``status`` (e.g. 500, 503, 429 with ``Retry-After``) before any checking; the event is not
  accepted. Scripted failures queue up in the order given.
- ``stop()`` closes the socket: a receiver that is down (connection refused); ``start()``
  again listens on the same port.
"""

from __future__ import annotations

import json
import threading
from collections import deque
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

PATH = "/v2/enqueue"
ROUTING_KEY = "R0123456789ABCDEF0123456789ABCDE"  # 32 letters and digits, as PagerDuty's are


@dataclass(frozen=True)
class _Fault:
    status: int
    retry_after: float | None


class PagerDutyDouble:
    """The Events API v2 on ``url`` (``http://127.0.0.1:<port>/v2/enqueue``)."""

    def __init__(self, routing_key: str = ROUTING_KEY) -> None:
        self.routing_key = routing_key
        self.events: list[dict[str, Any]] = []
        self.requests: list[Any] = []
        self._faults: deque[_Fault] = deque()
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._port = 0  # a restarted double listens on the port it had
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        assert self._port, "start() the double first"
        return f"http://127.0.0.1:{self._port}{PATH}"

    def start(self) -> PagerDutyDouble:
        double = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                status, body, headers = double._answer(self.path, self.headers, raw)
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                return None

        self._server = ThreadingHTTPServer(("127.0.0.1", self._port), Handler)
        self._port = int(self._server.server_address[1])
        self._server.daemon_threads = True
        server = self._server
        self._thread = threading.Thread(target=lambda: server.serve_forever(poll_interval=0.05),
                                        name="pagerduty-double", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    def fail_next(self, status: int, times: int = 1, retry_after: float | None = None) -> None:
        """Answer the next ``times`` requests with ``status`` (after any queued before)."""
        with self._lock:
            self._faults.extend(_Fault(status, retry_after) for _ in range(times))

    def _answer(self, path: str, headers: Any, raw: bytes
                ) -> tuple[int, dict[str, Any], dict[str, str]]:
        try:
            event = json.loads(raw)
        except ValueError:
            event = None
        with self._lock:
            self.requests.append(event)
            if self._faults:
                fault = self._faults.popleft()
                extra = {} if fault.retry_after is None else {
                    "Retry-After": f"{fault.retry_after:g}"}
                return fault.status, {"status": "error", "message": f"scripted {fault.status}"}, \
                    extra
        if path != PATH:
            return 404, {"status": "error", "message": "Not Found"}, {}
        if "application/json" not in str(headers.get("Content-Type") or ""):
            return 400, _invalid("Content-Type must be application/json"), {}
        errors = _errors(event, self.routing_key)
        if errors:
            return 400, _invalid(*errors), {}
        assert isinstance(event, dict)
        with self._lock:
            self.events.append(event)
        return 202, {"status": "success", "message": "Event processed",
                     "dedup_key": event.get("dedup_key") or f"generated-{len(self.events)}"}, {}


def _invalid(*errors: str) -> dict[str, Any]:
    return {"status": "invalid event", "message": "Event object is invalid",
            "errors": list(errors)}


def _errors(event: Any, routing_key: str) -> list[str]:
    if not isinstance(event, dict):
        return ["Request body is not a JSON object"]
    errors = []
    if event.get("routing_key") != routing_key:
        errors.append("'routing_key' is invalid")
    action = event.get("event_action")
    if action not in ("trigger", "acknowledge", "resolve"):
        errors.append("'event_action' is invalid")
    if action in ("acknowledge", "resolve") and not event.get("dedup_key"):
        errors.append("'dedup_key' is missing")
    if action == "trigger":
        payload = event.get("payload")
        if not isinstance(payload, dict):
            errors.append("'payload' is missing or invalid")
        else:
            for key in ("summary", "source", "severity"):
                if not payload.get(key):
                    errors.append(f"'payload.{key}' is missing")
            if payload.get("severity") not in (None, "critical", "error", "warning", "info"):
                errors.append("'payload.severity' is invalid")
    return errors
