"""The deployment card: buttons from the state, confirm dialogs, Block Kit limits."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from slack_sdk import WebClient

from bot import actions
from bot.cards import buttons_for, card_problems, render_card
from bot.shell.slack_standin import block_problems
from procedures.model import DeploymentState, ProcedureKind, StepState
from procedures.reporting import RunSnapshot, StepSnapshot
from tests.fakes.bot_harness import BOT_TOKEN
from tests.fakes.slack_double import SlackDouble

ZONE = ZoneInfo("Europe/Berlin")
CREATED = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)
NOW = datetime(2026, 12, 1, 10, 30, tzinfo=UTC)

EXPECTED_BUTTONS: dict[DeploymentState, tuple[str, ...]] = {
    DeploymentState.PENDING_APPROVAL: (actions.APPROVE, actions.REJECT),
    DeploymentState.SCHEDULED: (actions.CANCEL,),
    DeploymentState.QUEUED: (actions.CANCEL,),
    DeploymentState.RUNNING: (actions.CANCEL,),
    DeploymentState.ROLLING_BACK: (),
    DeploymentState.SUCCEEDED: (actions.ROLLBACK,),
    DeploymentState.ROLLED_BACK: (),
    DeploymentState.FAILED: (),
    DeploymentState.CANCELLED: (),
    DeploymentState.REJECTED: (),
    DeploymentState.EXPIRED: (),
    DeploymentState.NEEDS_ATTENTION: (),
}


def make_run(state: DeploymentState = DeploymentState.RUNNING, **changes: Any) -> RunSnapshot:
    """A standard deployment #12 of v1.2.3 to production, in ``state``."""
    run = RunSnapshot(
        deployment_id=12,
        kind=ProcedureKind.STANDARD,
        version="v1.2.3",
        environment="production",
        requester="U0DEV",
        state=state,
        created_at=CREATED,
        approvals_required=1,
    )
    return replace(run, **changes)


def _buttons(blocks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [element for block in blocks if block["type"] == "actions"
            for element in block["elements"]]


def _all_text(blocks: list[dict[str, Any]]) -> str:
    return json.dumps(blocks, ensure_ascii=False)


def test_every_state_is_covered() -> None:
    assert set(EXPECTED_BUTTONS) == set(DeploymentState)


@pytest.mark.parametrize("state", list(DeploymentState), ids=lambda s: s.value)
def test_each_state_has_exactly_its_buttons(state: DeploymentState) -> None:
    _, blocks = render_card(make_run(state), zone=ZONE, now=NOW)
    buttons = _buttons(blocks)
    assert tuple(b["action_id"] for b in buttons) == EXPECTED_BUTTONS[state]
    if state.terminal and state is not DeploymentState.SUCCEEDED:
        assert not any(block["type"] == "actions" for block in blocks)
    for button in buttons:
        assert button["action_id"] in actions.ALL_ACTIONS
        assert button["value"] == "12"  # the deployment id, nothing else
        confirm = button["confirm"]
        assert {"title", "text", "confirm", "deny"} <= set(confirm)
        assert len(confirm["title"]["text"]) <= 100
        assert len(confirm["text"]["text"]) <= 300
        assert len(confirm["confirm"]["text"]) <= 30
        assert len(confirm["deny"]["text"]) <= 30
    assert card_problems(blocks) == []


def test_button_styles() -> None:
    _, blocks = render_card(make_run(DeploymentState.PENDING_APPROVAL), zone=ZONE, now=NOW)
    assert [(b["text"]["text"], b["style"]) for b in _buttons(blocks)] == [
        ("Approve", "primary"), ("Reject", "danger")]
    for state, label in ((DeploymentState.RUNNING, "Cancel"),
                         (DeploymentState.SUCCEEDED, "Roll back")):
        _, blocks = render_card(make_run(state), zone=ZONE, now=NOW)
        assert [(b["text"]["text"], b["style"]) for b in _buttons(blocks)] == [(label, "danger")]


def test_roll_back_disappears_when_not_available() -> None:
    run = make_run(DeploymentState.SUCCEEDED, options={"rollback_available": False})
    assert buttons_for(run) == ()
    _, blocks = render_card(run, zone=ZONE, now=NOW)
    assert _buttons(blocks) == []


def test_header_fields_and_fallback() -> None:
    run = make_run(
        DeploymentState.SUCCEEDED,
        started_at=CREATED + timedelta(minutes=5),
        finished_at=CREATED + timedelta(minutes=17, seconds=30),
        approvers=("U0LEAD1",),
        reason="monthly release",
    )
    text, blocks = render_card(run, zone=ZONE, now=NOW)
    assert text == "Deployment #12: v1.2.3 to production: Succeeded"
    assert blocks[0] == {"type": "header", "block_id": "card-header",
                         "text": {"type": "plain_text", "emoji": True,
                                  "text": "Deployment #12: v1.2.3 to production"}}
    fields = [f["text"] for f in blocks[1]["fields"]]
    assert "*Kind*\nStandard deployment" in fields
    assert "*Version*\n`v1.2.3`" in fields
    assert "*Environment*\nproduction" in fields
    assert "*Requested by*\n<@U0DEV>" in fields
    assert "*Approvals*\n1 of 1: <@U0LEAD1>" in fields
    assert "*State*\n:white_check_mark: Succeeded" in fields
    assert "*Created*\nTue 2026-12-01 11:00 CET" in fields  # the policy's zone
    assert "*Finished*\nTue 2026-12-01 11:17 CET" in fields
    assert "*Duration*\n12m 30s" in fields
    assert len(fields) <= 10
    assert "*Reason:* monthly release" in _all_text(blocks)


@pytest.mark.parametrize(
    ("kind", "version", "options", "title"),
    [
        (ProcedureKind.HOTFIX, "v1.2.4", {}, "Hotfix #12: v1.2.4 to production"),
        (ProcedureKind.EMERGENCY, "v1.2.5", {"category": "security"},
         "Emergency (security) deployment #12: v1.2.5 to production"),
        (ProcedureKind.ROLLBACK, "v1.2.2", {}, "Rollback #12: production back to v1.2.2"),
        (ProcedureKind.ROLLBACK, None, {},
         "Rollback #12: production back to the previous version"),
        (ProcedureKind.MIGRATION, None, {"migration": "2026_11_26_add_index"},
         "Migration #12: 2026_11_26_add_index on production"),
    ],
)
def test_kind_specific_headers(
    kind: ProcedureKind, version: str | None, options: dict[str, Any], title: str
) -> None:
    text, blocks = render_card(make_run(kind=kind, version=version, options=options),
                               zone=ZONE, now=NOW)
    assert blocks[0]["text"]["text"] == title
    assert text.startswith(title)


def test_phase_progress_lines() -> None:
    t = CREATED
    steps = (
        StepSnapshot("build", "Build image", StepState.SUCCEEDED, 1, t, t + timedelta(seconds=65)),
        StepSnapshot("deploy", "Deploy green", StepState.UNDONE, 1, t, t + timedelta(seconds=3)),
        StepSnapshot("check", "Health check", StepState.FAILED, 3, t, t + timedelta(seconds=12),
                     error="HTTP 503 from /healthz\ntraceback..."),
        StepSnapshot("switch", "Switch traffic", StepState.RUNNING, 1, NOW - timedelta(seconds=9)),
        StepSnapshot("notify", "Notify", StepState.PENDING),
        StepSnapshot("smoke", "Smoke test", StepState.SKIPPED),
    )
    _, blocks = render_card(make_run(steps=steps, notes=("approvals reset: plan changed",),
                                     error="health check failed <twice> & gave up"),
                            zone=ZONE, now=NOW)
    progress = next(b for b in blocks if b.get("block_id") == "card-steps-0")["text"]["text"]
    assert progress.splitlines() == [
        "✓ Build image (1m 5s)",
        "↩ Deploy green (3s, undone)",
        "✗ Health check (12s, attempt 3): _HTTP 503 from /healthz_",
        "▶ Switch traffic (9s so far)",
        "○ Notify",
        "\u2013 Smoke test (skipped)",
    ]
    notes = next(b for b in blocks if b.get("block_id") == "card-notes")
    assert notes["elements"][0]["text"] == "• approvals reset: plan changed"
    error = next(b for b in blocks if b.get("block_id") == "card-error")["text"]["text"]
    assert "&lt;twice&gt; &amp; gave up" in error  # user-visible text is escaped


def _huge_run() -> RunSnapshot:
    long_error = "Traceback (most recent call last): " + "x" * 5000
    steps = tuple(
        StepSnapshot(
            f"step_{i:02d}_" + "n" * 100,
            f"Step {i} " + "with a very long title " * 10,
            StepState.FAILED if i % 2 else StepState.SUCCEEDED,
            attempts=i,
            started_at=CREATED,
            finished_at=CREATED + timedelta(seconds=i),
            error=long_error + "<&>" * 100,
        )
        for i in range(40)
    )
    return make_run(
        DeploymentState.PENDING_APPROVAL,
        version="v" + "9" * 127,
        environment="e" * 64,
        reason="because " * 500,
        error=long_error + "```" * 50,
        steps=steps,
        notes=tuple("a note that goes on and on " * 20 for _ in range(20)),
        approvers=tuple(f"U{i:08d}" for i in range(30)),
        approvals_required=40,
    )


def test_a_forty_step_run_with_long_errors_stays_within_block_kit_limits() -> None:
    text, blocks = render_card(_huge_run(), zone=ZONE, now=NOW)
    assert card_problems(blocks) == []
    assert block_problems(blocks) == []  # the stand-in's independent check
    assert len(blocks) <= 50
    block_ids = [b["block_id"] for b in blocks]
    assert len(block_ids) == len(set(block_ids))
    assert len(json.dumps(blocks, ensure_ascii=False)) < 12_000
    assert len(blocks[0]["text"]["text"]) <= 150 and blocks[0]["text"]["text"].endswith("…")
    for block in blocks:
        if block["type"] == "section" and "text" in block:
            assert len(block["text"]["text"]) <= 3000
    assert "more steps" in _all_text(blocks)  # the list was cut, and says so
    assert len(text) <= 3000
    for button in _buttons(blocks):
        confirm = button["confirm"]
        assert len(confirm["text"]["text"]) <= 300


def test_card_problems_catches_what_render_card_avoids() -> None:
    too_many = [{"type": "section", "block_id": "same", "text": {"type": "mrkdwn", "text": "x"}}
                ] * 51
    problems = card_problems(too_many)
    assert any("51 blocks" in p for p in problems)
    assert any("duplicate block_id" in p for p in problems)
    bare_button = [{"type": "actions", "elements": [
        {"type": "button", "action_id": "a", "text": {"type": "plain_text", "text": "x"}}]}]
    assert any("no confirm dialog" in p for p in card_problems(bare_button))


@pytest.mark.parametrize("state", [DeploymentState.PENDING_APPROVAL, DeploymentState.RUNNING,
                                   DeploymentState.SUCCEEDED, DeploymentState.FAILED])
def test_the_strict_slack_double_accepts_the_cards(slack: SlackDouble,
                                                  state: DeploymentState) -> None:
    client = WebClient(token=BOT_TOKEN, base_url=slack.api_url, timeout=5)
    huge = replace(_huge_run(), state=state)
    text, blocks = render_card(huge, zone=ZONE, now=NOW)
    posted = client.chat_postMessage(channel="C0DEPLOY", text=text, blocks=blocks)
    assert posted["ok"]
    small_text, small_blocks = render_card(make_run(state), zone=ZONE, now=NOW)
    updated = client.chat_update(channel="C0DEPLOY", ts=posted["ts"], text=small_text,
                                 blocks=small_blocks)
    assert updated["ok"]
    (message,) = slack.messages("C0DEPLOY")
    assert message.blocks == small_blocks
    assert message.updates == 1
