"""Issue 13, finding 3: no request body, ``response_url``, token or signing secret in any log,
at any level, whichever logger (ours, Bolt's, slack_sdk's) writes it."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bot import cli, log_redaction
from bot.slack_requests import block_actions_body, slash_command_body
from procedures.clock import FixedClock
from storage.db import Database
from tests.fakes.bot_harness import BOT_TOKEN, SECRET, BotHarness
from tests.fakes.policies import make_policy
from tests.fakes.slack_double import SlackDouble

HOOK = "https://hooks.slack.com/commands/T0LOCAL/1234/d0ntL0gM3"
ACTION_HOOK = "https://hooks.slack.com/actions/T0LOCAL/5678/n0rTh1s"
FORBIDDEN = ("hooks.slack.com", "d0ntL0gM3", "n0rTh1s", "xoxb-", "xapp-", SECRET,
             "unused-verification-token", "hooks%2Eslack", "hooks.slack.com%2F")


@pytest.fixture
def redaction() -> Iterator[log_redaction.RedactingFilter]:
    installed = log_redaction.install([SECRET, BOT_TOKEN])
    try:
        yield installed
    finally:
        log_redaction.uninstall()


@pytest.fixture
def quiet_bot(sqlite_database: Database, clock: FixedClock, slack: SlackDouble,
              tmp_path: Path) -> Iterator[BotHarness]:
    harness = BotHarness(database=sqlite_database, policy=make_policy(), clock=clock,
                         home=tmp_path / "home", slack=slack)
    yield harness
    harness.close()


def _assert_clean(caplog: pytest.LogCaptureFixture) -> None:
    texts = [caplog.text, *(record.getMessage() for record in caplog.records)]
    for text in texts:
        for forbidden in FORBIDDEN:
            assert forbidden not in text, f"{forbidden!r} logged: {text[:300]}"


def test_rejected_and_accepted_requests_leave_nothing_secret_in_a_debug_log(
        redaction: log_redaction.RedactingFilter, quiet_bot: BotHarness,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    command = slash_command_body("help", user_id="U0DEV", channel_id="C0DEPLOY",
                                 response_url=HOOK)
    click = block_actions_body(action_id="qlp_approve", value="1", user_id="U0DEV",
                               channel_id="C0DEPLOY", message_ts="1.000100",
                               response_url=ACTION_HOOK)
    assert quiet_bot.post(command, secret="not-the-secret").status_code == 401
    assert quiet_bot.post(command, timestamp=int(time.time()) - 3600).status_code == 401
    assert quiet_bot.post(command).status_code == 200
    assert quiet_bot.post(click).status_code == 200
    # What the libraries log when they see a request or call Slack (their own words).
    logging.getLogger("slack_bolt.RequestVerification").info(
        "Invalid request signature detected (signature: %s, timestamp: %s, body: %s)",
        "v0=" + "0" * 64, "1", command)
    logging.getLogger("slack_bolt.App").warning(
        "A global middleware skipped calling next() for the request (%s)",
        {"token": "unused-verification-token", "team_id": "T0LOCAL", "response_url": HOOK})
    logging.getLogger("slack_sdk.web.base_client").debug(
        "Sending a request - url: %s, body_params: %s, headers: %s",
        "https://slack.com/api/chat.postMessage", {"channel": "C0DEPLOY", "text": "hi"},
        {"Authorization": f"Bearer {BOT_TOKEN}"})
    logging.getLogger("slack_sdk.webhook.client").debug(
        "Sending a request - url: %s, body: %s", ACTION_HOOK, '{"text": "done"}')
    logging.getLogger("slack_sdk.signature").debug("verifying with %s", SECRET)
    try:
        raise ValueError(f"could not parse {click}")
    except ValueError:
        logging.getLogger("bot.somewhere").exception("request failed")
    assert caplog.records  # the log was captured at all
    _assert_clean(caplog)


def test_a_refused_request_is_not_logged_at_info_even_without_redaction(
        quiet_bot: BotHarness, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    command = slash_command_body("status", user_id="U0DEV", channel_id="C0DEPLOY",
                                 response_url=HOOK)
    assert quiet_bot.post(command, secret="not-the-secret").status_code == 401
    for record in caplog.records:
        assert "d0ntL0gM3" not in record.getMessage()
        assert "unused-verification-token" not in record.getMessage()


def test_the_filter_leaves_ordinary_messages_alone() -> None:
    redacting = log_redaction.RedactingFilter([SECRET])
    for text in ("worker task outbox failed: ratelimited", "deployment #12 of v1.2.3 approved",
                 "refused 3 request(s) to /slack/events with 401 (last: wrong signature)"):
        assert redacting.redact(text) == text


@pytest.mark.parametrize("text", [
    f"url={HOOK}", HOOK.replace("/", "\\/"), "response_url=https%3A%2F%2Fhooks.slack.com%2Fx",
    f"token=unused-verification-token&team_id=T0&response_url={HOOK}",
    f"Bearer {BOT_TOKEN}", "xapp-1-A0-123456-abcdef", f"secret is {SECRET}",
    "payload=%7B%22type%22%3A%22block_actions%22%2C%22token%22%3A%22unused-verification-token",
])
def test_each_kind_of_secret_is_taken_out(text: str) -> None:
    redacted = log_redaction.RedactingFilter([SECRET]).redact(text)
    for forbidden in FORBIDDEN:
        assert forbidden not in redacted


def test_every_mode_installs_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                caplog: pytest.LogCaptureFixture) -> None:
    """``cli.main`` installs the redaction before choosing a mode (shown with ``db current``,
    the same line runs for serve, socket and the shell)."""
    monkeypatch.setenv("QLP_HOME", str(tmp_path))
    monkeypatch.setenv("QLP_DATABASE_URL", f"sqlite:///{tmp_path / 'qlp.db'}")
    monkeypatch.setenv("SLACK_SIGNING_SECRET", "a-signing-secret-of-this-process")
    try:
        assert cli.main(["db", "current"]) == 0
        caplog.set_level(logging.DEBUG)
        logging.getLogger("some.library").debug("key a-signing-secret-of-this-process, %s",
                                                f"response_url={HOOK}")
        assert "a-signing-secret-of-this-process" not in caplog.text
        assert "d0ntL0gM3" not in caplog.text
    finally:
        log_redaction.uninstall()
