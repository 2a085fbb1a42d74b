"""The Slack outbox sender against the Slack double: order, threads, coalescing, faults, pacing.

Real parts: the outbox and deployments on SQLite and PostgreSQL, the production WebClient
(``bot.app.make_web_client``) over HTTP to the strict Slack double. Time is injected: the
outbox clock and the pacing clock only move when the test says so; nothing sleeps.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from slack_sdk import WebClient

from bot.app import make_web_client
from bot.outbox_sender import SLACK_KINDS, SlackOutboxSender, backoff
from procedures.clock import FixedClock
from procedures.model import ProcedureKind
from storage.db import Database
from storage.deployments import DeploymentRepository
from storage.outbox import Outbox
from tests.conftest import _Factory
from tests.fakes.bot_harness import BOT_TOKEN
from tests.fakes.slack_double import SlackDouble

CHANNEL = "C0DEPLOY"


class ManualMonotonic:
    """A monotonic clock that moves only when told (the sender's pacing clock)."""

    def __init__(self, start: float = 1000.0) -> None:
        self.value = start

    def __call__(self) -> float:
        return self.value

    def advance(self, seconds: float) -> None:
        self.value += seconds


class Rig:
    """A sender over a database, a Slack double, a fixed clock and a manual monotonic clock."""

    def __init__(self, database: Database, clock: FixedClock, client: WebClient,
                 mono: ManualMonotonic | None = None, **options: Any) -> None:
        self.clock = clock
        self.mono = mono or ManualMonotonic()
        self.outbox = Outbox(database, clock)
        self.deployments = DeploymentRepository(database, clock)
        self.sender = SlackOutboxSender(self.outbox, self.deployments, client, clock,
                                        monotonic=self.mono, **options)

    def tick(self, seconds: float) -> None:
        """Let ``seconds`` pass on both clocks."""
        self.clock.advance(timedelta(seconds=seconds))
        self.mono.advance(seconds)

    def drain(self, step: float = 0.5, limit: int = 1000) -> int:
        """Run passes, letting ``step`` seconds pass between them, until nothing is pending."""
        for passes in range(limit):
            while self.sender.run_once():
                pass
            if not self.sender.busy():
                return passes
            self.tick(step)
        raise AssertionError(f"still pending after {limit} passes: {self.outbox.undelivered()}")

    def deployment(self) -> int:
        created = self.deployments.create(ProcedureKind.STANDARD, "v1.2.3", "production", "U0DEV")
        assert created.id is not None
        return created.id

    def card(self, deployment_id: int, text: str = "card", channel: str = CHANNEL) -> int:
        """Enqueue a deployment's card post as the reporter does."""
        return self.outbox.enqueue(
            channel, "post", {"text": text, "blocks": _blocks(text), "card_for": deployment_id},
            deployment_id=deployment_id, ordering_key=f"channel:{channel}",
            dedup_key=f"card:{deployment_id}")

    def reply(self, deployment_id: int, text: str, *, broadcast: bool = False,
              channel: str = CHANNEL) -> int:
        return self.outbox.enqueue(
            channel, "post", {"text": text, "reply_broadcast": broadcast},
            thread_of=deployment_id, ordering_key=f"channel:{channel}")

    def update(self, deployment_id: int, text: str, card_post: int | None = None) -> int:
        payload: dict[str, Any] = {"text": text, "blocks": _blocks(text)}
        if card_post is not None:
            payload["card_post"] = card_post
        return self.outbox.enqueue(CHANNEL, "update", payload, deployment_id=deployment_id,
                                   ordering_key=f"card:{deployment_id}")

    def card_ts(self, deployment_id: int) -> str:
        deployment = self.deployments.get(deployment_id)
        assert deployment is not None and deployment.card_ts is not None
        return deployment.card_ts


def _blocks(text: str) -> list[dict[str, Any]]:
    return [{"type": "section", "block_id": "b", "text": {"type": "mrkdwn", "text": text}}]


@pytest.fixture
def client(slack: SlackDouble) -> WebClient:
    """The production client (connection-error retries, no 429 retries) pointed at the double."""
    return make_web_client(BOT_TOKEN, slack.api_url)


@pytest.fixture
def rig(database: Database, clock: FixedClock, client: WebClient) -> Rig:
    return Rig(database, clock, client)


def _texts(messages: list[Any]) -> list[str]:
    return [m.text for m in messages]


def _lines(messages: list[Any]) -> list[str]:
    """Reply texts as lines: replies queued together are merged into one post."""
    return [line for m in messages for line in m.text.split("\n")]


# -- threads and order --------------------------------------------------------------------------


def test_card_then_five_replies_in_its_thread(rig: Rig, slack: SlackDouble) -> None:
    d = rig.deployment()
    card = rig.card(d, "Deployment #1")
    replies = [rig.reply(d, f"phase {i}") for i in range(5)]
    rig.drain()
    (top,) = slack.messages(CHANNEL)
    assert top.text == "Deployment #1"
    assert rig.card_ts(d) == top.ts
    assert rig.deployments.get(d).channel == CHANNEL  # type: ignore[union-attr]
    assert rig.outbox.get(card).slack_ts == top.ts  # type: ignore[union-attr]
    thread = slack.thread(CHANNEL, top.ts)
    assert _lines(thread) == [f"phase {i}" for i in range(5)]
    assert len(thread) == 1  # queued together, posted together: one call, not five
    posts = slack.calls("chat.postMessage")
    assert [c.args.get("thread_ts") for c in posts] == [None, top.ts]
    assert all(isinstance(c.args["thread_ts"], str) for c in posts[1:])
    assert all(c.args["unfurl_links"] is False and c.args["unfurl_media"] is False
               for c in posts)
    for reply_id in replies:
        assert rig.outbox.get(reply_id).slack_ts == thread[0].ts  # type: ignore[union-attr]


def test_broadcast_replies_are_shown_in_the_channel_too(rig: Rig, slack: SlackDouble) -> None:
    d = rig.deployment()
    rig.card(d)
    rig.reply(d, "quiet")
    rig.reply(d, "rolled back", broadcast=True)
    rig.drain()
    (top,) = slack.messages(CHANNEL)
    assert [(m.text, m.broadcast) for m in slack.thread(CHANNEL, top.ts)] == [
        ("quiet", False), ("rolled back", True)]
    assert [c.args["reply_broadcast"] for c in slack.calls("chat.postMessage")[1:]] == [
        False, True]


def test_ten_pending_updates_make_one_chat_update_with_the_last_content(
    rig: Rig, slack: SlackDouble
) -> None:
    d = rig.deployment()
    rig.card(d, "v0")
    rig.drain()
    updates = [rig.update(d, f"v{i}") for i in range(1, 11)]
    rig.drain()
    (call,) = slack.calls("chat.update")
    assert call.args["ts"] == rig.card_ts(d) and call.args["text"] == "v10"
    (top,) = slack.messages(CHANNEL)
    assert (top.text, top.blocks, top.updates) == ("v10", _blocks("v10"), 1)
    for superseded in updates[:-1]:
        row = rig.outbox.get(superseded)
        assert row is not None and row.state == "superseded" and row.slack_ts is None
        assert row.last_error == f"superseded by #{updates[-1]}"
    assert rig.outbox.get(updates[-1]).slack_ts == top.ts  # type: ignore[union-attr]


def test_an_update_waits_for_its_card_without_counting_attempts(
    rig: Rig, slack: SlackDouble
) -> None:
    d = rig.deployment()
    other = rig.deployment()
    blocker = rig.card(other, "someone else's card")  # holds the channel key for a moment
    card = rig.card(d, "v0")
    update = rig.update(d, "v1", card_post=card)
    slack.fail_next("chat.postMessage", status=503, times=1)
    assert rig.sender.run_once()  # the blocker fails (503), the update is handed back
    assert slack.call_count("chat.update") == 0
    row = rig.outbox.get(update)
    assert row is not None and (row.state, row.attempts) == ("pending", 0)
    assert row.last_error == "waiting for the card to be posted"
    rig.drain()
    assert rig.outbox.get(blocker).state == "sent"  # type: ignore[union-attr]
    top = next(m for m in slack.messages(CHANNEL) if m.ts == rig.card_ts(d))
    assert (top.text, top.updates) == ("v1", 1)
    assert rig.outbox.get(update).attempts == 1  # type: ignore[union-attr]


def test_ephemeral_messages(rig: Rig, slack: SlackDouble) -> None:
    rig.outbox.enqueue(CHANNEL, "ephemeral", {"user": "U0DEV", "text": "only you"})
    broken = rig.outbox.enqueue(CHANNEL, "ephemeral", {"text": "no user"})
    rig.drain()
    assert _texts(slack.ephemerals("U0DEV", channel=CHANNEL)) == ["only you"]
    assert rig.outbox.get(broken).state == "dead"  # type: ignore[union-attr]


def test_other_kinds_are_left_to_their_senders(rig: Rig, slack: SlackDouble) -> None:
    page = rig.outbox.enqueue("pd", "pagerduty", {"summary": "undo failed"})
    mail = rig.outbox.enqueue("ops", "email", {"to": "ops@example.com"})
    assert rig.sender.run_once() is False
    assert rig.sender.busy() is False
    assert slack.call_count() == 0
    for message in (page, mail):
        row = rig.outbox.get(message)
        assert row is not None and (row.state, row.attempts) == ("pending", 0)
    assert set(SLACK_KINDS) == {"post", "update", "ephemeral"}


# -- faults -------------------------------------------------------------------------------------


@pytest.mark.slow  # 11 s of the fast lane, measured
def test_429_on_every_third_call_delivers_everything_once_in_order(
    rig: Rig, slack: SlackDouble
) -> None:
    first, second = rig.deployment(), rig.deployment()
    ids = [rig.card(first, "card 1"), rig.card(second, "card 2")]
    expected: dict[int, list[str]] = {first: [], second: []}
    for i in range(8):
        for d in (first, second):
            ids.append(rig.reply(d, f"#{d} phase {i}"))
            expected[d].append(f"#{d} phase {i}")
        ids.append(rig.update(first, f"card 1 v{i}"))
    slack.pace(clock=rig.mono)  # Slack's pace on the test's clock, as the sender's
    slack.fail_every(3, status=429, retry_after=1)
    rig.drain(step=0.25)

    assert slack.fault_count() > 5
    assert _texts(slack.messages(CHANNEL)) == ["card 1 v7", "card 2"]  # the newest update won
    tops = {m.text.split(" v")[0]: m for m in slack.messages(CHANNEL)}
    for d, name in ((first, "card 1"), (second, "card 2")):
        assert _texts(slack.thread(CHANNEL, tops[name].ts)) == expected[d]
    served = [c.args["text"] for c in slack.calls("chat.postMessage") if not c.faulted]
    assert len(served) == len(set(served)) == 2 + 16  # nothing twice
    assert rig.outbox.undelivered() == []
    # A rate limit is not an attempt: every message that reached Slack was counted once.
    rows = [rig.outbox.get(i) for i in ids]
    assert {r.attempts for r in rows if r is not None and r.slack_ts} == {1}


def test_a_429_pauses_the_channel_for_retry_after(rig: Rig, slack: SlackDouble) -> None:
    d = rig.deployment()
    rig.card(d)
    other = rig.outbox.enqueue(CHANNEL, "post", {"text": "other key"}, ordering_key="x")
    slack.fail_next("chat.postMessage", status=429, retry_after=5)
    rig.sender.run_once()
    assert slack.call_count("chat.postMessage") == 1  # the 429; the other post is held back
    rig.tick(4)
    rig.sender.run_once()
    assert slack.call_count("chat.postMessage") == 1
    rig.tick(1)
    rig.drain()
    assert slack.served_count("chat.postMessage") == 2
    assert rig.outbox.get(other).state == "sent"  # type: ignore[union-attr]


@pytest.mark.slow  # 11 s of the fast lane, measured
def test_slack_down_then_up_loses_nothing_and_keeps_order(rig: Rig, slack: SlackDouble) -> None:
    d = rig.deployment()
    rig.card(d)
    for i in range(4):
        rig.reply(d, f"phase {i}")
    rig.update(d, "card v2")
    slack.down()
    for _ in range(60):  # a minute of outage, a pass every second
        rig.sender.run_once()
        rig.tick(1)
    assert slack.messages(CHANNEL) == []
    head = rig.outbox.undelivered()[0]
    assert head.state == "pending" and 3 <= head.attempts < 20
    assert "HTTP 503" in (head.last_error or "")
    slack.up()
    rig.drain(step=1)
    (top,) = slack.messages(CHANNEL)
    assert top.text == "card v2"
    assert _lines(slack.thread(CHANNEL, top.ts)) == [f"phase {i}" for i in range(4)]
    assert rig.outbox.undelivered() == []


def test_backoff_doubles_up_to_a_minute() -> None:
    assert [backoff(n) for n in (1, 2, 3, 4, 5, 6, 7, 8, 20)] == [
        1, 2, 4, 8, 16, 32, 60, 60, 60]


@pytest.mark.slow  # 5 s of the fast lane, measured
def test_gives_up_after_twenty_attempts(
    rig: Rig, slack: SlackDouble, caplog: pytest.LogCaptureFixture
) -> None:
    message = rig.outbox.enqueue(CHANNEL, "post", {"text": "doomed"})
    later = rig.outbox.enqueue(CHANNEL, "post", {"text": "later"})  # same key, behind it
    slack.down()
    with caplog.at_level(logging.ERROR, logger="bot.outbox_sender"):
        for _ in range(25):
            rig.sender.run_once()
            rig.tick(61)
    row = rig.outbox.get(message)
    assert row is not None and row.state == "dead" and row.attempts == 20
    assert row.last_error is not None and row.last_error.startswith("gave up after 20 attempts")
    assert "gave up on message" in caplog.text
    # A 503 may hide a post Slack took: each later try looks the message up first (and the
    # lookup fails too while Slack is down), so each message was posted once.
    assert slack.call_count("chat.postMessage") == 2
    assert slack.call_count("chat.postMessage") + slack.call_count(
        "conversations.history") == 20 + 5  # then the next message's tries
    slack.up()
    rig.drain()
    assert rig.outbox.get(later).state == "sent"  # type: ignore[union-attr]


def test_a_permanent_error_is_dead_at_once_and_others_flow(
    rig: Rig, slack: SlackDouble, caplog: pytest.LogCaptureFixture
) -> None:
    # (not_in_channel was the example here: it now blocks, see test_outbox_blocked.py)
    gone = rig.outbox.enqueue("C0GONE", "post", {"text": "too long for Slack"},
                              ordering_key="channel:C0GONE")
    after_gone = rig.outbox.enqueue("C0GONE", "post", {"text": "next in that key"},
                                    ordering_key="channel:C0GONE")
    elsewhere = rig.outbox.enqueue(CHANNEL, "post", {"text": "elsewhere"},
                                   ordering_key=f"channel:{CHANNEL}")
    slack.fail_next("chat.postMessage", error="msg_too_long")
    with caplog.at_level(logging.ERROR, logger="bot.outbox_sender"):
        rig.drain()
    row = rig.outbox.get(gone)
    assert row is not None and (row.state, row.last_error, row.attempts) == (
        "dead", "msg_too_long", 1)
    assert "can never be delivered: msg_too_long" in caplog.text
    assert rig.outbox.get(after_gone).state == "sent"  # type: ignore[union-attr]
    assert rig.outbox.get(elsewhere).state == "sent"  # type: ignore[union-attr]
    assert slack.call_count("chat.postMessage") == 3


def test_a_dead_card_takes_its_replies_and_updates_with_it(rig: Rig, slack: SlackDouble) -> None:
    d = rig.deployment()
    card = rig.card(d)
    reply = rig.outbox.enqueue(CHANNEL, "post", {"text": "r", "card_post": card},
                               thread_of=d, ordering_key=f"channel:{CHANNEL}")
    update = rig.update(d, "v1", card_post=card)
    slack.fail_next("chat.postMessage", error="invalid_blocks")
    rig.drain()
    assert rig.outbox.get(card).state == "dead"  # type: ignore[union-attr]
    for message in (reply, update):
        row = rig.outbox.get(message)
        assert row is not None and row.state == "dead"
        assert "was never posted" in (row.last_error or "")
    assert rig.sender.busy() is False


def test_a_reply_without_card_post_waits_then_gives_up(rig: Rig, slack: SlackDouble) -> None:
    d = rig.deployment()
    reply = rig.reply(d, "orphan")
    rig.sender.run_once()
    assert rig.outbox.get(reply).state == "pending"  # type: ignore[union-attr]
    rig.tick(6 * 3600)
    rig.drain()
    assert rig.outbox.get(reply).state == "dead"  # type: ignore[union-attr]
    assert slack.call_count() == 0


def test_connection_errors_are_retried(database: Database, clock: FixedClock,
                                       slack: SlackDouble) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    dead_client = WebClient(token=BOT_TOKEN, base_url=f"http://127.0.0.1:{port}/api/",
                            timeout=2, retry_handlers=[])
    rig = Rig(database, clock, dead_client)
    message = rig.outbox.enqueue(CHANNEL, "post", {"text": "hello"})
    assert rig.sender.run_once() is True  # never raises
    row = rig.outbox.get(message)
    assert row is not None and row.state == "pending" and row.attempts == 1
    assert "URLError" in (row.last_error or "") or "Connection" in (row.last_error or "")
    assert row.next_attempt_at == clock.now() + timedelta(seconds=1)
    working = Rig(database, clock, make_web_client(BOT_TOKEN, slack.api_url), mono=rig.mono)
    working.drain()
    assert _texts(slack.messages(CHANNEL)) == ["hello"]


def test_an_update_for_a_missing_deployment_is_dead(rig: Rig, slack: SlackDouble) -> None:
    update = rig.outbox.enqueue(CHANNEL, "update", {"text": "x"}, ordering_key="card:999")
    rig.drain()
    assert rig.outbox.get(update).state == "dead"  # type: ignore[union-attr]


# -- pacing -------------------------------------------------------------------------------------


def test_one_post_per_channel_per_interval(database: Database, clock: FixedClock,
                                           client: WebClient, slack: SlackDouble) -> None:
    rig = Rig(database, clock, client, burst=1)  # no back-to-back burst: the bare interval
    slack.pace(clock=rig.mono)  # Slack's pace on the test's clock, as the sender's
    ids = [rig.outbox.enqueue(CHANNEL, "post", {"text": f"p{i}"}, ordering_key=f"k{i}")
           for i in range(5)]
    elsewhere = rig.outbox.enqueue("C0OTHER", "post", {"text": "other channel"},
                                   ordering_key="k-other")
    assert rig.sender.run_once() is True
    assert _texts(slack.messages(CHANNEL)) == ["p0"]  # 5 due, 1 sent
    assert _texts(slack.messages("C0OTHER")) == ["other channel"]  # not held back
    assert rig.outbox.get(elsewhere).state == "sent"  # type: ignore[union-attr]
    assert rig.sender.run_once() is False  # nothing may go yet; nothing done
    assert len(slack.messages(CHANNEL)) == 1
    held = rig.outbox.get(ids[1])
    assert held is not None and (held.state, held.attempts) == ("pending", 0)
    rig.tick(0.5)
    rig.sender.run_once()
    assert len(slack.messages(CHANNEL)) == 1
    rig.tick(0.5)
    rig.sender.run_once()
    assert _texts(slack.messages(CHANNEL)) == ["p0", "p1"]
    rig.drain(step=0.25)
    assert _texts(slack.messages(CHANNEL)) == [f"p{i}" for i in range(5)]
    times = [c.at for c in slack.calls("chat.postMessage") if c.args["channel"] == CHANNEL]
    assert len(times) == 5
    assert rig.mono.value >= 1000.0 + 4.0  # four intervals passed on the pacing clock


def test_updates_and_ephemerals_are_not_paced_as_posts(
    database: Database, clock: FixedClock, client: WebClient, slack: SlackDouble
) -> None:
    rig = Rig(database, clock, client, burst=1)  # the card used the channel's whole pace
    d = rig.deployment()
    rig.card(d)
    rig.drain()
    rig.update(d, "v1")
    rig.outbox.enqueue(CHANNEL, "ephemeral", {"user": "U0DEV", "text": "psst"})
    rig.outbox.enqueue(CHANNEL, "post", {"text": "a post"}, ordering_key="z")
    rig.sender.run_once()  # no time has passed since the card was posted
    assert slack.call_count("chat.update") == 1
    assert slack.call_count("chat.postEphemeral") == 1
    assert slack.call_count("chat.postMessage") == 1  # only the card: the post is paced
    rig.tick(1)
    rig.sender.run_once()
    assert slack.call_count("chat.postMessage") == 2


class SlowMonotonic(ManualMonotonic):
    """Every reading is 20 s later than the one before: a pass that crawls."""

    def __call__(self) -> float:
        self.value += 20
        return self.value


def test_a_slow_pass_gives_the_rest_of_its_batch_back(
    database: Database, clock: FixedClock, client: WebClient, slack: SlackDouble
) -> None:
    rig = Rig(database, clock, client, mono=SlowMonotonic())
    ids = [rig.outbox.enqueue(f"C{i}", "post", {"text": f"m{i}"}) for i in range(4)]
    assert rig.sender.run_once() is True
    assert slack.call_count("chat.postMessage") == 1  # then half the 60 s lease was used up
    for message in ids[1:]:
        row = rig.outbox.get(message)
        assert row is not None and (row.state, row.attempts) == ("pending", 0)
        assert row.next_attempt_at == clock.now()  # due again at once, not after the lease
    rig.drain()
    assert slack.call_count("chat.postMessage") == 4


# -- restart ------------------------------------------------------------------------------------


@pytest.fixture
def reopen(database: Database, database_factory: _Factory) -> Iterator[Database]:
    """A second Database on the same URL: what a restarted process opens."""
    yield database_factory.open(database.url.render_as_string(hide_password=False))


def test_a_restarted_sender_continues_the_thread(
    rig: Rig, slack: SlackDouble, reopen: Database, clock: FixedClock
) -> None:
    d = rig.deployment()
    rig.card(d, "the card")
    rig.reply(d, "before restart")
    rig.drain()
    restarted = Rig(reopen, clock, make_web_client(BOT_TOKEN, slack.api_url))
    restarted.reply(d, "after restart")
    restarted.update(d, "the card, updated")
    restarted.drain()
    (top,) = slack.messages(CHANNEL)
    assert top.text == "the card, updated"
    assert _texts(slack.thread(CHANNEL, top.ts)) == ["before restart", "after restart"]
