"""Block Kit to terminal text."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from slack_sdk import WebClient

from bot.shell.render import (
    BROADCAST_MARK,
    EPHEMERAL_MARK,
    REPLY_PREFIX,
    mrkdwn_to_text,
    render_blocks,
    render_message,
    render_transcript,
)
from bot.shell.slack_standin import SlackStandIn, StoredMessage

CHANNEL = "C0DEPLOYS"
CARD_TS = "1764165600.000100"
NAMES = {"U0ALICE": "alice", "U0BOB": "bob"}

REJECT_CONFIRM = {
    "title": {"type": "plain_text", "text": "Reject v1.2.3?"},
    "text": {"type": "mrkdwn", "text": "The deployment will not run."},
    "confirm": {"type": "plain_text", "text": "Reject"},
    "deny": {"type": "plain_text", "text": "Keep it"},
    "style": "danger",
}

CARD_BLOCKS: list[dict[str, Any]] = [
    {"type": "header", "text": {"type": "plain_text", "text": "Deploy v1.2.3 to production"}},
    {
        "type": "section",
        "text": {"type": "mrkdwn", "text": "Requested by <@U0ALICE>"},
        "fields": [
            {"type": "mrkdwn", "text": "*Version*\nv1.2.3"},
            {"type": "mrkdwn", "text": "*Environment*\nproduction"},
            {"type": "mrkdwn", "text": "*Approvers*\n<!subteam^S0OPS|@ops>"},
            {"type": "mrkdwn", "text": "*State*\n:hourglass: waiting for approval"},
        ],
    },
    {"type": "divider"},
    {"type": "context", "elements": [{"type": "mrkdwn", "text": "run 42 · window open"}]},
    {
        "type": "actions",
        "block_id": "card_actions",
        "elements": [
            {
                "type": "button",
                "action_id": "qlp_approve",
                "value": "42",
                "style": "primary",
                "text": {"type": "plain_text", "text": "Approve"},
            },
            {
                "type": "button",
                "action_id": "qlp_reject",
                "value": "42",
                "style": "danger",
                "text": {"type": "plain_text", "text": "Reject"},
                "confirm": REJECT_CONFIRM,
            },
        ],
    },
]


def _card() -> StoredMessage:
    return StoredMessage(CHANNEL, CARD_TS, "Deploy v1.2.3 to production", CARD_BLOCKS)


def _reply(ts: str, text: str, *, broadcast: bool = False) -> StoredMessage:
    return StoredMessage(CHANNEL, ts, text, [], thread_ts=CARD_TS, broadcast=broadcast)


def test_a_card_renders_header_fields_context_and_numbered_buttons() -> None:
    view = render_message(_card(), user_name=NAMES.get)

    assert view.text.split("\n") == [
        "== Deploy v1.2.3 to production ==",
        "Requested by @alice",
        "*Version*      *Environment*",
        "v1.2.3         production",
        "*Approvers*    *State*",
        "@ops           :hourglass: waiting for approval",
        "─" * 40,
        "run 42 · window open",
        "[!1 Approve]  [!2 Reject…]",
    ]
    approve, reject = view.buttons
    assert (approve.number, approve.action_id, approve.value, approve.text) == (
        1,
        "qlp_approve",
        "42",
        "Approve",
    )
    assert approve.confirm is None
    assert (approve.channel, approve.message_ts, approve.block_id) == (
        CHANNEL,
        CARD_TS,
        "card_actions",
    )
    assert (reject.number, reject.action_id, reject.style) == (2, "qlp_reject", "danger")
    assert reject.confirm == REJECT_CONFIRM
    assert view.button(2) == reject
    assert view.button(3) is None
    assert view.next_number == 3


def test_button_numbers_can_continue_from_an_earlier_view() -> None:
    view = render_message(_card(), first_button=7)
    assert [b.number for b in view.buttons] == [7, 8]
    assert "[!7 Approve]  [!8 Reject…]" in view.text


def test_a_thread_reply_is_indented_and_a_broadcast_is_marked() -> None:
    quiet = render_message(_reply("1764165600.000200", "Build done in *2m 3s*\nimage pushed"))
    loud = render_message(_reply("1764165600.000300", "Rolled back to v1.2.2", broadcast=True))

    assert quiet.text == (f"{REPLY_PREFIX}Build done in *2m 3s*\n{REPLY_PREFIX}image pushed")
    assert loud.text == f"{REPLY_PREFIX}{BROADCAST_MARK}Rolled back to v1.2.2"


def test_an_ephemeral_reply_is_marked_as_only_for_you() -> None:
    message = StoredMessage(
        CHANNEL,
        "1764165600.000400",
        "You cannot approve your own deployment.",
        [],
        user="U0BOB",
        ephemeral=True,
    )
    view = render_message(message)
    assert view.text == f"{EPHEMERAL_MARK}You cannot approve your own deployment."
    assert EPHEMERAL_MARK == "(only you) "


def test_buttons_on_an_ephemeral_thread_reply_carry_their_location() -> None:
    blocks = [
        {
            "type": "section",
            "text": {"type": "mrkdwn", "text": "Roll back?"},
            "accessory": {
                "type": "button",
                "action_id": "qlp_rollback",
                "value": "42",
                "text": {"type": "plain_text", "text": "Roll back"},
            },
        }
    ]
    message = StoredMessage(
        CHANNEL,
        "1764165600.000500",
        "",
        blocks,
        thread_ts=CARD_TS,
        user="U0BOB",
        ephemeral=True,
    )
    view = render_message(message)
    assert view.text == f"{REPLY_PREFIX}{EPHEMERAL_MARK}Roll back?\n{REPLY_PREFIX}[!1 Roll back]"
    [button] = view.buttons
    assert (button.thread_ts, button.ephemeral, button.message_ts) == (
        CARD_TS,
        True,
        "1764165600.000500",
    )


def test_a_transcript_puts_replies_under_their_parent_and_numbers_buttons_in_order() -> None:
    second_card = StoredMessage(CHANNEL, "1764165600.000600", "Deploy v1.2.4", CARD_BLOCKS[-1:])
    messages = [
        second_card,
        _reply("1764165600.000300", "Rolled back", broadcast=True),
        _card(),
        _reply("1764165600.000200", "Build done"),
    ]
    view = render_transcript(messages, first_button=3, user_name=NAMES.get)

    chunks = view.text.split("\n\n")
    assert len(chunks) == 2
    assert chunks[0].split("\n")[-2:] == [
        f"{REPLY_PREFIX}Build done",
        f"{REPLY_PREFIX}{BROADCAST_MARK}Rolled back",
    ]
    assert chunks[1] == "[!5 Approve]  [!6 Reject…]"
    assert [(b.number, b.message_ts) for b in view.buttons] == [
        (3, CARD_TS),
        (4, CARD_TS),
        (5, "1764165600.000600"),
        (6, "1764165600.000600"),
    ]


def test_text_is_shown_when_there_are_no_blocks_and_blocks_win_when_there_are() -> None:
    assert render_blocks([], text="Deployed <https://qlp.example|v1.2.3>").text == (
        "Deployed v1.2.3 (https://qlp.example)"
    )
    assert render_blocks([{"type": "divider"}], text="fallback").text == "─" * 40


@pytest.mark.parametrize(
    ("mrkdwn", "expected"),
    [
        ("<@U0ALICE> approved", "@alice approved"),
        ("<@U0NOBODY> approved", "@U0NOBODY approved"),
        ("<@U0BOB|bobby> asked", "@bobby asked"),
        ("see <https://ci.example/42|run 42>", "see run 42 (https://ci.example/42)"),
        ("see <https://ci.example/42>", "see https://ci.example/42"),
        ("in <#C0DEPLOYS|deploys> and <#C0OPS>", "in #deploys and #C0OPS"),
        ("<!subteam^S0OPS|@ops> and <!subteam^S0DB>", "@ops and @S0DB"),
        ("<!here> heads up", "@here heads up"),
        ("*bold* _it_ :rocket: `code`", "*bold* _it_ :rocket: `code`"),
        ("a &lt; b &amp;&amp; c &gt; d", "a < b && c > d"),
    ],
)
def test_mrkdwn_becomes_readable_plain_text(mrkdwn: str, expected: str) -> None:
    assert mrkdwn_to_text(mrkdwn, user_name=NAMES.get) == expected


def test_colour_only_when_asked() -> None:
    plain = render_message(_card())
    coloured = render_message(_card(), color=True)
    assert "\x1b[" not in plain.text
    assert "\x1b[1mVersion\x1b[0m" in coloured.text
    assert "\x1b[32m[!1 Approve]\x1b[0m" in coloured.text
    assert coloured.buttons == plain.buttons


def test_rich_text_and_inputs_render_as_readable_lines() -> None:
    blocks = [
        {
            "type": "rich_text",
            "elements": [
                {
                    "type": "rich_text_section",
                    "elements": [
                        {"type": "text", "text": "Checklist for "},
                        {"type": "user", "user_id": "U0ALICE"},
                        {"type": "emoji", "name": "white_check_mark"},
                    ],
                },
                {
                    "type": "rich_text_list",
                    "style": "bullet",
                    "elements": [
                        {"type": "rich_text_section", "elements": [{"type": "text", "text": "a"}]},
                        {"type": "rich_text_section", "elements": [{"type": "text", "text": "b"}]},
                    ],
                },
            ],
        },
        {
            "type": "actions",
            "elements": [
                {
                    "type": "checkboxes",
                    "action_id": "qlp_checklist_tick",
                    "options": [
                        {"text": {"type": "plain_text", "text": "backup"}, "value": "1"},
                        {"text": {"type": "plain_text", "text": "notify"}, "value": "2"},
                    ],
                    "initial_options": [
                        {"text": {"type": "plain_text", "text": "backup"}, "value": "1"}
                    ],
                }
            ],
        },
    ]
    assert render_blocks(blocks, user_name=NAMES.get).text.split("\n") == [
        "Checklist for @alice:white_check_mark:",
        "• a",
        "• b",
        "☑ backup",
        "☐ notify",
    ]


@pytest.fixture
def standin() -> Iterator[SlackStandIn]:
    with SlackStandIn(users=NAMES) as server:
        yield server


def test_what_the_bot_posts_to_the_standin_renders_as_a_channel(standin: SlackStandIn) -> None:
    client = WebClient(token="xoxb-test", base_url=standin.api_url)
    card = client.chat_postMessage(channel=CHANNEL, text="card", blocks=CARD_BLOCKS)["ts"]
    client.chat_postMessage(channel=CHANNEL, text="Build done", thread_ts=card)
    client.chat_postEphemeral(channel=CHANNEL, user="U0BOB", text="Not an approver")
    client.chat_postEphemeral(channel=CHANNEL, user="U0ALICE", text="for alice only")

    view = render_transcript(standin.transcript(CHANNEL, "U0BOB"), user_name=standin.user_name)

    assert view.text.startswith("== Deploy v1.2.3 to production ==\nRequested by @alice")
    assert f"{REPLY_PREFIX}Build done" in view.text
    assert view.text.endswith(f"\n\n{EPHEMERAL_MARK}Not an approver")
    assert "alice only" not in view.text
    assert [(b.number, b.message_ts) for b in view.buttons] == [(1, card), (2, card)]
