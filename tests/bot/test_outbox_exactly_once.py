"""Exactly-once Slack posts (issue 13, finding 8): a post whose answer is lost is looked up by
the outbox id in its metadata before it is posted again.

The Slack double hangs calls for real (``hang_then_accept``) while the client gives up sooner,
so Slack stores a message whose sender saw only a timeout. The unit tests run the sender with
the injected clocks of ``test_outbox_sender``'s ``Rig``; they wait (briefly, on the wall
clock) for the hung calls to be stored before the next pass, as ``settle`` does in
production. The deployment test runs the real bot on the wall clock, scaled down tenfold:
calls hang 1.2 s against a 1 s client timeout (12 s against 10 s in the finding).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from bot.app import make_web_client
from bot.outbox_sender import EVENT_TYPE
from procedures.clock import FixedClock, SystemClock
from procedures.model import DeploymentState
from storage.db import Database
from storage.outbox import Outbox
from tests.bot.test_outbox_sender import CHANNEL, Rig
from tests.conftest import ON_POSTGRES_ONLY
from tests.fakes.bot_harness import BOT_TOKEN, BotHarness
from tests.fakes.policies import make_policy
from tests.fakes.slack_double import SlackDouble
from tests.fakes.slack_views import ALWAYS_OPEN
from tests.fakes.slack_views import card as _card

HANG = 0.6  # seconds the double takes over a chat.* call before storing it
TIMEOUT = 0.3  # the client gives up first


def _client(slack: SlackDouble, timeout: float = TIMEOUT) -> WebClient:
    client = make_web_client(BOT_TOKEN, slack.api_url)
    client.timeout = timeout
    return client


def _settled(slack: SlackDouble) -> None:
    """Wait until every call the double received has been answered (stored): what ``settle``
    waits for in production, on the wall clock."""
    slack.wait_for(lambda: len(slack.arrivals()) == slack.call_count(), timeout=10)


def _drain(rig: Rig, slack: SlackDouble, passes: int = 200) -> None:
    for _ in range(passes):
        while rig.sender.run_once():
            _settled(slack)
        _settled(slack)
        if not rig.sender.busy():
            return
        rig.tick(0.5)
    raise AssertionError(f"still pending: {rig.outbox.undelivered()}")


@pytest.fixture
def rig(database: Database, clock: FixedClock, slack: SlackDouble) -> Rig:
    return Rig(database, clock, make_web_client(BOT_TOKEN, slack.api_url))


@pytest.fixture
def hung(database: Database, clock: FixedClock, slack: SlackDouble) -> Rig:
    slack.hang_then_accept(HANG)
    return Rig(database, clock, _client(slack))


def _lines(messages: list[Any]) -> list[str]:
    return [line for m in messages for line in m.text.split("\n")]


@pytest.mark.slow  # 9 s of the fast lane, measured
def test_a_card_and_replies_accepted_late_appear_once_in_order(
    hung: Rig, slack: SlackDouble
) -> None:
    d = hung.deployment()
    card = hung.card(d, "the card")
    replies = []
    for i in range(4):
        replies.append(hung.reply(d, f"phase {i}"))
        _drain(hung, slack)  # one by one: each reply is its own post, each one times out
    (top,) = slack.messages(CHANNEL)
    assert top.text == "the card" and hung.card_ts(d) == top.ts
    thread = slack.thread(CHANNEL, top.ts)
    assert [m.text for m in thread] == [f"phase {i}" for i in range(4)]  # once each, in order
    posts = slack.calls("chat.postMessage")
    assert len(posts) == 5  # never posted again
    for call, outbox_id in zip(posts, [card, *replies], strict=True):
        assert call.args["metadata"] == {"event_type": EVENT_TYPE,
                                         "event_payload": {"outbox_id": outbox_id}}
    assert slack.metadata_of(top.ts) == {"event_type": EVENT_TYPE,
                                         "event_payload": {"outbox_id": card}}
    # Each lost answer was followed by a lookup that found the message.
    assert slack.call_count("conversations.history") == 1
    assert slack.call_count("conversations.replies") == 4
    for call in slack.calls("conversations.replies") + slack.calls("conversations.history"):
        assert call.args["include_all_metadata"] in ("1", "true", True)
    replies_calls = slack.calls("conversations.replies")
    assert replies_calls[0].args["oldest"] == top.ts  # the first reply: from the card on
    assert replies_calls[-1].args["oldest"] == thread[-2].ts  # later: from the last one known
    rows = [hung.outbox.get(i) for i in (card, *replies)]
    assert [r.slack_ts for r in rows if r] == [top.ts, *[m.ts for m in thread]]
    assert all(r is not None and r.state == "sent" for r in rows)


@pytest.mark.slow  # 4 s of the fast lane, measured
def test_merged_replies_found_by_lookup_are_all_marked(hung: Rig, slack: SlackDouble) -> None:
    d = hung.deployment()
    hung.card(d)
    _drain(hung, slack)
    ids = [hung.reply(d, f"r{i}") for i in range(3)]
    _drain(hung, slack)
    (top,) = slack.messages(CHANNEL)
    (merged,) = slack.thread(CHANNEL, top.ts)
    assert merged.text == "r0\nr1\nr2"
    assert slack.metadata_of(merged.ts) == {
        "event_type": EVENT_TYPE,
        "event_payload": {"outbox_id": ids[0], "merged": f"{ids[1]},{ids[2]}"}}
    for i in ids:
        row = hung.outbox.get(i)
        assert row is not None and (row.state, row.slack_ts) == ("sent", merged.ts)


@pytest.mark.slow  # 3 s of the fast lane, measured
def test_a_5xx_that_stored_nothing_is_posted_again_once(rig: Rig, slack: SlackDouble) -> None:
    d = rig.deployment()
    rig.card(d)
    rig.drain()
    reply = rig.reply(d, "after the outage")
    slack.fail_next("chat.postMessage", status=500)
    rig.tick(1)  # the channel's pacing
    rig.sender.run_once()
    row = rig.outbox.get(reply)
    assert row is not None and row.state == "pending"
    assert row.last_error == "unconfirmed: internal_error (HTTP 500)"
    rig.drain()
    (top,) = slack.messages(CHANNEL)
    assert [m.text for m in slack.thread(CHANNEL, top.ts)] == ["after the outage"]
    assert slack.call_count("conversations.replies") == 1  # looked up: not there; posted
    assert slack.served_count("chat.postMessage") == 2


def test_a_connection_closed_after_slack_stored_the_post_is_not_posted_twice(
    rig: Rig, slack: SlackDouble
) -> None:
    """The production client retries closed connections by itself; a post must not be."""
    d = rig.deployment()
    rig.card(d)
    rig.drain()
    reply = rig.reply(d, "once")
    slack.drop_answer("chat.postMessage")
    rig.tick(1)
    rig.sender.run_once()
    row = rig.outbox.get(reply)
    assert row is not None and (row.last_error or "").startswith("unconfirmed: ")
    assert slack.call_count("chat.postMessage") == 2  # the card, and this one: no SDK retry
    rig.drain()
    (top,) = slack.messages(CHANNEL)
    assert [m.text for m in slack.thread(CHANNEL, top.ts)] == ["once"]
    assert slack.call_count("conversations.replies") == 1


def test_a_retry_waits_at_least_the_settle_time(database: Database, clock: FixedClock,
                                                  slack: SlackDouble) -> None:
    rig = Rig(database, clock, _client(slack), settle=timedelta(seconds=10))
    message = rig.outbox.enqueue(CHANNEL, "post", {"text": "hello"})
    slack.fail_next("chat.postMessage", status=503)
    rig.sender.run_once()
    row = rig.outbox.get(message)
    assert row is not None and row.next_attempt_at == clock.now() + timedelta(seconds=10)


@pytest.mark.slow  # 3 s of the fast lane, measured
def test_an_update_accepted_late_is_confirmed_not_resent(hung: Rig, slack: SlackDouble) -> None:
    d = hung.deployment()
    hung.card(d, "v0")
    _drain(hung, slack)
    update = hung.update(d, "v1")
    _drain(hung, slack)
    (top,) = slack.messages(CHANNEL)
    assert (top.text, top.updates) == ("v1", 1)
    assert slack.call_count("chat.update") == 1
    row = hung.outbox.get(update)
    assert row is not None and (row.state, row.last_error) == ("sent", "confirmed by lookup")


def test_an_ephemeral_whose_answer_was_lost_is_not_shown_twice(
    hung: Rig, slack: SlackDouble, caplog: pytest.LogCaptureFixture
) -> None:
    message = hung.outbox.enqueue(CHANNEL, "ephemeral", {"user": "U0DEV", "text": "psst"})
    with caplog.at_level(logging.WARNING, logger="bot.outbox_sender"):
        _drain(hung, slack)
    assert [m.text for m in slack.ephemerals("U0DEV")] == ["psst"]
    row = hung.outbox.get(message)
    assert row is not None and row.state == "sent"
    assert (row.last_error or "").startswith("unconfirmed: ")
    assert "may not have been shown" in caplog.text


def test_a_crash_after_slack_took_the_post_does_not_post_twice(
    rig: Rig, slack: SlackDouble, monkeypatch: pytest.MonkeyPatch
) -> None:
    d = rig.deployment()
    rig.card(d)
    rig.drain()
    reply = rig.reply(d, "just once")
    real = Outbox.mark_sent

    def database_fails(*args: Any, **kwargs: Any) -> bool:
        raise RuntimeError("the database went away")

    rig.tick(1)  # the channel's pacing
    monkeypatch.setattr(Outbox, "mark_sent", database_fails)
    rig.sender.run_once()  # Slack has it; the mark failed: its lease brings it back
    monkeypatch.setattr(Outbox, "mark_sent", real)
    row = rig.outbox.get(reply)
    assert row is not None and (row.state, row.attempts, row.last_error) == ("pending", 1, None)
    rig.tick(61)
    rig.drain()
    (top,) = slack.messages(CHANNEL)
    assert [m.text for m in slack.thread(CHANNEL, top.ts)] == ["just once"]
    assert slack.call_count("conversations.replies") == 1


def test_without_the_history_scope_it_falls_back_to_posting_again(
    database: Database, clock: FixedClock, slack: SlackDouble,
    caplog: pytest.LogCaptureFixture
) -> None:
    slack.scopes = [s for s in slack.scopes if not s.endswith(":history")]
    rig = Rig(database, clock, _client(slack))
    message = rig.outbox.enqueue(CHANNEL, "post", {"text": "hello"})
    slack.fail_next("chat.postMessage", status=503)
    with caplog.at_level(logging.WARNING, logger="bot.outbox_sender"):
        rig.drain()
    assert rig.outbox.get(message).state == "sent"  # type: ignore[union-attr]
    assert "cannot look messages up" in caplog.text
    assert [m.text for m in slack.messages(CHANNEL)] == ["hello"]


# -- the double behaves as Slack does ---------------------------------------------------------


def test_the_double_checks_metadata_and_returns_it_only_when_asked(slack: SlackDouble) -> None:
    client = make_web_client(BOT_TOKEN, slack.api_url)
    for bad, error in (({"event_payload": {"a": 1}}, "invalid_metadata_schema"),
                       ({"event_type": "", "event_payload": {}}, "invalid_metadata_schema"),
                       ({"event_type": "x", "event_payload": "no"}, "invalid_metadata_schema"),
                       ("not json", "invalid_metadata_format")):
        with pytest.raises(SlackApiError) as refused:
            client.chat_postMessage(channel=CHANNEL, text="x", metadata=bad)  # type: ignore[arg-type]
        assert refused.value.response["error"] == error
    assert slack.messages(CHANNEL) == []
    meta = {"event_type": "qlp_outbox", "event_payload": {"outbox_id": 7}}
    top = client.chat_postMessage(channel=CHANNEL, text="card", metadata=meta)
    client.chat_postMessage(channel=CHANNEL, text="reply", thread_ts=top["ts"], metadata=meta)
    plain = client.conversations_history(channel=CHANNEL)["messages"]
    assert [m.get("metadata") for m in plain] == [None]
    full = client.conversations_replies(channel=CHANNEL, ts=top["ts"],
                                        include_all_metadata=True)["messages"]
    assert [m["metadata"] for m in full] == [meta, meta]
    with pytest.raises(SlackApiError) as unknown:
        client.conversations_history(channel=CHANNEL, include_all_metdata=True)
    assert unknown.value.response["error"] == "invalid_arguments"


# -- a whole deployment while every chat.* call hangs ------------------------------------------


@pytest.fixture
def hung_bot(database: Database, slack: SlackDouble, tmp_path: Path) -> Iterator[BotHarness]:
    policy = make_policy(real_ports=True, windows=ALWAYS_OPEN,
                         monitoring={"duration": "3s", "interval": "1s"})
    harness = BotHarness(database=database, policy=policy, clock=SystemClock(),
                         home=tmp_path / "home", slack=slack)
    harness.services.slack.timeout = 1.0  # 10 s, scaled down tenfold
    slack.hang_then_accept(1.2)  # 12 s, scaled down tenfold: Slack takes each one late
    harness.services.start_worker()
    yield harness
    harness.close()


@ON_POSTGRES_ONLY
@pytest.mark.slow  # the local platform's processes; the hangs are on the wall clock
def test_a_deployment_while_slack_accepts_every_chat_call_late(hung_bot: BotHarness) -> None:
    bot, slack = hung_bot, hung_bot.slack
    deployments = bot.services.deployments
    response = bot.command("deploy v1.0.0")
    assert "Deployment #1 requested" in response.text
    card = bot.wait_for(lambda: _card(slack, 1), timeout=30, what="the card")
    bot.press("qlp_approve", "1", user="U0LEAD2", message_ts=card.ts)
    bot.wait_for(lambda: deployments.get(1).state.terminal, timeout=120, what="the run")
    assert deployments.get(1).state is DeploymentState.SUCCEEDED, deployments.get(1).error
    outbox = bot.services.outbox
    bot.wait_for(lambda: outbox.pending_count(("post", "update")) == 0, timeout=120,
                 what="everything to be delivered")
    slack.wait_for(lambda: len(slack.arrivals()) == slack.call_count(), timeout=10)

    # Every reply the bot meant to post is in the thread exactly once, in the bot's order.
    with bot.services.database.session(read_only=True) as session:
        from sqlmodel import col, select

        from storage.models import Notification
        rows = list(session.exec(select(Notification).where(
            col(Notification.thread_of) == 1, col(Notification.kind) == "post")
            .order_by(col(Notification.id))).all())
    # The monitoring chart (a file, on its own ordering key) is counted apart: shared once.
    meant = [line for row in rows if not row.payload.get("file")
             for line in str(row.payload["text"]).split("\n")]
    assert all(row.state == "sent" for row in rows), [(r.id, r.state, r.last_error)
                                                      for r in rows]
    (top,) = [m for m in slack.messages("C0DEPLOY") if m.ts == deployments.get(1).card_ts]
    thread = slack.thread("C0DEPLOY", top.ts)
    assert len([m for m in thread if m.files]) == 1
    shown = _lines([m for m in thread if not m.files])
    assert shown == meant
    assert len(shown) == len(set(shown)) >= 5
    assert any("Deployed v1.0.0 to production" in line for line in shown)
    assert len(slack.messages("C0DEPLOY")) == 1  # one card
    posts = slack.call_count("chat.postMessage")
    lookups = slack.call_count("conversations.replies") + slack.call_count(
        "conversations.history")
    assert lookups >= posts  # each lost answer was looked up
    print(f"chat.postMessage: {posts} calls, every answer lost, none posted twice; "
          f"{lookups} lookups; {len(shown)} thread lines from {len(rows)} outbox rows")
