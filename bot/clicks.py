"""Button clicks are decided after Slack has its ack (issue 11: no network call before the ack).

A click's listener only writes: it stores the click durably (``storage.requests.ClickQueue``,
the same row that recognises a Slack retry), hands its key to :class:`ClickTask` and returns,
so Slack gets its 200 whatever Slack, Azure or the database's neighbours do. The task decides
the click on a small pool of its own threads, where a membership read
(``usergroups.users.list``) may take seconds, and answers the person privately.

Why the worker's task and not Bolt's lazy listeners: a lazy listener lives in memory only, so
a restart between the ack and the decision would lose the click; here the click is a row, and
the worker's pass (:meth:`ClickTask.run_once`) picks up any click that no thread decided (a
restart, a processor that died: its lease passes). The pool starts on a click at once, without
waiting for the worker's next pass, and it also runs when no worker loop does (the tests' bot).

Nothing twice: a Slack retry of the same click has the same key and is not stored again; a
double click is two clicks, and the second is told "You already approved #N" by the serialised
decision (``storage.decisions``); a click claimed again after a lease is decided by the same
serialised code.

Answers go to the click's ``response_url`` (valid 30 minutes, and it reaches the person even
where the bot is not a channel member); when there is none or it fails, they go through the
outbox as an ephemeral message. When Slack takes longer than :data:`NOTICE_AFTER` seconds to
list a group, the person is first told "Checking your approval of #N…".
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from slack_sdk.webhook import WebhookClient

from bot import actions
from bot.context import HandlerContext, Request
from bot.formatting import escape
from bot.membership import when_slow
from bot.replies import error_text
from bot.workspace import WorkspaceIdentity
from storage.requests import ClickQueue

if TYPE_CHECKING:
    from bot.ports import HandlerServices, HasWorkerTasks

log = logging.getLogger(__name__)

__all__ = ["CLICK_LEASE", "NOTICE_AFTER", "ClickTask", "click_task"]

CLICK_LEASE = timedelta(seconds=60)
"""How long a processor holds a click before another may decide it (it died meanwhile)."""

CLICK_MAX_AGE = timedelta(hours=1)
"""Older undecided clicks are not picked up any more (a stale click must not approve)."""

NOTICE_AFTER = 1.5
"""Seconds Slack may take to list a group before the person is told the click is being
checked (the answer follows when Slack answers)."""

_NOTICES = {
    actions.APPROVE: "Checking your approval of #{id}…",
    actions.REJECT: "Checking your rejection of #{id}…",
    actions.CANCEL: "Checking your cancellation of #{id}…",
}

Handler = Callable[[HandlerContext, dict[str, Any]], str | None]


class ClickTask:
    """Worker task deciding stored button clicks on its own threads (see the module doc)."""

    name = "clicks"

    def __init__(self, services: HandlerServices, *, handlers: Mapping[str, Handler],
                 max_parallel: int = 2, notice_after: float = NOTICE_AFTER) -> None:
        self._services = services
        self._queue = ClickQueue(services.database, services.clock)
        self._handlers = handlers
        self._notice_after = notice_after
        self._max_parallel = max_parallel
        self._pool = ThreadPoolExecutor(max_workers=max_parallel,
                                        thread_name_prefix="qlp-click")
        self._running: dict[str, Future[None]] = {}
        self._lock = threading.Lock()
        # Clicks from another workspace or organisation are refused (bot.workspace).
        self._workspace = WorkspaceIdentity.of(services)

    # -- the listener's side: write, hand over, return ---------------------------------------

    def accept(self, request: Request, action_id: str, action: Mapping[str, Any]) -> bool:
        """Store the click and start deciding it; False for a Slack retry (nothing to do).

        Database only: no network call happens here."""
        key = f"click:{request.request_key}"
        click = {"action_id": action_id, "action": dict(action), "request": asdict(request)}
        if not self._queue.queue(key, click):
            return False
        self._submit(key)
        return True

    def defer(self, job: Callable[[], None]) -> None:
        """Run ``job`` (a network call a listener must not make) on the task's threads."""
        def run() -> None:
            try:
                job()
            except Exception:
                log.exception("a deferred listener job failed")

        with self._lock:
            self._running[f"job:{id(run)}"] = self._submit_locked(run)

    # -- the worker's side ---------------------------------------------------------------------

    def run_once(self) -> bool:
        """Pick up clicks no thread is deciding (after a restart, or a lease that passed)."""
        since = self._services.clock.now() - CLICK_MAX_AGE
        with self._lock:
            self._running = {k: f for k, f in self._running.items() if not f.done()}
            running = set(self._running)
        found = False
        for key in self._queue.claimable(since=since):
            if key not in running:
                found = self._submit(key) or found
        return found

    def busy(self) -> bool:
        with self._lock:
            return any(not f.done() for f in self._running.values())

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def answer_of(self, key: str) -> str | None:
        """The answer a decided click got (tests, and a repeated click)."""
        return self._queue.answer(key)

    def _submit(self, key: str) -> bool:
        with self._lock:
            current = self._running.get(key)
            if current is not None and not current.done():
                return False
            self._running[key] = self._submit_locked(self._decide, key)
        return True

    def _submit_locked(self, fn: Callable[..., None], *args: Any) -> Future[None]:
        try:
            return self._pool.submit(fn, *args)
        except RuntimeError:
            # The worker stopped (shutdown) while the app still takes clicks: decide them on
            # fresh threads; a click stored as the process ends stays queued for the next one.
            self._pool = ThreadPoolExecutor(max_workers=self._max_parallel,
                                            thread_name_prefix="qlp-click")
            return self._pool.submit(fn, *args)

    def _decide(self, key: str) -> None:
        click = self._queue.claim(key, lease=CLICK_LEASE)
        if click is None:
            return  # decided already, or another processor holds it
        request = Request(**click["request"])
        action: dict[str, Any] = dict(click["action"])
        action_id = str(click["action_id"])
        notice = _NOTICES.get(action_id, "").format(
            id=escape(str(action.get("value") or "?"))[:20])

        def tell_checking() -> None:
            if notice:
                self.answer(request, notice)

        try:
            foreign = self._foreign(request, action_id, action)
            handler = self._handlers.get(action_id)
            if foreign is not None:
                reply: str | None = foreign
            elif handler is None:
                reply = "This button is not handled by this version of the bot."
            else:
                with when_slow(self._notice_after, tell_checking):
                    reply = handler(HandlerContext(request, self._services), action)
        except Exception as error:  # the one place a click's error becomes its answer
            reply = error_text(error)
        self._queue.finish(key, reply or "")
        if reply:
            self.answer(request, reply)

    def _foreign(self, request: Request, action_id: str,
                 action: Mapping[str, Any]) -> str | None:
        """The refusal of a click from another workspace or organisation (audited), or None."""
        why = self._workspace.get().refusal(request.team_id, request.enterprise_id)
        if why is None:
            return None
        self._services.audit.append(
            request.user_id or "unknown", "click.refused",
            detail={"rule": "workspace", "action": action_id,
                    "value": str(action.get("value") or "")[:64], "team": request.team_id,
                    "enterprise": request.enterprise_id, "channel": request.channel_id})
        return f":no_entry: {why} _(rule: workspace)_"

    def answer(self, request: Request, text: str) -> None:
        """Tell the person who clicked: its response_url, else an outbox ephemeral."""
        if request.response_url:
            try:
                response = WebhookClient(request.response_url, timeout=5).send(
                    text=text, response_type="ephemeral", replace_original=False)
                if response.status_code == 200:
                    return
                log.warning("response_url answered %s; the answer goes through the outbox",
                            response.status_code)
            except Exception:
                log.warning("response_url failed; the answer goes through the outbox",
                            exc_info=True)
        if not request.channel_id or not request.user_id:
            return
        services = self._services
        services.outbox.enqueue(request.channel_id, "ephemeral",
                                {"user": request.user_id, "text": text},
                                ordering_key=f"answer:{request.channel_id}:{request.user_id}")
        services.wake_worker()


def click_task(services: HasWorkerTasks) -> ClickTask:
    """The services' click task (one of the worker's tasks, see ``Services.worker_tasks``)."""
    for task in services.worker_tasks():
        if isinstance(task, ClickTask):
            return task
    raise RuntimeError("the worker has no click task")  # pragma: no cover: wiring adds it
