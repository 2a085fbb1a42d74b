"""``SlackDouble``: the Slack stand-in plus fault injection, for tests.

Faults are decided before the stand-in authenticates or serves a call, so a faulted call is
logged (``ApiCall.faulted``) but changes no state: no message, no ts, no use of a
``response_url``. ``response_url`` posts are matched with the method name ``"response_url"``.

On top of the stand-in's model it keeps what the outbox's exactly-once delivery relies on, as
Slack does it: message ``metadata`` (validated like Slack: an object, ``event_type`` a
non-empty string, ``event_payload`` an object; stored with the message, replaced by a
``chat.update`` that carries one) returned by ``conversations.history`` and
``conversations.replies`` only when ``include_all_metadata`` is true; and channel membership
(``remove_bot`` / ``conversations.join``).

File uploads follow Slack's current flow, as the stand-in serves it (``files:write``):
``files.getUploadURLExternal`` (``filename`` and a positive ``length`` required) hands out
an ``upload_url`` and a ``file_id``; a POST of exactly ``length`` bytes to that URL (method
name ``"upload"`` in the call log and for faults: ``fail_next("upload", status=500)``) stores
them, once; ``files.completeUploadExternal`` takes ``files=[{"id", "title"}]`` with
``channel_id`` and ``thread_ts`` (a top-level message of that channel) and refuses a file it
never handed out or whose bytes never came (``file_not_found``) and one completed before
(``file_already_completed``). ``uploaded_files()`` shows them, bytes included.

Pace (on by default, as Slack's): ``chat.postMessage`` about one a second per channel with a
short burst (Slack's "Posting messages: 1 per second, short bursts >1 allowed"), ``chat.update``
at Tier 3 (50 a minute per workspace, sporadic bursts); beyond it HTTP 429 with a whole-second
``Retry-After`` and ``{"ok": false, "error": "ratelimited"}``, the message not stored. Token
buckets on real time (``pace_clock``, default ``time.monotonic``); ``pace(...)`` changes the
numbers, ``unpaced()`` turns it off, ``paced_refusals()`` counts the 429s it gave.
"""

from __future__ import annotations

import copy
import math
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import urlsplit

from bot.shell.slack_standin import (
    _API_PREFIX,
    _RESPONSE_PREFIX,
    _UPLOAD_PREFIX,
    UPLOAD,
    Fault,
    SlackStandIn,
    StoredMessage,
    _ApiError,
    _truthy,
    _ts_sort_key,
)

CHAT_METHODS = frozenset({"chat.postMessage", "chat.update", "chat.postEphemeral"})
"""The methods that post or change messages (``hang_then_accept``'s default)."""

# Arguments the read methods take (Slack's reference); anything else is refused, so that a
# misspelt ``include_all_metadata`` fails loudly instead of quietly returning no metadata.
_READ_ARGS = {
    "conversations.history": frozenset({"channel", "cursor", "include_all_metadata",
                                        "inclusive", "latest", "limit", "oldest"}),
    "conversations.replies": frozenset({"channel", "ts", "cursor", "include_all_metadata",
                                        "inclusive", "latest", "limit", "oldest"}),
    "conversations.join": frozenset({"channel"}),
}
_READ_LIMIT = 1000

_DEFAULT_ERRORS = {429: "ratelimited", 503: "service_unavailable"}

POSTS_PER_SECOND = 1.0
POST_BURST = 3
"""chat.postMessage: one a second per channel, a burst of this many allowed."""
UPDATES_PER_MINUTE = 50.0
UPDATE_BURST = 10
"""chat.update (Tier 3): 50 a minute per workspace, a burst of this many allowed."""


@dataclass
class _Bucket:
    """A token bucket: ``burst`` calls at once, then ``rate`` a second."""

    rate: float
    burst: int
    tokens: float
    at: float

    def _refill(self, now: float) -> None:
        self.tokens = min(float(self.burst), self.tokens + max(0.0, now - self.at) * self.rate)
        self.at = now

    def wait(self, now: float) -> float:
        """0.0 if a token is there, else the seconds until there is one."""
        self._refill(now)
        return 0.0 if self.tokens >= 1.0 else (1.0 - self.tokens) / self.rate

    def spend(self, now: float) -> None:
        """A call went through: it takes its token."""
        self._refill(now)
        self.tokens = max(0.0, self.tokens - 1.0)


def _error_for(status: int) -> str:
    return _DEFAULT_ERRORS.get(status, "internal_error" if status >= 500 else "fatal_error")


@dataclass
class _EveryNth:
    n: int
    fault: Fault
    methods: frozenset[str] | None
    seen: int = 0

    def matches(self, method: str) -> bool:
        if self.methods is None:
            return method != "response_url"
        return method in self.methods


@dataclass
class _Next:
    method: str
    fault: Fault
    remaining: int


class SlackDouble(SlackStandIn):
    """A ``SlackStandIn`` that can be told to fail.

    - ``fail_every(n, ...)``: every n-th call (of ``methods``; all Web API methods by default)
      is answered with ``status`` (429 with ``Retry-After`` by default).
    - ``fail_next(method, ...)``: the next call(s) of ``method`` fail, by default with HTTP 200
      and ``{"ok": false, "error": ...}`` as Slack reports most errors.
    - ``down()`` / ``up()``: while down, everything gets 503.
    - ``clear_faults()`` forgets all of the above; ``fault_count`` / ``served_count`` count.
    - ``slow(seconds, methods)``: matching calls are answered only after ``seconds`` (real
      time: a Slack that is slow, for benchmarks); ``hold(methods)`` / ``release()``: matching
      calls wait until released (the same in tests, without waiting on the clock).
    - ``hang_then_accept(seconds, methods)``: matching calls (``chat.*`` by default) hang for
      ``seconds`` of real time and are then served as usual: a client that gave up after its
      timeout never hears of it, but the message is stored (Slack accepted it late).
    - ``arrivals(method)``: every call *received*, in order, including those still being
      delayed or held (``calls`` logs a call once it is answered).
    - ``remove_bot(channel, private=False)``: the bot is no longer a member of ``channel``:
      ``chat.*`` there answers ``not_in_channel`` unless the token has ``chat:write.public``
      and the channel is public; ``conversations.join`` (``channels:join``) joins a public
      one again, ``invite_bot`` any.
    - ``metadata_of(ts)``: the metadata stored with a message.
    """

    def __init__(self, *, paced: bool = True,
                 pace_clock: Callable[[], float] = time.monotonic, **kwargs: Any) -> None:
        """Takes the keyword arguments of ``SlackStandIn``; ``paced=False`` starts without
        Slack's pace, ``pace_clock`` measures it (real time by default)."""
        super().__init__(**kwargs)
        self._pace_clock = pace_clock
        self._pace: dict[str, tuple[float, int]] = {}
        self._buckets: dict[tuple[str, str], _Bucket] = {}
        self._pace_refusals: list[tuple[str, str]] = []
        if paced:
            self.pace()
        self._every: list[_EveryNth] = []
        self._next: list[_Next] = []
        self._is_down = False
        self._delay = 0.0
        self._delayed: frozenset[str] | None = frozenset()
        self._held: frozenset[str] | None = frozenset()
        self._released = threading.Event()
        self._arrivals: list[str] = []
        self._removed: set[str] = set()
        self._private: set[str] = set()
        self._drops: dict[str, int] = {}
        self._dropping = threading.local()

    def pace(self, *, posts_per_second: float = POSTS_PER_SECOND, post_burst: int = POST_BURST,
             updates_per_minute: float = UPDATES_PER_MINUTE, update_burst: int = UPDATE_BURST,
             clock: Callable[[], float] | None = None) -> None:
        """Enforce Slack's pace (the defaults are Slack's documented limits): beyond it 429.
        ``clock`` (seconds) replaces the pace's clock: a test whose sender paces itself on a
        manual clock gives the double the same one."""
        if min(posts_per_second, updates_per_minute) <= 0 or min(post_burst, update_burst) < 1:
            raise ValueError("rates must be positive and bursts at least 1")
        with self._cond:
            if clock is not None:
                self._pace_clock = clock
            self._pace = {"chat.postMessage": (posts_per_second, post_burst),
                          "chat.update": (updates_per_minute / 60.0, update_burst)}
            self._buckets.clear()

    def unpaced(self) -> None:
        """Stop enforcing any pace (for tests about something else that post in bursts)."""
        with self._cond:
            self._pace = {}
            self._buckets.clear()

    def paced_refusals(self, method: str | None = None) -> list[str]:
        """The scope (channel, or ``"workspace"`` for chat.update) of each call refused with
        429 for outrunning the pace, in order (of ``method``)."""
        with self._cond:
            return [scope for m, scope in self._pace_refusals if method in (None, m)]

    def hang_then_accept(self, seconds: float, methods: Iterable[str] | None = CHAT_METHODS
                         ) -> None:
        """Let calls of ``methods`` (``chat.*`` by default; every call when None) hang for
        ``seconds`` of real time, then serve them normally: the message is stored even though
        a client with a shorter timeout has given up on the call."""
        self.slow(seconds, methods)

    def drop_answer(self, method: str, *, times: int = 1) -> None:
        """Serve the next ``times`` calls of ``method`` (the message is stored) but close the
        connection without answering: the client sees the connection closed mid-call."""
        with self._cond:
            self._drops[method] = self._drops.get(method, 0) + times

    def remove_bot(self, channel: str, *, private: bool = False) -> None:
        """The bot was removed from ``channel`` (a private one when ``private``)."""
        with self._cond:
            self._removed.add(channel)
            if private:
                self._private.add(channel)

    def invite_bot(self, channel: str) -> None:
        """Someone invited the bot (back) into ``channel``."""
        with self._cond:
            self._removed.discard(channel)

    def metadata_of(self, ts: str) -> dict[str, Any] | None:
        """The metadata stored with the message ``ts`` (None without)."""
        with self._cond:
            found = self._metadata.get(ts)
            return None if found is None else copy.deepcopy(found)

    # -- the model's additions ---------------------------------------------------------------

    def _reset_state(self) -> None:
        super()._reset_state()
        self._metadata: dict[str, dict[str, Any]] = {}

    def _methods(self) -> dict[str, Callable[[dict[str, Any]], dict[str, Any]]]:
        methods = super()._methods()
        post, update, ephemeral = (methods["chat.postMessage"], methods["chat.update"],
                                   methods["chat.postEphemeral"])
        info = methods["conversations.info"]

        def post_message(args: dict[str, Any]) -> dict[str, Any]:
            self._check_member(args)
            metadata = _metadata_arg(args)
            answer = post(args)
            self._spend("chat.postMessage", args)
            if metadata is not None:
                self._metadata[answer["ts"]] = metadata
                answer["message"]["metadata"] = copy.deepcopy(metadata)
            return answer

        def update_message(args: dict[str, Any]) -> dict[str, Any]:
            self._check_member(args)
            metadata = _metadata_arg(args)
            answer = update(args)
            self._spend("chat.update", args)
            if metadata is not None:
                self._metadata[answer["ts"]] = metadata
            return answer

        def post_ephemeral(args: dict[str, Any]) -> dict[str, Any]:
            self._check_member(args)
            return ephemeral(args)

        def conversations_info(args: dict[str, Any]) -> dict[str, Any]:
            answer = info(args)
            channel = answer["channel"]["id"]
            if channel in self._removed:
                answer["channel"]["is_member"] = False
            return answer

        return {**methods, "chat.postMessage": post_message, "chat.update": update_message,
                "chat.postEphemeral": post_ephemeral, "conversations.info": conversations_info,
                "conversations.history": self._conversations_history,
                "conversations.replies": self._conversations_replies,
                "conversations.join": self._conversations_join}

    def _is_private(self, channel: str) -> bool:
        return channel.startswith("G") or channel in self._private

    def _check_member(self, args: dict[str, Any]) -> None:
        channel = args.get("channel")
        if not isinstance(channel, str) or channel not in self._removed:
            return
        if self._is_private(channel):
            raise _ApiError("channel_not_found")  # a private channel is invisible to outsiders
        if "chat:write.public" not in self.scopes:
            raise _ApiError("not_in_channel")

    def _read_args(self, method: str, args: dict[str, Any]) -> str:
        """Check a read method's arguments, scope and membership; the channel."""
        if self.strict:
            unknown = sorted(set(args) - _READ_ARGS[method])
            if unknown:
                raise _ApiError("invalid_arguments", response_metadata={
                    "messages": [f"[ERROR] unknown argument: {name}" for name in unknown]})
        channel = self._channel_arg(args)
        private = self._is_private(channel)
        needed = "groups:history" if private else "channels:history"
        if needed not in self.scopes:
            raise _ApiError("missing_scope", needed=needed, provided=",".join(self.scopes))
        if channel in self._removed or (self.member_of is not None
                                        and channel not in self.member_of):
            raise _ApiError("channel_not_found" if private else "not_in_channel")
        return channel

    def _page(self, messages: list[StoredMessage], args: dict[str, Any]) -> dict[str, Any]:
        """Filter by ``oldest``/``latest``/``inclusive``, page by ``limit``/``cursor``."""
        inclusive = _truthy(args.get("inclusive"))
        oldest, latest = args.get("oldest"), args.get("latest")
        try:
            low = _ts_sort_key(str(oldest)) if oldest not in (None, "") else None
            high = _ts_sort_key(str(latest)) if latest not in (None, "") else None
            limit = int(args.get("limit") or 100)
            start = int(args.get("cursor") or 0)
        except ValueError:
            raise _ApiError("invalid_arguments") from None
        if limit < 1 or start < 0:
            raise _ApiError("invalid_limit" if limit < 1 else "invalid_cursor")
        limit = min(limit, _READ_LIMIT)

        def inside(message: StoredMessage) -> bool:
            key = _ts_sort_key(message.ts)
            if low is not None and (key < low or (key == low and not inclusive)):
                return False
            return not (high is not None and (key > high or (key == high and not inclusive)))

        chosen = [m for m in messages if inside(m)]
        page = chosen[start:start + limit]
        more = start + limit < len(chosen)
        with_metadata = _truthy(args.get("include_all_metadata"))
        wire = []
        for message in page:
            body = self._wire(message)
            if message.reply_count and not message.is_reply:
                body["reply_count"] = message.reply_count
            if with_metadata and message.ts in self._metadata:
                body["metadata"] = copy.deepcopy(self._metadata[message.ts])
            wire.append(body)
        return {"messages": wire, "has_more": more,
                "response_metadata": {"next_cursor": str(start + limit) if more else ""}}

    def _conversations_history(self, args: dict[str, Any]) -> dict[str, Any]:
        channel = self._read_args("conversations.history", args)
        # Newest first, as Slack returns a channel's history.
        top = [self._by_ts[ts] for ts in reversed(self._channels.get(channel, []))]
        return self._page(top, args)

    def _conversations_replies(self, args: dict[str, Any]) -> dict[str, Any]:
        channel = self._read_args("conversations.replies", args)
        ts = args.get("ts")
        parent = self._by_ts.get(ts) if isinstance(ts, str) else None
        if parent is None or parent.channel != channel or parent.ephemeral:
            raise _ApiError("thread_not_found")
        if parent.is_reply:
            assert parent.thread_ts is not None
            parent = self._by_ts[parent.thread_ts]
        replies = [self._by_ts[r] for r in self._replies.get((channel, parent.ts), [])]
        # Oldest first, the parent always first (Slack returns it whatever the window).
        answer = self._page(replies, args)
        head = self._page([parent], {k: v for k, v in args.items()
                                     if k in ("include_all_metadata",)})["messages"]
        answer["messages"] = head + answer["messages"]
        return answer

    def _conversations_join(self, args: dict[str, Any]) -> dict[str, Any]:
        if self.strict:
            unknown = sorted(set(args) - _READ_ARGS["conversations.join"])
            if unknown:
                raise _ApiError("invalid_arguments")
        channel = self._channel_arg(args)
        if "channels:join" not in self.scopes:
            raise _ApiError("missing_scope", needed="channels:join",
                            provided=",".join(self.scopes))
        if self._is_private(channel):
            raise _ApiError("method_not_supported_for_channel_type")
        was_member = channel not in self._removed
        self._removed.discard(channel)
        if self.member_of is not None:
            self.member_of.add(channel)
        answer: dict[str, Any] = {"channel": {
            "id": channel, "name": channel.lower(), "is_channel": True, "is_group": False,
            "is_im": False, "is_private": False, "is_archived": False, "is_member": True}}
        if was_member:
            answer["warning"] = "already_in_channel"
            answer["response_metadata"] = {"warnings": ["already_in_channel"]}
        return answer

    def slow(self, seconds: float, methods: Iterable[str] | None = None) -> None:
        """Answer calls of ``methods`` (every method and ``response_url`` when None) only after
        ``seconds`` of real time."""
        with self._cond:
            self._delay = seconds
            self._delayed = None if methods is None else frozenset(methods)

    def hold(self, methods: Iterable[str] | None = None) -> None:
        """Keep calls of ``methods`` (all when None) waiting until ``release()``."""
        with self._cond:
            self._released.clear()
            self._held = None if methods is None else frozenset(methods)

    def release(self) -> None:
        """Answer the held calls, and stop holding."""
        with self._cond:
            self._held = frozenset()
            self._released.set()

    def arrivals(self, method: str | None = None) -> list[str]:
        """Method names of the calls received so far (``"response_url"`` for those posts),
        answered or not."""
        with self._cond:
            return [m for m in self._arrivals if method is None or m == method]

    def _serve(self, handler: BaseHTTPRequestHandler) -> None:
        path = urlsplit(handler.path).path
        method = (path[len(_API_PREFIX):] if path.startswith(_API_PREFIX)
                  else "response_url" if path.startswith(_RESPONSE_PREFIX)
                  else UPLOAD if path.startswith(_UPLOAD_PREFIX) else "")
        with self._cond:
            self._arrivals.append(method)
            self._cond.notify_all()
            delay = self._delay if self._delayed is None or method in self._delayed else 0.0
            held = self._held is None or method in self._held
            released = self._released
        if held:
            released.wait(60)
        if delay:
            time.sleep(delay)  # the slowness being simulated is real time by definition
        with self._cond:
            drop = self._drops.get(method, 0) > 0
            if drop:
                self._drops[method] -= 1
        self._dropping.on = drop
        try:
            super()._serve(handler)
        finally:
            self._dropping.on = False

    def _write(self, handler: BaseHTTPRequestHandler, reply: Any) -> None:  # type: ignore[override]
        if getattr(self._dropping, "on", False):
            handler.close_connection = True  # served, never answered
            return
        SlackStandIn._write(handler, reply)

    def fail_every(
        self,
        n: int,
        status: int = 429,
        retry_after: int | None = 1,
        methods: Iterable[str] | None = None,
        *,
        error: str | None = None,
    ) -> None:
        """Answer every ``n``-th matching call with ``status``; counting starts now.

        ``retry_after`` (whole seconds, as slack_sdk parses it with ``int()``) is sent as the
        ``Retry-After`` header when the status is 429; None leaves the header out.
        """
        if n < 1:
            raise ValueError("n must be at least 1")
        fault = Fault(status, error or _error_for(status), retry_after if status == 429 else None)
        with self._cond:
            self._every.append(_EveryNth(n, fault, None if methods is None else frozenset(methods)))

    def fail_next(
        self,
        method: str,
        error: str | None = None,
        status: int = 200,
        *,
        times: int = 1,
        retry_after: int | None = None,
    ) -> None:
        """Fail the next ``times`` calls of ``method`` with ``error`` and HTTP ``status``."""
        fault = Fault(status, error or _error_for(status), retry_after)
        with self._cond:
            self._next.append(_Next(method, fault, times))

    def down(self) -> None:
        """Answer 503 to every request until ``up()``."""
        with self._cond:
            self._is_down = True

    def up(self) -> None:
        """Serve normally again after ``down()``."""
        with self._cond:
            self._is_down = False

    def clear_faults(self) -> None:
        """Forget every fault rule and come back up."""
        with self._cond:
            self._every.clear()
            self._next.clear()
            self._is_down = False
            self._delay = 0.0
            self._delayed = frozenset()
            self._held = frozenset()
            self._released.set()

    @property
    def faults_injected(self) -> int:
        """How many calls were answered by an injected fault."""
        return self.fault_count()

    def fault_count(self, method: str | None = None) -> int:
        """How many calls (of ``method``) were answered by an injected fault (not counting
        the pace's 429s: ``paced_refusals``)."""
        return (sum(1 for call in self.calls(method) if call.faulted)
                - len(self.paced_refusals(method)))

    def served_count(self, method: str | None = None) -> int:
        """How many calls (of ``method``) were served normally (successfully or not)."""
        return sum(1 for call in self.calls(method) if not call.faulted)

    @staticmethod
    def _read(handler: BaseHTTPRequestHandler) -> Any:
        request = SlackStandIn._read(handler)
        # The pace needs the call's channel; _fault_for runs on this thread right after.
        _current.args = request.args
        return request

    def _bucket(self, method: str, args: dict[str, Any]) -> tuple[str, _Bucket] | None:
        """The pace's bucket for this call (None: not paced)."""
        pace = self._pace.get(method)
        if pace is None:
            return None
        if method == "chat.postMessage":
            scope = args.get("channel")
            if not isinstance(scope, str) or not scope:
                return None  # refused for its missing channel, not for its pace
        else:
            scope = "workspace"
        bucket = self._buckets.get((method, scope))
        if bucket is None:
            bucket = self._buckets[(method, scope)] = _Bucket(
                pace[0], pace[1], float(pace[1]), self._pace_clock())
        return scope, bucket

    def _paced(self, method: str) -> Fault | None:
        """429 when the call would outrun the pace (only calls that post or change a message
        spend from it: a refused one does not)."""
        found = self._bucket(method, getattr(_current, "args", None) or {})
        if found is None:
            return None
        scope, bucket = found
        wait = bucket.wait(self._pace_clock())
        if not wait:
            return None
        self._pace_refusals.append((method, scope))
        return Fault(429, "ratelimited", max(1, math.ceil(wait)))

    def _spend(self, method: str, args: dict[str, Any]) -> None:
        found = self._bucket(method, args)
        if found is not None:
            found[1].spend(self._pace_clock())

    def _fault_for(self, method: str, target: str | None) -> Fault | None:
        if self._is_down:
            return Fault(503, "service_unavailable")
        chosen: Fault | None = None
        for rule in self._next:
            if rule.method == method and rule.remaining > 0:
                rule.remaining -= 1
                chosen = rule.fault
                break
        self._next = [rule for rule in self._next if rule.remaining > 0]
        for every in self._every:
            if every.matches(method):
                every.seen += 1
                if chosen is None and every.seen % every.n == 0:
                    chosen = every.fault
        if chosen is None and target is None:
            chosen = self._paced(method)
        return chosen


_current = threading.local()  # the arguments of the call being served on this thread


def _metadata_arg(args: dict[str, Any]) -> dict[str, Any] | None:
    """``metadata`` checked as Slack checks it (None when absent)."""
    metadata = args.get("metadata")
    if metadata is None or metadata == "":
        return None
    if not isinstance(metadata, dict):
        raise _ApiError("invalid_metadata_format")
    event_type, payload = metadata.get("event_type"), metadata.get("event_payload")
    if not isinstance(event_type, str) or not event_type or not isinstance(payload, dict):
        raise _ApiError("invalid_metadata_schema")
    return {"event_type": event_type, "event_payload": copy.deepcopy(payload)}
