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

A 403 gets a hint naming the role to grant and where (:func:`authorization_hint`, from the
action and scope in Azure's message, through ``roles.py``).
"""

from __future__ import annotations

import contextlib
import email.utils
import logging
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import TypeVar

from azure.core.exceptions import (
    AzureError,
    ClientAuthenticationError,
    HttpResponseError,
    ServiceRequestError,
    ServiceResponseError,
)

from procedures.errors import ExternalServiceError
from procedures.platforms.azure.roles import denied_actions, role_hint

__all__ = ["AzureCalls", "Sleeper", "authorization_hint", "azure_error_code",
           "retry_after_seconds", "translate"]

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
    headers = getattr(response, "headers", None)
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
            try:
                return operation()
            except AzureError as exc:
                error = translate(exc, service=self.service, what=what)
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
