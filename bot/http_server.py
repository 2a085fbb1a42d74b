"""HTTP mode: ``POST /slack/events`` (commands and interactivity), ``GET /healthz`` (liveness,
also ``/livez``), ``GET /readyz`` (readiness) and ``GET /metrics``, served by waitress (threads;
production-grade, pure Python).

Nothing here answers 500: a request Bolt cannot handle gets its own status (401 for a bad or
malformed signature, 404 for an unknown path), and an unexpected error becomes an ephemeral
text.

The endpoint faces the internet, so what an unauthenticated client can cost is bounded
(:class:`HttpServer`): waitress reads every request on its one I/O thread and hands only
complete requests to the worker threads, so slow clients never hold a thread; a body is
refused (413) as soon as its ``Content-Length`` (or, chunked, its running size) passes 1 MiB,
before anything is buffered; a connection that has not delivered a whole request within
:data:`REQUEST_TIMEOUT` seconds of its first byte (or of connecting) is closed, an idle
keep-alive one after :data:`IDLE_TIMEOUT`; and the connection limit is high enough that idle
connections cannot keep a signed request from being accepted. ``benchmarks/edge.py`` measures
it. A request's signature is checked here, before Bolt sees the request: a malformed or missing
header is a clean 401 (not an exception inside Bolt), and a refused request's body is never
logged.
"""

from __future__ import annotations

import hmac
import json
import logging
import re
import resource
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, cast

from slack_bolt import App
from slack_bolt.middleware.request_verification import RequestVerification
from slack_bolt.request import BoltRequest
from slack_sdk.signature import SignatureVerifier
from waitress.adjustments import Adjustments
from waitress.channel import HTTPChannel
from waitress.parser import HTTPRequestParser
from waitress.server import TcpWSGIServer

from bot.metrics import Metrics
from bot.replies import error_text

if TYPE_CHECKING:
    from wsgiref.types import StartResponse, WSGIEnvironment

log = logging.getLogger(__name__)

MAX_BODY = 1024 * 1024  # Slack's payloads are a few KB; anything larger is not from Slack
MAX_HEADERS = 64 * 1024  # all of a request's header lines together
REQUEST_TIMEOUT = 5.0
"""Seconds a connection has to deliver a whole request, from its first byte (or from connecting,
when it sends nothing): Slack sends a few KB at once and gives up on the answer after 3 s."""
IDLE_TIMEOUT = 30.0
"""Seconds an idle keep-alive connection stays open after its last answer."""
CONNECTION_LIMIT = 1000
"""Open connections at most (bounded by the open-files limit): past it, waitress stops
accepting until one closes. Idle and slow connections close within the timeouts above."""
SIGNATURE_MAX_AGE = 60 * 5  # as Slack's SDKs: a timestamp more than 5 minutes off is refused

_STATUS = {200: "200 OK", 401: "401 Unauthorized", 404: "404 Not Found",
           405: "405 Method Not Allowed", 413: "413 Payload Too Large",
           503: "503 Service Unavailable"}
_TIMESTAMP = re.compile(r"[0-9]{1,12}")  # ASCII digits only: int() also takes "١٢" and " 12"
_SIGNATURE = re.compile(r"v0=[0-9a-f]{64}")

HealthCheck = Callable[[], dict[str, Any]]


class SignatureCheck:
    """Slack's ``v0`` request signature, checked before Bolt parses anything.

    Every malformed, missing, stale or wrong header is a reason string (for the 401 and the
    log); nothing raises. The body is never part of a reason.
    """

    def __init__(self, signing_secret: str, now: Callable[[], float] = time.time) -> None:
        self._verifier = SignatureVerifier(signing_secret)
        self._now = now

    def problem(self, body: bytes, timestamp: str | None, signature: str | None) -> str | None:
        """None if the request is signed with the secret; else why it is refused."""
        if not timestamp:
            return "no X-Slack-Request-Timestamp"
        if not signature:
            return "no X-Slack-Signature"
        if not _TIMESTAMP.fullmatch(timestamp):
            return "malformed X-Slack-Request-Timestamp"
        if not _SIGNATURE.fullmatch(signature):
            return "malformed X-Slack-Signature"
        if abs(self._now() - int(timestamp)) > SIGNATURE_MAX_AGE:
            return "stale X-Slack-Request-Timestamp"
        expected = self._verifier.generate_signature(timestamp=timestamp, body=body) or ""
        if not hmac.compare_digest(expected, signature):
            return "wrong signature"
        return None


def bolt_signing_secret(app: App) -> str | None:
    """The signing secret the Bolt app verifies with (None if it verifies nothing)."""
    for middleware in getattr(app, "_middleware_list", ()):
        if isinstance(middleware, RequestVerification):
            return str(middleware.verifier.signing_secret)
    return None


class _RefusalLog:
    """Refused requests are logged as one INFO line a minute (a count and the last reason), so
    a flood of forged requests cannot flood the log; never a header value or the body."""

    def __init__(self, every: float = 60.0) -> None:
        self._every = every
        self._lock = threading.Lock()
        self._count = 0
        self._next = 0.0

    def refused(self, reason: str) -> None:
        now = time.monotonic()
        with self._lock:
            self._count += 1
            if now < self._next:
                return
            count, self._count, self._next = self._count, 0, now + self._every
        log.info("refused %d request(s) to /slack/events with 401 (last: %s)", count, reason)


class SlackWsgiApp:
    """The WSGI application of ``qlp-bot serve``.

    ``health`` reports liveness and readiness in one dict (``bot.modes.health_report``):
    ``status`` ``"ok"`` makes ``/healthz`` and ``/livez`` answer 200, ``ready`` true makes
    ``/readyz`` answer 200; anything else is a 503 with the same JSON.
    """

    def __init__(self, app: App, health: HealthCheck, metrics: Metrics,
                 path: str = "/slack/events", *, signing_secret: str | None = None,
                 now: Callable[[], float] = time.time) -> None:
        self.app = app
        self.health = health
        self.metrics = metrics
        self.path = path
        secret = signing_secret or bolt_signing_secret(app)
        self._signature = SignatureCheck(secret, now) if secret else None
        self._refusals = _RefusalLog()

    def __call__(self, environ: WSGIEnvironment,
                 start_response: StartResponse) -> Iterable[bytes]:
        method = environ.get("REQUEST_METHOD", "GET")
        path = environ.get("PATH_INFO", "/")
        if path == self.path:
            if method != "POST":
                return _reply(start_response, 405, "only POST", "text/plain")
            return self._slack(environ, start_response)
        if path in ("/healthz", "/livez", "/readyz") and method in ("GET", "HEAD"):
            report = self.health()
            healthy = report.get("ready") is True if path == "/readyz" else \
                report.get("status") == "ok"
            return _reply(start_response, 200 if healthy else 503, json.dumps(report),
                          "application/json")
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
        if length > MAX_BODY:  # waitress refuses these before reading; this is a backstop
            return _reply(start_response, 413, "payload too large", "text/plain")
        raw = environ["wsgi.input"].read(length) if length > 0 else b""
        if self._signature is not None:
            problem = self._signature.problem(
                raw, environ.get("HTTP_X_SLACK_REQUEST_TIMESTAMP"),
                environ.get("HTTP_X_SLACK_SIGNATURE"))
            if problem is not None:
                self._refusals.refused(problem)
                self.metrics.observe_request(401, time.perf_counter() - started)
                return _reply(start_response, 401, json.dumps({"error": "invalid request"}),
                              "application/json")
        body = raw.decode("utf-8", errors="replace")
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


# -- waitress, bounded ---------------------------------------------------------------------------


class _TimedParser(HTTPRequestParser):
    """waitress's request parser, remembering when the request's first byte came."""

    def __init__(self, adj: Adjustments) -> None:
        super().__init__(adj)
        self.started = time.time()  # waitress's channel times are time.time() too


class _TimedChannel(HTTPChannel):
    parser_class = _TimedParser


class _BoundedServer(TcpWSGIServer):
    """waitress's TCP server whose housekeeping also closes slow and silent connections."""

    channel_class = _TimedChannel
    request_timeout = REQUEST_TIMEOUT

    def maintenance(self, now: float) -> None:
        super().maintenance(now)  # type: ignore[arg-type]  # idle keep-alive connections: adj.channel_timeout
        channels: dict[int, Any] = cast(Any, self.active_channels)
        for channel in list(channels.values()):
            if channel.requests or channel.will_close:
                continue  # being answered, or closing already
            request = channel.request
            if request is not None:
                began = getattr(request, "started", channel.creation_time)
            elif channel.last_activity == channel.creation_time:
                began = channel.creation_time  # connected, never sent a byte
            else:
                continue  # idle between requests: the idle timeout's business
            if now - began > self.request_timeout:
                channel.will_close = True
                self.timed_out += 1

    timed_out = 0


def connection_limit(wanted: int = CONNECTION_LIMIT) -> int:
    """``wanted``, or fewer if the open-files limit would not leave room for the database pool,
    the Slack clients and the logs."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return wanted
    return max(50, min(wanted, soft - 200))


def raise_open_files_limit(wanted: int = CONNECTION_LIMIT + 1000) -> None:
    """Raise the soft open-files limit towards ``wanted`` (within the hard one): containers
    often start at 1024, below the connection limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            log.warning("could not raise the open-files limit from %d to %d", soft, target)


class HttpServer:
    """waitress in a thread, for ``qlp-bot serve`` and for the tests."""

    def __init__(self, wsgi: SlackWsgiApp, host: str, port: int, threads: int = 16, *,
                 request_timeout: float = REQUEST_TIMEOUT, idle_timeout: float = IDLE_TIMEOUT,
                 max_connections: int = CONNECTION_LIMIT) -> None:
        adjustments = Adjustments(
            host=host, port=port, threads=threads, ident="qlp-bot",
            clear_untrusted_proxy_headers=True,
            # waitress refuses a body whose size reaches this: MAX_BODY itself is allowed.
            max_request_body_size=MAX_BODY + 1,
            max_request_header_size=MAX_HEADERS,
            # Bodies up to the limit stay in memory (never a temporary file on disk).
            inbuf_overflow=MAX_BODY + 1,
            connection_limit=connection_limit(max_connections),
            channel_timeout=max(1, int(idle_timeout)),
            cleanup_interval=1,
            # poll(), not select(): select() fails on file descriptors past 1024.
            asyncore_use_poll=True,
            # A client that resets its connection is not the bot's error: no traceback.
            log_socket_errors=False,
        )
        self._server = _BoundedServer(wsgi, adj=adjustments,
                                      sockinfo=cast(Any, adjustments.listen)[0])
        self._server.request_timeout = request_timeout
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()

    @property
    def port(self) -> int:
        return int(self._server.effective_port)  # type: ignore[attr-defined]

    @property
    def timed_out(self) -> int:
        """Connections closed so far for not delivering a request in time."""
        return int(self._server.timed_out)

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
                self._server.trigger.pull_trigger(  # type: ignore[attr-defined]
                    self._server.close)
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
