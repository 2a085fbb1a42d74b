"""Issue 13, findings 1 and 2: what an unauthenticated client can cost ``POST /slack/events``,
and malformed signature headers.

The bot is served by the real server (waitress, bounded by ``bot.http_server.HttpServer``) on
127.0.0.1; hostile clients are raw sockets, so that nothing between them and the server tidies
their requests up.
"""

from __future__ import annotations

import json
import logging
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from bot.app import create_app
from bot.http_server import MAX_BODY, HttpServer, SlackWsgiApp
from bot.metrics import Metrics
from bot.modes import health_report
from bot.slack_requests import signed_headers, slash_command_body
from procedures.clock import FixedClock
from storage.db import Database
from tests.fakes.bot_harness import SECRET, BotHarness
from tests.fakes.policies import make_policy
from tests.fakes.slack_double import SlackDouble

HOOK = "https://hooks.slack.com/commands/T0LOCAL/1234/d0ntL0gM3"


@pytest.fixture
def edge_bot(sqlite_database: Database, clock: FixedClock, slack: SlackDouble,
             tmp_path: Path) -> Iterator[BotHarness]:
    """The real bot over HTTP on SQLite (the edge does not depend on the backend)."""
    harness = BotHarness(database=sqlite_database, policy=make_policy(), clock=clock,
                         home=tmp_path / "home", slack=slack)
    yield harness
    harness.close()


def _connect(bot: BotHarness) -> socket.socket:
    return socket.create_connection(("127.0.0.1", bot.server.port), timeout=5)


def _status_line(sock: socket.socket, timeout: float = 5) -> str:
    """The first line the server answers on ``sock`` ("" if it closed without answering)."""
    sock.settimeout(timeout)
    data = b""
    while b"\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data.split(b"\r\n", 1)[0].decode("latin-1")


def _help(bot: BotHarness, timeout: float = 3) -> httpx.Response:
    body = slash_command_body("help", user_id="U0DEV", channel_id="C0DEPLOY")
    with httpx.Client(base_url=bot.url, timeout=timeout) as client:
        return client.post("/slack/events", content=body.encode(),
                           headers=signed_headers(SECRET, body))


# -- finding 1: bodies, connections ----------------------------------------------------------


def test_an_over_size_content_length_gets_413_before_any_body_is_sent(
        edge_bot: BotHarness) -> None:
    with _connect(edge_bot) as sock:
        sock.sendall(b"POST /slack/events HTTP/1.1\r\nHost: x\r\n"
                     b"Content-Type: application/x-www-form-urlencoded\r\n"
                     b"Content-Length: 209715200\r\n\r\n")  # 200 MiB announced, none sent
        assert _status_line(sock).startswith("HTTP/1.1 413")


def test_a_chunked_body_is_cut_off_at_the_limit(edge_bot: BotHarness) -> None:
    chunk = b"x" * 65536
    with _connect(edge_bot) as sock:
        sock.sendall(b"POST /slack/events HTTP/1.1\r\nHost: x\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n")
        try:
            for _ in range(MAX_BODY // len(chunk) + 2):  # past 1 MiB; never terminated
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        except OSError:
            pass  # the server answered and closed while we were still sending
        assert _status_line(sock).startswith("HTTP/1.1 413")


def test_a_body_of_exactly_the_limit_is_still_read(edge_bot: BotHarness) -> None:
    body = "x" * MAX_BODY
    response = edge_bot.http.post("/slack/events", content=body.encode(),
                                  headers=signed_headers(SECRET, body))
    assert response.status_code != 413


def test_idle_unauthenticated_connections_do_not_starve_a_signed_request(
        edge_bot: BotHarness) -> None:
    idle = [_connect(edge_bot) for _ in range(150)]  # waitress's default limit was 100
    try:
        time.sleep(0.2)  # let the server accept them all
        response = _help(edge_bot, timeout=3)  # Slack gives up after 3 s
        assert response.status_code == 200
        assert "QLP deploy bot" in response.text
    finally:
        for sock in idle:
            sock.close()


@pytest.mark.slow
def test_slow_and_silent_connections_are_closed_after_the_request_timeout(
        sqlite_database: Database, clock: FixedClock, slack: SlackDouble,
        tmp_path: Path) -> None:
    harness = BotHarness(database=sqlite_database, policy=make_policy(), clock=clock,
                         home=tmp_path / "home", slack=slack)
    server = HttpServer(SlackWsgiApp(harness.app, lambda: health_report(harness.services),
                                     Metrics()), "127.0.0.1", 0, request_timeout=1.0)
    server.start()
    try:
        silent = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        slow = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        slow.sendall(b"POST /slack/events HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n"
                     b"token=")  # 6 of 100 bytes, then nothing
        started = time.monotonic()
        for sock in (silent, slow):
            sock.settimeout(6)
            assert sock.recv(4096) == b""  # closed by the server, not by our timeout
            sock.close()
        assert time.monotonic() - started < 5
        assert server.timed_out >= 2
    finally:
        server.stop()
        harness.close()


# -- finding 2: malformed signature headers --------------------------------------------------

_TIMESTAMPS = ["abc", "1.7e9", "", "1700000000 1", "+1700000000", "-1",
               "\u0661\u0667" + "\u0660" * 8,  # Arabic-Indic digits: int() takes them
               "9" * 5000, "99999999999999999999", "0x65"]
_SIGNATURES = ["", "v0=", "v0=zz", "v1=" + "a" * 64, "v0=" + "A" * 64, "v0=" + "a" * 63,
               "v0=" + "a" * 5000, "sha256=abc"]


def _post_with(bot: BotHarness, timestamp: str | None, signature: str | None) -> httpx.Response:
    body = slash_command_body("status", user_id="U0DEV", channel_id="C0DEPLOY",
                              response_url=HOOK)
    headers = signed_headers(SECRET, body)
    for name, value in (("x-slack-request-timestamp", timestamp),
                        ("x-slack-signature", signature)):
        if value is None:
            del headers[name]
        else:
            headers[name] = value
    return bot.http.post("/slack/events", content=body.encode("utf-8"),
                         headers={k: v.encode("utf-8") for k, v in headers.items()})


def _no_trace(caplog: pytest.LogCaptureFixture) -> None:
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    assert "Traceback" not in caplog.text


@pytest.mark.parametrize("timestamp", [*_TIMESTAMPS, None])
def test_a_malformed_timestamp_is_a_clean_401(edge_bot: BotHarness, timestamp: str | None,
                                              caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    response = _post_with(edge_bot, timestamp, None if timestamp is None else "v0=" + "0" * 64)
    assert response.status_code == 401
    assert json.loads(response.text) == {"error": "invalid request"}
    _no_trace(caplog)
    assert edge_bot.services.audit.recent(10) == []


@pytest.mark.parametrize("signature", [*_SIGNATURES, None])
def test_a_malformed_signature_is_a_clean_401(edge_bot: BotHarness, signature: str | None,
                                              caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    response = _post_with(edge_bot, str(int(time.time())), signature)
    assert response.status_code == 401
    _no_trace(caplog)


def test_a_refused_request_body_is_not_logged_at_any_level(
        edge_bot: BotHarness, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    body = slash_command_body("status", user_id="U0DEV", channel_id="C0DEPLOY",
                              response_url=HOOK)
    response = edge_bot.post(body, secret="not-the-secret")
    assert response.status_code == 401
    response = edge_bot.post(body, timestamp=int(time.time()) - 3600)
    assert response.status_code == 401
    for record in caplog.records:
        message = record.getMessage()
        assert "hooks.slack.com" not in message and "unused-verification-token" not in message
        assert "d0ntL0gM3" not in message and "response_url" not in message


def test_a_signed_request_still_goes_through(edge_bot: BotHarness) -> None:
    response = _help(edge_bot)
    assert response.status_code == 200 and "QLP deploy bot" in response.text
    metrics = edge_bot.http.get("/metrics").text
    assert 'qlp_slack_requests_total{status="200"} 1' in metrics


def test_the_refusal_counts_in_the_metrics(edge_bot: BotHarness) -> None:
    _post_with(edge_bot, "abc", "v0=" + "0" * 64)
    metrics = edge_bot.http.get("/metrics").text
    assert 'qlp_slack_requests_total{status="401"} 1' in metrics


def test_the_app_verifies_with_the_bolt_apps_secret_when_not_given_one(
        edge_bot: BotHarness) -> None:
    wsgi = SlackWsgiApp(create_app(edge_bot.services, signing_secret="another-secret"),
                        lambda: {}, Metrics())
    assert wsgi._signature is not None
    body = "command=%2Fqlp&text=help"
    headers = signed_headers("another-secret", body)
    assert wsgi._signature.problem(body.encode(), headers["x-slack-request-timestamp"],
                                   headers["x-slack-signature"]) is None
    assert wsgi._signature.problem(body.encode(), headers["x-slack-request-timestamp"],
                                   "v0=" + "0" * 64) == "wrong signature"
