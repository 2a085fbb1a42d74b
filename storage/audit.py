"""The append-only, hash-chained audit log (the seed's emergency and rollback log files)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import update
from sqlmodel import Session, col, select

from procedures.clock import Clock
from storage.db import Database
from storage.models import GENESIS_HASH, AuditEvent, AuditHead
from storage.sql import insert_ignoring_conflict

_VERIFY_BATCH = 1000


def canonical_detail(detail: Mapping[str, Any] | None) -> dict[str, Any]:
    """``detail`` as the JSON document that is stored and hashed (non-JSON values -> str)."""
    if not detail:
        return {}
    loaded = json.loads(json.dumps(dict(detail), default=str, allow_nan=False))
    if not isinstance(loaded, dict):  # pragma: no cover - dict in, dict out
        raise TypeError("audit detail must be a mapping")
    return loaded


def event_hash(
    prev_hash: str,
    at: datetime,
    actor: str,
    action: str,
    deployment_id: int | None,
    environment: str | None,
    detail: Mapping[str, Any],
) -> str:
    """sha256 over the canonical JSON of one event's content and its predecessor's hash."""
    document = [
        prev_hash,
        at.astimezone(UTC).isoformat(timespec="microseconds"),
        actor,
        action,
        deployment_id,
        environment,
        detail,
    ]
    blob = json.dumps(
        document, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def _hash_of(event: AuditEvent) -> str:
    return event_hash(
        event.prev_hash, event.at, event.actor, event.action,
        event.deployment_id, event.environment, event.detail,
    )


@dataclass(frozen=True)
class VerifyResult:
    """The outcome of walking the chain: ``ok``, how many rows were checked, the first bad id."""

    ok: bool
    checked: int
    first_bad_id: int | None = None
    problem: str | None = None


class AuditLog:
    """Appends events to the chain and verifies it.

    Every append locks the single ``audit_head`` row (``SELECT ... FOR UPDATE`` on
    PostgreSQL; SQLite write transactions are already serialised by ``BEGIN IMMEDIATE``),
    reads the last id and hash, inserts the next event with ``id = last_id + 1`` and moves
    the head. Appends from any number of processes therefore form one chain with contiguous
    ids: a changed row breaks its hash, a deleted row leaves a gap, a deleted tail no longer
    matches the head.

    Pass ``session=`` to append inside the caller's transaction, so the change and its audit
    row commit together. Append the audit row last in such a transaction: it holds the head
    lock until commit.
    """

    def __init__(self, database: Database, clock: Clock) -> None:
        self._db = database
        self._clock = clock

    def append(
        self,
        actor: str,
        action: str,
        *,
        deployment_id: int | None = None,
        environment: str | None = None,
        detail: Mapping[str, Any] | None = None,
        session: Session | None = None,
    ) -> AuditEvent:
        """Add one event at the end of the chain and return it (with ``id`` and ``hash``)."""
        document = canonical_detail(detail)
        at = self._clock.now().astimezone(UTC)
        with self._db.using(session) as s:
            head = self._lock_head(s)
            prev_hash = head.last_hash
            event = AuditEvent(
                id=head.last_id + 1,
                at=at,
                actor=actor,
                action=action,
                deployment_id=deployment_id,
                environment=environment,
                detail=document,
                prev_hash=prev_hash,
                hash=event_hash(prev_hash, at, actor, action, deployment_id, environment, document),
            )
            s.add(event)
            s.flush()
            s.exec(
                update(AuditHead)
                .where(col(AuditHead.id) == 1)
                .values(last_id=event.id, last_hash=event.hash)
                .execution_options(synchronize_session=False)
            )
            return event

    def _lock_head(self, session: Session) -> AuditHead:
        statement = select(AuditHead).where(col(AuditHead.id) == 1)
        if self._db.is_postgresql:
            statement = statement.with_for_update()
        # populate_existing: never trust a head cached in the caller's session.
        statement = statement.execution_options(populate_existing=True)
        head = session.exec(statement).first()
        if head is None:
            # Tables created without the migration (which seeds this row): seed it now.
            session.exec(
                insert_ignoring_conflict(
                    self._db, AuditHead,
                    {"id": 1, "last_id": 0, "last_hash": GENESIS_HASH}, ["id"],
                )
            )
            head = session.exec(statement).one()
        return head

    def recent(self, limit: int = 20, deployment_id: int | None = None) -> list[AuditEvent]:
        """The newest events, newest first; only one deployment's if ``deployment_id``."""
        statement = select(AuditEvent)
        if deployment_id is not None:
            statement = statement.where(col(AuditEvent.deployment_id) == deployment_id)
        statement = statement.order_by(col(AuditEvent.id).desc()).limit(limit)
        with self._db.session(read_only=True) as s:
            return list(s.exec(statement).all())

    def verify(self) -> VerifyResult:
        """Walk the whole chain; report the first row that was changed, removed or misplaced."""
        expected_id = 1
        expected_prev = GENESIS_HASH
        checked = 0
        with self._db.session(read_only=True) as s:
            while True:
                batch = s.exec(
                    select(AuditEvent)
                    .where(col(AuditEvent.id) >= expected_id)
                    .order_by(col(AuditEvent.id))
                    .limit(_VERIFY_BATCH)
                ).all()
                for event in batch:
                    assert event.id is not None
                    if event.id != expected_id:
                        return VerifyResult(
                            False, checked, event.id,
                            f"gap before #{event.id}: event #{expected_id} is missing",
                        )
                    if event.prev_hash != expected_prev:
                        return VerifyResult(
                            False, checked, event.id,
                            f"#{event.id} does not link to the hash of #{expected_id - 1}",
                        )
                    if _hash_of(event) != event.hash:
                        return VerifyResult(
                            False, checked, event.id,
                            f"#{event.id} was changed: its content no longer matches its hash",
                        )
                    checked += 1
                    expected_id += 1
                    expected_prev = event.hash
                if len(batch) < _VERIFY_BATCH:
                    break
            head = s.exec(select(AuditHead).where(col(AuditHead.id) == 1)).first()
        last_id = head.last_id if head else 0
        last_hash = head.last_hash if head else GENESIS_HASH
        chain_end = expected_id - 1
        if last_id > chain_end:
            return VerifyResult(
                False, checked, expected_id,
                f"events #{expected_id}..#{last_id} are missing from the end of the chain",
            )
        if last_id < chain_end:
            return VerifyResult(
                False, checked, last_id + 1,
                f"#{last_id + 1}..#{chain_end} were not appended through the log "
                f"(the head says #{last_id})",
            )
        if last_hash != expected_prev:
            return VerifyResult(
                False, checked, last_id or None,
                f"the head's hash does not match #{last_id}",
            )
        return VerifyResult(True, checked)
