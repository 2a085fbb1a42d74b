"""Azure SDK errors translated into the project's error tree, and retries that honour them.

:func:`translate` turns an ``azure.core`` exception into :class:`ExternalServiceError` carrying
Azure's error ``code`` (``InaccessibleImage``, ``ResourceNotFound``...) and message. It is
marked ``retryable`` for throttling (429, with ``retry_after`` from the ``Retry-After`` header),
server errors (5xx) and network failures and timeouts, never for other 4xx answers or a failed
long-running operation (those fail the same way when tried again).

:class:`AzureCalls` runs one SDK call, retrying what :func:`translate` marks retryable, waiting
``Retry-After`` when Azure says so (else an exponential backoff), through an injected ``sleep``.
The SDK clients are built with ``retry_status=0`` (see ``clients.py``) so that there is one retry
layer for HTTP statuses, this one, and tests need not wait for the wall clock. A long-running
operation is never wrapped whole: only its initial request is retried here, so a hiccup while
polling never re-sends a PUT (see ``container_groups.py``).

:class:`SlicedPolling` polls a long-running operation one status read at a time in the
caller's thread, so the caller waits between reads through its own sleep (a step's, which
stops at the step's deadline) instead of blocking in ``poller.result(timeout=...)`` while the
SDK polls in a thread of its own with ``time.sleep``.

A 403 gets a hint naming the role to grant and where (:func:`authorization_hint`, from the
action and scope in Azure's message, through ``roles.py``).
"""

from __future__ import annotations

import contextlib
import email.utils
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from typing import TypeVar

from azure.core.exceptions import (
    AzureError,
    ClientAuthenticationError,
    HttpResponseError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.mgmt.core.polling.arm_polling import ARMPolling

from procedures import tracing
from procedures.errors import ExternalServiceError
from procedures.log_context import notify
from procedures.platforms.azure.roles import denied_actions, role_hint

__all__ = ["AzureCalls", "Sleeper", "SlicedPolling", "authorization_hint", "azure_error_code",
           "retry_after_from_headers", "retry_after_seconds", "translate"]

log = logging.getLogger(__name__)

T = TypeVar("T")
DEFAULT_ATTEMPTS = 4
MAX_MESSAGE = 600
# ARM may ask for minutes (subscription-wide throttling): honour it up to this; a longer ask
# fails the call (retryable, with retry_after) so the engine's own backoff takes over.
MAX_RETRY_AFTER = 600.0


def azure_error_code(exc: BaseException) -> str | None:
    """Azure's error code (``error.code`` of the ARM error body) if the error carries one."""
    error = getattr(exc, "error", None)
    code = getattr(error, "code", None)
    return str(code) if code else None


def retry_after_seconds(exc: BaseException) -> float | None:
    """Seconds from the ``Retry-After`` (or ``x-ms-retry-after-ms``) header of the answer."""
    response = getattr(exc, "response", None)
    return retry_after_from_headers(getattr(response, "headers", None))


def retry_after_from_headers(headers: Mapping[str, str] | None) -> float | None:
    """Seconds from ``x-ms-retry-after-ms``/``retry-after-ms`` or ``Retry-After`` (seconds or
    an HTTP date); None when the answer asks for nothing."""
    if not headers:
        return None
    millis = headers.get("x-ms-retry-after-ms") or headers.get("retry-after-ms")
    if millis:
        try:
            return max(float(millis) / 1000.0, 0.0)
        except ValueError:
            pass
    value = headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return max((moment - datetime.now(UTC)).total_seconds(), 0.0)


def translate(exc: AzureError, *, service: str, what: str) -> ExternalServiceError:
    """The project's error for an Azure SDK error raised while doing ``what``."""
    if isinstance(exc, HttpResponseError):
        status = exc.status_code
        code = azure_error_code(exc)
        message = _message(exc)
        if isinstance(exc, ClientAuthenticationError) and status is None:
            # A credential that could not get a token (no managed identity, no az login...).
            return ExternalServiceError(service, f"{what}: cannot authenticate to Azure: "
                                        f"{_first_line(str(exc))}", code=code or "Unauthenticated")
        throttled = status == 429
        server = status is not None and status >= 500
        detail = f"{code}: {message}" if code else message
        where = f" (HTTP {status})" if status and not code else ""
        error = ExternalServiceError(
            service, f"{what}: {detail}{where}",
            retryable=throttled or server,
            retry_after=retry_after_seconds(exc) if (throttled or server) else None,
            code=code or (f"HTTP{status}" if status else None),
        )
        if status == 403:
            error.hint = authorization_hint(_full_message(exc))
        return error
    if isinstance(exc, ServiceRequestError | ServiceResponseError):
        kind = "timed out" if "Timeout" in type(exc).__name__ else "network error"
        return ExternalServiceError(service, f"{what}: {kind}: {_first_line(str(exc))}",
                                    retryable=True, code=type(exc).__name__)
    return ExternalServiceError(service, f"{what}: {_first_line(str(exc))}",
                                code=type(exc).__name__)


def authorization_hint(message: str) -> str:
    """What to grant for a 403: the role and scope of each action Azure names (roles.py)."""
    denied = denied_actions(message)
    if not denied:
        return ("the bot's identity lacks a role assignment: see the role table in the README "
                "(section Azure) or run qlp-bot doctor")
    return "; ".join(role_hint(action, scope) for action, scope in denied)


def _full_message(exc: HttpResponseError) -> str:
    """Azure's whole error text (the action and scope of a 403 may come late in it)."""
    error = exc.error
    text = getattr(error, "message", None) if error is not None else None
    return " ".join(str(text or exc.message or "").split())


def _message(exc: HttpResponseError) -> str:
    error = exc.error
    text = getattr(error, "message", None) if error is not None else None
    if not text:
        text = exc.reason or _first_line(str(exc.message)) or "request failed"
    text = " ".join(str(text).split())
    return text if len(text) <= MAX_MESSAGE else text[:MAX_MESSAGE] + "..."


def _first_line(text: str) -> str:
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line[:MAX_MESSAGE]


class Sleeper:
    """The sleep of one platform: its own (``time.sleep``, or a test's) unless a step lent
    one for the current thread with :meth:`using`. The engine's step sleep heartbeats and
    raises at the step's deadline or on cancel, so a wait inside that step (a ``Retry-After``,
    a poll) never outlives the step."""

    def __init__(self, default: Callable[[float], None] = time.sleep) -> None:
        self._default = default
        self._local = threading.local()

    def __call__(self, seconds: float) -> None:
        sleep: Callable[[float], None] = getattr(self._local, "sleep", None) or self._default
        sleep(seconds)

    @contextlib.contextmanager
    def using(self, sleep: Callable[[float], None] | None) -> Iterator[None]:
        """Sleep with ``sleep`` (None: unchanged) in this thread until the block ends."""
        previous = getattr(self._local, "sleep", None)
        self._local.sleep = sleep or previous
        try:
            yield
        finally:
            self._local.sleep = previous


class AzureCalls:
    """Runs SDK calls for one service, translating errors and retrying the retryable ones.

    ``attempts`` bounds the tries of one call; the wait before a retry is Azure's
    ``Retry-After`` when given, else ``backoff * 2**n``. Azure asking for more than
    ``max_wait`` seconds fails the call at once (retryable, carrying ``retry_after``) rather
    than retrying early against its wish. ``sleep`` is injected (tests record the waits
    instead of waiting; a :class:`Sleeper` lets a step bound them).
    """

    def __init__(
        self,
        service: str,
        *,
        attempts: int = DEFAULT_ATTEMPTS,
        backoff: float = 1.0,
        max_wait: float = MAX_RETRY_AFTER,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if attempts < 1:
            raise ValueError("attempts must be at least 1")
        self.service = service
        self.attempts = attempts
        self.backoff = backoff
        self.max_wait = max_wait
        self._sleep = sleep

    def call(self, what: str, operation: Callable[[], T]) -> T:
        """Run ``operation``; raise ExternalServiceError (after retries) if Azure fails."""
        for attempt in range(1, self.attempts + 1):
            started = time.monotonic()
            try:
                with tracing.span(f"azure {self._operation(what)}", tracing.SpanKind.CLIENT,
                                  azure_service=self.service, azure_attempt=attempt):
                    answer = operation()
                self._observe(what, "ok", started)
                return answer
            except AzureError as exc:
                error = translate(exc, service=self.service, what=what)
                self._observe(what, _result_of(exc), started)
                if not error.retryable or attempt == self.attempts:
                    raise error from exc
                wait = error.retry_after
                if wait is None:
                    wait = min(self.backoff * 2 ** (attempt - 1), self.max_wait)
                elif wait > self.max_wait:
                    raise error from exc
                log.warning("%s: %s; attempt %d of %d, retrying in %.1f s", self.service,
                            error.message, attempt, self.attempts, wait)
                self._sleep(wait)
        raise AssertionError("unreachable")  # pragma: no cover

    @contextlib.contextmanager
    def observed(self, what: str) -> Iterator[None]:
        """Count and trace one SDK call the caller makes and answers itself (its own error
        mapping, no retry): the metrics and span :meth:`call` gives, for calls that cannot go
        through it. An :class:`AzureError` leaving the block is counted by its result."""
        started = time.monotonic()
        with tracing.span(f"azure {self._operation(what)}", tracing.SpanKind.CLIENT,
                          azure_service=self.service, azure_attempt=1):
            try:
                yield
            except AzureError as exc:
                self._observe(what, _result_of(exc), started)
                raise
        self._observe(what, "ok", started)

    @staticmethod
    def _operation(what: str) -> str:
        # The operation is the verb that starts ``what`` ("read", "create", "point"...):
        # the code's own word, never a resource name.
        verb = what.split(" ", 1)[0].lower()
        return verb if verb.isalpha() else "call"

    def _observe(self, what: str, result: str, started: float) -> None:
        notify("azure_call", service=self.service, operation=self._operation(what),
               result=result, seconds=time.monotonic() - started)


def _result_of(exc: AzureError) -> str:
    """``throttled`` (429), ``server_error`` (5xx), ``network_error`` or ``error``."""
    if isinstance(exc, ServiceRequestError | ServiceResponseError):
        return "network_error"
    status = getattr(exc, "status_code", None)
    if status == 429:
        return "throttled"
    if isinstance(status, int) and status >= 500:
        return "server_error"
    return "error"


class _NotYet(Exception):
    """The operation is still going on: this slice of polling ends here."""


class SlicedPolling(ARMPolling):
    """ARM's polling of one long-running operation (``Azure-AsyncOperation``, ``Location``...,
    as the SDK does it), driven one status read at a time by the caller.

    Given to an SDK ``begin_*`` call as ``polling=``. The SDK's poller then runs :meth:`run` in
    a thread of its own, which here does nothing: the caller calls :meth:`advance` and waits
    :meth:`next_wait` seconds between reads through its own sleep, so the wait stops with the
    step that waits (the SDK's thread would sleep with ``time.sleep`` and could not be
    stopped). Errors are the SDK's: a failed operation or an error answer to a status read
    raises ``HttpResponseError`` with Azure's code and message.
    """

    # Azure may answer "Retry-After: 0"; re-read at once at most this many times for one
    # operation, then wait ``interval`` between reads (never a busy loop against ARM).
    MAX_IMMEDIATE = 3

    def __init__(self, interval: float) -> None:
        super().__init__(timeout=interval)
        self.interval = interval
        self._immediate = 0

    def run(self) -> None:
        """The SDK poller's thread: nothing to do, the caller polls with :meth:`advance`."""

    def advance(self) -> bool:
        """Read the operation's status once (none when it has already ended); True once it
        ended well, its resource then in :meth:`resource` (the SDK's final GET done)."""
        try:
            super().run()
        except _NotYet:
            return False
        return True

    def _delay(self) -> None:
        # The SDK's loop calls this between two status reads: this slice ends here instead.
        raise _NotYet

    def next_wait(self) -> float:
        """Seconds before the next read: Azure's ``Retry-After`` on the last answer when it
        gave one (a few immediate re-reads at most), else ``interval``."""
        answer = self._pipeline_response.http_response
        asked = retry_after_from_headers(answer.headers)
        if asked is None:
            return self.interval
        if asked <= 0:
            if self._immediate >= self.MAX_IMMEDIATE:
                return self.interval
            self._immediate += 1
            return 0.0
        return asked
