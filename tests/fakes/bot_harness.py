"""The real bot behind real HTTP, for tests: signed requests in, a Slack double out.

``BotHarness`` builds the services exactly as the composition root does (only the clock, the
database and the Slack URL are the test's), serves the Bolt app with waitress on a free port, and
sends requests signed as Slack signs them.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from bot.app import create_app
from bot.http_server import HttpServer, SlackWsgiApp
from bot.modes import health_report
from bot.settings import Settings
from bot.slack_requests import block_actions_body, signed_headers, slash_command_body
from bot.wiring import Services, build_services
from procedures.clock import Clock
from procedures.policy import Policy
from storage.db import Database
from tests.fakes.slack_double import SlackDouble


class AckReply:
    """The HTTP answer to a slash command as Slack reads it: ``text`` is the message text
    whether the ack is plain text or a JSON message with ``blocks`` (then in ``blocks``);
    everything else is the HTTP response's."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self.blocks: list[dict[str, Any]] = []
        self.text = response.text
        if response.headers.get("content-type", "").startswith("application/json"):
            message = json.loads(response.text or "{}")
            if isinstance(message, dict) and "text" in message:
                self.text = str(message["text"])
                self.blocks = list(message.get("blocks") or [])

    def __getattr__(self, name: str) -> Any:
        return getattr(self.response, name)

SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
BOT_TOKEN = "xoxb-test-token"


class BotHarness:
    """One bot, served over HTTP on 127.0.0.1, talking to ``slack``."""

    def __init__(self, *, database: Database, policy: Policy, clock: Clock, home: Path,
                 slack: SlackDouble, start_worker: bool = False) -> None:
        self.slack = slack
        settings = Settings(SLACK_BOT_TOKEN=BOT_TOKEN, SLACK_SIGNING_SECRET=SECRET,
                            SLACK_API_URL=slack.api_url, QLP_HOME=home)
        self.services: Services = build_services(settings, policy=policy, clock=clock,
                                                 database=database)
        self.app = create_app(self.services, signing_secret=SECRET)
        self.metrics = self.services.metrics  # its own registry: deployments, outbox...
        wsgi = SlackWsgiApp(self.app, lambda: health_report(self.services), self.metrics)
        self.server = HttpServer(wsgi, "127.0.0.1", 0, threads=8)
        self.server.start()
        self.url = f"http://127.0.0.1:{self.server.port}"
        self.http = httpx.Client(base_url=self.url, timeout=10)
        if start_worker:
            self.services.start_worker()
        self._n = 0

    def post(self, body: str, *, timestamp: int | None = None, secret: str = SECRET,
             extra_headers: dict[str, str] | None = None) -> httpx.Response:
        headers = signed_headers(secret, body, timestamp)
        headers.update(extra_headers or {})
        return self.http.post("/slack/events", content=body.encode(), headers=headers)

    def command(self, text: str, *, user: str = "U0DEV", channel: str = "C0DEPLOY",
                timestamp: int | None = None, secret: str = SECRET) -> AckReply:
        """Send ``/qlp <text>`` as ``user``; the ack's body is the ephemeral answer."""
        self._n += 1
        response_url = self.slack.response_url(f"cmd-{self._n}", channel=channel, user=user)
        body = slash_command_body(text, user_id=user, channel_id=channel,
                                  response_url=response_url)
        return AckReply(self.post(body, timestamp=timestamp, secret=secret))

    def press(self, action_id: str, value: str, *, user: str, message_ts: str,
              channel: str = "C0DEPLOY", action_ts: str | None = None,
              extra_headers: dict[str, str] | None = None) -> httpx.Response:
        """Press a button on the message ``message_ts``."""
        self._n += 1
        response_url = self.slack.response_url(f"act-{self._n}", channel=channel, user=user,
                                               message_ts=message_ts)
        body = block_actions_body(action_id=action_id, value=value, user_id=user,
                                  channel_id=channel, message_ts=message_ts,
                                  response_url=response_url, action_ts=action_ts)
        return self.post(body, extra_headers=extra_headers)

    def settle(self, timeout: float = 30) -> None:
        """Let the worker finish everything queued (runs, outbox)."""
        worker = self.services.worker
        if worker is None:
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not worker.run_pass() and not worker.busy():
                return
        raise TimeoutError("the worker still had work after the timeout")

    def wait_for(self, predicate: Callable[[], object], timeout: float = 60,
                 what: str = "condition") -> object:
        """Poll ``predicate`` (waking the worker) until it is truthy."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.services.wake_worker()
            value = predicate()
            if value:
                return value
            time.sleep(0.05)
        raise TimeoutError(f"timed out waiting for {what}")

    def close(self) -> None:
        self.http.close()
        self.server.stop()
        self.services.stop_worker()
        self.services.platforms.shutdown_all()
        self.services.platforms.close()
        self.services.audit.close()
