"""Azure SDK errors translated into the project's error tree, and retries that honour them.

:func:`translate` turns an ``azure.core`` exception into :class:`ExternalServiceError` carrying
Azure's error ``code`` (``InaccessibleImage``, ``ResourceNotFound``...) and message. It is
marked ``retryable`` for throttling (429, with ``retry_after`` from the ``Retry-After`` header),
server errors (5xx) and network failures and timeouts, never for other 4xx answers or a failed
long-running operation (those fail the same way when tried again).

:class:`AzureCalls` runs one SDK call, retrying what :func:`translate` marks retryable, waiting
``Retry-After`` when Azure says so (else an exponential backoff), through an injected ``sleep``.
The SDK clients are built with ``retry_status=0`` (see ``clients.py``) so that there is one retry
layer for HTTP statuses, this one, and tests need not wait for the wall clock.
"""

from __future__ import annotations

import email.utils
import logging
import time
from collections.abc import Callable
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

__all__ = ["AzureCalls", "azure_error_code", "retry_after_seconds", "translate"]

log = logging.getLogger(__name__)

T = TypeVar("T")
DEFAULT_ATTEMPTS = 4
MAX_MESSAGE = 600


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
        return ExternalServiceError(
            service, f"{what}: {detail}{where}",
            retryable=throttled or server,
            retry_after=retry_after_seconds(exc) if (throttled or server) else None,
            code=code or (f"HTTP{status}" if status else None),
        )
    if isinstance(exc, ServiceRequestError | ServiceResponseError):
        kind = "timed out" if "Timeout" in type(exc).__name__ else "network error"
        return ExternalServiceError(service, f"{what}: {kind}: {_first_line(str(exc))}",
                                    retryable=True, code=type(exc).__name__)
    return ExternalServiceError(service, f"{what}: {_first_line(str(exc))}",
                                code=type(exc).__name__)


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


class AzureCalls:
    """Runs SDK calls for one service, translating errors and retrying the retryable ones.

    ``attempts`` bounds the tries of one call; the wait before a retry is Azure's
    ``Retry-After`` when given, else ``backoff * 2**n``, never more than ``max_wait`` seconds.
    ``sleep`` is injected (tests record the waits instead of waiting).
    """

    def __init__(
        self,
        service: str,
        *,
        attempts: int = DEFAULT_ATTEMPTS,
        backoff: float = 1.0,
        max_wait: float = 60.0,
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
                    wait = self.backoff * 2 ** (attempt - 1)
                wait = min(wait, self.max_wait)
                log.warning("%s: %s; attempt %d of %d, retrying in %.1f s", self.service,
                            error.message, attempt, self.attempts, wait)
                self._sleep(wait)
        raise AssertionError("unreachable")  # pragma: no cover
