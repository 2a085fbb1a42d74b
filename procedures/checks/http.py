"""HTTP health and smoke checks: one GET per path, timed, never raising on network errors.

The seed's ``curl -s -w "%{http_code}"`` and ``curl -f --max-time 10`` become
:meth:`HttpChecker.probe`: a :class:`Probe` says whether the URL answered 2xx, with the status,
the time it took and, when there was no answer, the error in words. Redirects are not followed
(a health endpoint that redirects to a login page is not healthy), proxies from the environment
are not used (``trust_env=False``: the bot checks the URL it was given, not what a proxy makes of
it), and timeouts are short so a hanging endpoint costs seconds, not minutes.

Tests swap the network for an ``httpx.MockTransport`` through ``transport``, or point the checker
at a real local server.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from types import TracebackType

import httpx

from procedures import tracing

__all__ = ["DEFAULT_CONNECT_TIMEOUT", "DEFAULT_TIMEOUT", "HttpChecker", "Probe"]

DEFAULT_TIMEOUT = 5.0
DEFAULT_CONNECT_TIMEOUT = 2.0
USER_AGENT = "qlp-chatops-checker/1"


@dataclass(frozen=True)
class Probe:
    """The outcome of one GET.

    ``ok`` is True for a 2xx answer. ``status`` is None when nothing answered (refused, timed
    out, bad URL); ``error`` then says why, and otherwise names a non-2xx status.
    ``elapsed_ms`` is the wall time the check took, answered or not.
    """

    ok: bool
    status: int | None
    elapsed_ms: float
    error: str | None = None
    url: str = ""

    def describe(self) -> str:
        """One line for a report: ``GET http://x/health: 200 in 12 ms``."""
        outcome = str(self.status) if self.status is not None else (self.error or "no answer")
        if self.status is not None and not self.ok and self.error:
            outcome = self.error
        return f"GET {self.url}: {outcome} in {self.elapsed_ms:.0f} ms"


class HttpChecker:
    """Runs HTTP checks with one pooled ``httpx.Client``.

    ``timeout`` bounds each request (``connect_timeout`` the connection); ``transport``
    replaces the network (``httpx.MockTransport`` in unit tests); ``timer`` measures elapsed
    time (a monotonic clock, in seconds). Thread-safe (httpx clients are). Close it when done,
    or use it as a context manager.
    """

    def __init__(
        self,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        transport: httpx.BaseTransport | None = None,
        timer: Callable[[], float] = time.perf_counter,
    ) -> None:
        self._timer = timer
        self._client = httpx.Client(
            timeout=httpx.Timeout(timeout, connect=min(connect_timeout, timeout)),
            transport=transport,
            follow_redirects=False,
            trust_env=False,
            headers={"User-Agent": USER_AGENT, "Cache-Control": "no-cache"},
        )

    def probe(self, url: str) -> Probe:
        """GET ``url``; ok when it answers 2xx. Never raises for network or URL errors."""
        with tracing.span("http check GET", tracing.SpanKind.CLIENT) as span:
            probe = self._probe(url)
            if span is not None:  # OpenTelemetry's HTTP client attributes
                span.set_attributes({"http.request.method": "GET", "url.full": url,
                                     "qlp.check_ok": probe.ok})
                if probe.status is not None:
                    span.set_attribute("http.response.status_code", probe.status)
            return probe

    def _probe(self, url: str) -> Probe:
        started = self._timer()
        try:
            response = self._client.get(url)
        except httpx.TimeoutException as exc:
            return Probe(False, None, self._elapsed(started),
                         f"timed out ({type(exc).__name__})", url)
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            return Probe(False, None, self._elapsed(started), _describe_error(exc), url)
        elapsed = self._elapsed(started)
        status = response.status_code
        if 200 <= status < 300:
            return Probe(True, status, elapsed, None, url)
        return Probe(False, status, elapsed, f"HTTP {status}", url)

    def check_paths(self, base_url: str, paths: Iterable[str]) -> list[Probe]:
        """Probe ``base_url`` + each path, in order (one probe per path)."""
        base = base_url.rstrip("/")
        return [self.probe(base + path) for path in paths]

    def close(self) -> None:
        """Release the connection pool."""
        self._client.close()

    def __enter__(self) -> HttpChecker:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def _elapsed(self, started: float) -> float:
        return round((self._timer() - started) * 1000, 1)


def _describe_error(exc: Exception) -> str:
    text = str(exc)
    if isinstance(exc, httpx.ConnectError):
        return f"connection failed: {text}" if text else "connection failed"
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
