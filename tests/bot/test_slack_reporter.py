"""SlackReporter + SlackOutboxSender: one card per deployment, updated in place, and its thread."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from slack_sdk import WebClient

from bot import actions
from bot.app import make_web_client
from bot.cards import render_card
from bot.slack_reporter import SlackReporter
from procedures.clock import FixedClock
from procedures.model import DeploymentState, ProcedureKind, StepState
from procedures.reporting import RunSnapshot, StepSnapshot
from storage.db import Database
from tests.bot.test_outbox_sender import CHANNEL, Rig
from tests.fakes.bot_harness import BOT_TOKEN
from tests.fakes.slack_double import SlackDouble

ZONE = ZoneInfo("UTC")


@pytest.fixture
def client(slack: SlackDouble) -> WebClient:
    return make_web_client(BOT_TOKEN, slack.api_url)


@pytest.fixture
def rig(database: Database, clock: FixedClock, client: WebClient) -> Rig:
    return Rig(database, clock, client)


def _reporter(rig: Rig) -> SlackReporter:
    return SlackReporter(rig.outbox, channel=CHANNEL, zone=ZONE, clock=rig.clock)


def _snapshot(rig: Rig, deployment_id: int, state: DeploymentState, **changes: Any
              ) -> RunSnapshot:
    run = RunSnapshot(
        deployment_id=deployment_id, kind=ProcedureKind.STANDARD, version="v1.2.3",
        environment="production", requester="U0DEV", state=state,
        created_at=rig.clock.now(), approvals_required=1,
    )
    return replace(run, **changes)


def _action_ids(blocks: list[dict[str, Any]]) -> list[str]:
    return [e["action_id"] for b in blocks if b["type"] == "actions" for e in b["elements"]]


def test_one_card_updated_in_place_and_a_thread(rig: Rig, slack: SlackDouble) -> None:
    reporter = _reporter(rig)
    d = rig.deployment()
    pending = _snapshot(rig, d, DeploymentState.PENDING_APPROVAL)
    reporter.run_changed(pending)
    rig.drain()
    (card,) = slack.messages(CHANNEL)
    assert _action_ids(card.blocks) == [actions.APPROVE, actions.REJECT]

    reporter.event(pending, "Approved by <@U0LEAD1>")
    steps = (StepSnapshot("build", "Build image", StepState.SUCCEEDED, 1, rig.clock.now(),
                          rig.clock.now() + timedelta(seconds=30)),
             StepSnapshot("switch", "Switch traffic", StepState.RUNNING, 1, rig.clock.now()))
    running = replace(pending, state=DeploymentState.RUNNING, approvers=("U0LEAD1",),
                      started_at=rig.clock.now(), steps=steps)
    reporter.run_changed(running)
    reporter.event(running, "Build image done (30s)")
    rig.tick(60)
    done = replace(running, state=DeploymentState.SUCCEEDED,
                   finished_at=rig.clock.now(),
                   steps=(steps[0], replace(steps[1], state=StepState.SUCCEEDED,
                                            finished_at=rig.clock.now())))
    reporter.run_changed(done)
    reporter.event(done, ":white_check_mark: v1.2.3 is live on production", broadcast=True)
    rig.drain()

    (card,) = slack.messages(CHANNEL)  # still one card: updated, never posted again
    text, blocks = render_card(done, zone=ZONE, now=rig.clock.now())
    assert (card.text, card.blocks) == (text, blocks)
    assert _action_ids(card.blocks) == [actions.ROLLBACK]
    assert 1 <= card.updates <= 3
    # The two quiet replies were queued together and merged; the broadcast one stands alone.
    assert [(m.text, m.broadcast) for m in slack.thread(CHANNEL, card.ts)] == [
        ("Approved by <@U0LEAD1>\nBuild image done (30s)", False),
        (":white_check_mark: v1.2.3 is live on production", True),
    ]
    reply_calls = slack.calls("chat.postMessage")[1:]
    assert [c.args["reply_broadcast"] for c in reply_calls] == [False, True]
    assert {c.args["thread_ts"] for c in reply_calls} == {card.ts}
    assert rig.card_ts(d) == card.ts


def test_the_outbox_rows_follow_the_contract(rig: Rig) -> None:
    reporter = _reporter(rig)
    d = rig.deployment()
    run = _snapshot(rig, d, DeploymentState.QUEUED)
    reporter.run_changed(run)
    reporter.run_changed(run)
    reporter.event(run, "queued behind #0")
    rows = rig.outbox.undelivered()
    assert [(r.kind, r.ordering_key, r.dedup_key) for r in rows] == [
        ("post", f"channel:{CHANNEL}", f"card:{d}"),
        ("update", f"card:{d}", None),
        ("update", f"card:{d}", None),
        ("post", f"thread:{d}", None),
    ]
    card, update, _, reply = rows
    assert set(card.payload) == {"text", "blocks", "card_for"}
    assert card.payload["card_for"] == d and card.deployment_id == d
    assert set(update.payload) == {"text", "blocks", "card_post"}
    assert update.payload["card_post"] == card.id and update.deployment_id == d
    assert reply.payload == {"text": "queued behind #0", "reply_broadcast": False,
                             "card_post": card.id}
    assert reply.thread_of == d


def test_an_event_before_any_card_posts_the_card_first(rig: Rig, slack: SlackDouble) -> None:
    d = rig.deployment()
    run = _snapshot(rig, d, DeploymentState.FAILED, error="window closed")
    _reporter(rig).event(run, "Refused: the window is closed", broadcast=True)
    rig.drain()
    (card,) = slack.messages(CHANNEL)
    assert card.text.startswith(f"Deployment #{d}: v1.2.3 to production")
    (reply,) = slack.thread(CHANNEL, card.ts)
    assert (reply.text, reply.broadcast) == ("Refused: the window is closed", True)


def test_a_restarted_bot_continues_the_same_card_and_thread(
    rig: Rig, slack: SlackDouble, database: Database, clock: FixedClock, client: WebClient
) -> None:
    d = rig.deployment()
    run = _snapshot(rig, d, DeploymentState.RUNNING)
    _reporter(rig).run_changed(run)
    _reporter(rig).event(run, "phase 1")
    rig.drain()
    # A new process: new reporter, new sender, same database. Nothing was kept in memory.
    restarted = Rig(database, clock, client)
    again = _reporter(restarted)
    finished = replace(run, state=DeploymentState.ROLLED_BACK, error="health check failed")
    again.run_changed(finished)
    again.event(finished, ":leftwards_arrow_with_hook: rolled back", broadcast=True)
    restarted.drain()
    (card,) = slack.messages(CHANNEL)
    assert "Rolled back" in card.text
    assert _action_ids(card.blocks) == []  # terminal: the buttons are gone
    assert [m.text for m in slack.thread(CHANNEL, card.ts)] == [
        "phase 1", ":leftwards_arrow_with_hook: rolled back"]


def test_two_deployments_get_two_cards_with_their_own_threads(
    rig: Rig, slack: SlackDouble
) -> None:
    reporter = _reporter(rig)
    first, second = rig.deployment(), rig.deployment()
    for d in (first, second):
        reporter.run_changed(_snapshot(rig, d, DeploymentState.QUEUED))
    for d in (second, first):
        reporter.event(_snapshot(rig, d, DeploymentState.RUNNING), f"#{d} started")
    rig.drain()
    cards = slack.messages(CHANNEL)
    assert [c.ts for c in cards] == [rig.card_ts(first), rig.card_ts(second)]
    for d, card in zip((first, second), cards, strict=True):
        assert [m.text for m in slack.thread(CHANNEL, card.ts)] == [f"#{d} started"]
