"""HTTP mode: ``POST /slack/events`` (commands and interactivity), ``GET /healthz``,
``GET /metrics``, served by waitress (threads; production-grade, pure Python).

Nothing here answers 500: a request Bolt cannot handle gets its own status (401 for a bad
signature, 404 for an unknown path), and an unexpected error becomes an ephemeral text.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from slack_bolt import App
from slack_bolt.request import BoltRequest

from bot.metrics import Metrics
from bot.replies import error_text

if TYPE_CHECKING:
    from wsgiref.types import StartResponse, WSGIEnvironment

log = logging.getLogger(__name__)

MAX_BODY = 1024 * 1024  # Slack's payloads are a few KB; anything larger is not from Slack
_STATUS = {200: "200 OK", 401: "401 Unauthorized", 404: "404 Not Found",
           405: "405 Method Not Allowed", 413: "413 Payload Too Large",
           503: "503 Service Unavailable"}

HealthCheck = Callable[[], dict[str, Any]]


class SlackWsgiApp:
    """The WSGI application of ``qlp-bot serve``."""

    def __init__(self, app: App, health: HealthCheck, metrics: Metrics,
                 path: str = "/slack/events") -> None:
        self.app = app
        self.health = health
        self.metrics = metrics
        self.path = path

    def __call__(self, environ: WSGIEnvironment,
                 start_response: StartResponse) -> Iterable[bytes]:
        method = environ.get("REQUEST_METHOD", "GET")
        path = environ.get("PATH_INFO", "/")
        if path == self.path:
            if method != "POST":
                return _reply(start_response, 405, "only POST", "text/plain")
            return self._slack(environ, start_response)
        if path == "/healthz" and method in ("GET", "HEAD"):
            report = self.health()
            status = 200 if report.get("status") == "ok" else 503
            return _reply(start_response, status, json.dumps(report), "application/json")
        if path == "/metrics" and method == "GET":
            return _reply(start_response, 200, self.metrics.render(),
                          "text/plain; version=0.0.4")
        return _reply(start_response, 404, "Not Found", "text/plain")

    def _slack(self, environ: WSGIEnvironment,
               start_response: StartResponse) -> Iterable[bytes]:
        started = time.perf_counter()
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        if length > MAX_BODY:
            return _reply(start_response, 413, "payload too large", "text/plain")
        body = environ["wsgi.input"].read(length).decode("utf-8", errors="replace")
        headers: dict[str, str | Sequence[str]] = {}
        for key, value in environ.items():
            if key.startswith("HTTP_"):
                headers[key[5:].replace("_", "-").lower()] = value
        if environ.get("CONTENT_TYPE"):
            headers["content-type"] = environ["CONTENT_TYPE"]
        try:
            response = self.app.dispatch(BoltRequest(
                body=body, query=environ.get("QUERY_STRING", ""), headers=headers))
            status, payload = response.status, response.body
            content_type = (response.headers.get("content-type") or ["text/plain"])[0]
        except Exception as error:  # never a 500 to Slack
            status, payload, content_type = 200, error_text(error), "text/plain;charset=utf-8"
        self.metrics.observe_request(status, time.perf_counter() - started)
        if status >= 500:
            status, payload = 200, error_text(RuntimeError(payload))
        return _reply(start_response, status, payload, content_type)


def _reply(start_response: StartResponse, status: int, body: str,
           content_type: str) -> list[bytes]:
    data = body.encode("utf-8")
    start_response(_STATUS.get(status, f"{status} Status"),
                   [("Content-Type", content_type), ("Content-Length", str(len(data)))])
    return [data]


class HttpServer:
    """waitress in a thread, for ``qlp-bot serve`` and for the tests."""

    def __init__(self, wsgi: SlackWsgiApp, host: str, port: int, threads: int = 16) -> None:
        from waitress.server import create_server

        self._server = create_server(wsgi, host=host, port=port, threads=threads,
                                     ident="qlp-bot", clear_untrusted_proxy_headers=True)
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()

    @property
    def port(self) -> int:
        return int(self._server.effective_port)  # type: ignore[union-attr]

    def serve_forever(self) -> None:
        self._server.run()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="http", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._server.run()
        except (OSError, ValueError):
            # Closing the listening socket under waitress's select loop ends it this way.
            if not self._stopping.is_set():
                raise

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None and self._thread.is_alive():
            # Close from inside waitress's loop (a trigger thunk), which also wakes its select
            # at once instead of at the 1 s timeout.
            try:
                self._server.trigger.pull_trigger(self._server.close)  # type: ignore[union-attr]
            except OSError:
                # The loop closed the trigger meanwhile (it is ending): close directly.
                self._close_quietly()
        else:
            self._close_quietly()
        if self._thread:
            self._thread.join(timeout=5)

    def _close_quietly(self) -> None:
        try:
            self._server.close()
        except OSError:  # already closed by waitress's own loop
            log.debug("waitress server already closed")
