"""The deploy dialog in Socket Mode (``qlp-bot socket``, a real process): the shortcut's
envelope is acked and the modal opened after the ack (a lazy listener), and a submission's
field errors travel back in the envelope's ack payload, as Slack reads them there."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import pytest

from bot.deploy_dialog_view import CALLBACK_ID
from bot.slack_requests import new_trigger_id, shortcut_body, view_submission_body
from tests.bot.test_deploy_dialog import state
from tests.bot.test_socket_mode import (  # noqa: F401  (fixtures)
    env,
    running_bot,
    slack,
    socket_server,
)
from tests.fakes.socket_mode_server import FakeSocketModeServer, SocketModeSlackDouble

pytestmark = pytest.mark.slow


def _payload(form_body: str) -> dict[str, Any]:
    payload: dict[str, Any] = json.loads(parse_qs(form_body)["payload"][0])
    return payload


def test_the_dialog_opens_and_answers_in_socket_mode(
        tmp_path: Path, env: dict[str, str], slack: SocketModeSlackDouble,  # noqa: F811
        socket_server: FakeSocketModeServer) -> None:  # noqa: F811
    with running_bot(["socket"], env, tmp_path) as bot:
        bot.connected(socket_server)
        trigger = new_trigger_id()
        shortcut = socket_server.send_envelope("interactive", _payload(shortcut_body(
            callback_id=CALLBACK_ID, user_id="U0DEV", trigger_id=trigger)))
        assert socket_server.wait_for_ack(shortcut, timeout=5) == {"envelope_id": shortcut}
        deadline = time.monotonic() + 5
        while not [v for v in slack.views() if v.trigger_id == trigger]:
            assert time.monotonic() < deadline, "views.open never came"
            time.sleep(0.02)
        [opened] = slack.views()
        # A hotfix without its reason: the error comes back on the reason field.
        submission = socket_server.send_envelope("interactive", _payload(view_submission_body(
            view=opened.view, view_id=opened.id, values=state(kind="hotfix"), user_id="U0DEV")))
        ack = socket_server.wait_for_ack(submission, timeout=5)
        assert ack["payload"] == {"response_action": "errors", "errors": {
            "reason": "A hotfix needs a reason: say why it cannot wait."}}, ack
    assert "Traceback" not in bot.stdout + bot.stderr, bot.stderr
