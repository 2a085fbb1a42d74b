"""Who looks at the bot's App Home, and which changes their Home has been republished for.

:class:`HomeViewers` keeps one row per person who opened the Home tab: when they last opened
it (their Home is republished on a change only for a while after that), when it was last
published to them, and the answer to their last click on a Home button (shown at its top).

:class:`HomeWatch` is the publisher's watermark over the audit log, the one place every change
is recorded: the id of the last audit event seen and the window state last shown. It advances
compare-and-set (:meth:`HomeWatch.advance`), in the transaction that queues the republishes,
so several replicas watching the same log queue each change once.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, update
from sqlalchemy.orm import aliased
from sqlmodel import Session, col, select

from procedures.clock import Clock
from storage.db import Database
from storage.models import Approval, AuditEvent, Deployment, HomeViewer, HomeWatchRow
from storage.sql import insert_ignoring_conflict, upsert

__all__ = ["AuditChanges", "HomeViewers", "HomeWatch", "Viewer", "Watermark", "approvals_for",
           "last_finished"]

_WATCH_ROW = 1


@dataclass(frozen=True)
class Viewer:
    """One person's Home: who, from which workspace, when opened and last published."""

    user_id: str
    team_id: str | None
    opened_at: datetime
    published_at: datetime | None
    notice: str | None
    notice_at: datetime | None


def _viewer(row: HomeViewer) -> Viewer:
    return Viewer(row.user_id, row.team_id, row.opened_at, row.published_at, row.notice,
                  row.notice_at)


class HomeViewers:
    """The ``home_viewers`` table."""

    def __init__(self, database: Database, clock: Clock) -> None:
        self._db = database
        self._clock = clock

    def opened(self, user_id: str, team_id: str | None, *,
               session: Session | None = None) -> None:
        """``user_id`` opened the Home tab now (a Slack retry of the event only moves the time)."""
        now = self._clock.now()
        values = {"user_id": user_id, "team_id": team_id, "opened_at": now}
        with self._db.using(session) as s:
            s.exec(upsert(self._db, HomeViewer, values, ["user_id"],
                          {"team_id": team_id, "opened_at": now}))

    def get(self, user_id: str) -> Viewer | None:
        with self._db.session(read_only=True) as s:
            row = s.get(HomeViewer, user_id)
            return None if row is None else _viewer(row)

    def recent(self, since: datetime) -> list[Viewer]:
        """Everyone who opened the Home tab at or after ``since``."""
        with self._db.session(read_only=True) as s:
            rows = s.exec(select(HomeViewer).where(col(HomeViewer.opened_at) >= since)
                          .order_by(col(HomeViewer.user_id))).all()
            return [_viewer(r) for r in rows]

    def published(self, user_id: str, *, session: Session | None = None) -> None:
        """Their Home was published now."""
        with self._db.using(session) as s:
            s.exec(update(HomeViewer).where(col(HomeViewer.user_id) == user_id)
                   .values(published_at=self._clock.now())
                   .execution_options(synchronize_session=False))

    def note(self, user_id: str, team_id: str | None, text: str, *,
             session: Session | None = None) -> None:
        """Keep ``text`` (an answer to their click) to show at the top of their Home."""
        now = self._clock.now()
        values = {"user_id": user_id, "team_id": team_id, "opened_at": now, "notice": text,
                  "notice_at": now}
        with self._db.using(session) as s:
            s.exec(upsert(self._db, HomeViewer, values, ["user_id"],
                          {"notice": text, "notice_at": now}))


@dataclass(frozen=True)
class Watermark:
    """What the publisher last republished for: an audit event id and a window state."""

    audit_id: int
    window_key: str


@dataclass(frozen=True)
class AuditChanges:
    """Audit events after a watermark: the newest id, and whether any of them is a change
    (not only read-only commands or refusals)."""

    newest_id: int
    changed: bool


class HomeWatch:
    """The one-row ``home_watch`` table and the audit log it watches."""

    def __init__(self, database: Database) -> None:
        self._db = database

    def current(self, window_key: str) -> Watermark:
        """The watermark; created at the audit log's head (nothing to republish yet).

        A plain read each time but the first: it is asked on every pass of the worker."""
        with self._db.session(read_only=True) as s:
            row = s.get(HomeWatchRow, _WATCH_ROW)
            if row is not None:
                return Watermark(row.audit_id, row.window_key)
        with self._db.session() as s:
            newest = s.exec(select(func.max(AuditEvent.id))).one() or 0
            s.exec(insert_ignoring_conflict(self._db, HomeWatchRow, {
                "id": _WATCH_ROW, "audit_id": int(newest), "window_key": window_key}, ["id"]))
        with self._db.session(read_only=True) as s:
            row = s.get(HomeWatchRow, _WATCH_ROW)
            assert row is not None
            return Watermark(row.audit_id, row.window_key)

    def newest(self) -> int:
        """The newest audit event's id (0 for none)."""
        with self._db.session(read_only=True) as s:
            return int(s.exec(select(func.max(AuditEvent.id))).one() or 0)

    def changes_after(self, audit_id: int, *, ignore_prefixes: Collection[str],
                      ignore_suffixes: Collection[str], limit: int = 2000) -> AuditChanges:
        """The audit events after ``audit_id`` (at most ``limit``, oldest first)."""
        with self._db.session(read_only=True) as s:
            rows = s.exec(select(AuditEvent.id, AuditEvent.action)
                          .where(col(AuditEvent.id) > audit_id)
                          .order_by(col(AuditEvent.id)).limit(limit)).all()
        if not rows:
            return AuditChanges(audit_id, False)
        prefixes, suffixes = tuple(ignore_prefixes), tuple(ignore_suffixes)
        changed = any(not action.startswith(prefixes) and not action.endswith(suffixes)
                      for _, action in rows)
        newest = rows[-1][0]
        assert newest is not None
        return AuditChanges(int(newest), changed)

    def advance(self, old: Watermark, new: Watermark, *, session: Session) -> bool:
        """Move the watermark from ``old`` to ``new``; False if another replica moved it first
        (then it queued the republishes, and this caller must not)."""
        result = session.exec(
            update(HomeWatchRow)
            .where(col(HomeWatchRow.id) == _WATCH_ROW, col(HomeWatchRow.audit_id) == old.audit_id,
                   col(HomeWatchRow.window_key) == old.window_key)
            .values(audit_id=new.audit_id, window_key=new.window_key)
            .execution_options(synchronize_session=False))
        return bool(result.rowcount == 1)


def approvals_for(database: Database, deployment_ids: Collection[int]) -> dict[int, list[Any]]:
    """Every approval row of ``deployment_ids`` in one read, by deployment, oldest first (the
    App Home shows the approvers of every waiting deployment at once)."""
    found: dict[int, list[Any]] = {id: [] for id in deployment_ids}
    if not found:
        return found
    with database.session(read_only=True) as s:
        rows = s.exec(select(Approval).where(col(Approval.deployment_id).in_(list(found)))
                      .order_by(col(Approval.id))).all()
    for row in rows:
        found[row.deployment_id].append(row)
    return found


def last_finished(database: Database, environments: Collection[str], states: Collection[Any],
                  per_environment: int) -> dict[str, list[Any]]:
    """The newest ``per_environment`` deployments in ``states`` of each environment, newest
    first, in one read (a window function; both backends have it)."""
    ranked = select(Deployment, func.row_number().over(
        partition_by=col(Deployment.environment),
        order_by=col(Deployment.id).desc()).label("rank")) \
        .where(col(Deployment.environment).in_(list(environments)),
               col(Deployment.state).in_(list(states))).subquery()
    latest = aliased(Deployment, ranked)
    found: dict[str, list[Any]] = {env: [] for env in environments}
    with database.session(read_only=True) as s:
        rows = s.exec(select(latest).where(ranked.c.rank <= per_environment)
                      .order_by(ranked.c.environment, ranked.c.id.desc())).all()
    for row in rows:
        found[row.environment].append(row)
    return found
