"""PagerDuty Events API v2: trigger and resolve alerts over HTTPS with httpx.

An outbox payload is an Events API v2 event *without* ``routing_key``: the routing key belongs
to the policy (``notifications.pagerduty.routing_key``) and is added here, at send time, so a
key that changes (or leaks into a log of the outbox) never sits in a stored message::

    {"event_action": "trigger" | "acknowledge" | "resolve",
     "dedup_key": "qlp-deployment-42",
     "payload": {"summary", "source", "severity", "component"?, "group"?, "class"?,
                 "custom_details"?}}        # trigger only

Answers (https://developer.pagerduty.com/docs/events-api-v2/overview/):

- 202 (any 2xx): accepted; the receipt is the dedup key PagerDuty returns.
- 429: throttled; retryable with ``retry_after`` from ``Retry-After`` if sent, and
  ``code=RATE_LIMITED`` (the sender waits without counting an attempt).
- 5xx, 408, timeouts and connection errors: retryable (PagerDuty's own advice for 5xx).
- 400 (an invalid event, e.g. a wrong routing key) and other 4xx: permanent, with PagerDuty's
  ``message`` and ``errors`` in the error text.

An event is checked before it is sent (action, summary, source, severity, dedup key for
resolve), so a malformed payload is refused for good without a round trip.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC
from email.utils import parsedate_to_datetime
from types import TracebackType
from typing import Any, NoReturn

import httpx

from procedures.clock import Clock, SystemClock
from procedures.errors import ExternalServiceError
from procedures.notifiers.base import RATE_LIMITED, Receipt

DEFAULT_EVENTS_URL = "https://events.pagerduty.com/v2/enqueue"
SERVICE = "PagerDuty"
ACTIONS = ("trigger", "acknowledge", "resolve")
SEVERITIES = ("critical", "error", "warning", "info")
SUMMARY_LIMIT = 1024  # payload.summary is at most 1024 characters
DEDUP_KEY_LIMIT = 255
USER_AGENT = "qlp-chatops-pagerduty/1"


class PagerDutyEvents:
    """An Events API v2 client for one routing key (a :class:`~procedures.notifiers.Notifier`).

    ``transport`` replaces the network (unit tests); the tests of the bot point ``events_url``
    at a local HTTP double instead. Thread-safe (one pooled ``httpx.Client``); close it when
    done (or use it as a context manager).
    """

    kind = "pagerduty"

    def __init__(self, routing_key: str, *, events_url: str = DEFAULT_EVENTS_URL,
                 timeout: float = 10.0, transport: httpx.BaseTransport | None = None,
                 clock: Clock | None = None) -> None:
        if not routing_key:
            raise ValueError("a PagerDuty routing key is required")
        self._routing_key = routing_key
        self._url = events_url
        self._clock = clock or SystemClock()  # reads an HTTP-date Retry-After
        self._client = httpx.Client(
            timeout=httpx.Timeout(timeout, connect=min(5.0, timeout)), transport=transport,
            headers={"User-Agent": USER_AGENT}, follow_redirects=False)

    def send(self, payload: Mapping[str, Any], *, reference: str) -> Receipt:
        """Send one event (the payload plus the routing key); the receipt is its dedup key."""
        del reference  # PagerDuty deduplicates by the event's own dedup_key
        event = _checked(payload)
        event["routing_key"] = self._routing_key
        try:
            response = self._client.post(self._url, json=event)
        except httpx.TimeoutException as exc:
            raise ExternalServiceError(SERVICE, f"no answer in time ({type(exc).__name__})",
                                       retryable=True, code="timeout") from exc
        except httpx.HTTPError as exc:
            raise ExternalServiceError(SERVICE, f"cannot reach {self._url}: "
                                       f"{type(exc).__name__}: {exc}"[:500],
                                       retryable=True, code="unreachable") from exc
        if response.is_success:
            body = _json(response)
            dedup_key = body.get("dedup_key") if isinstance(body, dict) else None
            return Receipt(str(dedup_key or event.get("dedup_key") or ""))
        raise _error(response, self._clock)

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> PagerDutyEvents:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()


def _checked(payload: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of the event, or a permanent error saying what is wrong with it."""
    event = dict(payload)
    if "routing_key" in event:
        _invalid("the stored event carries a routing_key; the policy's key is added at send "
                 "time")
    action = event.get("event_action")
    if action not in ACTIONS:
        _invalid(f"event_action {action!r} is not one of {', '.join(ACTIONS)}")
    dedup_key = event.get("dedup_key")
    if dedup_key is not None and (not isinstance(dedup_key, str) or not dedup_key
                                  or len(dedup_key) > DEDUP_KEY_LIMIT):
        _invalid(f"dedup_key must be a string of 1-{DEDUP_KEY_LIMIT} characters")
    if action != "trigger":
        if not dedup_key:
            _invalid(f"a {action} event needs the dedup_key of the alert it {action}s")
        return event
    body = event.get("payload")
    if not isinstance(body, Mapping):
        _invalid("a trigger event needs a payload {summary, source, severity}")
    body = dict(body)
    for key in ("summary", "source"):
        if not isinstance(body.get(key), str) or not body[key]:
            _invalid(f"payload.{key} is required")
    if body.get("severity") not in SEVERITIES:
        _invalid(f"payload.severity {body.get('severity')!r} is not one of "
                 f"{', '.join(SEVERITIES)}")
    body["summary"] = body["summary"][:SUMMARY_LIMIT]
    event["payload"] = body
    return event


def _invalid(message: str) -> NoReturn:
    raise ExternalServiceError(SERVICE, f"invalid event: {message}", retryable=False,
                               code="invalid_event")


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def _error(response: httpx.Response, clock: Clock) -> ExternalServiceError:
    status = response.status_code
    body = _json(response)
    detail = ""
    if isinstance(body, dict):
        parts = [str(body.get("message") or "")]
        errors = body.get("errors")
        if isinstance(errors, list) and errors:
            parts.append("; ".join(str(e) for e in errors))
        detail = ": ".join(p for p in parts if p)
    if not detail:
        detail = response.reason_phrase or "no explanation"
    text = f"HTTP {status}: {detail}"[:500]
    if status == 429:
        return ExternalServiceError(SERVICE, f"{text} (throttled)", retryable=True,
                                    retry_after=_retry_after(response, clock), code=RATE_LIMITED)
    if status >= 500 or status == 408:
        return ExternalServiceError(SERVICE, text, retryable=True,
                                    retry_after=_retry_after(response, clock), code=f"HTTP{status}")
    return ExternalServiceError(SERVICE, text, retryable=False, code=f"HTTP{status}")


def _retry_after(response: httpx.Response, clock: Clock) -> float | None:
    """Seconds from ``Retry-After`` (seconds or an HTTP date), if the answer has one."""
    value = response.headers.get("Retry-After")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - clock.now()).total_seconds())
