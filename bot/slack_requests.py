"""Build requests exactly as Slack sends them: form-encoded bodies and a ``v0`` signature.

Used by the local shell (which drives the real Bolt app through signed requests), by the tests
and by the benchmarks, so that all three exercise the same verification path as production.
"""

from __future__ import annotations

import json
import secrets
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


def app_home_opened_body(*, user_id: str, tab: str = "home", team_id: str = LOCAL_TEAM_ID,
                         event_id: str | None = None, view_id: str | None = None) -> str:
    """An Events API ``event_callback`` carrying ``app_home_opened`` as Slack sends it: a JSON
    body (``Content-Type: application/json``), signed like the others. ``view_id``: the Home
    was published before (Slack then includes its current ``view``)."""
    now = time.time()
    event: dict[str, Any] = {"type": "app_home_opened", "user": user_id,
                             "channel": f"D{user_id[1:]}", "tab": tab,
                             "event_ts": f"{now:.6f}"}
    if view_id is not None:
        event["view"] = {"id": view_id, "team_id": team_id, "type": "home", "blocks": [],
                         "private_metadata": "", "callback_id": "", "hash": f"{now:.6f}"}
    return json.dumps({
        "token": "unused-verification-token",
        "team_id": team_id,
        "api_app_id": "A0QLP",
        "event": event,
        "type": "event_callback",
        "event_id": event_id or f"Ev{time.time_ns()}",
        "event_time": int(now),
        "authorizations": [{"enterprise_id": None, "team_id": team_id, "user_id": "U0QLPBOT1",
                            "is_bot": True, "is_enterprise_install": False}],
        "is_ext_shared_channel": False,
    })


def home_block_actions_body(*, action_id: str, value: str, user_id: str, view_id: str,
                            team_id: str = LOCAL_TEAM_ID, action_ts: str | None = None,
                            block_id: str = "actions") -> str:
    """A button press on the App Home: the container is the ``home`` view, and there is no
    channel, no message and no ``response_url`` (Slack sends none for a Home tab)."""
    payload: dict[str, Any] = {
        "type": "block_actions",
        "user": {"id": user_id, "username": user_id.lower(), "name": user_id.lower(),
                 "team_id": team_id},
        "api_app_id": "A0QLP",
        "token": "unused-verification-token",
        "container": {"type": "view", "view_id": view_id},
        "trigger_id": f"{time.time_ns()}.local",
        "team": {"id": team_id, "domain": "local"},
        "enterprise": None,
        "is_enterprise_install": False,
        "view": {"id": view_id, "team_id": team_id, "type": "home", "blocks": [],
                 "private_metadata": "", "callback_id": "qlp_home", "state": {"values": {}},
                 "hash": f"{time.time():.6f}", "app_id": "A0QLP", "bot_id": "B0QLPBOT1"},
        "actions": [{
            "action_id": action_id, "block_id": block_id, "type": "button", "value": value,
            "action_ts": action_ts or f"{time.time():.6f}",
            "text": {"type": "plain_text", "text": action_id, "emoji": True},
        }],
    }
    return urlencode({"payload": json.dumps(payload)})


def new_trigger_id(issued_at: float | None = None) -> str:
    """A ``trigger_id`` as an interaction hands one out. Its first field is when it was issued
    (nanoseconds since the epoch, wall clock; ``issued_at`` in seconds for an old one): the
    Slack stand-in reads it to refuse a trigger older than 3 seconds, as Slack does."""
    issued = time.time_ns() if issued_at is None else int(issued_at * 1_000_000_000)
    return f"{issued}.{secrets.token_hex(4)}.local"


def _interaction_user(user_id: str, team_id: str) -> dict[str, Any]:
    return {"id": user_id, "username": user_id.lower(), "name": user_id.lower(),
            "team_id": team_id}


def shortcut_body(*, callback_id: str, user_id: str, trigger_id: str | None = None,
                  team_id: str = LOCAL_TEAM_ID) -> str:
    """A global shortcut (``type: shortcut``) as Slack form-encodes it: no channel, no
    ``response_url``; a ``trigger_id`` to open a modal with."""
    payload: dict[str, Any] = {
        "type": "shortcut",
        "token": "unused-verification-token",
        "action_ts": f"{time.time():.6f}",
        "team": {"id": team_id, "domain": "local"},
        "user": _interaction_user(user_id, team_id),
        "is_enterprise_install": False,
        "enterprise": None,
        "callback_id": callback_id,
        "trigger_id": trigger_id or new_trigger_id(),
    }
    return urlencode({"payload": json.dumps(payload)})


def _submitted_view(view: dict[str, Any], values: dict[str, Any], view_id: str,
                    team_id: str) -> dict[str, Any]:
    """``view`` (as it was opened) as an interaction carries it back, with its ``state``."""
    return {
        **view,
        "id": view_id,
        "team_id": team_id,
        "state": {"values": values},
        "hash": f"{int(time.time())}.{view_id[-6:]}",
        "root_view_id": view_id,
        "previous_view_id": None,
        "app_id": "A0QLP",
        "bot_id": "B0QLPBOT1",
    }


def view_submission_body(*, view: dict[str, Any], view_id: str, values: dict[str, Any],
                         user_id: str, team_id: str = LOCAL_TEAM_ID) -> str:
    """A ``view_submission`` of the modal ``view``: ``values`` is ``state.values``
    (``{block_id: {action_id: {"type": ..., <its value>}}}``)."""
    payload: dict[str, Any] = {
        "type": "view_submission",
        "team": {"id": team_id, "domain": "local"},
        "user": _interaction_user(user_id, team_id),
        "api_app_id": "A0QLP",
        "token": "unused-verification-token",
        "trigger_id": new_trigger_id(),
        "view": _submitted_view(view, values, view_id, team_id),
        "response_urls": [],
        "is_enterprise_install": False,
        "enterprise": None,
    }
    return urlencode({"payload": json.dumps(payload)})


def block_suggestion_body(*, view: dict[str, Any], view_id: str, action_id: str,
                          block_id: str, value: str, user_id: str,
                          values: dict[str, Any] | None = None,
                          team_id: str = LOCAL_TEAM_ID) -> str:
    """A ``block_suggestion`` (an ``external_select`` in a modal asking for its options as
    the person types ``value``)."""
    payload: dict[str, Any] = {
        "type": "block_suggestion",
        "user": _interaction_user(user_id, team_id),
        "container": {"type": "view", "view_id": view_id},
        "api_app_id": "A0QLP",
        "token": "unused-verification-token",
        "action_id": action_id,
        "block_id": block_id,
        "value": value,
        "team": {"id": team_id, "domain": "local"},
        "enterprise": None,
        "is_enterprise_install": False,
        "view": _submitted_view(view, values or {}, view_id, team_id),
    }
    return urlencode({"payload": json.dumps(payload)})
