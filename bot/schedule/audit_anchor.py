"""``AuditAnchors``: keep the audit chain's head outside the database, at intervals.

Every ``QLP_AUDIT_ANCHOR_EVERY`` seconds (if the chain grew since the last anchor) the head,
row id and hash, is written to the log (logger ``qlp.audit`` at INFO, which ``serve`` and
``socket`` show at any ``QLP_LOG_LEVEL``; the local shell keeps its terminal quiet),
appended to the anchor file, and posted to ``QLP_AUDIT_CHANNEL`` through the outbox (its
``dedup_key`` names the row and hash, so ticks, restarts and replicas post each head once).
``qlp-bot audit verify`` checks that every anchored row is still in the chain with the hash it
had: a rewrite by someone holding the audit key, or a cut of the newest rows, shows there.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from sqlmodel import col, select

from bot.audit_cli import (
    ANCHOR_DEDUP_PREFIX,
    anchor_file,
    anchor_text,
    announce_audit_key,
    append_anchor_file,
    parse_anchor_lines,
)
from storage.audit import AuditLog
from storage.db import Database
from storage.models import Notification
from storage.outbox import Outbox

if TYPE_CHECKING:
    from bot.ports import AnchorServices
    from bot.settings import Settings

anchor_log = logging.getLogger("qlp.audit")


def _tail(path: Path, size: int = 4096) -> list[str]:
    """The last whole lines of the anchor file (it only grows: never read it all per tick)."""
    try:
        with path.open("rb") as handle:
            handle.seek(0, 2)
            end = handle.tell()
            handle.seek(max(0, end - size))
            lines = handle.read().decode("utf-8", errors="replace").splitlines()
    except FileNotFoundError:
        return []
    return lines[1:] if end > size else lines


@dataclass(frozen=True)
class _Last:
    event_id: int
    at: datetime | None


class AuditAnchors:
    """``DueWork``: anchor the audit chain head every ``every`` seconds if it moved."""

    name = "audit-anchor"

    def __init__(self, audit: AuditLog, outbox: Outbox, database: Database, *,
                 channel: str | None, every: float, path: Path) -> None:
        self._audit = audit
        self._outbox = outbox
        self._db = database
        self._channel = channel
        self._every = timedelta(seconds=every)
        self._path = path

    @classmethod
    def from_services(cls, services: AnchorServices) -> AuditAnchors:
        """The bot's anchor job; built as the bot starts, which is when a missing
        ``QLP_AUDIT_KEY`` is announced (serve, socket)."""
        announce_audit_key()
        settings = services.settings
        return cls(AuditLog(services.database, services.clock), services.outbox,
                   services.database, channel=settings.qlp_audit_channel,
                   every=settings.qlp_audit_anchor_every, path=anchor_file(settings))

    def _last(self) -> _Last | None:
        """The newest anchor: posted (the outbox, shared by replicas) or in the file."""
        candidates: list[_Last] = []
        with self._db.session(read_only=True) as s:
            row = s.exec(select(Notification)
                         .where(col(Notification.dedup_key).startswith(ANCHOR_DEDUP_PREFIX))
                         .order_by(col(Notification.id).desc()).limit(1)).first()
        if row is not None and row.dedup_key:
            event_id = row.dedup_key[len(ANCHOR_DEDUP_PREFIX):].split(":", 1)[0]
            if event_id.isdigit():
                candidates.append(_Last(int(event_id), row.created_at))
        filed = parse_anchor_lines(_tail(self._path), str(self._path))
        if filed:
            newest = filed[-1]
            at = datetime.fromisoformat(newest.at) if newest.at else None
            candidates.append(_Last(newest.event_id, at))
        if not candidates:
            return None
        return max(candidates, key=lambda c: (c.event_id, c.at or datetime.min))

    def anchor_now(self, now: datetime) -> str | None:
        """Anchor the current head (whatever the interval); its text, or None when empty."""
        event_id, digest, key_id = self._audit.head()
        if event_id == 0:
            return None
        text = anchor_text(event_id, digest, key_id, now)
        anchor_log.info("%s", text)
        append_anchor_file(self._path, event_id, digest, key_id, now)
        if self._channel:
            self._outbox.enqueue(
                self._channel, "post",
                {"text": f":lock: {text.replace(digest, f'`{digest}`')}"},
                dedup_key=f"{ANCHOR_DEDUP_PREFIX}{event_id}:{digest[:16]}")
        return text

    def run_due(self, now: datetime) -> int:
        """Anchor the head if it moved since the last anchor and that is ``every`` old."""
        last = self._last()
        if last is not None:
            head_id = self._audit.head()[0]
            if head_id == last.event_id:
                return 0  # nothing new since
            if last.at is not None and now - last.at < self._every:
                return 0
        return 1 if self.anchor_now(now) else 0

    def upcoming(self, now: datetime, horizon: timedelta) -> list[datetime]:
        """When the next anchor falls due, within ``horizon``."""
        last = self._last()
        if last is None or last.at is None:
            return []
        following = last.at + self._every
        return [following] if now < following <= now + horizon else []


def run_audit_anchor(settings: Settings, out: TextIO | None = None) -> int:
    """``qlp-bot audit anchor``: anchor the chain head now (file, log, audit channel)."""
    from procedures.clock import SystemClock

    out = out or sys.stdout
    clock = SystemClock()
    database = Database(settings.database_url)
    try:
        anchors = AuditAnchors(AuditLog(database, clock), Outbox(database, clock), database,
                               channel=settings.qlp_audit_channel,
                               every=settings.qlp_audit_anchor_every,
                               path=anchor_file(settings))
        written = anchors.anchor_now(clock.now())
    finally:
        database.dispose()
    print(written or "audit anchor: the chain is empty, nothing to anchor", file=out)
    return 0
