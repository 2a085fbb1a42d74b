"""Slack economy under parallel work: coalescing within Slack's pace (issue 14 item 7).

Real parts: the outbox and deployments on SQLite and PostgreSQL, the rows written by the real
``SlackReporter``, the production WebClient over HTTP to the Slack double enforcing Slack's
pace (``chat.postMessage`` one a second per channel with a short burst, ``chat.update`` 50 a
minute per workspace, 429 + ``Retry-After`` beyond). The double's pace and the sender's are
measured on the same manual monotonic clock, so nothing sleeps and the outcome does not depend
on how fast the machine is.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlmodel import col, select

from bot.app import make_web_client
from bot.slack_reporter import SlackReporter
from procedures.clock import FixedClock
from procedures.model import DeploymentState, ProcedureKind
from procedures.reporting import RunSnapshot
from storage.db import Database
from storage.models import Notification
from tests.bot.test_outbox_sender import CHANNEL, ManualMonotonic, Rig
from tests.fakes.bot_harness import BOT_TOKEN
from tests.fakes.slack_double import SlackDouble

OTHER = "C0OTHER"


@pytest.fixture
def mono() -> ManualMonotonic:
    return ManualMonotonic()


@pytest.fixture
def slack(mono: ManualMonotonic) -> Iterator[SlackDouble]:
    """The double with Slack's pace on the test's monotonic clock."""
    double = SlackDouble(token=BOT_TOKEN, pace_clock=mono)
    double.start()
    yield double
    double.stop()


@pytest.fixture
def rig(database: Database, clock: FixedClock, slack: SlackDouble, mono: ManualMonotonic
        ) -> Rig:
    return Rig(database, clock, make_web_client(BOT_TOKEN, slack.api_url), mono,
               settle=timedelta(seconds=5))


class Runs:
    """Deployments reporting through the real ``SlackReporter`` (one per channel used)."""

    def __init__(self, rig: Rig) -> None:
        self.rig = rig
        self._reporters: dict[str, SlackReporter] = {}

    def reporter(self, channel: str = CHANNEL) -> SlackReporter:
        if channel not in self._reporters:
            self._reporters[channel] = SlackReporter(
                self.rig.outbox, channel=channel, zone=ZoneInfo("UTC"), clock=self.rig.clock)
        return self._reporters[channel]

    def snapshot(self, d: int, state: DeploymentState = DeploymentState.RUNNING,
                 **changes: Any) -> RunSnapshot:
        run = RunSnapshot(deployment_id=d, kind=ProcedureKind.STANDARD, version="v1.2.3",
                          environment=f"env{d}", requester="U0DEV", state=state,
                          created_at=self.rig.clock.now(), approvals_required=1)
        return replace(run, **changes)

    def start(self, channel: str = CHANNEL) -> int:
        """A new deployment whose card is requested (as the request flow does)."""
        d = self.rig.deployment()
        self.reporter(channel).run_changed(self.snapshot(d, DeploymentState.QUEUED))
        return d

    def say(self, d: int, text: str, *, channel: str = CHANNEL, broadcast: bool = False,
            state: DeploymentState = DeploymentState.RUNNING) -> None:
        self.reporter(channel).event(self.snapshot(d, state), text, broadcast=broadcast)

    def card_update(self, d: int, state: DeploymentState, step: str) -> None:
        self.reporter().run_changed(self.snapshot(d, state, current_step=step))


@pytest.fixture
def runs(rig: Rig) -> Runs:
    return Runs(rig)


def _thread(slack: SlackDouble, rig: Rig, d: int, channel: str = CHANNEL) -> list[str]:
    """The lines of deployment ``d``'s thread (merged posts split back into replies)."""
    return [line for m in slack.thread(channel, rig.card_ts(d)) for line in m.text.split("\n")]


def _sent_rows(rig: Rig) -> list[Notification]:
    """Every outbox row, in id order."""
    with rig.outbox.database.session(read_only=True) as s:
        return list(s.exec(select(Notification).order_by(col(Notification.id))).all())


# -- merged replies -------------------------------------------------------------------------


@pytest.mark.slow  # 4 s of the fast lane, measured
def test_queued_replies_of_many_threads_appear_once_each_in_order(
    rig: Rig, runs: Runs, slack: SlackDouble
) -> None:
    deployments = [runs.start() for _ in range(4)]
    rig.drain()
    for i in range(6):  # interleaved, as parallel runs write them
        for d in deployments:
            runs.say(d, f"#{d} phase {i}")
    rig.drain()
    for d in deployments:
        assert _thread(slack, rig, d) == [f"#{d} phase {i}" for i in range(6)]
    replies = [c for c in slack.calls("chat.postMessage") if "thread_ts" in c.args]
    # One post per thread: each carried its thread's six queued replies.
    assert len(replies) == len(deployments)
    assert slack.paced_refusals() == []  # the sender kept Slack's pace by itself
    rows = [r for r in _sent_rows(rig) if r.thread_of is not None]
    assert {r.state for r in rows} == {"sent"}
    for d in deployments:
        thread_rows = [r for r in rows if r.thread_of == d]
        assert len({r.slack_ts for r in thread_rows}) == 1  # marked with the one post's ts
        head, *merged = thread_rows
        metadata = slack.metadata_of(str(head.slack_ts))
        assert metadata is not None and metadata["event_payload"] == {
            "outbox_id": head.id, "merged": ",".join(str(r.id) for r in merged)}
        assert all(r.last_error == f"merged into #{head.id}" for r in merged)


def test_alone_in_its_channel_a_broadcast_reply_leads_its_own_post(
    rig: Rig, runs: Runs, slack: SlackDouble
) -> None:
    d = runs.start()
    rig.drain()
    runs.say(d, "step 1")
    runs.say(d, "step 2")
    runs.say(d, "Traffic switched", broadcast=True)
    runs.say(d, "step 3")
    rig.drain()
    runs.say(d, "step 4")  # alone in the queue: a plain reply stays in the thread
    rig.drain()
    posts = [c for c in slack.calls("chat.postMessage") if "thread_ts" in c.args]
    # The channel sees the notable line first; what was queued behind it goes along.
    assert [(c.args["text"], c.args["reply_broadcast"]) for c in posts] == [
        ("step 1\nstep 2", False), ("Traffic switched\nstep 3", True), ("step 4", False)]
    (card,) = slack.messages(CHANNEL)
    assert [m.broadcast for m in slack.thread(CHANNEL, card.ts)] == [False, True, False]


# -- superseded card updates ---------------------------------------------------------------


def test_superseded_updates_are_kept_not_sent_and_the_final_card_is(
    rig: Rig, runs: Runs, slack: SlackDouble
) -> None:
    d = runs.start()
    rig.drain()
    steps = ["build", "deploy", "smoke", "switch", "monitor"]
    for step in steps:
        runs.card_update(d, DeploymentState.RUNNING, step)
    rig.drain()
    (call,) = slack.calls("chat.update")
    updates = [r for r in _sent_rows(rig) if r.kind == "update"][1:]  # after the card's own
    assert len(updates) == len(steps)
    *superseded, final = updates
    assert call.args["metadata"]["event_payload"] == {"outbox_id": final.id}
    assert final.state == "sent" and final.slack_ts == rig.card_ts(d)
    for row in superseded:  # nothing lost from the record of what the bot meant to say
        assert row.state == "superseded" and row.slack_ts is None
        assert row.last_error == f"superseded by #{final.id}"
    (card,) = slack.messages(CHANNEL)
    assert card.text == final.payload["text"] and card.blocks == final.payload["blocks"]


@pytest.mark.slow
def test_card_updates_keep_the_workspace_pace_of_chat_update(
    rig: Rig, runs: Runs, slack: SlackDouble
) -> None:
    deployments = [runs.start() for _ in range(15)]
    rig.drain()
    for d in deployments:
        runs.card_update(d, DeploymentState.RUNNING, "deploy")
    rig.drain(step=0.1)
    assert slack.served_count("chat.update") == 15
    assert slack.paced_refusals("chat.update") == []  # 1.2 s apart: Tier 3's 50 a minute


# -- urgent first ---------------------------------------------------------------------------


@pytest.mark.slow  # 4 s of the fast lane, measured
def test_urgent_rows_jump_the_channel_queue(rig: Rig, runs: Runs, slack: SlackDouble) -> None:
    busy = [runs.start() for _ in range(5)]
    failing = runs.start()
    rig.drain()
    for d in busy:
        runs.say(d, f"#{d} progress")
    runs.say(failing, "quiet progress")  # older than the failure, same thread: stays first
    runs.say(failing, "✗ Monitoring failed. Rolling back.", broadcast=True,
             state=DeploymentState.ROLLING_BACK)
    newcomer = runs.rig.deployment()  # a request asking for approval while the channel is busy
    runs.reporter().run_changed(runs.snapshot(newcomer, DeploymentState.PENDING_APPROVAL))
    rig.drain()
    posts = slack.calls("chat.postMessage")[6:]  # after the six cards
    order = [c.args["text"] if "thread_ts" in c.args else "card" for c in posts]
    # The failing run's thread and the newcomer's card (approval asked) go before the other
    # threads' older progress, the urgent among themselves oldest first; within the failing
    # thread its order holds, in one broadcast post while other threads wait (one turn each).
    assert order[:2] == ["quiet progress\n✗ Monitoring failed. Rolling back.", "card"]
    assert posts[0].args["reply_broadcast"] is True
    assert sorted(order[2:]) == sorted(f"#{d} progress" for d in busy)


# -- rate limits per channel ----------------------------------------------------------------


def test_a_429_on_one_channel_does_not_delay_another(
    rig: Rig, runs: Runs, slack: SlackDouble
) -> None:
    a = runs.start(CHANNEL)
    b = runs.start(OTHER)
    rig.drain()
    runs.say(a, "a1", channel=CHANNEL)
    runs.say(b, "b1", channel=OTHER)
    slack.fail_next("chat.postMessage", status=429, retry_after=30)  # a1's call (older)
    rig.tick(1.0)  # both channels free of their cards' pace
    rig.sender.run_once()
    assert _thread(slack, rig, b, OTHER) == ["b1"]  # same pass: B was not held
    assert _thread(slack, rig, a, CHANNEL) == []
    for i in range(2, 5):
        rig.tick(1.0)
        runs.say(b, f"b{i}", channel=OTHER)
        rig.sender.run_once()
    assert _thread(slack, rig, b, OTHER) == ["b1", "b2", "b3", "b4"]
    assert _thread(slack, rig, a, CHANNEL) == []  # still inside its Retry-After
    rig.tick(27.5)
    rig.drain()
    assert _thread(slack, rig, a, CHANNEL) == ["a1"]
    row = next(r for r in _sent_rows(rig) if r.payload.get("text") == "a1")
    assert row.attempts == 1  # the 429 was not counted as a try


def test_the_double_refuses_posts_beyond_the_pace_per_channel(
    slack: SlackDouble, mono: ManualMonotonic
) -> None:
    client = make_web_client(BOT_TOKEN, slack.api_url)
    for i in range(3):  # the burst
        client.chat_postMessage(channel=CHANNEL, text=f"burst {i}")
    with pytest.raises(Exception) as refused:
        client.chat_postMessage(channel=CHANNEL, text="too fast")
    response = refused.value.response  # type: ignore[attr-defined]
    assert response.status_code == 429 and response["error"] == "ratelimited"
    assert {k.lower(): v for k, v in response.headers.items()}["retry-after"] == "1"
    client.chat_postMessage(channel=OTHER, text="another channel is not held")
    mono.advance(1.0)
    client.chat_postMessage(channel=CHANNEL, text="a second later")
    assert [m.text for m in slack.messages(CHANNEL)] == [
        "burst 0", "burst 1", "burst 2", "a second later"]
    assert slack.paced_refusals() == [CHANNEL]


# -- exactly once ---------------------------------------------------------------------------


def test_a_merged_post_whose_answer_is_lost_is_found_not_posted_again(
    rig: Rig, runs: Runs, slack: SlackDouble
) -> None:
    d = runs.start()
    rig.drain()
    for i in range(4):
        runs.say(d, f"line {i}")
    slack.drop_answer("chat.postMessage")
    rig.tick(1.0)
    rig.sender.run_once()
    rows = [r for r in _sent_rows(rig) if r.thread_of == d]
    head = rows[0]
    assert (head.last_error or "").startswith("unconfirmed: ")
    assert {r.state for r in rows} == {"pending"}  # none marked: the answer never came
    rig.drain()
    assert _thread(slack, rig, d) == [f"line {i}" for i in range(4)]  # once each
    rows = [r for r in _sent_rows(rig) if r.thread_of == d]
    assert {r.state for r in rows} == {"sent"}
    assert len({r.slack_ts for r in rows}) == 1
    assert slack.call_count("conversations.replies") == 1
