"""Publishing the App Home: when someone opens it, and again whenever what it shows changes.

Opening (``app_home_opened``): the listener only writes, the viewer's row and one ``home``
row in the outbox (:func:`home_opened`), and acks; nothing calls Slack before the ack.

Changes: every change the Home shows (a request created, approved, rejected or expired, a run
starting, each step, its end, a lock taken or lifted, a plan reset...) is recorded in one
place, the audit log, by whichever replica made it. :class:`HomePublisher` watches it: when
audit events newer than its watermark include a change (read-only commands and refusals do
not count), or a window opens or closes, it queues one ``home`` row for each person who
opened their Home in the last :data:`VIEWER_WINDOW`, in the transaction that moves the
watermark compare-and-set (``storage.home_viewers.HomeWatch``): another replica seeing the
same events queues nothing.

Delivery: the same task claims ``home`` rows and calls ``views.publish`` with the view built
*at delivery* (``bot.home_facts`` + ``bot.home``), so a row always publishes the newest state.
Coalesced: all pending rows of the viewer (one ordering key per viewer) are marked sent with
the one publish that covers them, so a burst of changes costs one ``views.publish`` per
viewer. Paced: ``views.publish`` is Tier 4 (100+ per minute per workspace), so at most one
call per :data:`PUBLISH_INTERVAL` seconds in all, and one per viewer per
:data:`VIEWER_INTERVAL` (rows due meanwhile are handed back untried and coalesce); a 429
pauses every publish for its ``Retry-After``. A republish is idempotent (the whole view is
replaced), so a lost answer is simply tried again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from bot.delivery_retry import RetryPolicy, retry_or_give_up
from bot.home import home_view
from bot.home_facts import SharedHome, home_context, read_home, read_shared, window_key
from bot.workspace import WorkspaceIdentity
from storage.home_viewers import HomeViewers, HomeWatch, Watermark
from storage.outbox import Outbox

if TYPE_CHECKING:
    from sqlmodel import Session

    from bot.ports import HandlerServices
    from storage.models import Notification

log = logging.getLogger(__name__)

__all__ = ["HOME_KIND", "VIEWER_WINDOW", "HomePublisher", "enqueue_home", "home_opened"]

HOME_KIND = "home"
VIEWER_WINDOW = timedelta(hours=24)
"""A Home is republished on a change for this long after its viewer last opened it."""
PUBLISH_INTERVAL = 0.6
"""Seconds between two ``views.publish`` calls (Tier 4: 100 a minute)."""
VIEWER_INTERVAL = 1.0
"""Seconds between two publishes to one viewer (a run's steps come faster: they coalesce)."""
WINDOW_EVERY = 30.0
"""Seconds between two looks at the windows (a window opening or closing republishes)."""
NOTICE_FOR = timedelta(hours=1)
"""How long the answer to a viewer's last click stays at the top of their Home."""
IGNORED_ACTIONS = ("command.", "shell.", "doctor", "click.", "oncall.", "checklist.")
"""Audit actions (prefixes) that change nothing a Home shows."""
IGNORED_SUFFIXES = (".refused",)
IDLE_ADVANCE = 200
"""Audit events that change nothing read again before the watermark moves past them."""
PERMANENT_ERRORS = frozenset({"not_enabled", "user_not_found", "invalid_arguments",
                              "view_too_large", "invalid_blocks", "not_allowed_token_type",
                              "invalid_arg_name", "missing_scope"})
"""``views.publish`` answers that trying again will not change (the Home tab disabled in the
app's settings, a view Slack refuses): the row is given up and the error logged."""


def enqueue_home(outbox: Outbox, user_id: str, team_id: str | None, *,
                 session: Session | None = None) -> int:
    """Queue a publish of ``user_id``'s Home (built when it is sent)."""
    return outbox.enqueue(user_id, HOME_KIND, {"user": user_id, "team": team_id},
                          ordering_key=f"home:{user_id}", session=session)


def home_opened(services: HandlerServices, user_id: str, team_id: str | None) -> None:
    """The ``app_home_opened`` listener's work: the viewer's row and a publish, one commit.
    Database only: the ack does not wait for Slack."""
    viewers = HomeViewers(services.database, services.clock)
    with services.database.session() as session:
        viewers.opened(user_id, team_id, session=session)
        enqueue_home(services.outbox, user_id, team_id, session=session)
    services.wake_worker()


class _Done(Exception):
    """Internal: this row is handled (marked or handed back); ``progressed`` for run_once."""

    def __init__(self, progressed: bool) -> None:
        super().__init__()
        self.progressed = progressed


class HomePublisher:
    """A worker task: queue republishes on changes, and publish due ``home`` rows."""

    name = "app-home"

    def __init__(self, services: HandlerServices, client: WebClient, *,
                 publish_interval: float = PUBLISH_INTERVAL,
                 viewer_interval: float = VIEWER_INTERVAL,
                 window_every: float = WINDOW_EVERY, batch: int = 20,
                 monotonic: Callable[[], float] = time.monotonic,
                 retry: RetryPolicy | None = None) -> None:
        self._services = services
        self._client = client
        self._viewers = HomeViewers(services.database, services.clock)
        self._watch = HomeWatch(services.database)
        self._publish_interval = publish_interval
        self._viewer_interval = viewer_interval
        self._window_every = window_every
        self._batch = batch
        self._monotonic = monotonic
        self._retry = retry or RetryPolicy()
        self._workspace = WorkspaceIdentity.of(services)
        self._next_any = float("-inf")  # monotonic time the next publish may go
        self._next_for: dict[str, float] = {}  # viewer -> monotonic time of their next one
        self._window: tuple[float, str] | None = None  # (looked at, key)
        self._shared_facts: tuple[tuple[int, str], SharedHome] | None = None

    # -- the WorkerTask protocol --------------------------------------------------------------

    def run_once(self) -> bool:
        """Queue republishes for changes, then publish what is due; never raises."""
        progressed = False
        try:
            progressed = self._watch_changes()
        except Exception:
            log.exception("app home: watching for changes failed")
        try:
            progressed = self._publish_due() or progressed
        except Exception:
            log.exception("app home: publishing failed")
        return progressed

    def busy(self) -> bool:
        try:
            return self._services.outbox.pending_count((HOME_KIND,)) > 0
        except Exception:
            log.warning("app home: could not count pending publishes", exc_info=True)
            return False

    # -- changes ------------------------------------------------------------------------------

    def _window_key(self) -> str:
        mono = self._monotonic()
        if self._window is None or mono - self._window[0] >= self._window_every:
            self._window = (mono, window_key(self._services, self._services.clock.now()))
        return self._window[1]

    def _watch_changes(self) -> bool:
        key = self._window_key()
        mark = self._watch.current(key)
        changes = self._watch.changes_after(mark.audit_id, ignore_prefixes=IGNORED_ACTIONS,
                                            ignore_suffixes=IGNORED_SUFFIXES)
        if changes.newest_id == mark.audit_id and key == mark.window_key:
            return False
        republish = changes.changed or key != mark.window_key
        if not republish and changes.newest_id - mark.audit_id < IDLE_ADVANCE:
            # Only reads and refusals (``/qlp status`` typed often): no write for them; the
            # next pass reads these few rows again, until a change or enough of them.
            return False
        viewers = self._viewers.recent(self._services.clock.now() - VIEWER_WINDOW) \
            if republish else []
        database = self._services.database
        with database.session() as session:
            if not self._watch.advance(mark, Watermark(changes.newest_id, key),
                                       session=session):
                return False  # another replica took these changes
            for viewer in viewers:
                enqueue_home(self._services.outbox, viewer.user_id, viewer.team_id,
                             session=session)
        if viewers:
            log.debug("app home: %d viewers to republish (audit #%s)", len(viewers),
                      changes.newest_id)
        return bool(viewers)

    # -- publishing ---------------------------------------------------------------------------

    def _publish_due(self) -> bool:
        outbox = self._services.outbox
        progressed = False
        for row in outbox.claim_due(self._services.clock.now(), self._batch,
                                    kinds=(HOME_KIND,)):
            try:
                self._publish(row)
            except _Done as done:
                progressed = progressed or done.progressed
            except Exception:  # a database error mid-way: its lease brings it back
                log.exception("app home: publish #%s could not be handled", row.id)
        return progressed

    def _publish(self, row: Notification) -> None:
        assert row.id is not None
        outbox = self._services.outbox
        user = str(row.payload.get("user") or "")
        team = row.payload.get("team")
        if not user:
            outbox.mark_dead(row.id, "a Home publish without a user")
            raise _Done(True)
        mono = self._monotonic()
        free_at = max(self._next_any, self._next_for.get(user, float("-inf")))
        if mono < free_at:
            outbox.release(row.id, self._services.clock.now()
                           + timedelta(seconds=free_at - mono))
            raise _Done(False)
        foreign = self._workspace.get().refusal(str(team) if team else None, None) \
            if team else None
        if foreign is not None:
            outbox.mark_dead(row.id, f"another workspace's viewer: {foreign}"[:500])
            raise _Done(True)
        # Rows queued behind this one are covered by the view built now: one publish for all.
        covered = [r.id for r in outbox.pending_after(str(row.ordering_key), row.id, limit=500)
                   if r.id is not None]
        view = self._view(user, team if isinstance(team, str) else None)
        self._next_any = mono + self._publish_interval
        self._next_for[user] = mono + self._viewer_interval
        self._call(row, lambda: self._client.views_publish(user_id=user, view=view))
        now = self._services.clock.now()
        with outbox.database.session() as session:
            outbox.mark_sent(row.id, now=now, session=session)
            for other in covered:
                outbox.mark_sent(other, now=now, session=session,
                                 note=f"coalesced into #{row.id}")
            self._viewers.published(user, session=session)
        raise _Done(True)

    def _shared(self) -> SharedHome:
        """What every viewer sees alike, read once per change (and per minute: times, the
        window) for all the viewers a change republishes."""
        now = self._services.clock.now()
        key = (self._watch.newest(), now.replace(second=0, microsecond=0).isoformat())
        if self._shared_facts is None or self._shared_facts[0] != key:
            self._shared_facts = (key, read_shared(self._services))
        return self._shared_facts[1]

    def _view(self, user: str, team: str | None) -> dict[str, Any]:
        ctx = home_context(self._services, user, team, display=True)
        viewer = self._viewers.get(user)
        now = self._services.clock.now()
        # The answer to their last click, while it is news (NOTICE_FOR).
        fresh = viewer is not None and viewer.notice_at is not None \
            and now - viewer.notice_at <= NOTICE_FOR
        return home_view(read_home(ctx, self._shared()), now=now,
                         zone=self._services.policy.zone,
                         notice=viewer.notice if fresh and viewer is not None else None,
                         notice_at=viewer.notice_at if fresh and viewer is not None else None)

    def _call(self, row: Notification, call: Callable[[], Any]) -> None:
        """Call Slack; on a failure mark ``row`` as it deserves and stop (``_Done``)."""
        assert row.id is not None
        outbox = self._services.outbox
        now = self._services.clock.now()
        try:
            call()
            return
        except SlackApiError as error:
            status = int(getattr(error.response, "status_code", 0) or 0)
            try:
                code = str(error.response.get("error") or "")
            except Exception:  # a body that was not JSON
                code = ""
            detail = f"{code or 'error'} (HTTP {status})"
            if status == 429 or code in ("ratelimited", "rate_limited"):
                wait = _retry_after(error.response)
                self._next_any = self._monotonic() + wait
                outbox.release(row.id, now + timedelta(seconds=wait), detail)
                log.warning("app home: views.publish rate limited for %.0fs", wait)
                raise _Done(False) from None
            if code in PERMANENT_ERRORS:
                outbox.mark_dead(row.id, detail)
                log.error("app home: views.publish refused the Home of %s for good: %s",
                          row.payload.get("user"), detail)
                raise _Done(True) from None
        except Exception as error:  # a connection error or a timeout: the view is replaced
            detail = f"{type(error).__name__}: {error}"[:500]  # whole next time: try again
        if retry_or_give_up(outbox, row, detail, now=now, policy=self._retry) is None:
            log.error("app home: gave up publishing the Home of %s: %s",
                      row.payload.get("user"), detail)
        raise _Done(True)


def _retry_after(response: Any) -> float:
    headers = getattr(response, "headers", None) or {}
    for name, value in dict(headers).items():
        if str(name).lower() == "retry-after":
            try:
                return max(float(value), 1.0)
            except (TypeError, ValueError):
                break
    return 1.0
