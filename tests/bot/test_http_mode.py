"""HTTP mode: signed requests into the real Bolt app, over real HTTP, on both databases."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime

from procedures.clock import FixedClock
from tests.fakes.bot_harness import BotHarness


def _audit_rows(bot: BotHarness) -> int:
    return len(bot.services.audit.recent(10_000))


def test_help_is_answered_with_the_grammar(bot: BotHarness) -> None:
    response = bot.command("help")
    assert response.status_code == 200
    assert "/qlp deploy &lt;version&gt;" in response.text
    assert "/qlp window" in response.text
    assert _audit_rows(bot) == 1


def test_a_wrong_signature_gets_401_and_writes_nothing(bot: BotHarness) -> None:
    response = bot.command("status", secret="not-the-secret")
    assert response.status_code == 401
    assert _audit_rows(bot) == 0
    assert bot.slack.call_count() == 0


def test_a_six_minute_old_timestamp_gets_401_and_writes_nothing(bot: BotHarness) -> None:
    response = bot.command("status", timestamp=int(time.time()) - 360)
    assert response.status_code == 401
    assert _audit_rows(bot) == 0


def test_a_timestamp_four_minutes_old_is_still_accepted(bot: BotHarness) -> None:
    assert bot.command("help", timestamp=int(time.time()) - 240).status_code == 200


def test_unknown_commands_get_a_did_you_mean(bot: BotHarness) -> None:
    response = bot.command("stauts")
    assert response.status_code == 200
    assert "`status`" in response.text.split("\n")[0]


def test_window_uses_the_injected_clock(bot: BotHarness, clock: FixedClock) -> None:
    assert "*open*" in bot.command("window").text
    clock.set(datetime(2026, 12, 4, 11, 0, tzinfo=UTC))  # a Friday
    text = bot.command("window").text
    assert "avoided-day" in text
    assert "Tue 2026-12-08 10:00 UTC" in text


def test_status_reports_every_environment(bot: BotHarness) -> None:
    text = bot.command("status").text
    assert "*production*" in text and "*staging*" in text
    assert "No deployment recorded yet." in text
    assert "There is no environment `prod`. Did you mean `production`?" in \
        bot.command("status prod").text


def test_status_shows_live_version_and_lock(bot: BotHarness, clock: FixedClock) -> None:
    environments = bot.services.environments
    environments.record_switch("production", "green", "v1.2.3")
    environments.acquire_lock("production", "U0LEAD1", "incident 42", None, "tester",
                              clock.now())
    text = bot.command("status production").text
    assert "Live: *v1.2.3* on green" in text
    assert "Locked by <@U0LEAD1>" in text and "incident 42" in text


def test_healthz_and_metrics(bot: BotHarness) -> None:
    assert bot.http.get("/healthz").json()["worker"] == "stopped"
    assert bot.http.get("/healthz").status_code == 503
    bot.services.start_worker()
    bot.command("help")
    health = bot.http.get("/healthz")
    assert health.status_code == 200
    assert json.loads(health.text)["database"] == "ok"
    metrics = bot.http.get("/metrics").text
    assert 'qlp_slack_requests_total{status="200"} 1' in metrics
    assert 'qlp_slack_ack_seconds_count{interaction="command",name="help"} 1' in metrics


def test_bad_http_gets_clear_statuses_never_500(bot: BotHarness) -> None:
    assert bot.http.get("/slack/events").status_code == 405
    assert bot.http.get("/nowhere").status_code == 404
    huge = "x" * (2 * 1024 * 1024)
    assert bot.http.post("/slack/events", content=huge).status_code == 413
    garbage = bot.post("payload=%7Bnot-json")
    assert garbage.status_code < 500


def test_an_empty_command_shows_help(bot: BotHarness) -> None:
    response = bot.command("")
    assert response.status_code == 200 and "QLP deploy bot" in response.text
