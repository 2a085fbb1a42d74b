"""A Slack error someone must fix holds messages back; it never loses them (issue 13,
finding 11): ``invalid_auth``, ``token_revoked``, ``not_in_channel``, ``channel_not_found``
keep the outbox rows pending, page, show in ``/qlp status`` and ``/metrics``, and everything
goes out, once and in order, when the cause is fixed. Also: the answer to a failed lookup
promises only what happens.

The sender runs on the injected clocks of ``test_outbox_sender``'s ``Rig``; the Slack double
refuses the way Slack does (a token it does not know, a channel the bot was removed from).
"""

from __future__ import annotations

import logging

import pytest

from bot.app import make_web_client
from bot.metrics import Metrics
from bot.outbox_sender import SlackOutboxSender
from bot.replies import error_text
from bot.undelivered import DeliveryPager, blocked_gauges, report_lines, undelivered_lines
from procedures.clock import FixedClock
from procedures.errors import ExternalServiceError
from storage.db import Database
from storage.undelivered import read_blocked, read_undelivered
from tests.bot.test_outbox_sender import CHANNEL, Rig
from tests.fakes.bot_harness import BOT_TOKEN, BotHarness
from tests.fakes.policies import make_policy
from tests.fakes.slack_double import SlackDouble


class Pager:
    """Records what the sender tells its pager."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, str]] = []

    def blocked(self, scope: str, code: str, detail: str, first_id: int) -> None:
        self.events.append(("blocked", scope, code))

    def unblocked(self, scope: str, code: str, first_id: int) -> None:
        self.events.append(("unblocked", scope, code))


@pytest.fixture
def pager() -> Pager:
    return Pager()


@pytest.fixture
def rig(database: Database, clock: FixedClock, slack: SlackDouble, pager: Pager) -> Rig:
    return Rig(database, clock, make_web_client(BOT_TOKEN, slack.api_url), pager=pager)


def _run(rig: Rig, seconds: float, step: float = 0.5) -> None:
    """Passes for ``seconds`` of both clocks, a pass every ``step``."""
    for _ in range(int(seconds / step)):
        while rig.sender.run_once():
            pass
        rig.tick(step)


def _thread(slack: SlackDouble, rig: Rig, deployment_id: int) -> list[str]:
    return [line for m in slack.thread(CHANNEL, rig.card_ts(deployment_id))
            for line in m.text.split("\n")]


@pytest.mark.parametrize("error", ["invalid_auth", "token_revoked", "account_inactive"])
@pytest.mark.slow  # 10 s of the fast lane, measured
def test_a_token_error_holds_everything_back_and_loses_nothing(
    rig: Rig, slack: SlackDouble, pager: Pager, error: str
) -> None:
    d = rig.deployment()
    card = rig.card(d, "the card")
    replies = []
    slack.fail_every(1, status=200, error=error)  # Slack refuses the token from now on
    for i in range(17):  # progress keeps coming while Slack refuses the token
        replies.append(rig.reply(d, f"phase {i}"))
        _run(rig, 0.5)
    _run(rig, 8)
    rows = [rig.outbox.get(i) for i in (card, *replies)]
    assert all(r is not None and r.state == "pending" for r in rows)  # nothing given up
    head = rows[0]
    assert head is not None and head.last_error == f"blocked: {error}"
    assert head.attempts == 0  # a blocked try is not an attempt: it never counts to giving up
    assert slack.fault_count() <= 8  # one probe per pause (1, 2, 4 ... s), not one per row
    assert pager.events == [("blocked", "*", error)]
    assert rig.sender.blocked() == {"*": error}

    slack.clear_faults()  # someone fixed the token
    rig.drain(step=1)
    (top,) = slack.messages(CHANNEL)
    assert top.text == "the card"
    assert _thread(slack, rig, d) == [f"phase {i}" for i in range(17)]  # all, once, in order
    assert pager.events[-1] == ("unblocked", "*", error)
    assert rig.sender.blocked() == {}
    assert rig.outbox.undelivered() == []


def test_not_in_a_public_channel_joins_it_once_and_posts(
    rig: Rig, slack: SlackDouble, pager: Pager
) -> None:
    slack.scopes = [s for s in slack.scopes if s != "chat:write.public"]
    slack.remove_bot(CHANNEL)
    d = rig.deployment()
    rig.card(d, "the card")
    rig.reply(d, "phase 0")
    rig.drain()
    assert slack.call_count("conversations.join") == 1
    assert [m.text for m in slack.messages(CHANNEL)] == ["the card"]
    assert _thread(slack, rig, d) == ["phase 0"]
    assert pager.events == []


def test_a_private_channel_the_bot_left_blocks_only_that_channel_until_invited(
    rig: Rig, slack: SlackDouble, pager: Pager, caplog: pytest.LogCaptureFixture
) -> None:
    slack.remove_bot("G0PRIVATE", private=True)
    stuck = [rig.outbox.enqueue("G0PRIVATE", "post", {"text": f"private {i}"},
                                ordering_key="channel:G0PRIVATE") for i in range(3)]
    elsewhere = rig.outbox.enqueue(CHANNEL, "post", {"text": "elsewhere"})
    with caplog.at_level(logging.ERROR, logger="bot.outbox_sender"):
        _run(rig, 8)
    assert rig.outbox.get(elsewhere).state == "sent"  # type: ignore[union-attr]
    for message in stuck:
        row = rig.outbox.get(message)
        assert row is not None and row.state == "pending"
    assert "delivery to channel G0PRIVATE is blocked: channel_not_found" in caplog.text
    assert pager.events == [("blocked", "G0PRIVATE", "channel_not_found")]
    slack.invite_bot("G0PRIVATE")
    rig.drain(step=1)
    assert [m.text for m in slack.messages("G0PRIVATE")] == [f"private {i}" for i in range(3)]
    assert pager.events[-1] == ("unblocked", "G0PRIVATE", "channel_not_found")


@pytest.mark.slow  # 3 s of the fast lane, measured
def test_a_request_card_is_posted_once_slack_takes_it_again(
    rig: Rig, slack: SlackDouble
) -> None:
    d = rig.deployment()
    card = rig.card(d, "Deployment #1: approve?")
    slack.fail_every(1, status=200, error="not_in_channel")
    slack.scopes = [s for s in slack.scopes if s != "channels:join"]  # cannot join by itself
    _run(rig, 30)
    assert rig.outbox.get(card).state == "pending"  # type: ignore[union-attr]
    slack.clear_faults()
    rig.drain(step=1)
    assert rig.card_ts(d) == slack.messages(CHANNEL)[0].ts


@pytest.mark.slow  # 5 s of the fast lane, measured
def test_a_card_is_never_given_up_while_slack_is_down(rig: Rig, slack: SlackDouble) -> None:
    d = rig.deployment()
    card = rig.card(d, "Deployment #1: approve?")
    plain = rig.outbox.enqueue("C0OTHER", "post", {"text": "a plain post"})
    slack.down()
    for _ in range(30):
        rig.sender.run_once()
        rig.tick(61)
    row = rig.outbox.get(card)
    assert row is not None and row.state == "pending" and row.attempts > 20
    assert rig.outbox.get(plain).state == "dead"  # type: ignore[union-attr]
    slack.up()
    rig.drain(step=5)
    assert [m.text for m in slack.messages(CHANNEL)] == ["Deployment #1: approve?"]


def test_status_lines_and_metrics_say_what_blocks_and_what_to_do(
    rig: Rig, slack: SlackDouble, database: Database, clock: FixedClock
) -> None:
    for i in range(3):
        rig.outbox.enqueue(CHANNEL, "post", {"text": f"m{i}"})
    slack.fail_every(1, status=200, error="token_revoked")
    _run(rig, 4)
    lines = undelivered_lines(database, clock.now())
    assert lines[0].startswith(":no_entry: *Slack delivery is blocked*: `token_revoked` "
                               "(the bot's token was revoked")
    assert "3 messages to <#C0DEPLOY> wait" in lines[0]
    assert "go out once it is fixed" in lines[0]
    assert [(b.reason, b.messages) for b in read_blocked(database)] == [("token_revoked", 3)]
    assert blocked_gauges(database) == {"token_revoked": 3.0}
    metrics = Metrics()
    metrics.labelled_gauge("qlp_slack_delivery_blocked", "reason",
                           lambda: blocked_gauges(database))
    assert 'qlp_slack_delivery_blocked{reason="token_revoked"} 3.0' in metrics.render()
    slack.clear_faults()
    rig.drain(step=1)
    assert report_lines(read_undelivered(database, dead_since=clock.now()), clock.now()) == []
    assert blocked_gauges(database) == {}
    assert "qlp_slack_delivery_blocked{" not in metrics.render()


def test_the_pager_pages_on_call_and_resolves(database: Database, clock: FixedClock,
                                               slack: SlackDouble) -> None:
    policy = make_policy(notifications={
        "pagerduty": {"routing_key": "R" * 32},
        "email": {"host": "127.0.0.1", "port": 2525, "from": "qlp@example.com",
                  "to": ["oncall@example.com"]}})
    probe = Rig(database, clock, make_web_client(BOT_TOKEN, slack.api_url))
    rig = Rig(database, clock, make_web_client(BOT_TOKEN, slack.api_url),
              pager=DeliveryPager(probe.outbox, policy))
    rig.outbox.enqueue(CHANNEL, "post", {"text": "hello"})
    slack.fail_every(1, status=200, error="invalid_auth")
    _run(rig, 10)
    slack.clear_faults()
    rig.drain(step=1)
    pages = [n for n in rig.outbox.undelivered(100) if n.kind in ("pagerduty", "email")]
    triggers = [n.payload for n in pages if n.kind == "pagerduty"]
    assert [t["event_action"] for t in triggers] == ["trigger", "resolve"]  # paged once
    assert {t["dedup_key"] for t in triggers} == {"qlp-slack-delivery"}
    assert "invalid_auth" in triggers[0]["payload"]["summary"]
    assert triggers[0]["payload"]["severity"] == "error"
    mails = [n.payload["subject"] for n in pages if n.kind == "email"]
    assert len(mails) == 2 and mails[1].startswith("[qlp] Resolved:")


def test_without_a_route_the_pager_only_logs(database: Database, clock: FixedClock,
                                             slack: SlackDouble) -> None:
    policy = make_policy()
    rig = Rig(database, clock, make_web_client(BOT_TOKEN, slack.api_url))
    pager = DeliveryPager(rig.outbox, policy)
    pager.blocked("*", "invalid_auth", "invalid_auth", 1)
    pager.unblocked("*", "invalid_auth", 1)
    assert rig.outbox.undelivered() == []


def test_qlp_status_shows_the_block(bot: BotHarness, slack: SlackDouble) -> None:
    bot.services.outbox.enqueue(CHANNEL, "post", {"text": "hello"})
    sender = next(t for t in bot.services.worker_tasks() if isinstance(t, SlackOutboxSender))
    slack.remove_bot(CHANNEL, private=True)
    sender.run_once()
    text = bot.command("status").text
    assert ":no_entry: *Slack delivery is blocked*: `channel_not_found`" in text, text
    assert "1 message to <#C0DEPLOY> waits" in text


def test_a_failed_lookup_promises_only_what_happens() -> None:
    error = ExternalServiceError("Slack", "usergroups.users.list did not answer",
                                 retryable=True)
    text = error_text(error)
    assert "will be retried" not in text
    assert "try again in a minute" in text
