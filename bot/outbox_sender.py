"""``SlackOutboxSender``: the one place that delivers the bot's Slack messages.

Everything the bot says is first written to the outbox (``storage.outbox.Outbox``); this
worker task claims what is due and calls the Web API: ``post`` -> ``chat.postMessage``,
``update`` -> ``chat.update`` of a deployment's card, ``ephemeral`` -> ``chat.postEphemeral``.
Other kinds (``pagerduty``, ``email``) belong to other senders and are never claimed here.

Payloads (see ``bot.slack_reporter`` for who writes which):

- ``post``: ``{"text", "blocks"?, "reply_broadcast"?, "card_for"?, "card_post"?}``. With
  ``thread_of`` set it is a reply in that deployment's card thread (``thread_ts`` = the
  card's ``ts``, as a string). With ``card_for`` it *is* that deployment's card: the ``ts``
  Slack returns is stored as the deployment's ``card_ts`` (and ``channel``).
- ``update``: ``{"text", "blocks", "card_post"?}`` with ``deployment_id`` set: the new content
  of that deployment's card. A run of pending updates of one card (one ordering key)
  coalesces: only the newest is sent, the others are marked sent as ``superseded``.
- ``ephemeral``: ``{"user", "text", "blocks"?}``: shown to ``user`` in ``channel``.
- ``card_post`` (optional) is the outbox id of the card's post: a message that needs the
  card's ``ts`` waits while that post is pending and is given up when it is dead. Without it,
  such a message waits at most ``card_wait``.

Delivery rules:

- Order: ``Outbox.claim_due`` hands out only the head of each ordering key, so a card's post
  precedes its replies (same ``channel:`` key) and a card's updates keep their order.
- Pacing: at most one ``chat.postMessage`` per channel per ``per_channel_interval`` seconds
  (Slack allows about one a second per channel), measured with ``monotonic``. A message whose
  channel is not free yet is handed back untried (``Outbox.release``) for a later pass;
  ``run_once`` never sleeps.
- 429 (``Retry-After``, 1 s if absent): the message is handed back untried for that long and
  its channel pauses; it does not count towards giving up.
- 5xx, ``internal_error``-like answers, connection errors: retried with exponential backoff
  (1, 2, 4 ... capped at 60 s); after ``max_attempts`` tries the message is declared dead.
- Any other Slack error (``channel_not_found``, ``not_in_channel``, ``invalid_blocks``,
  ``msg_too_long``, ``invalid_auth``, ``message_not_found`` ...) is permanent: dead at once,
  logged as an error. A dead message no longer holds back the rest of its key.

Exactly once, nearly: Slack has no idempotency key for ``chat.postMessage``, so delivery is
at least once. The window for a duplicate is the time between Slack accepting a message and
the commit that marks it sent (for a card, the same commit stores its ``ts`` on the
deployment, so the card and the mark can never disagree). Nothing else happens in that window
(no logging, no other I/O); a crash or a database failure inside it makes the message go out
again after its lease expires. A lease (60 s) longer than the client timeout keeps two
replicas from sending one message at once, and a pass stops taking on messages from its batch
once half the lease is used up.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, NoReturn

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from bot.delivery_retry import MAX_ATTEMPTS, MAX_BACKOFF, RetryPolicy, retry_or_give_up
from bot.delivery_retry import backoff as backoff  # re-exported: the tests read it here
from procedures.clock import Clock
from storage.deployments import DeploymentRepository
from storage.models import Notification
from storage.outbox import DEFAULT_LEASE, Outbox

log = logging.getLogger(__name__)

SLACK_KINDS = ("post", "update", "ephemeral")
"""The outbox kinds this sender delivers."""

DEFAULT_RETRY_AFTER = 1.0
CARD_RETRY = timedelta(seconds=1)
DEFAULT_CARD_WAIT = timedelta(hours=6)

RATE_LIMIT_ERRORS = frozenset({"ratelimited", "rate_limited"})
TRANSIENT_ERRORS = frozenset(
    {"internal_error", "fatal_error", "service_unavailable", "request_timeout"}
)


# Merged thread replies stay well inside Slack's 4,000-character text guidance.
MERGED_TEXT_LIMIT = 3500

class _Done(Exception):
    """Internal: this message is handled (marked or handed back); ``progressed`` for run_once."""

    def __init__(self, progressed: bool) -> None:
        super().__init__()
        self.progressed = progressed


@dataclass(frozen=True)
class _Failure:
    """How one failed Slack call is treated."""

    kind: str  # "ratelimited" | "transient" | "permanent"
    detail: str
    retry_after: float = 0.0


class SlackOutboxSender:
    """A :class:`bot.worker.WorkerTask` that delivers ``post``/``update``/``ephemeral`` messages.

    ``clock`` gives the outbox's notion of now (retry times, leases); ``monotonic`` measures
    real elapsed time for pacing (tests pass a controllable one). Pacing and pauses are kept
    in memory: a restart forgets them, which at worst costs one early post (and a 429).
    """

    name = "slack-outbox"

    def __init__(
        self,
        outbox: Outbox,
        deployments: DeploymentRepository,
        client: WebClient,
        clock: Clock,
        *,
        per_channel_interval: float = 1.0,
        per_card_interval: float = 2.0,
        batch: int = 20,
        monotonic: Callable[[], float] = time.monotonic,
        max_attempts: int = MAX_ATTEMPTS,
        lease: timedelta = DEFAULT_LEASE,
        card_wait: timedelta = DEFAULT_CARD_WAIT,
    ) -> None:
        self._outbox = outbox
        self._deployments = deployments
        self._client = client
        self._clock = clock
        self._interval = per_channel_interval
        # chat.update is Tier 3 (about 50 a minute per workspace): a card is updated at most
        # this often, and updates queued meanwhile coalesce into the newest.
        self._card_interval = per_card_interval
        self._last_update: dict[str, float] = {}
        self._batch = batch
        self._monotonic = monotonic
        self._retry = RetryPolicy(max_attempts, MAX_BACKOFF)
        self._lease = lease
        self._card_wait = card_wait
        self._last_post: dict[str, float] = {}  # channel -> monotonic time of the last post
        self._paused_until: dict[str, float] = {}  # channel -> monotonic end of a 429 pause

    # -- the WorkerTask protocol --------------------------------------------------------------

    def run_once(self) -> bool:
        """Deliver what is due now (one claim of up to ``batch`` messages); True if any was
        sent, marked or tried. Never raises."""
        try:
            return self._pass()
        except Exception:  # the database is away, or a bug: log it, try again next pass
            log.exception("slack outbox: delivery pass failed")
            return False

    def _pass(self) -> bool:
        claimed = self._outbox.claim_due(
            self._clock.now(), self._batch, lease=self._lease, kinds=SLACK_KINDS
        )
        started = self._monotonic()
        progressed = False
        for index, notification in enumerate(claimed):
            if self._monotonic() - started > self._lease.total_seconds() / 2:
                # Out of lease budget: give the rest back before another sender may take them.
                for rest in claimed[index:]:
                    self._release(rest, self._clock.now(), None)
                break
            try:
                self._deliver(notification)
            except _Done as done:
                progressed = progressed or done.progressed
            except Exception:  # e.g. a database error mid-way: its lease brings it back
                log.exception("slack outbox: message #%s could not be handled", notification.id)
        return progressed

    def busy(self) -> bool:
        """True while any post/update/ephemeral is pending (sent or given up: not busy)."""
        try:
            return self._outbox.pending_count(SLACK_KINDS) > 0
        except Exception:
            log.warning("slack outbox: could not count pending messages", exc_info=True)
            return False

    # -- one message --------------------------------------------------------------------------

    def _deliver(self, notification: Notification) -> NoReturn:
        """Handle one claimed message; always ends by raising :class:`_Done`."""
        if notification.kind == "update":
            self._update(notification)
        elif notification.kind == "ephemeral":
            self._ephemeral(notification)
        else:
            self._post(notification)

    def _post(self, n: Notification) -> NoReturn:
        payload = n.payload
        channel = n.channel
        args: dict[str, Any] = {
            "text": payload.get("text"),
            "unfurl_links": False,
            "unfurl_media": False,
        }
        if payload.get("blocks"):
            args["blocks"] = payload["blocks"]
        merged: list[int] = []
        if n.thread_of is not None:
            channel, card_ts = self._card_of(n, n.thread_of)
            args["thread_ts"] = card_ts  # always the parent's ts, as a string
            args["reply_broadcast"] = bool(payload.get("reply_broadcast", False))
        self._wait_for_channel(n, channel, paced=True)
        if n.thread_of is not None and not payload.get("blocks"):
            args["text"], merged = self._merge_replies(n, str(args["text"] or ""))
        response = self._call(n, channel, lambda: self._client.chat_postMessage(
            channel=channel, **args))
        ts = str(response["ts"])
        card_for = payload.get("card_for")
        now = self._clock.now()
        if card_for is None:
            with self._outbox.database.session() as session:
                marked = self._outbox.mark_sent(self._id(n), ts, now=now, session=session)
                for other in merged:
                    self._outbox.mark_sent(other, ts, now=now, session=session,
                                           note=f"merged into #{n.id}")
        else:
            posted_in = str(response.get("channel") or channel)
            # The crash window: Slack has the card; until this commit we do not know it.
            with self._outbox.database.session() as session:
                marked = self._outbox.mark_sent(self._id(n), ts, now=now, session=session)
                if marked:
                    self._deployments.update_fields(
                        int(card_for), session=session, card_ts=ts, channel=posted_in
                    )
        if not marked:
            # Its lease ran out mid-call and another sender delivered it too.
            log.warning("slack outbox: message #%s was already marked; posted twice (ts %s)",
                        n.id, ts)
        raise _Done(True)

    def _merge_replies(self, n: Notification, text: str) -> tuple[str, list[int]]:
        """Join the replies queued right behind ``n`` for the same thread into one post.

        Slack allows about one post a second per channel; when progress comes faster, the
        replies wait in the outbox and go out together instead of one by one.
        """
        broadcast = bool(n.payload.get("reply_broadcast", False))
        now = self._clock.now()
        merged: list[int] = []
        for other in self._outbox.pending_after(str(n.ordering_key), self._id(n)):
            payload = other.payload
            if (other.kind != "post" or other.thread_of != n.thread_of
                    or payload.get("blocks") or payload.get("card_for")
                    or bool(payload.get("reply_broadcast", False)) != broadcast
                    or (other.next_attempt_at is not None and other.next_attempt_at > now)
                    or len(text) + len(str(payload.get("text") or "")) > MERGED_TEXT_LIMIT):
                break
            text = f"{text}\n{payload.get('text') or ''}"
            merged.append(self._id(other))
        return text, merged

    def _update(self, n: Notification) -> NoReturn:
        if n.deployment_id is None:
            self._dead(n, "an update without deployment_id names no card")
        newest = self._outbox.newest_pending_id(n.ordering_key, "update")
        if newest is not None and newest > self._id(n):
            self._outbox.mark_sent(self._id(n), now=self._clock.now(),
                                   note=f"superseded by #{newest}")
            raise _Done(True)
        payload = n.payload
        card_post = payload.get("card_post")
        first = self._outbox.get(int(card_post)) if card_post is not None else None
        if first is not None and first.state == "sent" and \
                first.payload.get("text") == payload.get("text") and \
                first.payload.get("blocks") == payload.get("blocks"):
            # The card was posted with exactly this content: nothing to update.
            self._outbox.mark_sent(self._id(n), now=self._clock.now(),
                                   note=f"same as the card post #{card_post}")
            raise _Done(True)
        channel, card_ts = self._card_of(n, n.deployment_id)
        self._wait_for_channel(n, channel, paced=False)
        key = str(n.ordering_key)
        mono = self._monotonic()
        free_at = self._last_update.get(key, float("-inf")) + self._card_interval
        if mono < free_at:
            self._release(n, self._clock.now() + timedelta(seconds=free_at - mono), None)
            raise _Done(False)
        self._last_update[key] = mono
        args: dict[str, Any] = {"text": payload.get("text")}
        if "blocks" in payload:
            args["blocks"] = payload["blocks"]
        response = self._call(n, channel, lambda: self._client.chat_update(
            channel=channel, ts=card_ts, **args))
        self._outbox.mark_sent(self._id(n), str(response.get("ts") or card_ts),
                               now=self._clock.now())
        raise _Done(True)

    def _ephemeral(self, n: Notification) -> NoReturn:
        payload = n.payload
        user = payload.get("user")
        if not isinstance(user, str) or not user:
            self._dead(n, "an ephemeral message without a user")
        self._wait_for_channel(n, n.channel, paced=False)
        args: dict[str, Any] = {"text": payload.get("text")}
        if payload.get("blocks"):
            args["blocks"] = payload["blocks"]
        response = self._call(n, n.channel, lambda: self._client.chat_postEphemeral(
            channel=n.channel, user=user, **args))
        ts = response.get("message_ts")
        self._outbox.mark_sent(self._id(n), None if ts is None else str(ts),
                               now=self._clock.now())
        raise _Done(True)

    # -- the card a message refers to ---------------------------------------------------------

    def _card_of(self, n: Notification, deployment_id: int) -> tuple[str, str]:
        """``(channel, ts)`` of the deployment's card; defers or gives up ``n`` if unknown."""
        deployment = self._deployments.get(deployment_id)
        if deployment is None:
            self._dead(n, f"deployment #{deployment_id} does not exist")
        if deployment.card_ts:
            return deployment.channel or n.channel, deployment.card_ts
        now = self._clock.now()
        post_id = n.payload.get("card_post")
        if isinstance(post_id, int):
            post = self._outbox.get(post_id)
            if post is not None and post.state == "pending":
                self._release(n, now + CARD_RETRY, "waiting for the card to be posted")
                raise _Done(False)
            state = "missing" if post is None else post.state
            self._dead(n, f"the card of deployment #{deployment_id} was never posted "
                          f"(its post #{post_id} is {state})")
        if now - n.created_at < self._card_wait:
            self._release(n, now + CARD_RETRY, "waiting for the card to be posted")
            raise _Done(False)
        self._dead(n, f"the card of deployment #{deployment_id} was not posted within "
                      f"{self._card_wait}")

    # -- pacing -------------------------------------------------------------------------------

    def _wait_for_channel(self, n: Notification, channel: str, *, paced: bool) -> None:
        """Return if ``channel`` may be written to now; otherwise hand ``n`` back untried."""
        mono = self._monotonic()
        free_at = self._paused_until.get(channel, 0.0)
        if paced and channel in self._last_post:
            free_at = max(free_at, self._last_post[channel] + self._interval)
        if mono >= free_at:
            return
        self._release(n, self._clock.now() + timedelta(seconds=free_at - mono), None)
        raise _Done(False)

    # -- calling Slack ------------------------------------------------------------------------

    def _call(self, n: Notification, channel: str, call: Callable[[], Any]) -> Mapping[str, Any]:
        """Make the Slack call; on failure mark ``n`` as the failure deserves and stop."""
        if n.kind == "post":
            self._last_post[channel] = self._monotonic()
        try:
            response = call()
        except Exception as error:
            failure = _classify(error)
        else:
            return response
        now = self._clock.now()
        if failure.kind == "ratelimited":
            self._paused_until[channel] = self._monotonic() + failure.retry_after
            log.warning("slack outbox: rate limited in %s for %.0fs (message #%s)",
                        channel, failure.retry_after, n.id)
            self._release(n, now + timedelta(seconds=failure.retry_after), failure.detail)
        elif failure.kind == "transient":
            delay = retry_or_give_up(self._outbox, n, failure.detail, now=now,
                                     policy=self._retry)
            if delay is None:
                log.error("slack outbox: gave up on message #%s (%s to %s) after %s attempts: %s",
                          n.id, n.kind, channel, n.attempts, failure.detail)
            else:
                log.info("slack outbox: message #%s failed (%s); retry in %.0fs",
                         n.id, failure.detail, delay)
        else:
            self._outbox.mark_dead(self._id(n), failure.detail)
            log.error("slack outbox: message #%s (%s to %s) can never be delivered: %s",
                      n.id, n.kind, channel, failure.detail)
        raise _Done(True)

    # -- marks --------------------------------------------------------------------------------

    def _release(self, n: Notification, retry_at: datetime, note: str | None) -> None:
        self._outbox.release(self._id(n), retry_at, note)

    def _dead(self, n: Notification, error: str) -> NoReturn:
        self._outbox.mark_dead(self._id(n), error)
        log.error("slack outbox: message #%s (%s to %s) given up: %s",
                  n.id, n.kind, n.channel, error)
        raise _Done(True)

    @staticmethod
    def _id(n: Notification) -> int:
        assert n.id is not None  # claimed rows always have one
        return n.id


def _classify(error: Exception) -> _Failure:
    """Rate limit, transient or permanent, from an exception the Slack call raised."""
    if isinstance(error, SlackApiError):
        response = error.response
        status = int(getattr(response, "status_code", 0) or 0)
        try:
            code = str(response.get("error") or "")
        except Exception:  # a body that was not JSON
            code = ""
        detail = f"{code or 'error'} (HTTP {status})" if status != 200 else code or "error"
        if status == 429 or code in RATE_LIMIT_ERRORS:
            return _Failure("ratelimited", detail, _retry_after(response))
        if status >= 500 or status == 408 or code in TRANSIENT_ERRORS:
            return _Failure("transient", detail)
        return _Failure("permanent", detail)
    # Connection refused/reset, timeouts, a proxy's HTML page: the network, not the message.
    return _Failure("transient", f"{type(error).__name__}: {error}"[:500])


def _retry_after(response: Any) -> float:
    headers = getattr(response, "headers", None) or {}
    for name, value in dict(headers).items():
        if str(name).lower() == "retry-after":
            try:
                seconds = float(value)
            except (TypeError, ValueError):
                break
            return seconds if seconds > 0 else DEFAULT_RETRY_AFTER
    return DEFAULT_RETRY_AFTER
