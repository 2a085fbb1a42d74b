"""Coalescing Slack messages within Slack's pace: what the outbox sender sends together.

Slack takes about one ``chat.postMessage`` a second per channel (short bursts allowed) and
``chat.update`` at Tier 3 (about 50 a minute per workspace). With many deployments reporting
into one channel, a message per event falls behind. ``bot.outbox_sender`` therefore:

- posts a thread's queued replies as one message (:func:`merge_thread_replies`): each thread
  reply has its thread's own ordering key (``bot.slack_reporter.thread_key``), so everything
  queued behind the key's head belongs to that thread, in order. The post's metadata names
  every merged row and all are marked sent together (exactly once, lookups included);
- marks a card update that a newer queued update of the same card replaces as ``superseded``
  (never sent, still kept);
- serves urgent keys first (``storage.outbox.URGENT``, ordered by ``Outbox.claim_due``);
- keeps its own pace per scope (:class:`Pace`): a channel for posts, :data:`UPDATES` for
  ``chat.update`` across the workspace, and a 429's ``Retry-After`` for the scope that got it
  alone, so one channel's rate limit never holds another's messages.
"""

from __future__ import annotations

from collections.abc import Callable
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

    ``monotonic`` measures real elapsed time (tests pass a controllable one). Kept in memory:
    a restarted sender forgets it, which costs at worst one early call (and a 429).
    """

    def __init__(self, monotonic: Callable[[], float]) -> None:
        self._monotonic = monotonic
        self._last: dict[str, float] = {}  # scope -> monotonic time of the last paced call
        self._paused_until: dict[str, float] = {}  # scope -> end of a 429's Retry-After

    def free_at(self, scope: str, interval: float | None) -> float:
        """The monotonic time ``scope`` is free (its pause over, ``interval`` after its last
        paced call when ``interval`` is given)."""
        free = self._paused_until.get(scope, 0.0)
        if interval is not None and scope in self._last:
            free = max(free, self._last[scope] + interval)
        return free

    def used(self, scope: str) -> None:
        """A paced call in ``scope`` starts now."""
        self._last[scope] = self._monotonic()

    def pause(self, scope: str, seconds: float) -> None:
        """Slack said 429 for ``scope``: nothing goes there for ``seconds``."""
        self._paused_until[scope] = max(self._paused_until.get(scope, 0.0),
                                        self._monotonic() + seconds)


def mergeable(head: Notification, other: Notification, now: datetime) -> bool:
    """Whether ``other``, queued behind ``head`` in its key, may be posted with it."""
    payload = other.payload
    return (other.kind == "post" and other.thread_of == head.thread_of
            and not payload.get("blocks") and not payload.get("card_for")
            and not payload.get("file")
            and bool(payload.get("reply_broadcast", False))
            == bool(head.payload.get("reply_broadcast", False))
            and (other.next_attempt_at is None or other.next_attempt_at <= now))


def merge_thread_replies(outbox: Outbox, head: Notification, text: str, now: datetime,
                         ) -> tuple[str, list[int]]:
    """``text`` followed by the replies queued right behind ``head`` for the same thread,
    one per line, in order; and the ids merged.

    Stops at the first row that cannot join (a broadcast reply after a plain one, a chart,
    blocks) so order within the thread holds. The rows are not claimed: while ``head`` is
    its key's claimed head, no other sender sends them (``Outbox.pending_after``).
    """
    assert head.id is not None
    merged: list[int] = []
    for other in outbox.pending_after(str(head.ordering_key), head.id, MERGE_ROWS):
        addition = str(other.payload.get("text") or "")
        if not mergeable(head, other, now) or len(text) + 1 + len(addition) > MERGED_TEXT_LIMIT:
            break
        assert other.id is not None
        text = f"{text}\n{addition}"
        merged.append(other.id)
    return text, merged
