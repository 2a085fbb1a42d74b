"""What someone with write access to the database, but not the audit key, does to the chain.

``rewrite`` changes one row and recomputes every hash from there on the only way such a person
can: the plain SHA-256 of ``storage.audit.event_hash`` (or, given a key, the HMAC, as an
insider holding the key would), relinking ``prev_hash`` and moving the head, in raw SQL.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import text
from sqlmodel import col, select

from storage.audit import AuditKey, event_hash, keyed_event_hash
from storage.db import Database
from storage.models import GENESIS_HASH, AuditEvent


def _content(event: AuditEvent) -> tuple[Any, ...]:
    return (event.at, event.actor, event.action, event.deployment_id, event.environment,
            repr(event.detail), event.key_id)


def rewrite(database: Database, change: Callable[[AuditEvent], None], *,
            key: AuditKey | None = None, drop_key_id_from: int | None = None,
            from_first_row: bool = False) -> None:
    """Apply ``change`` to every row (it edits the ones it wants), then recompute the hashes
    from the first changed row on (``from_first_row``: every hash, the changed row's
    predecessors' too)."""
    with database.session() as s:
        events = list(s.exec(select(AuditEvent).order_by(col(AuditEvent.id))).all())
        previous = GENESIS_HASH
        changed = from_first_row
        for event in events:
            assert event.id is not None
            before = _content(event)
            change(event)
            if drop_key_id_from is not None and event.id >= drop_key_id_from:
                event.key_id = None
            changed = changed or _content(event) != before
            if not changed:
                previous = event.hash
                continue
            event.prev_hash = previous
            fields: tuple[Any, ...] = (event.prev_hash, event.at, event.actor, event.action,
                                       event.deployment_id, event.environment, event.detail)
            if key is not None and event.key_id == key.key_id:
                event.hash = keyed_event_hash(key, *fields)
            else:
                event.hash = event_hash(*fields)
            previous = event.hash
            s.add(event)
        s.flush()
        if events:
            s.execute(text("UPDATE audit_head SET last_id = :id, last_hash = :h WHERE id = 1"),
                      {"id": events[-1].id, "h": previous})


def cut_back(database: Database, keep: int) -> None:
    """Delete every row after ``keep`` and move the head back to it (no hash to recompute)."""
    with database.session() as s:
        s.execute(text("DELETE FROM audit_events WHERE id > :keep"), {"keep": keep})
        last = s.exec(select(AuditEvent).where(col(AuditEvent.id) == keep)).one()
        s.execute(text("UPDATE audit_head SET last_id = :id, last_hash = :h WHERE id = 1"),
                  {"id": keep, "h": last.hash})
