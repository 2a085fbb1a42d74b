"""The real ``qlp-bot socket`` process against a fake Socket Mode endpoint.

The bot asks the Web API double for a WebSocket URL (``apps.connections.open`` with the app
token), connects to the fake server, gets ``hello``, and acknowledges slash-command envelopes
with the reply text in the ack payload, as Slack shows it to the user.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml

from tests.fakes.policies import BASE
from tests.fakes.socket_mode_server import FakeSocketModeServer, SocketModeSlackDouble

pytestmark = pytest.mark.slow

QLP_BOT = [sys.executable, "-m", "bot"]
BOT_TOKEN = "xoxb-socket-test"
APP_TOKEN = "xapp-1-A0QLP-socket-test"
STARTUP = 20.0


@pytest.fixture
def socket_server() -> Iterator[FakeSocketModeServer]:
    with FakeSocketModeServer() as server:
        yield server


@pytest.fixture
def slack(socket_server: FakeSocketModeServer) -> Iterator[SocketModeSlackDouble]:
    with SocketModeSlackDouble(socket_server) as double:
        yield double


@pytest.fixture
def env(tmp_path: Path, slack: SocketModeSlackDouble) -> dict[str, str]:
    policy = tmp_path / "qlp.yml"
    policy.write_text(yaml.safe_dump(BASE))
    inherited = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "QLP_"))}
    return {**inherited, "SLACK_BOT_TOKEN": BOT_TOKEN, "SLACK_APP_TOKEN": APP_TOKEN,
            "SLACK_API_URL": slack.api_url, "QLP_CONFIG": str(policy),
            "QLP_HOME": str(tmp_path / "home")}


@contextmanager
def running_bot(args: list[str], env: dict[str, str], logs: Path) -> Iterator[Result]:
    """Start ``python -m bot *args``; on exit SIGTERM it (kill after 10 s) and reap it."""
    result = Result(logs)
    with (logs / "stdout").open("w") as out, (logs / "stderr").open("w") as err:
        process = subprocess.Popen([*QLP_BOT, *args], env=env, cwd=logs, stdout=out,
                                   stderr=err, stdin=subprocess.DEVNULL, text=True)
        result.process = process
        try:
            yield result
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(timeout=10)
                    result.killed = True


class Result:
    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.process: subprocess.Popen[str] | None = None
        self.killed = False

    @property
    def stdout(self) -> str:
        return (self.logs / "stdout").read_text()

    @property
    def stderr(self) -> str:
        return (self.logs / "stderr").read_text()

    def connected(self, server: FakeSocketModeServer) -> str:
        """Wait until the bot has connected; fail with its output if it exits first."""
        try:
            return server.wait_for_connection(timeout=STARTUP)
        except TimeoutError:
            assert self.process is not None
            raise AssertionError(f"qlp-bot never connected (exit {self.process.poll()}):\n"
                                 f"{self.stdout}\n{self.stderr}") from None


def _ack_text(server: FakeSocketModeServer, envelope_id: str) -> str:
    ack = server.wait_for_ack(envelope_id, timeout=5)
    assert set(ack) == {"envelope_id", "payload"}, ack
    assert set(ack["payload"]) == {"text"}, ack
    return str(ack["payload"]["text"])


def _assert_stopped_cleanly(bot: Result, server: FakeSocketModeServer) -> None:
    assert bot.process is not None
    assert not bot.killed, "qlp-bot ignored SIGTERM and had to be killed"
    assert bot.process.returncode == 0, (bot.process.returncode, bot.stderr)
    server.wait_until_disconnected(timeout=5)
    assert "Traceback" not in bot.stdout + bot.stderr, bot.stderr


def test_socket_mode_answers_help_and_typos_in_the_ack(
        tmp_path: Path, env: dict[str, str], slack: SocketModeSlackDouble,
        socket_server: FakeSocketModeServer) -> None:
    with running_bot(["socket"], env, tmp_path) as bot:
        path = bot.connected(socket_server)
        assert path.startswith("/link/?ticket=x")

        help_text = _ack_text(socket_server, socket_server.send_slash_command(
            "help", response_url=slack.response_url("help", channel="C0DEPLOY", user="U0DEV")))
        assert "/qlp deploy" in help_text
        assert "/qlp window" in help_text

        typo_text = _ack_text(socket_server, socket_server.send_slash_command(
            "stauts", response_url=slack.response_url("typo", channel="C0DEPLOY", user="U0DEV")))
        assert "Did you mean" in typo_text

        # The WebSocket URL came from apps.connections.open, called with the app token.
        assert slack.connection_tokens == [APP_TOKEN]
        opened = slack.calls("apps.connections.open")
        assert len(opened) == 1 and opened[0].ok
        assert socket_server.connects == 1
    _assert_stopped_cleanly(bot, socket_server)
    # Nothing used the bot token for the connection, nor the app token for anything else.
    assert all(call.ok for call in slack.calls()), slack.calls()


def test_bare_qlp_bot_with_an_app_token_runs_socket_mode(
        tmp_path: Path, env: dict[str, str], slack: SocketModeSlackDouble,
        socket_server: FakeSocketModeServer) -> None:
    with running_bot([], env, tmp_path) as bot:
        bot.connected(socket_server)
        text = _ack_text(socket_server, socket_server.send_slash_command(
            "help", response_url=slack.response_url("help", channel="C0DEPLOY", user="U0DEV")))
        assert "/qlp deploy" in text
        assert slack.connection_tokens == [APP_TOKEN]
    _assert_stopped_cleanly(bot, socket_server)
