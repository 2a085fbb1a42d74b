"""Coalescing Slack messages within Slack's pace: what the outbox sender sends together.

Slack takes about one ``chat.postMessage`` a second per channel (short bursts allowed) and
``chat.update`` at Tier 3 (about 50 a minute per workspace). With many deployments reporting
into one channel, a message per event falls behind. ``bot.outbox_sender`` therefore:

- posts a thread's queued replies as one message (:func:`merge_thread_replies`): each thread
  reply has its thread's own ordering key (``bot.slack_reporter.thread_key``), so everything
  queued behind the key's head belongs to that thread, in order. The post's metadata names
  every merged row and all are marked sent together (exactly once, lookups included). A
  broadcast reply starts a post of its own (its line is what the channel shows first) and
  takes the replies queued behind it along, broadcast with it; but while other threads wait
  for the same channel, a thread gets one post per turn, everything it has queued, broadcast
  if any of it is: that is what keeps 20 threads within Slack's pace;
- marks a card update that a newer queued update of the same card replaces as ``superseded``
  (never sent, still kept);
- serves urgent keys first (``storage.outbox.URGENT``, ordered by ``Outbox.claim_due``);
- keeps its own pace per scope (:class:`Pace`): a channel for posts, :data:`UPDATES` for
  ``chat.update`` across the workspace, and a 429's ``Retry-After`` for the scope that got it
  alone, so one channel's rate limit never holds another's messages.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from storage.models import Notification
from storage.outbox import Outbox

MERGED_TEXT_LIMIT = 3500
"""Merged thread replies stay well inside Slack's 4,000-character text guidance."""
MERGE_ROWS = 50
"""At most this many queued replies go into one post."""

UPDATES = "chat.update"
"""The :class:`Pace` scope of ``chat.update`` (a per-workspace Tier 3 method)."""
DEFAULT_UPDATE_INTERVAL = 60 / 50
"""Seconds between two ``chat.update`` calls of the workspace: Tier 3's 50 a minute."""


class Pace:
    """When each scope (a channel, or :data:`UPDATES`) may be written to next.

    One call per ``interval`` on average, and up to ``burst`` calls back to back after a
    quiet spell (Slack allows short bursts): the generic cell rate algorithm, which keeps per
    scope only the time its calls would be due if each took exactly ``interval``. The burst
    also absorbs the sender's polling delay, so a busy channel gets its full one a second.
    ``monotonic`` measures real elapsed time (tests pass a controllable one). Kept in memory:
    a restarted sender forgets it, which costs at worst one early call (and a 429).
    """

    def __init__(self, monotonic: Callable[[], float], burst: int = 1) -> None:
        self._monotonic = monotonic
        self._burst = burst
        self._due: dict[str, float] = {}  # scope -> theoretical time of its next call
        self._paused_until: dict[str, float] = {}  # scope -> end of a 429's Retry-After

    def free_at(self, scope: str, interval: float | None) -> float:
        """The monotonic time ``scope`` is free (its pause over, and its pace when
        ``interval`` is given)."""
        free = self._paused_until.get(scope, 0.0)
        if interval is not None and scope in self._due:
            free = max(free, self._due[scope] - (self._burst - 1) * interval)
        return free

    def used(self, scope: str, interval: float = 0.0) -> None:
        """A paced call in ``scope`` starts now (``interval``: its scope's pace)."""
        now = self._monotonic()
        self._due[scope] = max(self._due.get(scope, now), now) + interval

    def pause(self, scope: str, seconds: float) -> None:
        """Slack said 429 for ``scope``: nothing goes there for ``seconds``."""
        self._paused_until[scope] = max(self._paused_until.get(scope, 0.0),
                                        self._monotonic() + seconds)


def mergeable(head: Notification, other: Notification, now: datetime, *,
              contended: bool = False) -> bool:
    """Whether ``other``, queued behind ``head`` in its key, may be posted with it: a plain
    head stops before a broadcast reply (which leads its own post) unless ``contended``
    (other threads wait for the channel); a broadcast head takes any reply."""
    payload = other.payload
    return (other.kind == "post" and other.thread_of == head.thread_of
            and not payload.get("blocks") and not payload.get("card_for")
            and not payload.get("file")
            and (contended or bool(head.payload.get("reply_broadcast", False))
                 or not payload.get("reply_broadcast", False))
            and (other.next_attempt_at is None or other.next_attempt_at <= now))


@dataclass(frozen=True)
class Merged:
    """One post made of a thread's head reply and the replies queued behind it."""

    text: str
    ids: list[int]  # the rows merged behind the head (not the head itself)
    broadcast: bool  # shown in the channel too (any of them is a broadcast reply)


def merge_thread_replies(outbox: Outbox, head: Notification, text: str, now: datetime, *,
                         contended: bool = False) -> Merged:
    """``text`` followed by the replies queued right behind ``head`` for the same thread,
    one per line, in order.

    Stops at the first row that cannot join (a broadcast reply behind a plain head when the
    channel is not ``contended``, a chart, blocks, a row handed back for later) or would make
    the text too long, so order within the thread holds. The rows are not
    claimed: while ``head`` is its key's claimed head, no other sender sends them
    (``Outbox.pending_after``).
    """
    assert head.id is not None
    merged: list[int] = []
    broadcast = bool(head.payload.get("reply_broadcast", False))
    for other in outbox.pending_after(str(head.ordering_key), head.id, MERGE_ROWS):
        addition = str(other.payload.get("text") or "")
        if (not mergeable(head, other, now, contended=contended)
                or len(text) + 1 + len(addition) > MERGED_TEXT_LIMIT):
            break
        assert other.id is not None
        text = f"{text}\n{addition}"
        merged.append(other.id)
        broadcast = broadcast or bool(other.payload.get("reply_broadcast", False))
    return Merged(text, merged, broadcast)
