"""The bot as a user starts it: real processes, real HTTP, the real CLI."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from bot.slack_requests import signed_headers, slash_command_body
from tests.fakes.policies import BASE, free_port
from tests.fakes.slack_double import SlackDouble

pytestmark = pytest.mark.slow  # starts qlp-bot processes

QLP_BOT = [sys.executable, "-m", "bot"]
SECRET = "process-test-secret"


def _env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("SLACK_", "QLP_"))}
    env.update({"QLP_HOME": str(home)}, **extra)
    return env


def test_piped_shell_prints_the_grammar_and_a_window_verdict(tmp_path: Path) -> None:
    result = subprocess.run(QLP_BOT, input="/qlp help\n/qlp window\n/qlp stauts\n",
                            capture_output=True, text=True, timeout=60,
                            env=_env(tmp_path / "home"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "/qlp deploy <version> [to <env>]" in out
    assert "/qlp window [<env>]" in out
    assert ("The standard window is *open*" in out) or ("*not allowed now*" in out)
    assert "Preferred windows: " in out
    assert "Did you mean" in out
    assert "Traceback" not in out + result.stderr


def test_shell_buttons_and_user_switch_are_understood(tmp_path: Path) -> None:
    result = subprocess.run([*QLP_BOT, "shell", "--user", "U0LEAD1"],
                            input="!user\n!9\nhello\n!help\n",
                            capture_output=True, text=True, timeout=60,
                            env=_env(tmp_path / "home"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "You are U0LEAD1." in result.stdout
    assert "No button `9` on screen" in result.stdout
    assert "Type a slash command" in result.stdout
    assert "!approve" in result.stdout


@pytest.fixture
def slack() -> Iterator[SlackDouble]:
    double = SlackDouble()
    double.start()
    yield double
    double.stop()


@pytest.fixture
def policy_file(tmp_path: Path) -> Path:
    path = tmp_path / "qlp.yml"
    path.write_text(yaml.safe_dump(BASE))
    return path


def _wait_healthy(url: str, process: subprocess.Popen[str], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"qlp-bot serve exited: {process.communicate()}")
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError("qlp-bot serve did not become healthy")


def test_serve_answers_signed_help_and_refuses_bad_signatures(
        tmp_path: Path, slack: SlackDouble, policy_file: Path) -> None:
    port = free_port()
    env = _env(tmp_path / "home", SLACK_BOT_TOKEN="xoxb-process", SLACK_SIGNING_SECRET=SECRET,
               SLACK_API_URL=slack.api_url, QLP_CONFIG=str(policy_file))
    process = subprocess.Popen([*QLP_BOT, "serve", "--port", str(port)], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url, process)
        body = slash_command_body("help", user_id="U0DEV", channel_id="C0DEPLOY")
        started = time.perf_counter()
        ok = httpx.post(url + "/slack/events", content=body,
                        headers=signed_headers(SECRET, body))
        elapsed = time.perf_counter() - started
        assert ok.status_code == 200
        assert "/qlp deploy" in ok.text
        print(f"signed /qlp help answered in {elapsed * 1000:.1f} ms")
        bad = httpx.post(url + "/slack/events", content=body,
                         headers=signed_headers("wrong", body))
        assert bad.status_code == 401
        old = httpx.post(url + "/slack/events", content=body,
                         headers=signed_headers(SECRET, body, int(time.time()) - 360))
        assert old.status_code == 401
        health = httpx.get(url + "/healthz").json()
        assert {key: health[key] for key in ("status", "database", "worker", "scheduler")} == {
            "status": "ok", "database": "ok", "worker": "ok",
            "scheduler": "leader"}  # the only replica holds the lease
        assert health["ready"] is True and httpx.get(url + "/readyz").status_code == 200
    finally:
        process.terminate()
        process.wait(timeout=10)
    assert process.returncode == 0
    audit = subprocess.run([*QLP_BOT, "audit", "verify"], env=env, capture_output=True,
                           text=True, timeout=60)
    assert audit.returncode == 0, audit.stderr
    assert "audit chain intact: 1 rows checked" in audit.stdout


def test_a_bad_policy_file_exits_2_naming_the_key(tmp_path: Path, slack: SlackDouble) -> None:
    bad = dict(BASE, monitoring={"duration": "forever"})
    path = tmp_path / "qlp.yml"
    path.write_text(yaml.safe_dump(bad))
    env = _env(tmp_path / "home", SLACK_BOT_TOKEN="xoxb-process", SLACK_SIGNING_SECRET=SECRET,
               SLACK_API_URL=slack.api_url, QLP_CONFIG=str(path))
    result = subprocess.run([*QLP_BOT, "serve", "--port", str(free_port())], env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "monitoring.duration" in result.stderr
    assert "not a duration" in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_serve_without_tokens_says_what_is_missing(tmp_path: Path, policy_file: Path) -> None:
    result = subprocess.run([*QLP_BOT, "serve"], env=_env(tmp_path / "home",
                                                          QLP_CONFIG=str(policy_file)),
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "SLACK_BOT_TOKEN" in result.stderr


def test_db_upgrade_by_hand(tmp_path: Path) -> None:
    result = subprocess.run([*QLP_BOT, "db", "upgrade"], env=_env(tmp_path / "home"),
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "schema revision: " in result.stdout and "none" not in result.stdout
