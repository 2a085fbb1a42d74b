"""``SlackDouble``: the Slack stand-in plus fault injection, for tests.

Faults are decided before the stand-in authenticates or serves a call, so a faulted call is
logged (``ApiCall.faulted``) but changes no state: no message, no ts, no use of a
``response_url``. ``response_url`` posts are matched with the method name ``"response_url"``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import urlsplit

from bot.shell.slack_standin import _API_PREFIX, _RESPONSE_PREFIX, Fault, SlackStandIn

_DEFAULT_ERRORS = {429: "ratelimited", 503: "service_unavailable"}


def _error_for(status: int) -> str:
    return _DEFAULT_ERRORS.get(status, "internal_error" if status >= 500 else "fatal_error")


@dataclass
class _EveryNth:
    n: int
    fault: Fault
    methods: frozenset[str] | None
    seen: int = 0

    def matches(self, method: str) -> bool:
        if self.methods is None:
            return method != "response_url"
        return method in self.methods


@dataclass
class _Next:
    method: str
    fault: Fault
    remaining: int


class SlackDouble(SlackStandIn):
    """A ``SlackStandIn`` that can be told to fail.

    - ``fail_every(n, ...)``: every n-th call (of ``methods``; all Web API methods by default)
      is answered with ``status`` (429 with ``Retry-After`` by default).
    - ``fail_next(method, ...)``: the next call(s) of ``method`` fail, by default with HTTP 200
      and ``{"ok": false, "error": ...}`` as Slack reports most errors.
    - ``down()`` / ``up()``: while down, everything gets 503.
    - ``clear_faults()`` forgets all of the above; ``fault_count`` / ``served_count`` count.
    - ``slow(seconds, methods)``: matching calls are answered only after ``seconds`` (real
      time: a Slack that is slow, for benchmarks); ``hold(methods)`` / ``release()``: matching
      calls wait until released (the same in tests, without waiting on the clock).
    - ``arrivals(method)``: every call *received*, in order, including those still being
      delayed or held (``calls`` logs a call once it is answered).
    """

    def __init__(self, **kwargs: Any) -> None:
        """Takes the same keyword arguments as ``SlackStandIn``."""
        super().__init__(**kwargs)
        self._every: list[_EveryNth] = []
        self._next: list[_Next] = []
        self._is_down = False
        self._delay = 0.0
        self._delayed: frozenset[str] | None = frozenset()
        self._held: frozenset[str] | None = frozenset()
        self._released = threading.Event()
        self._arrivals: list[str] = []

    def slow(self, seconds: float, methods: Iterable[str] | None = None) -> None:
        """Answer calls of ``methods`` (every method and ``response_url`` when None) only after
        ``seconds`` of real time."""
        with self._cond:
            self._delay = seconds
            self._delayed = None if methods is None else frozenset(methods)

    def hold(self, methods: Iterable[str] | None = None) -> None:
        """Keep calls of ``methods`` (all when None) waiting until ``release()``."""
        with self._cond:
            self._released.clear()
            self._held = None if methods is None else frozenset(methods)

    def release(self) -> None:
        """Answer the held calls, and stop holding."""
        with self._cond:
            self._held = frozenset()
            self._released.set()

    def arrivals(self, method: str | None = None) -> list[str]:
        """Method names of the calls received so far (``"response_url"`` for those posts),
        answered or not."""
        with self._cond:
            return [m for m in self._arrivals if method is None or m == method]

    def _serve(self, handler: BaseHTTPRequestHandler) -> None:
        path = urlsplit(handler.path).path
        method = (path[len(_API_PREFIX):] if path.startswith(_API_PREFIX)
                  else "response_url" if path.startswith(_RESPONSE_PREFIX) else "")
        with self._cond:
            self._arrivals.append(method)
            self._cond.notify_all()
            delay = self._delay if self._delayed is None or method in self._delayed else 0.0
            held = self._held is None or method in self._held
            released = self._released
        if held:
            released.wait(60)
        if delay:
            time.sleep(delay)  # the slowness being simulated is real time by definition
        super()._serve(handler)

    def fail_every(
        self,
        n: int,
        status: int = 429,
        retry_after: int | None = 1,
        methods: Iterable[str] | None = None,
        *,
        error: str | None = None,
    ) -> None:
        """Answer every ``n``-th matching call with ``status``; counting starts now.

        ``retry_after`` (whole seconds, as slack_sdk parses it with ``int()``) is sent as the
        ``Retry-After`` header when the status is 429; None leaves the header out.
        """
        if n < 1:
            raise ValueError("n must be at least 1")
        fault = Fault(status, error or _error_for(status), retry_after if status == 429 else None)
        with self._cond:
            self._every.append(_EveryNth(n, fault, None if methods is None else frozenset(methods)))

    def fail_next(
        self,
        method: str,
        error: str | None = None,
        status: int = 200,
        *,
        times: int = 1,
        retry_after: int | None = None,
    ) -> None:
        """Fail the next ``times`` calls of ``method`` with ``error`` and HTTP ``status``."""
        fault = Fault(status, error or _error_for(status), retry_after)
        with self._cond:
            self._next.append(_Next(method, fault, times))

    def down(self) -> None:
        """Answer 503 to every request until ``up()``."""
        with self._cond:
            self._is_down = True

    def up(self) -> None:
        """Serve normally again after ``down()``."""
        with self._cond:
            self._is_down = False

    def clear_faults(self) -> None:
        """Forget every fault rule and come back up."""
        with self._cond:
            self._every.clear()
            self._next.clear()
            self._is_down = False
            self._delay = 0.0
            self._delayed = frozenset()
            self._held = frozenset()
            self._released.set()

    @property
    def faults_injected(self) -> int:
        """How many calls were answered by an injected fault."""
        return self.fault_count()

    def fault_count(self, method: str | None = None) -> int:
        """How many calls (of ``method``) were answered by an injected fault."""
        return sum(1 for call in self.calls(method) if call.faulted)

    def served_count(self, method: str | None = None) -> int:
        """How many calls (of ``method``) were served normally (successfully or not)."""
        return sum(1 for call in self.calls(method) if not call.faulted)

    def _fault_for(self, method: str, target: str | None) -> Fault | None:
        if self._is_down:
            return Fault(503, "service_unavailable")
        chosen: Fault | None = None
        for rule in self._next:
            if rule.method == method and rule.remaining > 0:
                rule.remaining -= 1
                chosen = rule.fault
                break
        self._next = [rule for rule in self._next if rule.remaining > 0]
        for every in self._every:
            if every.matches(method):
                every.seen += 1
                if chosen is None and every.seen % every.n == 0:
                    chosen = every.fault
        return chosen
