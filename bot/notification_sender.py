"""``NotificationSender``: delivers the outbox's ``pagerduty`` and ``email`` messages.

A :class:`bot.worker.WorkerTask` like :class:`bot.outbox_sender.SlackOutboxSender`, for the
kinds that leave Slack: each claimed message goes to the notifier of its kind
(:mod:`procedures.notifiers`), built from the policy's ``notifications`` section. Payload
shapes are the notifiers' (``procedures.notifiers.pagerduty``: an Events API v2 event without
``routing_key``, which is added from the policy at send time; ``procedures.notifiers.email``:
``{"to", "subject", "body"}``); who writes them: ``bot.paging`` and ``bot.notify``.

Delivery rules:

- Order: ``Outbox.claim_due`` hands out only the head of each ordering key, so a page's
  trigger is delivered before its resolve, and a message that keeps failing holds back only
  the later messages of its own key.
- A retryable failure (5xx, timeout, refused connection, SMTP 4xx) waits with the shared
  backoff (``bot.delivery_retry``; 1, 2, 4 ... capped at :data:`MAX_BACKOFF` seconds, or the
  receiver's ``Retry-After`` when longer) and is given up after :data:`MAX_ATTEMPTS` tries,
  about a day: a receiver that is down delays a notice, it does not lose it.
- A rate limit (HTTP 429) hands the message back untried for ``Retry-After`` (or the backoff):
  it does not count towards giving up.
- A permanent failure (HTTP 400/4xx, SMTP 5xx, an invalid payload, a kind the policy has no
  route for) makes the message dead at once, with the reason in ``last_error`` (shown by
  ``/qlp status``). A dead message no longer holds back its key.
- Each page delivered or given up is audited (``pagerduty.delivered`` / ``pagerduty.dead``).

At least once: neither protocol has an idempotency key the bot can rely on for everything, so
a crash between the receiver's acceptance and the commit of ``mark_sent`` sends the message
again after its lease. PagerDuty folds a repeated trigger into the same alert (same
``dedup_key``); a repeated e-mail carries the same ``Message-ID``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import Any

from bot.delivery_retry import RetryPolicy, retry_or_give_up
from procedures.clock import Clock
from procedures.errors import ExternalServiceError
from procedures.notifiers import RATE_LIMITED, Notifier
from procedures.store import AuditSink
from storage.models import Notification
from storage.outbox import DEFAULT_LEASE, Outbox

log = logging.getLogger(__name__)

NOTIFIER_KINDS = ("pagerduty", "email")
"""The outbox kinds this sender delivers."""

MAX_ATTEMPTS = 300
MAX_BACKOFF = 300.0  # five minutes: 300 tries span about a day
RETRY = RetryPolicy(MAX_ATTEMPTS, MAX_BACKOFF)


def reference_of(notification_id: int) -> str:
    """The stable name of one outbox message towards its receiver (an e-mail's Message-ID)."""
    return f"qlp-notification-{notification_id}"


class NotificationSender:
    """A :class:`bot.worker.WorkerTask` that delivers ``pagerduty`` and ``email`` messages.

    ``notifiers`` maps each kind to its notifier (``procedures.notifiers.routes.notifiers_for``
    builds them from the policy; an unconfigured kind has one that refuses with the missing
    key). ``audit`` records the outcome of each page. ``monotonic`` bounds a pass to half the
    lease (tests pass a controllable one).
    """

    name = "notifications"

    def __init__(
        self,
        outbox: Outbox,
        notifiers: Mapping[str, Notifier],
        clock: Clock,
        *,
        audit: AuditSink | None = None,
        retry: RetryPolicy = RETRY,
        batch: int = 20,
        lease: timedelta = DEFAULT_LEASE,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._outbox = outbox
        self._notifiers = dict(notifiers)
        self._clock = clock
        self._audit = audit
        self._retry = retry
        self._batch = batch
        self._lease = lease
        self._monotonic = monotonic

    # -- the WorkerTask protocol --------------------------------------------------------------

    def run_once(self) -> bool:
        """Deliver what is due now (one claim of up to ``batch`` messages); True if any was
        handled. Never raises."""
        try:
            return self._pass()
        except Exception:  # the database is away, or a bug: log it, try again next pass
            log.exception("notifications: delivery pass failed")
            return False

    def busy(self) -> bool:
        """True while any page or e-mail is pending (sent or given up: not busy)."""
        try:
            return self._outbox.pending_count(NOTIFIER_KINDS) > 0
        except Exception:
            log.warning("notifications: could not count pending messages", exc_info=True)
            return False

    def shutdown(self) -> None:
        """Close the notifiers' connections (``Services.stop_worker`` calls this)."""
        for notifier in self._notifiers.values():
            close = getattr(notifier, "close", None)
            if close is not None:
                close()

    # -- delivery -----------------------------------------------------------------------------

    def _pass(self) -> bool:
        claimed = self._outbox.claim_due(self._clock.now(), self._batch, lease=self._lease,
                                         kinds=NOTIFIER_KINDS)
        started = self._monotonic()
        for index, notification in enumerate(claimed):
            if self._monotonic() - started > self._lease.total_seconds() / 2:
                # Out of lease budget: give the rest back before another sender may take them.
                for rest in claimed[index:]:
                    self._outbox.release(_id(rest), self._clock.now())
                break
            try:
                self._deliver(notification)
            except Exception:  # e.g. a database error mid-way: its lease brings it back
                log.exception("notifications: message #%s could not be handled",
                              notification.id)
        return bool(claimed)

    def _deliver(self, n: Notification) -> None:
        notifier = self._notifiers.get(n.kind)
        if notifier is None:
            self._give_up(n, f"no notifier for kind {n.kind!r}")
            return
        try:
            receipt = notifier.send(n.payload, reference=reference_of(_id(n)))
        except ExternalServiceError as error:
            self._failed(n, error)
            return
        except Exception as error:  # a bug or an unexpected library error: maybe it passes
            log.exception("notifications: %s message #%s raised", n.kind, n.id)
            self._failed(n, ExternalServiceError(
                n.kind, f"{type(error).__name__}: {error}"[:500], retryable=True))
            return
        if not self._outbox.mark_sent(_id(n), now=self._clock.now(), note=receipt.note):
            log.warning("notifications: message #%s was already marked; delivered twice", n.id)
            return
        log.info("notifications: %s message #%s delivered (%s)", n.kind, n.id,
                 receipt.reference)
        self._record(n, "delivered", {"reference": receipt.reference, "note": receipt.note})

    def _failed(self, n: Notification, error: ExternalServiceError) -> None:
        detail = str(error)[:1000]
        now = self._clock.now()
        if not error.retryable:
            self._give_up(n, detail)
        elif error.code == RATE_LIMITED:
            wait = self._retry.delay(n.attempts, error.retry_after)
            self._outbox.release(_id(n), now + timedelta(seconds=wait), detail)
            log.warning("notifications: %s rate limited; message #%s waits %.0fs",
                        n.kind, n.id, wait)
        else:
            delay = retry_or_give_up(self._outbox, n, detail, now=now, policy=self._retry,
                                     retry_after=error.retry_after)
            if delay is None:
                log.error("notifications: gave up on %s message #%s after %s attempts: %s",
                          n.kind, n.id, n.attempts, detail)
                self._record(n, "dead", {"error": detail, "attempts": n.attempts})
            else:
                log.info("notifications: %s message #%s failed (%s); retry in %.0fs",
                         n.kind, n.id, detail, delay)

    def _give_up(self, n: Notification, detail: str) -> None:
        if self._outbox.mark_dead(_id(n), detail):
            log.error("notifications: %s message #%s (to %s) can never be delivered: %s",
                      n.kind, n.id, n.channel, detail)
            self._record(n, "dead", {"error": detail, "attempts": n.attempts})

    def _record(self, n: Notification, outcome: str, detail: Mapping[str, Any]) -> None:
        """Audit the outcome of a page (e-mail is recorded by its outbox row alone)."""
        if self._audit is None or n.kind != "pagerduty":
            return
        payload = n.payload
        try:
            self._audit.append(
                "bot", f"pagerduty.{outcome}", deployment_id=n.deployment_id,
                detail={"notification": n.id, "event_action": payload.get("event_action"),
                        "dedup_key": payload.get("dedup_key"), **detail})
        except Exception:  # the page's fate is in its outbox row either way
            log.warning("notifications: could not audit page #%s", n.id, exc_info=True)


def _id(n: Notification) -> int:
    assert n.id is not None  # claimed rows always have one
    return n.id
