"""``SlackReporter``: what the engine reports becomes outbox messages, never Slack calls.

The engine calls :meth:`SlackReporter.run_changed` and :meth:`SlackReporter.event`; each call
only *writes* notifications (``storage.outbox.Outbox``), which ``bot.outbox_sender`` delivers.
The reporter keeps nothing in memory: whether a deployment's card was already requested is
answered by the outbox's dedup key ``card:<id>``, and the card's ``ts`` lives on the
deployment row, so a restarted bot continues the same card and the same thread.

Message formats (the contract with :class:`bot.outbox_sender.SlackOutboxSender`):

- the card, once per deployment: kind ``post``, payload
  ``{"text", "blocks", "card_for": <deployment id>}``, ordering key ``channel:<channel>``,
  dedup key ``card:<id>``;
- every later change of the card: kind ``update``, payload
  ``{"text", "blocks", "card_post": <id of the card's post>}``, ``deployment_id`` set,
  ordering key ``card:<id>`` (its own key: updates never wait behind thread replies, and the
  sender coalesces a run of them into one ``chat.update``);
- a thread reply: kind ``post``, payload ``{"text", "reply_broadcast", "card_post"}``,
  ``thread_of`` = the deployment id, ordering key ``thread:<id>`` (in order among themselves;
  after the card, whose ``ts`` the sender waits for). One key per thread, not per channel: the
  sender can then serve many deployments' threads in one channel within Slack's pace, each
  post carrying every reply its thread has queued (``bot.outbox_sender``), and one thread
  waiting for its card holds no other thread back.

Priority (``storage.outbox.URGENT``): the card post (it asks for approval, and every reply of
its thread waits for it), and a broadcast reply or a card update while the run waits for
approval, fails, rolls back or needs attention; the sender serves those first in the channel.
"""

from __future__ import annotations

from typing import Any
from zoneinfo import ZoneInfo

from bot.cards import render_card
from procedures.clock import Clock
from procedures.model import DeploymentState
from procedures.reporting import RunSnapshot
from procedures.store import NotificationQueue
from storage.outbox import NORMAL, URGENT

URGENT_STATES = frozenset({DeploymentState.PENDING_APPROVAL, DeploymentState.ROLLING_BACK,
                           DeploymentState.ROLLED_BACK, DeploymentState.FAILED,
                           DeploymentState.NEEDS_ATTENTION})
"""States in which what the card and the broadcast replies say must be seen first."""


def channel_key(channel: str) -> str:
    """Ordering key of everything posted into ``channel`` (cards and thread replies)."""
    return f"channel:{channel}"


def thread_key(deployment_id: int) -> str:
    """Ordering key of the replies in one deployment's card thread."""
    return f"thread:{deployment_id}"


def card_key(deployment_id: int) -> str:
    """Ordering key of the updates of one deployment's card."""
    return f"card:{deployment_id}"


def card_dedup_key(deployment_id: int) -> str:
    """Dedup key of a deployment's card post: there is only ever one."""
    return f"card:{deployment_id}"


class SlackReporter:
    """A :class:`procedures.reporting.Reporter` that writes Slack messages to the outbox.

    One card per deployment in ``channel``, updated in place; one thread reply per
    :meth:`event`. ``zone`` is the policy's time zone for the times on the card.
    """

    def __init__(
        self, outbox: NotificationQueue, *, channel: str, zone: ZoneInfo, clock: Clock
    ) -> None:
        self._outbox = outbox
        self._channel = channel
        self._zone = zone
        self._clock = clock

    def run_changed(self, run: RunSnapshot) -> None:
        """Re-render the card: posted the first time, ``chat.update``-d after that.

        The post is enqueued with the dedup key ``card:<id>`` every time (a no-op after the
        first), then an update with the same content. The very first update is redundant
        (the post already carries that content) and costs one ``chat.update``; in exchange the
        reporter needs no memory and no read, and the card can never be left showing an older
        rendering.
        """
        text, blocks = self._render(run)
        post_id = self._ensure_card(run, text, blocks)
        self._outbox.enqueue(
            self._channel,
            "update",
            {"text": text, "blocks": blocks, "card_post": post_id},
            deployment_id=run.deployment_id,
            ordering_key=card_key(run.deployment_id),
            priority=URGENT if run.state in URGENT_STATES else NORMAL,
        )

    def event(self, run: RunSnapshot, text: str, *, broadcast: bool = False,
              dedup_key: str | None = None) -> None:
        """One reply in the card's thread (also shown in the channel when ``broadcast``).

        ``text`` is Slack mrkdwn, written by the engine: it is sent as it is. The card post is
        ensured first, so a reply is never enqueued before its card. With ``dedup_key`` the
        reply is enqueued at most once, however often it is asked for (timed phases).
        """
        card_text, blocks = self._render(run)
        post_id = self._ensure_card(run, card_text, blocks)
        self._outbox.enqueue(
            self._channel,
            "post",
            {"text": text, "reply_broadcast": bool(broadcast), "card_post": post_id},
            thread_of=run.deployment_id,
            ordering_key=thread_key(run.deployment_id),
            dedup_key=dedup_key,
            priority=URGENT if broadcast and run.state in URGENT_STATES else NORMAL,
        )

    def _render(self, run: RunSnapshot) -> tuple[str, list[dict[str, Any]]]:
        return render_card(run, zone=self._zone, now=self._clock.now())

    def _ensure_card(self, run: RunSnapshot, text: str, blocks: list[dict[str, Any]]) -> int:
        """Enqueue the card post unless it already was; the id of the (first) card post."""
        return self._outbox.enqueue(
            self._channel,
            "post",
            {"text": text, "blocks": blocks, "card_for": run.deployment_id},
            deployment_id=run.deployment_id,
            ordering_key=channel_key(self._channel),
            dedup_key=card_dedup_key(run.deployment_id),
            priority=URGENT,
        )
