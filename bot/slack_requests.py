"""Build requests exactly as Slack sends them: form-encoded bodies and a ``v0`` signature.

Used by the local shell (which drives the real Bolt app through signed requests), by the tests
and by the benchmarks, so that all three exercise the same verification path as production.
"""

from __future__ import annotations

import json
import time
from typing import Any
from urllib.parse import urlencode

from slack_sdk.signature import SignatureVerifier

LOCAL_TEAM_ID = "T0QLP0001"
"""The team of built requests: the stand-in's workspace (its ``auth.test`` names it), so a
click built here comes from the bot's own workspace (``bot.workspace``)."""


def signed_headers(secret: str, body: str, timestamp: int | None = None) -> dict[str, str]:
    """Headers Slack would send with ``body``, signed with ``secret``."""
    ts = str(int(time.time()) if timestamp is None else timestamp)
    signature = SignatureVerifier(secret).generate_signature(timestamp=ts, body=body) or ""
    return {
        "content-type": "application/x-www-form-urlencoded",
        "x-slack-request-timestamp": ts,
        "x-slack-signature": signature,
    }


def slash_command_body(text: str, *, user_id: str, channel_id: str, command: str = "/qlp",
                       response_url: str = "", trigger_id: str = "", team_id: str = LOCAL_TEAM_ID,
                       user_name: str | None = None) -> str:
    """A slash-command body as Slack form-encodes it."""
    return urlencode({
        "token": "unused-verification-token",
        "team_id": team_id,
        "team_domain": "local",
        "channel_id": channel_id,
        "channel_name": "deployments",
        "user_id": user_id,
        "user_name": user_name or user_id.lower(),
        "command": command,
        "text": text,
        "api_app_id": "A0QLP",
        "is_enterprise_install": "false",
        "response_url": response_url,
        "trigger_id": trigger_id or f"{time.time_ns()}.local",
    })


def block_actions_body(*, action_id: str, value: str, user_id: str, channel_id: str,
                       message_ts: str, response_url: str = "", team_id: str = LOCAL_TEAM_ID,
                       thread_ts: str | None = None, action_ts: str | None = None,
                       text: str = "", block_id: str = "actions") -> str:
    """A ``block_actions`` interaction (a button press) as Slack form-encodes it."""
    container: dict[str, Any] = {"type": "message", "message_ts": message_ts,
                                 "channel_id": channel_id, "is_ephemeral": False}
    if thread_ts:
        container["thread_ts"] = thread_ts
    payload: dict[str, Any] = {
        "type": "block_actions",
        "user": {"id": user_id, "username": user_id.lower(), "name": user_id.lower(),
                 "team_id": team_id},
        "api_app_id": "A0QLP",
        "token": "unused-verification-token",
        "container": container,
        "trigger_id": f"{time.time_ns()}.local",
        "team": {"id": team_id, "domain": "local"},
        "enterprise": None,
        "is_enterprise_install": False,
        "channel": {"id": channel_id, "name": "deployments"},
        "message": {"type": "message", "ts": message_ts, "text": text},
        "state": {"values": {}},
        "response_url": response_url,
        "actions": [{
            "action_id": action_id, "block_id": block_id, "type": "button", "value": value,
            "action_ts": action_ts or f"{time.time():.6f}",
            "text": {"type": "plain_text", "text": text or action_id, "emoji": True},
        }],
    }
    return urlencode({"payload": json.dumps(payload)})


def checkboxes_body(*, action_id: str, block_id: str, selected: list[tuple[str, str]],
                    user_id: str, channel_id: str, response_url: str = "",
                    team_id: str = LOCAL_TEAM_ID, action_ts: str | None = None) -> str:
    """A ``block_actions`` interaction from a ``checkboxes`` element on an ephemeral message.

    ``selected`` is every option now ticked in that element, as (value, text): Slack sends the
    element's whole selection, not what changed.
    """
    options = [{"text": {"type": "plain_text", "text": text, "emoji": True}, "value": value}
               for value, text in selected]
    payload: dict[str, Any] = {
        "type": "block_actions",
        "user": {"id": user_id, "username": user_id.lower(), "name": user_id.lower(),
                 "team_id": team_id},
        "api_app_id": "A0QLP",
        "token": "unused-verification-token",
        "container": {"type": "message", "message_ts": f"{time.time():.6f}",
                      "channel_id": channel_id, "is_ephemeral": True},
        "trigger_id": f"{time.time_ns()}.local",
        "team": {"id": team_id, "domain": "local"},
        "enterprise": None,
        "is_enterprise_install": False,
        "channel": {"id": channel_id, "name": "deployments"},
        "state": {"values": {block_id: {action_id: {"type": "checkboxes",
                                                    "selected_options": options}}}},
        "response_url": response_url,
        "actions": [{
            "action_id": action_id, "block_id": block_id, "type": "checkboxes",
            "selected_options": options, "action_ts": action_ts or f"{time.time():.6f}",
        }],
    }
    return urlencode({"payload": json.dumps(payload)})
