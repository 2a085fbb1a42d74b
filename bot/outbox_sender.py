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
  coalesces: only the newest is sent, the others are marked ``superseded`` (kept, never sent).
- ``ephemeral``: ``{"user", "text", "blocks"?}``: shown to ``user`` in ``channel``.
- ``post`` with ``file``: ``{"text", "file": {"filename", "title", "chart"}}`` and
  ``thread_of``: a chart (``bot.charts``) drawn at delivery and uploaded into the card's thread
  (``files.getUploadURLExternal``, a POST of the bytes, ``files.completeUploadExternal``);
  ``text`` is its comment. Not merged with other replies; looked up by file name after a
  lost answer (see ``_file``).
- ``card_post`` (optional) is the outbox id of the card's post: a message that needs the
  card's ``ts`` waits while that post is pending and is given up when it is dead. Without it,
  such a message waits at most ``card_wait``.

Delivery rules:

- Order: ``Outbox.claim_due`` hands out only the head of each ordering key, urgent keys first
  (``storage.outbox.URGENT``), so a thread's replies and a card's updates keep their order; a
  reply waits for its card's ``ts``.
- Pacing and coalescing (``bot.outbox_coalesce``): on average one ``chat.postMessage`` per
  channel per ``per_channel_interval`` seconds (Slack allows about one a second per channel,
  short bursts too: up to ``burst`` back to back after a quiet spell, which also absorbs the
  worker's polling delay), one ``chat.update`` per ``update_interval`` across the workspace
  (Tier 3) and per ``per_card_interval`` per card, measured with ``monotonic``. A pass looks
  at the due heads (``Outbox.due_heads``) and claims only what may go now: per channel its
  first post (urgent keys first, then the oldest), the first update the pace allows, the
  updates a newer one replaces, ephemeral messages. One claimed but not free after all is
  handed back untried (``Outbox.release``) for a later pass; ``run_once`` never sleeps. A
  thread reply takes the replies its thread has queued behind it into the same post (a
  broadcast one starts a post of its own, except while other threads wait for the channel:
  then each thread gets one post per turn); a card update a newer one replaces is never sent.
- 429 (``Retry-After``, 1 s if absent): the message is handed back untried for that long and
  the scope that got it pauses (its channel; for ``chat.update`` the workspace's updates),
  nothing else; it does not count towards giving up.
- 5xx, ``internal_error``-like answers, connection errors: retried with exponential backoff
  (1, 2, 4 ... capped at 60 s); after ``max_attempts`` tries the message is declared dead,
  except a deployment's card, which is never given up for a failure that may pass.
- Blocked (:data:`BLOCKING_ERRORS`: ``invalid_auth``, ``token_revoked``,
  ``account_inactive``, ``not_in_channel``, ``channel_not_found`` ...): someone must fix
  something, and then everything must still go out. The message stays pending (``last_error``
  ``blocked: <code>``, not counted as an attempt), the workspace (token errors) or the channel
  pauses with a backoff up to :data:`BLOCKED_BACKOFF`, one message probing at each end of
  the pause; ``not_in_channel`` first tries ``conversations.join`` once (a public channel the
  bot was removed from). The first block of an episode is logged as an error and paged
  (``pager``: ``bot.undelivered.DeliveryPager``), ``/qlp status`` and ``/metrics`` show it
  (``storage.undelivered``), and the first delivery after it resolves the page. A request
  whose card could not be posted therefore gets its card (and its Approve button) once
  Slack takes it again; it does not sit without one.
- Any other Slack error (``invalid_blocks``, ``msg_too_long``, ``message_not_found`` ...) is
  permanent: dead at once, logged as an error. A dead message no longer holds back the rest of
  its key.

Exactly once: Slack has no idempotency key for ``chat.postMessage``, so each post carries its
outbox id in Slack message metadata (``{"event_type": "qlp_outbox", "event_payload":
{"outbox_id": N}}``, plus ``merged`` ids when replies were joined; an update carries its own
on ``chat.update``). A try that may have reached Slack without the bot hearing the answer (a
timeout, a closed connection, a 5xx: :func:`_classify`'s *ambiguous*) leaves the message
``unconfirmed`` (``storage.outbox.UNCONFIRMED``) and due again no sooner than ``settle`` (the
client's timeout: Slack may still be taking it). Before an unconfirmed message is sent again,
the sender looks it up (``conversations.replies`` for a thread reply, ``conversations.history``
for a top-level post or a card's update, ``include_all_metadata``, from the newest ``ts`` the
outbox knows in that thread or key: ``Outbox.last_sent_ts``) and, when Slack has it, marks it
sent with that ``ts`` instead of posting again. So does a message claimed again after a crash
mid-call (``attempts`` > 1 and no ``last_error``). ``chat.postMessage`` goes through a copy of
the client without the SDK's connection-error retries: those would re-post behind the
sender's back. What is left: an ephemeral message cannot be looked up, so one whose call
timed out or lost its connection is not sent again (marked sent, ``unconfirmed``); a message
Slack accepts later than ``settle`` after the bot gave up, or a token without the history
scopes (the lookup is then skipped with a warning), can still be posted twice.

The crash window: between Slack accepting a message and the commit that marks it sent (for a
card, the same commit stores its ``ts`` on the deployment, so the card and the mark can never
disagree). A lease (60 s) longer than the client timeout keeps two replicas from sending one
message at once, and a pass stops taking on messages from its batch once half the lease is
used up.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, NoReturn, Protocol
from urllib.error import URLError

import httpx
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from bot.delivery_retry import MAX_ATTEMPTS, MAX_BACKOFF, RetryPolicy, retry_or_give_up
from bot.delivery_retry import backoff as backoff  # re-exported: the tests read it here
from bot.formatting import escape
from bot.outbox_coalesce import DEFAULT_UPDATE_INTERVAL, UPDATES, Pace, merge_thread_replies
from procedures.clock import Clock
from procedures.log_context import scope as log_scope
from procedures.model import DeploymentState
from storage.deployments import DeploymentRepository
from storage.models import Notification
from storage.outbox import BLOCKED, DEFAULT_LEASE, UNCONFIRMED, Outbox, is_unconfirmed

log = logging.getLogger(__name__)

SLACK_KINDS = ("post", "update", "ephemeral")
"""The outbox kinds this sender delivers."""

EVENT_TYPE = "qlp_outbox"
"""``metadata.event_type`` of every message the sender posts (``event_payload.outbox_id``)."""

DEFAULT_RETRY_AFTER = 1.0
CARD_RETRY = timedelta(seconds=1)
DEFAULT_CARD_WAIT = timedelta(hours=6)
BLOCKED_BACKOFF = 60.0
"""The longest pause between two probes of a blocked workspace or channel (seconds)."""
LOOKUP_PAGE = 200
LOOKUP_PAGES = 3

RATE_LIMIT_ERRORS = frozenset({"ratelimited", "rate_limited"})
TRANSIENT_ERRORS = frozenset(
    {"internal_error", "fatal_error", "service_unavailable", "request_timeout"}
)
TOKEN_ERRORS = frozenset({"invalid_auth", "not_authed", "token_revoked", "token_expired",
                          "account_inactive", "missing_scope", "team_access_not_granted"})
"""Blocking errors about the bot's token: every channel waits."""
CHANNEL_ERRORS = frozenset({"not_in_channel", "channel_not_found", "is_archived"})
"""Blocking errors about one channel: that channel waits."""
BLOCKING_ERRORS = TOKEN_ERRORS | CHANNEL_ERRORS
READ_BLOCKS = TOKEN_ERRORS - {"missing_scope"}
"""Blocking errors of a lookup that block the post too (the others only stop the lookup)."""
WORKSPACE = "*"
"""The scope of a block caused by the token (a channel id for the others)."""
PEEK = 200
"""How many due heads a pass looks at to choose what it claims."""



class BlockPager(Protocol):
    """Told when Slack delivery becomes blocked and when it flows again (pages on-call)."""

    def blocked(self, scope: str, code: str, detail: str, first_id: int) -> None: ...

    def unblocked(self, scope: str, code: str, first_id: int) -> None: ...


class _Done(Exception):
    """Internal: this message is handled (marked or handed back); ``progressed`` for run_once."""

    def __init__(self, progressed: bool) -> None:
        super().__init__()
        self.progressed = progressed


@dataclass(frozen=True)
class _Failure:
    """How one failed Slack call is treated."""

    kind: str  # "ratelimited" | "transient" | "blocked" | "permanent"
    detail: str
    retry_after: float = 0.0
    ambiguous: bool = False  # the call may have done its work (a timeout, a lost answer)
    code: str = ""


@dataclass
class _Block:
    """A workspace or channel that Slack refuses for now."""

    code: str
    detail: str
    first_id: int
    tries: int = 0
    until: float = 0.0  # monotonic end of the current pause


class SlackOutboxSender:
    """A :class:`bot.worker.WorkerTask` that delivers ``post``/``update``/``ephemeral`` messages.

    ``clock`` gives the outbox's notion of now (retry times, leases); ``monotonic`` measures
    real elapsed time for pacing (tests pass a controllable one). Pacing, pauses and blocks are
    kept in memory: a restart forgets them, which at worst costs one early post (and a 429).
    ``settle`` is how long after an ambiguous failure a message is looked up (default: the
    client's timeout). ``pager`` is told about blocks (see the module's delivery rules).
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
        update_interval: float = DEFAULT_UPDATE_INTERVAL,
        burst: int = 2,
        batch: int = 50,
        monotonic: Callable[[], float] = time.monotonic,
        max_attempts: int = MAX_ATTEMPTS,
        lease: timedelta = DEFAULT_LEASE,
        card_wait: timedelta = DEFAULT_CARD_WAIT,
        settle: timedelta | None = None,
        pager: BlockPager | None = None,
    ) -> None:
        self._outbox = outbox
        self._deployments = deployments
        self._client = client
        self._clock = clock
        self._interval = per_channel_interval
        # chat.update is Tier 3 (about 50 a minute per workspace): a card is updated at most
        # this often, and updates queued meanwhile coalesce into the newest.
        self._card_interval = per_card_interval
        self._update_interval = update_interval
        self._batch = batch
        self._monotonic = monotonic
        self._retry = RetryPolicy(max_attempts, MAX_BACKOFF)
        self._never_give_up = RetryPolicy(2**62, MAX_BACKOFF)
        self._lease = lease
        self._card_wait = card_wait
        self._settle_option = settle
        self._pager = pager
        self._pace = Pace(monotonic, burst)  # channels, UPDATES and card keys
        self._contended: set[str] = set()  # channels with posts of several keys due
        self._blocks: dict[str, _Block] = {}  # WORKSPACE or a channel -> its block
        self._joined: set[str] = set()  # channels conversations.join was tried for
        self._no_lookup_warned = False
        self._stopping = False  # a graceful stop: hand the rest of a batch back (stop_taking)

    @property
    def _post_client(self) -> WebClient:
        """The client without the SDK's connection-error retries, for posts: a re-post after
        a lost answer is exactly the duplicate the lookup prevents. (Reads and updates keep
        the client's retries.) A shallow copy per call, so it follows the client's settings."""
        plain = copy.copy(self._client)
        plain.retry_handlers = []
        return plain

    @property
    def _settle(self) -> timedelta:
        if self._settle_option is not None:
            return self._settle_option
        return timedelta(seconds=float(getattr(self._client, "timeout", 10) or 10))

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
        if self._stopping:
            return False
        now = self._clock.now()
        chosen = self._choose(self._outbox.due_heads(now, PEEK, kinds=SLACK_KINDS))
        if not chosen:
            return False
        # Claimed only now, and only if still the due heads of their keys (another replica).
        claimed = self._outbox.claim_due(now, self._batch, lease=self._lease,
                                         kinds=SLACK_KINDS, ids=chosen)
        started = self._monotonic()
        progressed = False
        for index, notification in enumerate(claimed):
            if self._stopping or self._monotonic() - started > self._lease.total_seconds() / 2:
                # Stopping, or out of lease budget: give the rest back before another sender
                # may take them.
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

    def stop_taking(self) -> None:
        """A graceful stop: finish the message in hand, hand the rest of the batch back
        untried, claim nothing more."""
        self._stopping = True

    def _choose(self, heads: list[tuple[Notification, bool]]) -> list[int]:
        """The due heads (in the outbox's order: urgent keys first, then oldest) worth claiming
        now: per channel the first post its pace lets through, every card update a newer one
        replaces (marked, never sent), the first other update the workspace's ``chat.update``
        pace and its card's lets through, every ephemeral message. The rest stay unclaimed
        (no claim and hand-back for each, every pass, while Slack's pace holds them)."""
        mono = self._monotonic()
        chosen: list[int] = []
        posting: set[str] = set()  # channels given their one post in this pass
        waiting: dict[str, int] = {}
        for n, _ in heads:
            if n.kind == "post":
                waiting[n.channel] = waiting.get(n.channel, 0) + 1
        self._contended = {channel for channel, count in waiting.items() if count > 1}
        updating = self._pace.free_at(UPDATES, self._update_interval) <= mono
        for n, newer in heads:
            if n.kind == "update":
                if newer:
                    chosen.append(self._id(n))
                elif updating and self._pace.free_at(str(n.ordering_key),
                                                     self._card_interval) <= mono:
                    chosen.append(self._id(n))
                    updating = False
            elif n.kind == "post":
                if n.channel not in posting and self._free_at(n.channel, paced=True) <= mono:
                    chosen.append(self._id(n))
                    posting.add(n.channel)
            else:
                chosen.append(self._id(n))
        return chosen

    def busy(self) -> bool:
        """True while any post/update/ephemeral is pending (sent or given up: not busy)."""
        try:
            return self._outbox.pending_count(SLACK_KINDS) > 0
        except Exception:
            log.warning("slack outbox: could not count pending messages", exc_info=True)
            return False

    def blocked(self) -> dict[str, str]:
        """What this sender knows to be blocked: scope (``*`` or a channel) -> error code."""
        return {scope: block.code for scope, block in self._blocks.items()}

    # -- one message --------------------------------------------------------------------------

    def _deliver(self, notification: Notification) -> NoReturn:
        """Handle one claimed message; always ends by raising :class:`_Done`."""
        if notification.kind == "update":
            self._update(notification)
        elif notification.kind == "ephemeral":
            self._ephemeral(notification)
        elif notification.payload.get("file"):
            self._file(notification)
        else:
            self._post(notification)

    def _file(self, n: Notification) -> NoReturn:
        """A ``post`` with a ``file`` payload (``bot.chart_reporter``): render the chart and
        share it in the card's thread: ``files.getUploadURLExternal``, the bytes POSTed to the
        returned ``upload_url``, ``files.completeUploadExternal`` (``channel_id``,
        ``thread_ts``). Each call's failures are treated as a post's; a failed upload is
        retried with backoff. Exactly once as far as a lookup can tell: after a try that may
        have shared it (a lost answer), the thread is searched for a file of the same name
        (``qlp-monitoring-<id>.png``: one per deployment) before it is uploaded again."""
        from bot.charts import render_png  # matplotlib loads only where a chart is sent

        file = n.payload["file"]
        if n.thread_of is None or not isinstance(file, Mapping):
            self._dead(n, "a file without a card's thread to go to")
        channel, thread_ts = self._card_of(n, n.thread_of)
        filename = str(file.get("filename") or f"qlp-{n.id}.png")
        if self._needs_lookup(n):
            self._wait_for_channel(n, channel, paced=False)
            shared = self._find_file(n, channel, thread_ts, filename)
            if shared is not None:
                log.info("slack outbox: file #%s was shared by an unconfirmed try (%s); not "
                         "uploading it again", n.id, shared)
                self._outbox.mark_sent(self._id(n), now=self._clock.now(),
                                       note=f"file {shared} (confirmed by lookup)")
                self._delivered(channel)
                raise _Done(True)
        self._wait_for_channel(n, channel, paced=True)
        try:
            data = render_png(file.get("chart") or {})
        except Exception as error:  # a chart that cannot be drawn never will be
            log.exception("slack outbox: could not draw the chart of message #%s", n.id)
            self._dead(n, f"the chart could not be drawn: {type(error).__name__}: {error}"[:500])
        title = str(file.get("title") or filename)
        answer = self._call(n, channel, lambda: self._client.files_getUploadURLExternal(
            filename=filename, length=len(data), alt_txt=title[:1000]), write=True)
        upload_url, file_id = str(answer["upload_url"]), str(answer["file_id"])
        self._call(n, channel, lambda: _upload(upload_url, data, self._client.timeout),
                   write=True)
        args: dict[str, Any] = {"files": [{"id": file_id, "title": title}],
                                "channel_id": channel, "thread_ts": thread_ts}
        if n.payload.get("text"):
            args["initial_comment"] = str(n.payload["text"])
        # Without the SDK's connection retries (as posts): the lookup above stands in for them.
        self._call(n, channel, lambda: self._post_client.files_completeUploadExternal(**args),
                   write=True)
        self._outbox.mark_sent(self._id(n), now=self._clock.now(), note=f"file {file_id}")
        self._delivered(channel)
        raise _Done(True)

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
        thread_ts: str | None = None
        if n.thread_of is not None:
            channel, thread_ts = self._card_of(n, n.thread_of)
            args["thread_ts"] = thread_ts  # always the parent's ts, as a string
            args["reply_broadcast"] = bool(payload.get("reply_broadcast", False))
        if self._needs_lookup(n):
            self._wait_for_channel(n, channel, paced=False)
            found = self._find_post(n, channel, thread_ts)
            if found is not None:
                self._confirm_post(n, channel, found)
            log.info("slack outbox: message #%s was not found in Slack after an unconfirmed "
                     "try (or could not be looked up); posting it again", n.id)
        self._wait_for_channel(n, channel, paced=True)
        if n.thread_of is not None and not payload.get("blocks"):
            joined = merge_thread_replies(self._outbox, n, str(args["text"] or ""),
                                          self._clock.now(),
                                          contended=channel in self._contended)
            args["text"], merged = joined.text, joined.ids
            args["reply_broadcast"] = joined.broadcast
        event: dict[str, Any] = {"outbox_id": self._id(n)}
        if merged:
            event["merged"] = ",".join(str(m) for m in merged)
        args["metadata"] = {"event_type": EVENT_TYPE, "event_payload": event}
        response = self._call(n, channel, lambda: self._post_client.chat_postMessage(
            channel=channel, **args), write=True)
        self._mark_posted(n, channel, str(response["ts"]), merged,
                          str(response.get("channel") or channel))

    def _mark_posted(self, n: Notification, channel: str, ts: str, merged: list[int],
                     posted_in: str) -> NoReturn:
        card_for = n.payload.get("card_for")
        now = self._clock.now()
        # The crash window: Slack has the message; until this commit we do not know it.
        with self._outbox.database.session() as session:
            marked = self._outbox.mark_sent(self._id(n), ts, now=now, session=session)
            if marked:
                for other in merged:
                    self._outbox.mark_sent(other, ts, now=now, session=session,
                                           note=f"merged into #{n.id}")
                if card_for is not None:
                    self._deployments.update_fields(
                        int(card_for), session=session, card_ts=ts, channel=posted_in
                    )
        if not marked:
            # Its lease ran out mid-call and another sender delivered it too.
            log.warning("slack outbox: message #%s was already marked; posted twice (ts %s)",
                        n.id, ts)
        self._delivered(channel)
        raise _Done(True)

    def _update(self, n: Notification) -> NoReturn:
        if n.deployment_id is None:
            self._dead(n, "an update without deployment_id names no card")
        newest = self._outbox.newest_pending_id(n.ordering_key, "update")
        if newest is not None and newest > self._id(n):
            self._outbox.mark_superseded(self._id(n), newest, now=self._clock.now())
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
        self._wait_for(n, UPDATES, None)
        if self._needs_lookup(n) and self._card_shows(n, channel, card_ts):
            self._outbox.mark_sent(self._id(n), card_ts, now=self._clock.now(),
                                   note="confirmed by lookup")
            self._delivered(channel)
            raise _Done(True)
        key = str(n.ordering_key)
        self._wait_for(n, key, self._card_interval)
        self._wait_for(n, UPDATES, self._update_interval)
        self._pace.used(key, self._card_interval)
        self._pace.used(UPDATES, self._update_interval)
        args: dict[str, Any] = {"text": payload.get("text"),
                                "metadata": {"event_type": EVENT_TYPE,
                                             "event_payload": {"outbox_id": self._id(n)}}}
        if "blocks" in payload:
            args["blocks"] = payload["blocks"]
        response = self._call(n, channel, lambda: self._client.chat_update(
            channel=channel, ts=card_ts, **args), write=True)
        self._outbox.mark_sent(self._id(n), str(response.get("ts") or card_ts),
                               now=self._clock.now())
        self._delivered(channel)
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
        response = self._call(n, n.channel, lambda: self._post_client.chat_postEphemeral(
            channel=n.channel, user=user, **args), write=True)
        ts = response.get("message_ts")
        self._outbox.mark_sent(self._id(n), None if ts is None else str(ts),
                               now=self._clock.now())
        self._delivered(n.channel)
        raise _Done(True)

    # -- looking up what may already be in Slack ----------------------------------------------

    @staticmethod
    def _needs_lookup(n: Notification) -> bool:
        """An earlier try may have reached Slack: its answer was lost, or the sender died."""
        if is_unconfirmed(n.last_error):
            return True
        return n.attempts > 1 and n.last_error is None

    def _find_post(self, n: Notification, channel: str,
                   thread_ts: str | None) -> Mapping[str, Any] | None:
        """The message Slack has for ``n`` (by its metadata), or None; on a failed read ``n``
        is handed back, still unconfirmed."""
        oldest = self._outbox.last_sent_ts(str(n.ordering_key), channel, self._id(n),
                                           thread_of=n.thread_of) or thread_ts
        args: dict[str, Any] = {"channel": channel, "include_all_metadata": True,
                                "limit": LOOKUP_PAGE}
        if oldest is not None:
            args["oldest"] = oldest
        for _ in range(LOOKUP_PAGES):
            if thread_ts is not None:
                response = self._read(n, channel, lambda: self._client.conversations_replies(
                    ts=thread_ts, **args))
            else:
                response = self._read(n, channel, lambda: self._client.conversations_history(
                    **args))
            if response is None:
                return None
            for message in response.get("messages") or []:
                if _outbox_id(message) == n.id:
                    return dict(message)
            cursor = (response.get("response_metadata") or {}).get("next_cursor")
            if not response.get("has_more") or not cursor:
                return None
            args["cursor"] = cursor
        log.warning("slack outbox: message #%s not found in the %d newest pages; posting it "
                    "again", n.id, LOOKUP_PAGES)
        return None

    def _find_file(self, n: Notification, channel: str, thread_ts: str,
                   filename: str) -> str | None:
        """The id of a file named ``filename`` shared in the thread ``thread_ts``, or None."""
        args: dict[str, Any] = {"channel": channel, "ts": thread_ts, "limit": LOOKUP_PAGE}
        for _ in range(LOOKUP_PAGES):
            response = self._read(n, channel, lambda: self._client.conversations_replies(
                **args))
            if response is None:
                return None
            for message in response.get("messages") or []:
                for shared in message.get("files") or []:
                    if isinstance(shared, Mapping) and shared.get("name") == filename:
                        return str(shared.get("id") or "?")
            cursor = (response.get("response_metadata") or {}).get("next_cursor")
            if not response.get("has_more") or not cursor:
                return None
            args["cursor"] = cursor
        return None

    def _card_shows(self, n: Notification, channel: str, card_ts: str) -> bool:
        """Whether the card already carries update ``n`` (its metadata names it)."""
        response = self._read(n, channel, lambda: self._client.conversations_history(
            channel=channel, oldest=card_ts, latest=card_ts, inclusive=True, limit=1,
            include_all_metadata=True))
        if response is None:
            return False
        return any(_outbox_id(m) == n.id for m in response.get("messages") or [])

    def _read(self, n: Notification, channel: str,
              call: Callable[[], Any]) -> Mapping[str, Any] | None:
        """A lookup call; None when the bot may not read the channel's history (the message
        then goes out again: at least once). Other failures stop ``n``, still unconfirmed."""
        try:
            return self._call(n, channel, call, write=False)
        except _NoHistory as missing:
            if not self._no_lookup_warned:
                self._no_lookup_warned = True
                log.warning("slack outbox: cannot look messages up (%s: add the "
                            "channels:history and groups:history scopes); a message whose "
                            "answer was lost may be posted twice", missing.detail)
            return None

    def _confirm_post(self, n: Notification, channel: str,
                      message: Mapping[str, Any]) -> NoReturn:
        """Slack has ``n`` already: mark it (and the replies merged into it) sent."""
        event = (message.get("metadata") or {}).get("event_payload") or {}
        merged = [int(m) for m in str(event.get("merged") or "").split(",") if m.isdigit()]
        log.info("slack outbox: message #%s was delivered by an unconfirmed try (ts %s); "
                 "not posting it again", n.id, message.get("ts"))
        self._mark_posted(n, channel, str(message["ts"]), merged, channel)

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

    # -- pacing and blocks --------------------------------------------------------------------

    def _wait_for_channel(self, n: Notification, channel: str, *, paced: bool) -> None:
        """Return if ``channel`` may be written to now; otherwise hand ``n`` back untried."""
        self._hand_back_until(n, self._free_at(channel, paced=paced))

    def _free_at(self, channel: str, *, paced: bool) -> float:
        """The monotonic time ``channel`` may be written to: after its pace (when ``paced``),
        a 429's pause, a block of the channel or of the workspace."""
        free_at = self._pace.free_at(channel, self._interval if paced else None)
        for scope in (WORKSPACE, channel):
            block = self._blocks.get(scope)
            if block is not None:
                free_at = max(free_at, block.until)
        return free_at

    def _wait_for(self, n: Notification, scope: str, interval: float | None) -> None:
        """Return if ``scope`` of :class:`Pace` is free now; otherwise hand ``n`` back."""
        self._hand_back_until(n, self._pace.free_at(scope, interval))

    def _hand_back_until(self, n: Notification, free_at: float) -> None:
        mono = self._monotonic()
        if mono >= free_at:
            return
        self._release(n, self._clock.now() + timedelta(seconds=free_at - mono), None)
        raise _Done(False)

    def _delivered(self, channel: str) -> None:
        """A call in ``channel`` went through: what blocked it (and the token) is fixed."""
        for scope in (WORKSPACE, channel):
            block = self._blocks.pop(scope, None)
            if block is None:
                continue
            self._joined.discard(channel)
            log.warning("slack outbox: delivery %s flows again (it was blocked by %s)",
                        "to Slack" if scope == WORKSPACE else f"to {scope}", block.code)
            if self._pager is not None:
                try:
                    self._pager.unblocked(scope, block.code, block.first_id)
                except Exception:
                    log.exception("slack outbox: could not resolve the delivery page")

    def _block(self, n: Notification, channel: str, failure: _Failure) -> float:
        """Record a blocking failure; the seconds until the scope is probed again."""
        scope = WORKSPACE if failure.code in TOKEN_ERRORS else channel
        block = self._blocks.get(scope)
        if block is None:
            block = self._blocks[scope] = _Block(failure.code, failure.detail, self._id(n))
            where = "every channel" if scope == WORKSPACE else f"channel {channel}"
            log.error("slack outbox: delivery to %s is blocked: %s; messages stay queued and "
                      "go out once it is fixed", where, failure.detail)
            if self._pager is not None:
                try:
                    self._pager.blocked(scope, failure.code, failure.detail, block.first_id)
                except Exception:
                    log.exception("slack outbox: could not page about the blocked delivery")
        block.code, block.detail = failure.code, failure.detail
        block.tries += 1
        delay = backoff(block.tries, BLOCKED_BACKOFF)
        block.until = self._monotonic() + delay
        return delay

    def _try_join(self, channel: str) -> bool:
        """``conversations.join`` once per block of ``channel``; True if the bot is in it."""
        if channel in self._joined:
            return False
        self._joined.add(channel)
        try:
            self._client.conversations_join(channel=channel)
        except Exception as error:
            log.warning("slack outbox: could not join %s after not_in_channel: %s", channel,
                        _classify(error).detail)
            return False
        log.warning("slack outbox: joined %s again (Slack said not_in_channel)", channel)
        return True

    # -- calling Slack ------------------------------------------------------------------------

    def _call(self, n: Notification, channel: str, call: Callable[[], Any], *,
              write: bool) -> Mapping[str, Any]:
        """Make the Slack call; on failure mark ``n`` as the failure deserves and stop.

        ``write``: the call posts or changes a message (so an ambiguous failure leaves ``n``
        unconfirmed); otherwise it is a lookup, and ``n`` keeps what it was.
        """
        if write and n.kind == "post":
            self._pace.used(channel, self._interval)
        try:
            # The call's log lines and span are about the message's deployment (its trace).
            with log_scope(deployment_id=n.deployment_id):
                response = call()
        except Exception as error:
            failure = _classify(error)
        else:
            return response
        now = self._clock.now()
        # A lookup leaves an unconfirmed message unconfirmed; a refused write was not sent.
        unconfirmed = (not write and self._needs_lookup(n)) or (write and failure.ambiguous)
        prefix = UNCONFIRMED if unconfirmed else ""
        if not write and (failure.kind == "permanent" or (
                failure.kind == "blocked" and failure.code not in READ_BLOCKS)):
            # No history scope, or a public channel the bot posts to without being in it
            # (chat:write.public): the lookup cannot be done, the post can.
            raise _NoHistory(failure.detail)
        if failure.kind == "ratelimited":
            # chat.update's limit is the workspace's (Tier 3); a post's is its channel's.
            scope = UPDATES if write and n.kind == "update" else channel
            self._pace.pause(scope, failure.retry_after)
            log.warning("slack outbox: rate limited in %s for %.0fs (message #%s)",
                        scope, failure.retry_after, n.id)
            self._release(n, now + timedelta(seconds=failure.retry_after),
                          prefix + failure.detail)
        elif failure.kind == "blocked":
            if failure.code == "not_in_channel" and self._try_join(channel):
                self._release(n, now, f"{prefix}{failure.detail}; joined the channel")
                raise _Done(True)
            delay = self._block(n, channel, failure)
            # Not an attempt: a blocked message is never given up for it.
            self._release(n, now + timedelta(seconds=delay), f"{prefix}{BLOCKED}{failure.detail}")
        elif failure.kind == "transient":
            if write and failure.ambiguous and n.kind == "ephemeral" and not failure.code:
                # A timeout or a lost connection (Slack answered nothing): an ephemeral
                # message cannot be looked up, and sending it again could show it twice.
                self._outbox.mark_sent(self._id(n), now=now, note=(
                    f"{UNCONFIRMED}{failure.detail}; not sent again (an ephemeral message "
                    "cannot be looked up)"))
                log.warning("slack outbox: ephemeral message #%s may not have been shown (%s)",
                            n.id, failure.detail)
                raise _Done(True)
            policy = self._never_give_up if n.payload.get("card_for") else self._retry
            retry_in = retry_or_give_up(self._outbox, n, prefix + failure.detail, now=now,
                                        policy=policy, not_before=self._settle.total_seconds()
                                        if unconfirmed else 0.0)
            if retry_in is None:
                log.error("slack outbox: gave up on message #%s (%s to %s) after %s attempts: %s",
                          n.id, n.kind, channel, n.attempts, failure.detail)
            else:
                log.info("slack outbox: message #%s failed (%s); retry in %.0fs",
                         n.id, prefix + failure.detail, retry_in)
        else:
            self._outbox.mark_dead(self._id(n), failure.detail)
            log.error("slack outbox: message #%s (%s to %s) can never be delivered: %s",
                      n.id, n.kind, channel, failure.detail)
            if n.kind == "post" and n.payload.get("card_for") is not None:
                self._card_refused(n, int(n.payload["card_for"]), failure.detail)
        raise _Done(True)

    def _card_refused(self, n: Notification, deployment_id: int, detail: str) -> None:
        """Slack refused a request's card for good (``invalid_blocks`` ...): nobody can press
        its Approve button, so the request must not hold its environment (issue 13, finding
        11). It expires, and the channel and the requester are told in plain text (no blocks:
        they may be what Slack refused)."""
        record = self._deployments.get(deployment_id)
        if record is None or record.card_ts:
            return
        why = f"its card could not be posted in Slack ({detail})"
        if not self._deployments.transition(deployment_id, [DeploymentState.PENDING_APPROVAL],
                                            DeploymentState.EXPIRED, error=f"expired: {why}"):
            return  # decided meanwhile, or not a request waiting for its approvals
        what = f"{escape(record.version)} to " if record.version else ""
        text = (f":warning: Request #{deployment_id} ({what}{escape(record.environment)}) "
                f"expired: its card could not be posted (Slack said `{escape(detail)}`), so "
                "nobody could approve it. Nothing was deployed; request it again.")
        self._outbox.enqueue(n.channel, "post", {"text": text},
                             dedup_key=f"card-refused:{deployment_id}")
        self._outbox.enqueue(record.requester, "post", {"text": text},
                             dedup_key=f"card-refused-dm:{deployment_id}")
        log.error("slack outbox: request #%s expired: %s", deployment_id, why)

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


class _NoHistory(Exception):
    """Internal: a lookup was refused for good (no history scope, say)."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


def _upload(url: str, data: bytes, timeout: float | None) -> None:
    """POST a file's bytes to the ``upload_url`` Slack handed out; raise unless it took them."""
    response = httpx.post(url, content=data, timeout=timeout or 30,
                          headers={"Content-Type": "application/octet-stream"})
    if response.status_code != 200:
        raise ConnectionError(f"the file upload was refused: HTTP {response.status_code} "
                              f"{response.text[:200]}")


def _outbox_id(message: Mapping[str, Any]) -> int | None:
    """The outbox id in a Slack message's metadata, if the sender posted it."""
    metadata = message.get("metadata")
    if not isinstance(metadata, Mapping) or metadata.get("event_type") != EVENT_TYPE:
        return None
    payload = metadata.get("event_payload")
    value = payload.get("outbox_id") if isinstance(payload, Mapping) else None
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def _classify(error: Exception) -> _Failure:
    """Rate limit, transient, blocked or permanent, from an exception the Slack call raised.

    *Ambiguous* failures are those after which Slack may have done the work: a 5xx or an
    ``internal_error``-like answer, a timeout while waiting for the answer, a connection closed
    before it. A connection that was never made (``URLError``: refused, no route, DNS) is not.
    """
    if isinstance(error, SlackApiError):
        response = error.response
        status = int(getattr(response, "status_code", 0) or 0)
        try:
            code = str(response.get("error") or "")
        except Exception:  # a body that was not JSON
            code = ""
        detail = f"{code or 'error'} (HTTP {status})" if status != 200 else code or "error"
        if status == 429 or code in RATE_LIMIT_ERRORS:
            return _Failure("ratelimited", detail, _retry_after(response), code=code)
        if status >= 500 or status == 408 or code in TRANSIENT_ERRORS:
            return _Failure("transient", detail, ambiguous=True, code=code or str(status))
        if code in BLOCKING_ERRORS:
            return _Failure("blocked", detail, code=code)
        return _Failure("permanent", detail, code=code)
    detail = f"{type(error).__name__}: {error}"[:500]
    if isinstance(error, URLError):  # raised before the request was sent
        return _Failure("transient", detail)
    # A timeout reading the answer (TimeoutError), a reset or closed connection
    # (ConnectionError, http.client.HTTPException), anything else mid-way: the request may
    # have reached Slack. No ``code``: Slack said nothing.
    return _Failure("transient", detail, ambiguous=True)


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
