"""A fake Slack Socket Mode endpoint, for running the real ``qlp-bot socket`` process.

Socket Mode has two halves, and this module fakes both:

- ``SocketModeSlackDouble``: the Web API double plus ``apps.connections.open``, which answers
  an app-level token (``xapp-...``) with the WebSocket URL of a ``FakeSocketModeServer``, as
  Slack does (``{"ok": true, "url": "wss://wss-primary.slack.com/link/?ticket=..."}``). A bot
  token gets ``not_allowed_token_type``, as from Slack. The tokens it was called with are kept
  in ``connection_tokens`` (the call log does not keep tokens).
- ``FakeSocketModeServer``: a WebSocket server on 127.0.0.1 (ephemeral port). When an app
  connects it sends Slack's ``hello``; the test then pushes envelopes
  (``send_slash_command``) and waits for the app's acknowledgements (``wait_for_ack``). Every
  message the app sends is recorded (``received``).

Envelopes are what Slack sends (slack_sdk ``socket_mode/request.py``): ``type``
(``slash_commands`` here), ``envelope_id``, ``payload`` and ``accepts_response_payload``. The
ack is ``{"envelope_id": ...}``, with ``"payload": {"text": ...}`` for ``ack(text)``.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from typing import Any, Self

from websockets.exceptions import ConnectionClosed
from websockets.sync.server import Server, ServerConnection, serve

from bot.shell.slack_standin import _Reply, _Request
from tests.fakes.slack_double import SlackDouble

APP_ID = "A0QLP"
HELLO: dict[str, Any] = {
    "type": "hello",
    "num_connections": 1,
    "debug_info": {"host": "local"},
    "connection_info": {"app_id": APP_ID},
}


class FakeSocketModeServer:
    """Slack's end of a Socket Mode WebSocket, on 127.0.0.1.

    Thread-safe. Use as a context manager, or ``start()`` / ``stop()``; ``stop()`` closes
    open connections (code 1001, as Slack does when it goes away) and joins every thread.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._connections: list[ServerConnection] = []
        self._paths: list[str] = []
        self._received: list[dict[str, Any]] = []
        self._ids = itertools.count(1)
        self._server: Server | None = None
        self._thread: threading.Thread | None = None

    # ----------------------------------------------------------------- lifecycle

    def start(self) -> Self:
        if self._server is not None:
            raise RuntimeError("the fake Socket Mode server is already running")
        # No server pings: the app pings (slack_sdk's ping_interval), and we answer them.
        self._server = serve(self._handle, "127.0.0.1", 0, ping_interval=None,
                             compression=None)
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        name="fake-socket-mode", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Close the listening socket and every connection; join the threads. Idempotent."""
        server, thread = self._server, self._thread
        if server is None:
            return
        server.shutdown()
        if thread is not None:
            thread.join(timeout=5)
        self._server = None
        self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the fake Socket Mode server is not running")
        return int(self._server.socket.getsockname()[1])

    @property
    def url(self) -> str:
        """What ``apps.connections.open`` hands out, shaped like Slack's."""
        return f"ws://127.0.0.1:{self.port}/link/?ticket=x&app_id={APP_ID}"

    # ----------------------------------------------------------------- the connection

    def _handle(self, connection: ServerConnection) -> None:
        request = connection.request
        with self._cond:
            self._connections.append(connection)
            self._paths.append(request.path if request is not None else "")
            self._cond.notify_all()
        try:
            connection.send(json.dumps(HELLO))
            for raw in connection:
                try:
                    message = json.loads(raw)
                except ValueError:
                    message = {"unparsed": raw}
                with self._cond:
                    self._received.append(message)
                    self._cond.notify_all()
        except ConnectionClosed:
            pass
        finally:
            with self._cond:
                self._connections.remove(connection)
                self._cond.notify_all()

    def wait_for_connection(self, timeout: float = 10.0) -> str:
        """Block until an app is connected; return the path (with query) it connected to."""
        self._wait(lambda: bool(self._connections), timeout, "no app connected")
        with self._cond:
            return self._paths[-1]

    def wait_until_disconnected(self, timeout: float = 5.0) -> None:
        """Block until no app is connected."""
        self._wait(lambda: not self._connections, timeout, "the app is still connected")

    @property
    def connection_count(self) -> int:
        """How many apps are connected right now."""
        with self._cond:
            return len(self._connections)

    @property
    def connects(self) -> int:
        """How many WebSocket connections were opened so far."""
        with self._cond:
            return len(self._paths)

    # ----------------------------------------------------------------- envelopes and acks

    def send_envelope(self, kind: str, payload: dict[str, Any], *,
                      accepts_response_payload: bool = True) -> str:
        """Send one envelope to the newest connection; return its ``envelope_id``."""
        envelope_id = f"e{next(self._ids)}-{kind}"
        envelope = {
            "envelope_id": envelope_id,
            "type": kind,
            "accepts_response_payload": accepts_response_payload,
            "payload": payload,
        }
        with self._cond:
            if not self._connections:
                raise RuntimeError("no app is connected")
            connection = self._connections[-1]
        connection.send(json.dumps(envelope))  # thread-safe in websockets.sync
        return envelope_id

    def send_slash_command(self, text: str, user_id: str = "U0DEV",
                           channel_id: str = "C0DEPLOY", *, command: str = "/qlp",
                           response_url: str | None = None, team_id: str = "T0QLP0001") -> str:
        """Push a ``slash_commands`` envelope with the payload fields Slack sends."""
        stamp = f"{time.time():.6f}".replace(".", "")
        payload = {
            "token": "verification-token-unused-in-socket-mode",
            "team_id": team_id,
            "team_domain": "qlp",
            "channel_id": channel_id,
            "channel_name": "deploys",
            "user_id": user_id,
            "user_name": user_id.lower(),
            "command": command,
            "text": text,
            "api_app_id": APP_ID,
            "is_enterprise_install": "false",
            "response_url": response_url
            or f"https://hooks.slack.com/commands/{team_id}/{stamp}/x",
            "trigger_id": f"{stamp}.{stamp}.fake",
        }
        return self.send_envelope("slash_commands", payload)

    @property
    def received(self) -> list[dict[str, Any]]:
        """Every message the app sent, oldest first (parsed JSON)."""
        with self._cond:
            return [dict(m) for m in self._received]

    def wait_for_ack(self, envelope_id: str, timeout: float = 5.0) -> dict[str, Any]:
        """Block until the app acknowledges ``envelope_id``; return the ack message."""
        def find() -> dict[str, Any] | None:
            return next((m for m in self._received if m.get("envelope_id") == envelope_id),
                        None)

        found = self._wait(find, timeout, f"no ack for {envelope_id}")
        return dict(found)

    def _wait(self, predicate: Any, timeout: float, what: str) -> Any:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                result = predicate()
                if result:
                    return result
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"{what} within {timeout}s "
                                       f"(received: {self._received!r})")
                self._cond.wait(remaining)


class SocketModeSlackDouble(SlackDouble):
    """``SlackDouble`` that also answers ``apps.connections.open`` with ``socket.url``."""

    def __init__(self, socket: FakeSocketModeServer, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.socket = socket
        self.connection_tokens: list[str | None] = []

    def _answer_api(self, method: str, request: _Request) -> _Reply:
        if method != "apps.connections.open":
            return super()._answer_api(method, request)
        # Called with the model lock held (see SlackStandIn._serve).
        self.connection_tokens.append(request.token)
        if request.token is None:
            return _Reply.json(200, {"ok": False, "error": "not_authed"})
        if not request.token.startswith("xapp-"):
            return _Reply.json(200, {"ok": False, "error": "not_allowed_token_type"})
        return _Reply.json(200, {"ok": True, "url": self.socket.url})
