"""A local stand-in for the part of Slack's Web API that the bot uses.

``SlackStandIn`` is a real HTTP server on 127.0.0.1 (ephemeral port). Point
``WebClient(base_url=standin.api_url)`` at it, and hand out ``standin.response_url(...)`` where
Slack would hand out ``https://hooks.slack.com/...`` URLs. It accepts exactly what slack_sdk
sends: every call is a POST to ``/api/<method>``; chat.* and views.* carry a JSON body, the
others a form-encoded body or a query string; the token travels in ``Authorization: Bearer``.

It keeps a small model of the workspace (channels with ordered top-level messages, their
threads, ephemeral messages, opened views) and a log of every call, and it tells subscribers
about each change as it happens, which is what the local shell prints from.

``strict`` (the default) makes it fussier than Slack in a few places so that tests catch bugs
Slack would let through or only show in the client: ``thread_ts`` must be a string naming an
existing top-level message of the same channel, blocks are checked against Block Kit's limits,
an unknown user in ``users.info`` is an error and a ``response_url`` takes at most five posts.
"""

from __future__ import annotations

import copy
import json
import logging
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Literal, Self
from urllib.parse import parse_qs, quote, unquote, urlsplit

from bot.doctor import MANIFEST_BOT_SCOPES

__all__ = [
    "ApiCall",
    "Fault",
    "OpenedView",
    "SlackStandIn",
    "StandInEvent",
    "StoredMessage",
    "UploadedFile",
    "block_problems",
    "home_view_problems",
    "view_problems",
]

_log = logging.getLogger(__name__)

DEFAULT_TEAM_ID = "T0QLP0001"
DEFAULT_BOT_USER_ID = "U0QLPBOT1"
DEFAULT_BOT_ID = "B0QLPBOT1"
# 2025-11-26 14:00:00 UTC; the first message gets "1764165600.000100".
DEFAULT_BASE_TS = 1764165600

# Methods whose JSON bodies Slack reads. For the others Slack only looks at the query string
# and form fields, so (in strict mode) JSON arguments sent to them are ignored, as by Slack.
_JSON_METHODS = frozenset(
    {"chat.postMessage", "chat.update", "chat.postEphemeral", "views.open", "views.publish",
     "auth.test"}
)
# The scope each method needs (Slack's method reference); conversations.info decides per channel.
_METHOD_SCOPES = {
    "chat.postMessage": "chat:write",
    "chat.update": "chat:write",
    "chat.postEphemeral": "chat:write",
    "usergroups.users.list": "usergroups:read",
    "users.info": "users:read",
    "files.getUploadURLExternal": "files:write",
    "files.completeUploadExternal": "files:write",
}
# Form-encoded callers send structured arguments as JSON strings.
_JSON_STRING_ARGS = ("blocks", "attachments", "view", "metadata")
_TRUE_STRINGS = frozenset({"1", "true", "True", "yes"})
TRIGGER_LIFETIME_NS = 3_000_000_000  # a trigger_id opens a view within 3 s of its issue, once
# The input elements the stand-in knows (Block Kit's input block).
_INPUT_ELEMENTS = frozenset({
    "plain_text_input", "static_select", "external_select", "datetimepicker", "datepicker",
    "timepicker", "checkboxes", "radio_buttons", "users_select", "conversations_select",
    "channels_select", "multi_static_select", "email_text_input", "number_input",
    "url_text_input", "rich_text_input"})
_RESPONSE_PREFIX = "/response/"
_API_PREFIX = "/api/"
_UPLOAD_PREFIX = "/upload/"
UPLOAD = "upload"
"""The method name of a POST to an ``upload_url`` (call log, faults)."""

EventKind = Literal["posted", "updated", "ephemeral", "deleted", "view_opened"]


@dataclass
class StoredMessage:
    """One message as the stand-in holds it.

    ``thread_ts`` is None for a top-level message and the parent's ts for a reply. ``user`` is
    the only person who can see an ephemeral message (None for ordinary messages).
    ``updates`` counts ``chat.update`` / ``replace_original`` changes. ``source`` says how it
    arrived: ``"api"`` (Web API) or ``"response_url"``.
    """

    channel: str
    ts: str
    text: str
    blocks: list[dict[str, Any]]
    thread_ts: str | None = None
    user: str | None = None
    ephemeral: bool = False
    broadcast: bool = False
    updates: int = 0
    reply_count: int = 0
    source: str = "api"
    files: list[dict[str, Any]] = field(default_factory=list)

    @property
    def is_reply(self) -> bool:
        """True for a message inside a thread (not the thread's parent)."""
        return self.thread_ts is not None and self.thread_ts != self.ts

    def as_slack(self, *, bot_user_id: str, bot_id: str, team_id: str) -> dict[str, Any]:
        """The message object as the Web API returns it in ``message`` fields."""
        body: dict[str, Any] = {
            "type": "message",
            "user": bot_user_id,
            "bot_id": bot_id,
            "team": team_id,
            "text": self.text,
            "ts": self.ts,
        }
        if self.blocks:
            body["blocks"] = copy.deepcopy(self.blocks)
        if self.thread_ts is not None:
            body["thread_ts"] = self.thread_ts
        if self.broadcast:
            body["subtype"] = "thread_broadcast"
        if self.files:
            body["files"] = copy.deepcopy(self.files)
            body.setdefault("subtype", "file_share")
        return body


@dataclass
class UploadedFile:
    """A file uploaded through ``files.getUploadURLExternal``: ``data`` once its bytes were
    POSTed to the upload URL, ``completed`` once ``files.completeUploadExternal`` took it,
    ``path`` where it was written when it was shared in a channel."""

    id: str
    filename: str
    length: int
    alt_txt: str = ""
    data: bytes | None = None
    completed: bool = False
    title: str = ""
    channel: str | None = None
    thread_ts: str | None = None
    path: str | None = None

    def as_slack(self) -> dict[str, Any]:
        """The file object as a message's ``files`` shows it (plus ``local_path``)."""
        return {"id": self.id, "name": self.filename, "title": self.title or self.filename,
                "size": self.length, "mimetype": "image/png" if self.filename.endswith(".png")
                else "application/octet-stream", "local_path": self.path}


@dataclass
class OpenedView:
    """A modal opened with ``views.open``."""

    id: str
    trigger_id: str
    view: dict[str, Any]


StandInEvent = tuple[EventKind, StoredMessage | OpenedView]
"""What subscribers receive: ``("posted" | "updated" | "ephemeral" | "deleted", StoredMessage)``
or ``("view_opened", OpenedView)``. The object is a snapshot; changing it changes nothing."""


@dataclass(frozen=True)
class ApiCall:
    """One request the stand-in answered (Web API call or ``response_url`` post).

    ``method`` is the Web API method name, or ``"response_url"`` with the URL's name in
    ``target``. ``args`` are the parsed arguments (query string, form and JSON merged).
    ``faulted`` marks calls answered by fault injection; they changed no state.
    """

    method: str
    args: dict[str, Any]
    at: float
    status: int
    ok: bool
    error: str | None = None
    content_type: str = ""
    target: str | None = None
    faulted: bool = False


@dataclass(frozen=True)
class Fault:
    """A canned failure answer, used by fault-injecting subclasses (see ``_fault_for``)."""

    status: int
    error: str
    retry_after: int | None = None

    def reply(self) -> _Reply:
        """The HTTP answer for this fault."""
        headers = {} if self.retry_after is None else {"Retry-After": str(self.retry_after)}
        return _Reply.json(self.status, {"ok": False, "error": self.error}, headers)


@dataclass
class _Reply:
    status: int
    body: bytes
    content_type: str
    headers: dict[str, str] = field(default_factory=dict)
    ok: bool = True
    error: str | None = None

    @classmethod
    def json(
        cls, status: int, payload: Mapping[str, Any], headers: Mapping[str, str] | None = None
    ) -> _Reply:
        ok = bool(payload.get("ok", status == 200)) and status == 200
        error = payload.get("error")
        return cls(
            status=status,
            body=json.dumps(payload).encode(),
            content_type="application/json; charset=utf-8",
            headers=dict(headers or {}),
            ok=ok,
            error=error if isinstance(error, str) else None,
        )

    @classmethod
    def text(cls, status: int, text: str) -> _Reply:
        return cls(
            status=status,
            body=text.encode(),
            content_type="text/plain; charset=utf-8",
            ok=status == 200,
            error=None if status == 200 else text,
        )


class _ApiError(Exception):
    """A Web API error answer: 200 with ``{"ok": false, "error": ...}``."""

    def __init__(self, error: str, **extra: Any) -> None:
        super().__init__(error)
        self.error = error
        self.extra = extra


@dataclass
class _ResponseTarget:
    name: str
    channel: str | None
    user: str | None
    message_ts: str | None
    uses: int = 0


@dataclass
class _Request:
    """A parsed incoming request."""

    path: str
    args: dict[str, Any]
    content_type: str
    token: str | None
    json_body: bool
    bad_body: str | None = None
    raw: bytes = b""


class _Server(ThreadingHTTPServer):
    # Handler threads are joined on close, so a stopped stand-in leaves no thread behind.
    daemon_threads = False
    block_on_close = True

    def __init__(self, standin: SlackStandIn) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.standin = standin


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    # HTTP/1.0: one request per connection, so no idle keep-alive thread outlives a request.
    protocol_version = "HTTP/1.0"
    timeout = 10

    def do_POST(self) -> None:
        self.server.standin._serve(self)

    def do_GET(self) -> None:
        self.server.standin._serve(self)

    def log_message(self, format: str, *args: Any) -> None:
        _log.debug("slack stand-in: " + format, *args)


class SlackStandIn:
    """A local HTTP stand-in for Slack's Web API and ``response_url`` endpoints.

    Usage::

        standin = SlackStandIn(groups={"S0OPS": ["U1", "U2"]}, users={"U1": "alice"})
        standin.start()
        client = WebClient(token="xoxb-test", base_url=standin.api_url)
        ...
        standin.stop()

    It is also a context manager. All public methods are thread-safe; the query methods return
    snapshots (deep copies). Subscribers are called synchronously, on the server thread that
    handled the request, while the model lock is held: they may call the query methods but must
    not make HTTP calls to the stand-in.
    """

    def __init__(
        self,
        *,
        groups: Mapping[str, Iterable[str]] | None = None,
        users: Mapping[str, str] | None = None,
        channels: Iterable[str] | None = None,
        token: str | None = None,
        strict: bool = True,
        team_id: str = DEFAULT_TEAM_ID,
        bot_user_id: str = DEFAULT_BOT_USER_ID,
        bot_id: str = DEFAULT_BOT_ID,
        bot_name: str = "qlp",
        base_ts: int = DEFAULT_BASE_TS,
        clock: Callable[[], float] | None = None,
        response_url_limit: int | None = 5,
        scopes: Iterable[str] | None = None,
        member_of: Iterable[str] | None = None,
        files_dir: Path | None = None,
    ) -> None:
        """Configure the workspace.

        ``groups`` maps user-group IDs (``S...``) to member user IDs; ``users`` maps user IDs
        to display names. ``channels``, when given, is the set of channel IDs that exist
        (others answer ``channel_not_found``); by default any channel exists. ``token``, when
        given, is the only accepted token; by default any ``xoxb-`` token is. ``scopes`` are
        the token's OAuth scopes, sent in every answer's ``x-oauth-scopes`` header as Slack does
        (default: the bot scopes of ``manifest.yml``); methods check the ones they need.
        ``member_of`` is the set of channels the bot is a member of (``conversations.info``'s
        ``is_member``); by default every channel. ``clock`` feeds
        message timestamps (they stay unique and increasing either way) and the call log;
        without it timestamps count up from ``base_ts``. ``files_dir`` is where shared files
        are written (a new temporary directory when first needed, by default); the file's
        message in the channel or thread names the path.
        """
        self.groups: dict[str, list[str]] = {k: list(v) for k, v in (groups or {}).items()}
        self.users: dict[str, str] = dict(users or {})
        self.users.setdefault(bot_user_id, bot_name)
        self.channels: set[str] | None = None if channels is None else set(channels)
        self.token = token
        self.strict = strict
        self.team_id = team_id
        self.bot_user_id = bot_user_id
        self.bot_id = bot_id
        self.bot_name = bot_name
        self.response_url_limit = response_url_limit
        self.scopes: list[str] = list(MANIFEST_BOT_SCOPES if scopes is None else scopes)
        self.member_of: set[str] | None = None if member_of is None else set(member_of)
        self.files_dir = files_dir
        self.home_enabled = True  # the app's Home tab is on (views.publish: not_enabled if not)
        self._clock = clock
        self._base_us = base_ts * 1_000_000
        self._cond = threading.Condition(threading.RLock())
        self._subscribers: list[Callable[[StandInEvent], None]] = []
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._reset_state()

    # ----------------------------------------------------------------- lifecycle

    def start(self) -> Self:
        """Bind 127.0.0.1 on an ephemeral port and serve on a daemon thread."""
        if self._server is not None:
            raise RuntimeError("the Slack stand-in is already running")
        self._server = _Server(self)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"slack-standin:{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, close the socket and join the server's threads. Idempotent."""
        server, thread = self._server, self._thread
        if server is None:
            return
        server.shutdown()
        server.server_close()
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
        """The TCP port the stand-in listens on (only while running)."""
        if self._server is None:
            raise RuntimeError("the Slack stand-in is not running")
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT``."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_url(self) -> str:
        """The Web API base URL, for ``WebClient(base_url=...)`` or ``SLACK_API_URL``."""
        return f"{self.base_url}{_API_PREFIX}"

    def response_url(
        self,
        name: str,
        *,
        channel: str | None = None,
        user: str | None = None,
        message_ts: str | None = None,
    ) -> str:
        """A ``response_url`` on this server, like those in slash-command and action payloads.

        ``channel`` and ``user`` say where replies go: an ephemeral reply is shown to ``user``
        in ``channel``; ``response_type: in_channel`` posts to ``channel``. ``message_ts`` is the
        message the interaction came from, which ``replace_original`` / ``delete_original``
        act on. Calling it again with the same name rebinds the URL and resets its use count.
        """
        with self._cond:
            self._targets[name] = _ResponseTarget(name, channel, user, message_ts)
        return f"{self.base_url}{_RESPONSE_PREFIX}{quote(name, safe='')}"

    # ----------------------------------------------------------------- observers and queries

    def subscribe(self, callback: Callable[[StandInEvent], None]) -> Callable[[], None]:
        """Call ``callback(event)`` on every change; returns a function that unsubscribes."""
        with self._cond:
            self._subscribers.append(callback)

        def unsubscribe() -> None:
            with self._cond:
                if callback in self._subscribers:
                    self._subscribers.remove(callback)

        return unsubscribe

    def messages(self, channel: str) -> list[StoredMessage]:
        """Top-level messages of ``channel``, oldest first (thread replies are not included,
        broadcast or not; see ``thread``)."""
        with self._cond:
            return [self._snapshot(self._by_ts[ts]) for ts in self._channels.get(channel, [])]

    def thread(self, channel: str, ts: str) -> list[StoredMessage]:
        """Replies in the thread under the top-level message ``ts``, oldest first, without the
        parent. Ephemeral replies are not included (see ``ephemerals``)."""
        with self._cond:
            return [self._snapshot(self._by_ts[r]) for r in self._replies.get((channel, ts), [])]

    def ephemerals(
        self, user: str | None = None, *, channel: str | None = None
    ) -> list[StoredMessage]:
        """Ephemeral messages, oldest first, optionally only those for ``user`` / in
        ``channel``."""
        with self._cond:
            return [
                self._snapshot(m)
                for m in self._ephemerals
                if (user is None or m.user == user) and (channel is None or m.channel == channel)
            ]

    def transcript(self, channel: str, user: str | None = None) -> list[StoredMessage]:
        """Everything in ``channel`` that ``user`` can see, by ts: top-level messages, thread
        replies and ``user``'s ephemerals (everyone's when ``user`` is None). Feed it to
        ``render.render_transcript``."""
        with self._cond:
            found = [
                m
                for m in self._by_ts.values()
                if m.channel == channel and (not m.ephemeral or user is None or m.user == user)
            ]
            found.sort(key=lambda m: _ts_sort_key(m.ts))
            return [self._snapshot(m) for m in found]

    def find_message(self, ts: str) -> StoredMessage | None:
        """Any message (top-level, reply or ephemeral) with this ts, or None."""
        with self._cond:
            found = self._by_ts.get(ts)
            return None if found is None else self._snapshot(found)

    def views(self) -> list[OpenedView]:
        """Views opened with ``views.open``, oldest first."""
        with self._cond:
            return copy.deepcopy(self._views)

    def home_views(self, user_id: str) -> list[dict[str, Any]]:
        """Every Home view published to ``user_id`` with ``views.publish``, oldest first."""
        with self._cond:
            return copy.deepcopy(self._homes.get(user_id, []))

    def calls(self, method: str | None = None) -> list[ApiCall]:
        """The call log, oldest first, optionally only calls of ``method``."""
        with self._cond:
            return [c for c in self._calls if method is None or c.method == method]

    def call_count(self, method: str | None = None) -> int:
        """How many calls (of ``method``) were answered, faulted ones included."""
        return len(self.calls(method))

    def user_name(self, user_id: str) -> str | None:
        """The configured name of ``user_id``, or None: a lookup for ``render``."""
        with self._cond:
            return self.users.get(user_id)

    def wait_for(self, predicate: Callable[[], Any], timeout: float = 5.0) -> Any:
        """Block until ``predicate()`` returns something truthy, and return it.

        The predicate is re-evaluated whenever the model or the call log changes (no polling
        sleep). Raises ``TimeoutError`` when ``timeout`` seconds pass first.
        """
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                result = predicate()
                if result:
                    return result
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"condition not met within {timeout}s")
                self._cond.wait(remaining)

    def reset(self) -> None:
        """Forget all messages, views, calls and response URLs (configuration stays)."""
        with self._cond:
            self._reset_state()
            self._cond.notify_all()

    # ----------------------------------------------------------------- hooks for subclasses

    def _fault_for(self, method: str, target: str | None) -> Fault | None:
        """Return a fault to answer this call with instead of serving it (None: serve it).

        Called with the model lock held, before authentication, for every Web API call
        (``method``) and every ``response_url`` post (``method="response_url"``, ``target`` =
        the URL's name). The base stand-in never faults.
        """
        return None

    # ----------------------------------------------------------------- HTTP plumbing

    def _serve(self, handler: BaseHTTPRequestHandler) -> None:
        request = self._read(handler)
        if request.path.startswith(_UPLOAD_PREFIX):
            self._serve_upload(handler, request, unquote(request.path[len(_UPLOAD_PREFIX):]))
            return
        if request.path.startswith(_API_PREFIX):
            method, target = request.path[len(_API_PREFIX) :], None
        elif request.path.startswith(_RESPONSE_PREFIX):
            method, target = "response_url", unquote(request.path[len(_RESPONSE_PREFIX) :])
        else:
            self._write(handler, _Reply.text(404, "not found"))
            return
        with self._cond:
            fault = self._fault_for(method, target)
            if fault is not None:
                reply = fault.reply()
            elif target is not None:
                reply = self._answer_response_url(target, request)
            else:
                reply = self._answer_api(method, request)
            self._calls.append(
                ApiCall(
                    method=method,
                    args=copy.deepcopy(request.args),
                    at=self._now(),
                    status=reply.status,
                    ok=reply.ok,
                    error=reply.error,
                    content_type=request.content_type,
                    target=target,
                    faulted=fault is not None,
                )
            )
            self._cond.notify_all()
        self._write(handler, reply)

    @staticmethod
    def _read(handler: BaseHTTPRequestHandler) -> _Request:
        parts = urlsplit(handler.path)
        length = int(handler.headers.get("Content-Length") or 0)
        raw = handler.rfile.read(length) if length > 0 else b""
        content_type = handler.headers.get("Content-Type", "")
        if parts.path.startswith(_UPLOAD_PREFIX):  # a file's bytes: nothing to parse
            return _Request(parts.path, {"length": len(raw)}, content_type, None, False,
                            raw=raw)
        args: dict[str, Any] = {
            k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()
        }
        json_body = False
        bad_body: str | None = None
        if raw:
            is_json = "json" in content_type.lower() or raw.lstrip().startswith(b"{")
            if is_json:
                json_body = True
                try:
                    body = json.loads(raw)
                except ValueError:
                    body, bad_body = {}, "invalid_json"
                if not isinstance(body, dict):
                    body, bad_body = {}, "invalid_json"
                args.update(body)
            else:
                form = parse_qs(raw.decode("utf-8", "replace"), keep_blank_values=True)
                args.update({k: v[-1] for k, v in form.items()})
        for key in _JSON_STRING_ARGS:
            value = args.get(key)
            if isinstance(value, str) and value.strip():
                try:
                    args[key] = json.loads(value)
                except ValueError:
                    bad_body = bad_body or f"invalid_{key}_format"
        auth = handler.headers.get("Authorization", "")
        token = auth[len("Bearer ") :].strip() if auth.startswith("Bearer ") else None
        if token is None and isinstance(args.get("token"), str):
            token = args.pop("token")
        args.pop("token", None)
        return _Request(parts.path, args, content_type, token, json_body, bad_body)

    @staticmethod
    def _write(handler: BaseHTTPRequestHandler, reply: _Reply) -> None:
        try:
            handler.send_response(reply.status)
            handler.send_header("Content-Type", reply.content_type)
            handler.send_header("Content-Length", str(len(reply.body)))
            for name, value in reply.headers.items():
                handler.send_header(name, value)
            handler.end_headers()
            handler.wfile.write(reply.body)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up; nothing to do
            _log.debug("slack stand-in: client went away before the answer")

    # ----------------------------------------------------------------- Web API

    def _answer_api(self, method: str, request: _Request) -> _Reply:
        if request.token is None:
            return _Reply.json(200, {"ok": False, "error": "not_authed"})
        if not self._token_ok(request.token):
            return _Reply.json(200, {"ok": False, "error": "invalid_auth"})
        if request.bad_body is not None:
            return _Reply.json(200, {"ok": False, "error": request.bad_body})
        handler = self._methods().get(method)
        if handler is None:
            return _Reply.json(200, {"ok": False, "error": "unknown_method", "req_method": method})
        needed = _METHOD_SCOPES.get(method)
        if needed is not None and needed not in self.scopes:
            return _Reply.json(200, {"ok": False, "error": "missing_scope", "needed": needed,
                                     "provided": ",".join(self.scopes)})
        args = request.args
        if self.strict and request.json_body and method not in _JSON_METHODS:
            args = {}  # Slack does not read JSON bodies for these methods
        try:
            payload = handler(args)
        except _ApiError as err:
            return _Reply.json(200, {"ok": False, "error": err.error, **err.extra})
        headers = {
            "X-OAuth-Scopes": ",".join(self.scopes)
        }
        return _Reply.json(200, {"ok": True, **payload}, headers)

    def _token_ok(self, token: str) -> bool:
        if self.token is not None:
            return token == self.token
        return token.startswith("xoxb-") and len(token) > len("xoxb-")

    def _methods(self) -> dict[str, Callable[[dict[str, Any]], dict[str, Any]]]:
        return {
            "auth.test": self._auth_test,
            "chat.postMessage": self._chat_post_message,
            "chat.update": self._chat_update,
            "chat.postEphemeral": self._chat_post_ephemeral,
            "usergroups.users.list": self._usergroups_users_list,
            "users.info": self._users_info,
            "views.open": self._views_open,
            "views.publish": self._views_publish,
            "conversations.info": self._conversations_info,
            "files.getUploadURLExternal": self._files_get_upload_url_external,
            "files.completeUploadExternal": self._files_complete_upload_external,
        }

    # ----------------------------------------------------------------- file uploads

    def uploaded_files(self) -> list[UploadedFile]:
        """Files whose upload was started, oldest first (snapshots; ``data`` is the bytes)."""
        with self._cond:
            return copy.deepcopy(list(self._files.values()))

    def _files_get_upload_url_external(self, args: dict[str, Any]) -> dict[str, Any]:
        filename, length = args.get("filename"), args.get("length")
        if not isinstance(filename, str) or not filename.strip():
            raise _ApiError("invalid_arguments", response_metadata={
                "messages": ["[ERROR] missing required field: filename"]})
        try:
            size = int(str(length))
        except ValueError:
            size = 0
        if size < 1:
            raise _ApiError("invalid_arguments", response_metadata={
                "messages": ["[ERROR] length must be a positive integer"]})
        self._file_seq += 1
        file_id = f"F{self._file_seq:010d}"
        self._files[file_id] = UploadedFile(file_id, filename, size,
                                            alt_txt=str(args.get("alt_txt") or ""))
        return {"upload_url": f"{self.base_url}{_UPLOAD_PREFIX}{file_id}", "file_id": file_id}

    def _serve_upload(self, handler: BaseHTTPRequestHandler, request: _Request,
                      file_id: str) -> None:
        """A POST of a file's bytes to its ``upload_url``: exactly ``length`` bytes, once."""
        with self._cond:
            fault = self._fault_for(UPLOAD, file_id)
            file = self._files.get(file_id)
            if fault is not None:
                reply = fault.reply()
            elif file is None:
                reply = _Reply.text(404, "unknown upload")
            elif file.data is not None:
                reply = _Reply.text(400, "already uploaded")
            elif len(request.raw) != file.length:
                reply = _Reply.text(400, f"expected {file.length} bytes, got "
                                         f"{len(request.raw)}")
            else:
                file.data = bytes(request.raw)
                reply = _Reply.text(200, f"OK - {len(request.raw)}")
            self._calls.append(ApiCall(
                method=UPLOAD, args={"length": len(request.raw)}, at=self._now(),
                status=reply.status, ok=reply.status == 200, error=reply.error,
                content_type=request.content_type, target=file_id,
                faulted=fault is not None))
            self._cond.notify_all()
        self._write(handler, reply)

    def _files_complete_upload_external(self, args: dict[str, Any]) -> dict[str, Any]:
        files = args.get("files")
        if isinstance(files, str):
            try:
                files = json.loads(files)
            except ValueError:
                raise _ApiError("invalid_arguments") from None
        if not isinstance(files, list) or not files or not all(
                isinstance(f, dict) and isinstance(f.get("id"), str)
                and isinstance(f.get("title", ""), str) for f in files):
            raise _ApiError("invalid_arguments", response_metadata={
                "messages": ["[ERROR] files must be a list of {id, title}"]})
        chosen: list[UploadedFile] = []
        for entry in files:
            file = self._files.get(entry["id"])
            if file is None or file.data is None:
                raise _ApiError("file_not_found")  # unknown, or its bytes never arrived
            if file.completed:
                raise _ApiError("file_already_completed")
            chosen.append(file)
        channel: str | None = None
        thread_ts: str | None = None
        if args.get("channel_id") not in (None, ""):
            channel = self._channel_arg({"channel": args.get("channel_id")})
            thread_ts = self._thread_arg(channel, args.get("thread_ts"))
        elif args.get("thread_ts") not in (None, ""):
            raise _ApiError("invalid_arguments", response_metadata={
                "messages": ["[ERROR] thread_ts needs channel_id"]})
        shared: list[dict[str, Any]] = []
        for entry, file in zip(files, chosen, strict=True):
            file.completed = True
            file.title = str(entry.get("title") or file.filename)
            file.channel, file.thread_ts = channel, thread_ts
            if channel is not None:
                file.path = self._save_file(file)
            shared.append(file.as_slack())
        if channel is not None:
            comment = str(args.get("initial_comment") or "")
            where = "; ".join(f"{f['title']}: {f['local_path']}" for f in shared)
            self._store(StoredMessage(channel, self._next_ts(),
                                      f"{comment}\n{where}" if comment else where, [],
                                      thread_ts, files=shared))
        return {"files": [{"id": f["id"], "title": f["title"]} for f in shared]}

    def _save_file(self, file: UploadedFile) -> str:
        """Write a shared file where a person can open it (the local shell prints the path)."""
        if self.files_dir is None:
            self.files_dir = Path(tempfile.mkdtemp(prefix="qlp-slack-files-"))
        self.files_dir.mkdir(parents=True, exist_ok=True)
        safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in file.filename)
        path = self.files_dir / f"{file.id}-{safe}"
        path.write_bytes(file.data or b"")
        return str(path)

    def _auth_test(self, args: dict[str, Any]) -> dict[str, Any]:
        return {
            "url": "https://qlp-standin.slack.com/",
            "team": "QLP stand-in",
            "user": self.bot_name,
            "team_id": self.team_id,
            "user_id": self.bot_user_id,
            "bot_id": self.bot_id,
            "is_enterprise_install": False,
        }

    def _chat_post_message(self, args: dict[str, Any]) -> dict[str, Any]:
        channel = self._channel_arg(args)
        text, blocks = self._content_args(args, required=True)
        thread_ts = self._thread_arg(channel, args.get("thread_ts"))
        broadcast = thread_ts is not None and _truthy(args.get("reply_broadcast"))
        message = self._store(
            StoredMessage(channel, self._next_ts(), text, blocks, thread_ts, broadcast=broadcast)
        )
        return {"channel": channel, "ts": message.ts, "message": self._wire(message)}

    def _chat_update(self, args: dict[str, Any]) -> dict[str, Any]:
        channel = self._channel_arg(args)
        ts = args.get("ts")
        message = self._by_ts.get(ts) if isinstance(ts, str) else None
        if message is None or message.channel != channel or message.ephemeral:
            raise _ApiError("message_not_found")
        if "text" not in args and "blocks" not in args:
            raise _ApiError("no_text")
        text, blocks = self._content_args(args, required=False)
        if self.strict and len(text) > 4000:
            raise _ApiError("msg_too_long")
        if "text" in args:
            message.text = text
        if "blocks" in args:
            message.blocks = blocks
        message.updates += 1
        self._emit("updated", message)
        return {
            "channel": channel,
            "ts": message.ts,
            "text": message.text,
            "message": self._wire(message),
        }

    def _chat_post_ephemeral(self, args: dict[str, Any]) -> dict[str, Any]:
        channel = self._channel_arg(args)
        user = args.get("user")
        if not isinstance(user, str) or not user:
            raise _ApiError("user_not_found")
        text, blocks = self._content_args(args, required=True)
        thread_ts = self._thread_arg(channel, args.get("thread_ts"))
        message = self._store(
            StoredMessage(
                channel, self._next_ts(), text, blocks, thread_ts, user=user, ephemeral=True
            )
        )
        return {"message_ts": message.ts}

    def _conversations_info(self, args: dict[str, Any]) -> dict[str, Any]:
        channel = self._channel_arg(args)
        private = channel.startswith("G")
        # Slack: channels:read for a public channel, groups:read for a private one.
        needed = "groups:read" if private else "channels:read"
        if needed not in self.scopes:
            raise _ApiError("missing_scope", needed=needed, provided=",".join(self.scopes))
        member = self.member_of is None or channel in self.member_of
        if private and not member:
            raise _ApiError("channel_not_found")  # a private channel is invisible to outsiders
        return {"channel": {
            "id": channel, "name": channel.lower(), "is_channel": not private,
            "is_group": private, "is_im": False, "is_mpim": False, "is_private": private,
            "is_archived": False, "is_general": False, "is_member": member,
            "context_team_id": self.team_id, "created": self._base_us // 1_000_000,
        }}

    def _usergroups_users_list(self, args: dict[str, Any]) -> dict[str, Any]:
        group = args.get("usergroup")
        if not isinstance(group, str) or group not in self.groups:
            raise _ApiError("no_such_subteam")
        return {"users": list(self.groups[group])}

    def _users_info(self, args: dict[str, Any]) -> dict[str, Any]:
        user = args.get("user")
        if not isinstance(user, str) or not user:
            raise _ApiError("user_not_found")
        name = self.users.get(user)
        if name is None:
            if self.strict:
                raise _ApiError("user_not_found")
            name = user.lower()
        is_bot = user == self.bot_user_id
        return {
            "user": {
                "id": user,
                "team_id": self.team_id,
                "name": name,
                "real_name": name,
                "deleted": False,
                "tz": "UTC",
                "tz_label": "Coordinated Universal Time",
                "tz_offset": 0,
                "is_admin": False,
                "is_owner": False,
                "is_bot": is_bot,
                "is_app_user": False,
                "profile": {"real_name": name, "display_name": name},
            }
        }

    def _views_open(self, args: dict[str, Any]) -> dict[str, Any]:
        trigger_id, view = args.get("trigger_id"), args.get("view")
        if not isinstance(trigger_id, str) or not trigger_id:
            raise _ApiError(
                "invalid_arguments",
                response_metadata={"messages": ["[ERROR] missing required field: trigger_id"]},
            )
        if not isinstance(view, dict) or view.get("type") not in ("modal", "workflow_step"):
            raise _ApiError(
                "invalid_arguments",
                response_metadata={
                    "messages": ["[ERROR] failed to match all allowed schemas [json-pointer:/view]"]
                },
            )
        if self.strict:
            self._exchange_trigger(trigger_id)
            problems = view_problems(view)
            if problems:
                raise _ApiError("invalid_arguments",
                                response_metadata={"messages": [f"[ERROR] {p}" for p in problems]})
        self._view_seq += 1
        opened = OpenedView(f"V{self._view_seq:08d}", trigger_id, copy.deepcopy(view))
        self._views.append(opened)
        self._emit("view_opened", opened)
        return {
            "view": {
                **copy.deepcopy(view),
                "id": opened.id,
                "team_id": self.team_id,
                "bot_id": self.bot_id,
                "state": {"values": {}},
            }
        }

    def _exchange_trigger(self, trigger_id: str) -> None:
        """A trigger as Slack treats it: issued by an interaction, good once, for 3 seconds.
        The stand-in reads the issue time from the trigger's first field (nanoseconds since
        the epoch on the wall clock, as ``bot.slack_requests`` mints them), whatever clock
        the stand-in's timestamps follow."""
        issued = trigger_id.split(".", 1)[0]
        if not (issued.isascii() and issued.isdigit() and len(issued) >= 18):
            raise _ApiError("invalid_trigger_id")
        with self._cond:
            used = trigger_id in self._used_triggers
            self._used_triggers.add(trigger_id)
        if used:
            raise _ApiError("exchanged_trigger_id")
        if time.time_ns() - int(issued) > TRIGGER_LIFETIME_NS:
            raise _ApiError("expired_trigger_id")

    def _views_publish(self, args: dict[str, Any]) -> dict[str, Any]:
        """``views.publish`` of a Home tab, refused as Slack refuses it: no ``user_id`` or
        ``view``; the Home tab not enabled in the app's settings (``home_enabled``,
        ``not_enabled``); an unknown user (strict); a view that is not ``home``, over 250 kB
        (``view_too_large``), over Block Kit's limits (100 blocks, text lengths,
        ``callback_id`` 255, ``private_metadata`` 3,000); a ``hash`` that is not the current
        one (``hash_conflict``)."""
        user, view = args.get("user_id"), args.get("view")
        if not isinstance(user, str) or not user:
            raise _ApiError("invalid_arguments", response_metadata={
                "messages": ["[ERROR] missing required field: user_id"]})
        if not isinstance(view, dict):
            raise _ApiError("invalid_arguments", response_metadata={
                "messages": ["[ERROR] failed to match all allowed schemas [json-pointer:/view]"]})
        if not self.home_enabled:
            raise _ApiError("not_enabled")
        if self.strict and user not in self.users:
            raise _ApiError("user_not_found")
        if len(json.dumps(view)) > 250_000:
            raise _ApiError("view_too_large")
        problems = home_view_problems(view)
        if problems:
            raise _ApiError("invalid_arguments", response_metadata={
                "messages": [f"[ERROR] {p}" for p in problems]})
        with self._cond:
            published = self._homes.setdefault(user, [])
            current = published[-1]["hash"] if published else None
            wanted = args.get("hash")
            if wanted is not None and wanted != current:
                raise _ApiError("hash_conflict")
            stored = {**copy.deepcopy(view), "id": f"VH{user}", "team_id": self.team_id,
                      "bot_id": self.bot_id, "state": {"values": {}},
                      "hash": f"{self._now():.6f}.{len(published) + 1}"}
            published.append(stored)
            return {"view": copy.deepcopy(stored)}

    # ----------------------------------------------------------------- response_url

    def _answer_response_url(self, name: str, request: _Request) -> _Reply:
        if request.bad_body is not None or not request.json_body:
            return _Reply.text(400, "invalid_payload")
        target = self._targets.get(name)
        if target is None:
            target = self._targets[name] = _ResponseTarget(name, None, None, None)
        limit = self.response_url_limit if self.strict else None
        if limit is not None and target.uses >= limit:
            return _Reply.text(404, "used_url")
        args = request.args
        try:
            self._respond(target, args)
        except _ApiError as err:
            return _Reply.text(400, err.error)
        target.uses += 1
        return _Reply.text(200, "ok")

    def _respond(self, target: _ResponseTarget, args: dict[str, Any]) -> None:
        original = self._by_ts.get(target.message_ts) if target.message_ts else None
        if _truthy(args.get("delete_original")):
            if original is None:
                raise _ApiError("message_not_found")
            self._delete(original)
            return
        text, blocks = self._content_args(args, required=True)
        if _truthy(args.get("replace_original")):
            if original is None:
                raise _ApiError("message_not_found")
            original.text, original.blocks = text, blocks
            original.updates += 1
            self._emit("updated", original)
            return
        if target.channel is None:
            raise _ApiError("channel_not_found")
        thread_arg = args.get("thread_ts")
        thread_ts = self._thread_arg(target.channel, thread_arg) if thread_arg else None
        in_channel = args.get("response_type") == "in_channel"
        self._store(
            StoredMessage(
                target.channel,
                self._next_ts(),
                text,
                blocks,
                thread_ts,
                user=None if in_channel else target.user,
                ephemeral=not in_channel,
                source="response_url",
            )
        )

    # ----------------------------------------------------------------- the model

    def _reset_state(self) -> None:
        self._last_us = self._base_us
        self._channels: dict[str, list[str]] = {}
        self._replies: dict[tuple[str, str], list[str]] = {}
        self._ephemerals: list[StoredMessage] = []
        self._by_ts: dict[str, StoredMessage] = {}
        self._views: list[OpenedView] = []
        self._view_seq = 0
        self._used_triggers: set[str] = set()
        self._homes: dict[str, list[dict[str, Any]]] = {}  # user -> published Home views
        self._calls: list[ApiCall] = []
        self._targets: dict[str, _ResponseTarget] = {}
        self._files: dict[str, UploadedFile] = {}
        self._file_seq = 0

    def _now(self) -> float:
        return self._clock() if self._clock is not None else time.time()

    def _next_ts(self) -> str:
        micros = self._last_us + 100
        if self._clock is not None:
            micros = max(micros, int(self._clock() * 1_000_000))
        self._last_us = micros
        return f"{micros // 1_000_000}.{micros % 1_000_000:06d}"

    def _store(self, message: StoredMessage) -> StoredMessage:
        self._by_ts[message.ts] = message
        if message.ephemeral:
            self._ephemerals.append(message)
            self._emit("ephemeral", message)
            return message
        if message.thread_ts is None:
            self._channels.setdefault(message.channel, []).append(message.ts)
        else:
            self._replies.setdefault((message.channel, message.thread_ts), []).append(message.ts)
            parent = self._by_ts.get(message.thread_ts)
            if parent is not None:
                parent.reply_count += 1
        self._emit("posted", message)
        return message

    def _delete(self, message: StoredMessage) -> None:
        self._by_ts.pop(message.ts, None)
        if message.ephemeral:
            self._ephemerals = [m for m in self._ephemerals if m.ts != message.ts]
        elif message.thread_ts is None:
            self._channels[message.channel].remove(message.ts)
        else:
            self._replies[(message.channel, message.thread_ts)].remove(message.ts)
            parent = self._by_ts.get(message.thread_ts)
            if parent is not None:
                parent.reply_count -= 1
        self._emit("deleted", message)

    def _emit(self, kind: EventKind, subject: StoredMessage | OpenedView) -> None:
        for callback in list(self._subscribers):
            snapshot = (
                self._snapshot(subject)
                if isinstance(subject, StoredMessage)
                else copy.deepcopy(subject)
            )
            try:
                callback((kind, snapshot))
            except Exception:  # a broken observer must not break the stand-in
                _log.exception("slack stand-in: subscriber %r failed on %s", callback, kind)

    @staticmethod
    def _snapshot(message: StoredMessage) -> StoredMessage:
        return copy.deepcopy(message)

    def _wire(self, message: StoredMessage) -> dict[str, Any]:
        return message.as_slack(
            bot_user_id=self.bot_user_id, bot_id=self.bot_id, team_id=self.team_id
        )

    # ----------------------------------------------------------------- argument checks

    def _channel_arg(self, args: Mapping[str, Any]) -> str:
        channel = args.get("channel")
        if not isinstance(channel, str) or not channel:
            raise _ApiError("channel_not_found")
        if self.channels is not None and channel not in self.channels:
            raise _ApiError("channel_not_found")
        return channel

    def _content_args(
        self, args: Mapping[str, Any], *, required: bool
    ) -> tuple[str, list[dict[str, Any]]]:
        text = args.get("text")
        blocks = args.get("blocks")
        if text is not None and not isinstance(text, str):
            text = str(text)
        if required and not text and not blocks:
            raise _ApiError("no_text")
        if blocks is None or blocks == "":
            blocks = []
        if self.strict:
            problems = block_problems(blocks)
            if problems:
                raise _ApiError("invalid_blocks", errors=problems)
        elif not isinstance(blocks, list):
            raise _ApiError("invalid_blocks")
        return text or "", copy.deepcopy(blocks)

    def _thread_arg(self, channel: str, thread_ts: Any) -> str | None:
        if thread_ts is None or thread_ts == "":
            return None
        if not self.strict:
            return str(thread_ts)
        # Slack quietly posts to the channel for a bad thread_ts (or a float one, see
        # python-slack-sdk #840); here it is an error so that tests notice.
        parent = self._by_ts.get(thread_ts) if isinstance(thread_ts, str) else None
        if parent is None or parent.channel != channel or parent.ephemeral or parent.is_reply:
            raise _ApiError("thread_not_found")
        return thread_ts


def _ts_sort_key(ts: str) -> tuple[int, int]:
    seconds, _, micros = ts.partition(".")
    return int(seconds), int(micros or 0)


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value in _TRUE_STRINGS
    return bool(value)


# --------------------------------------------------------------------- Block Kit limits

_TEXT_TYPES = ("plain_text", "mrkdwn")


def block_problems(blocks: Any, *, limit: int = 50) -> list[str]:
    """Check blocks against Block Kit's documented limits; return Slack-style problem strings
    (empty when the blocks are fine). Only the block types the bot uses are checked in depth.
    ``limit``: 50 blocks in a message, 100 in a modal or the Home tab."""
    if not isinstance(blocks, list):
        return ["must be an array [json-pointer:/blocks]"]
    problems: list[str] = []
    if len(blocks) > limit:
        problems.append(f"no more than {limit} items allowed [json-pointer:/blocks]")
    block_ids: set[str] = set()
    for index, block in enumerate(blocks):
        pointer = f"/blocks/{index}"
        if not isinstance(block, dict) or not isinstance(block.get("type"), str):
            problems.append(f"missing required field: type [json-pointer:{pointer}]")
            continue
        block_id = block.get("block_id")
        if isinstance(block_id, str):
            if len(block_id) > 255:
                problems.append(f"must be at most 255 characters [json-pointer:{pointer}/block_id]")
            if block_id in block_ids:
                problems.append(f"duplicate block_id [json-pointer:{pointer}/block_id]")
            block_ids.add(block_id)
        problems.extend(_block_problems(block, pointer))
    return problems


def _block_problems(block: dict[str, Any], pointer: str) -> list[str]:
    kind = block["type"]
    problems: list[str] = []
    if kind == "section":
        if "text" not in block and "fields" not in block:
            problems.append(f"must provide text or fields [json-pointer:{pointer}]")
        if "text" in block:
            problems += _text_problems(block["text"], f"{pointer}/text", 3000)
        fields = block.get("fields", [])
        if not isinstance(fields, list) or len(fields) > 10:
            problems.append(f"no more than 10 items allowed [json-pointer:{pointer}/fields]")
        else:
            for i, item in enumerate(fields):
                problems += _text_problems(item, f"{pointer}/fields/{i}", 2000)
        if isinstance(block.get("accessory"), dict):
            problems += _element_problems(block["accessory"], f"{pointer}/accessory")
    elif kind == "header":
        problems += _text_problems(block.get("text"), f"{pointer}/text", 150, plain_only=True)
    elif kind == "input":
        problems += _input_problems(block, pointer)
    elif kind in ("actions", "context"):
        limit = 25 if kind == "actions" else 10
        elements = block.get("elements")
        if not isinstance(elements, list) or not elements or len(elements) > limit:
            problems.append(f"must have 1 to {limit} items [json-pointer:{pointer}/elements]")
            return problems
        action_ids: set[str] = set()
        for i, element in enumerate(elements):
            if not isinstance(element, dict):
                problems.append(f"must be an object [json-pointer:{pointer}/elements/{i}]")
                continue
            problems += _element_problems(element, f"{pointer}/elements/{i}")
            action_id = element.get("action_id")
            if isinstance(action_id, str):
                if action_id in action_ids:
                    problems.append(
                        f"duplicate action_id [json-pointer:{pointer}/elements/{i}/action_id]"
                    )
                action_ids.add(action_id)
    return problems


def home_view_problems(view: dict[str, Any]) -> list[str]:
    """A Home tab view against Slack's limits: ``type`` home, ``callback_id`` and
    ``external_id`` at most 255 characters, ``private_metadata`` 3,000, at most 100 blocks, and
    the blocks themselves (text lengths, buttons, confirm dialogs)."""
    problems: list[str] = []
    if view.get("type") != "home":
        problems.append("must be home [json-pointer:/view/type]")
    for key, limit in (("callback_id", 255), ("private_metadata", 3000), ("external_id", 255)):
        value = view.get(key)
        if value is not None and (not isinstance(value, str) or len(value) > limit):
            problems.append(f"must be at most {limit} characters [json-pointer:/view/{key}]")
    problems += [p.replace("[json-pointer:/blocks", "[json-pointer:/view/blocks")
                 for p in block_problems(view.get("blocks"), limit=100)]
    return problems


def view_problems(view: dict[str, Any]) -> list[str]:
    """A modal against Block Kit's view limits: title (required), submit and close at most 24
    characters of plain text, ``callback_id`` 255, ``private_metadata`` 3,000, at most 100
    blocks, a submit button when an input block is present, and the blocks themselves."""
    problems: list[str] = []
    problems += _text_problems(view.get("title"), "/view/title", 24, plain_only=True)
    for key in ("submit", "close"):
        if key in view:
            problems += _text_problems(view[key], f"/view/{key}", 24, plain_only=True)
    for key, limit in (("callback_id", 255), ("private_metadata", 3000), ("external_id", 255)):
        value = view.get(key)
        if value is not None and (not isinstance(value, str) or len(value) > limit):
            problems.append(f"must be at most {limit} characters [json-pointer:/view/{key}]")
    blocks = view.get("blocks")
    problems += [p.replace("[json-pointer:/blocks", "[json-pointer:/view/blocks")
                 for p in block_problems(blocks, limit=100)]
    if isinstance(blocks, list) and "submit" not in view and any(
            isinstance(b, dict) and b.get("type") == "input" for b in blocks):
        problems.append("submit is required when an input block is present "
                        "[json-pointer:/view/submit]")
    return problems


def _input_problems(block: dict[str, Any], pointer: str) -> list[str]:
    """An input block: a plain-text label (2,000), a hint (2,000), one element; the elements
    the bot uses checked against their limits."""
    problems = _text_problems(block.get("label"), f"{pointer}/label", 2000, plain_only=True)
    if "hint" in block:
        problems += _text_problems(block["hint"], f"{pointer}/hint", 2000, plain_only=True)
    element = block.get("element")
    if not isinstance(element, dict) or element.get("type") not in _INPUT_ELEMENTS:
        return [*problems, f"failed to match all allowed schemas [json-pointer:{pointer}/element]"]
    where = f"{pointer}/element"
    options = element.get("options")
    kind = element["type"]
    if kind in ("static_select", "checkboxes", "radio_buttons"):
        most = 10 if kind != "static_select" else 100
        if not isinstance(options, list) or not options or len(options) > most:
            problems.append(f"must have 1 to {most} items [json-pointer:{where}/options]")
        else:
            for i, option in enumerate(options):
                problems += _option_problems(option, f"{where}/options/{i}")
    if kind == "external_select":
        least = element.get("min_query_length", 3)
        if not isinstance(least, int) or least < 0:
            problems.append(f"must be a non-negative integer [json-pointer:{where}/"
                            "min_query_length]")
    if kind == "plain_text_input":
        for key in ("min_length", "max_length"):
            value = element.get(key)
            if value is not None and (not isinstance(value, int) or not 0 <= value <= 3000):
                problems.append(f"must be between 0 and 3000 [json-pointer:{where}/{key}]")
    if "initial_option" in element and options is not None \
            and element["initial_option"] not in options:
        problems.append(f"must be one of the options [json-pointer:{where}/initial_option]")
    return problems


def _option_problems(option: Any, pointer: str) -> list[str]:
    if not isinstance(option, dict):
        return [f"must be an object [json-pointer:{pointer}]"]
    problems = _text_problems(option.get("text"), f"{pointer}/text", 75)
    value = option.get("value")
    if not isinstance(value, str) or not value or len(value) > 150:
        problems.append(f"must be 1 to 150 characters [json-pointer:{pointer}/value]")
    return problems


def _text_problems(obj: Any, pointer: str, limit: int, *, plain_only: bool = False) -> list[str]:
    allowed = ("plain_text",) if plain_only else _TEXT_TYPES
    if not isinstance(obj, dict) or obj.get("type") not in allowed:
        return [f"failed to match all allowed schemas [json-pointer:{pointer}]"]
    text = obj.get("text")
    if not isinstance(text, str) or not text:
        return [f"must be a non-empty string [json-pointer:{pointer}/text]"]
    if len(text) > limit:
        return [f"must be less than {limit + 1} characters [json-pointer:{pointer}/text]"]
    return []


def _element_problems(element: dict[str, Any], pointer: str) -> list[str]:
    problems: list[str] = []
    if element.get("type") == "button":
        problems += _text_problems(element.get("text"), f"{pointer}/text", 75, plain_only=True)
        for key, limit in (("action_id", 255), ("value", 2000), ("url", 3000)):
            value = element.get(key)
            if value is not None and (not isinstance(value, str) or len(value) > limit):
                problems.append(
                    f"must be at most {limit} characters [json-pointer:{pointer}/{key}]"
                )
        if element.get("style") not in (None, "primary", "danger"):
            problems.append(f"must be primary or danger [json-pointer:{pointer}/style]")
    if "confirm" in element:
        problems += _confirm_problems(element["confirm"], f"{pointer}/confirm")
    return problems


def _confirm_problems(confirm: Any, pointer: str) -> list[str]:
    if not isinstance(confirm, dict):
        return [f"must be an object [json-pointer:{pointer}]"]
    problems: list[str] = []
    for key, limit in (("title", 100), ("text", 300), ("confirm", 30), ("deny", 30)):
        problems += _text_problems(
            confirm.get(key), f"{pointer}/{key}", limit, plain_only=key != "text"
        )
    return problems
