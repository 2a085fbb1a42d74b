"""The append-only, hash-chained audit log (the seed's emergency and rollback log files).

Each event's ``hash`` is an HMAC-SHA256, under the current audit key, of its content and its
predecessor's hash; ``key_id`` names the key (the key itself is only in the settings, never in
the database). Someone who can write the database but does not hold the key can change a row,
but cannot compute the hash that would make it, and every row after it, verify again: the
plain SHA-256 an attacker can compute is reported as such. Rows written before the chain was
keyed have no ``key_id`` and a plain SHA-256 hash; they are accepted only as the chain's
prefix, sealed by the first keyed row (which covers their last hash), and reported as unkeyed.

Key rotation: the :class:`AuditKeyring` holds the current key (new rows) and the old ones
(rows written before the rotation still verify). The first row a log writes under a key other
than the last row's is an ``audit.key_rotated`` event naming both key ids.

What the key cannot prevent, deleting the newest rows (and moving the head back), or a
rewrite by someone who also holds the key, anchors outside the database reveal: the scheduled
``bot.schedule.audit_anchor`` posts the chain head (row id and hash) to an audit channel and
the log, and :meth:`AuditLog.check_anchors` finds every anchored row still in the chain with the
same hash.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import update
from sqlmodel import Session, col, select

from procedures.clock import Clock
from storage.db import Database
from storage.models import GENESIS_HASH, AuditEvent, AuditHead
from storage.sql import insert_ignoring_conflict

_VERIFY_BATCH = 1000
ROTATION_ACTION = "audit.key_rotated"
ROTATION_ACTOR = "qlp-bot"
MIN_KEY_LENGTH = 32
"""Characters (or bytes) an audit key must have: ``openssl rand -hex 32`` gives 64."""


@dataclass(frozen=True)
class AuditKey:
    """One audit key: its id (stored on the rows it signs) and the secret (never stored)."""

    key_id: str
    secret: bytes = field(repr=False)

    @staticmethod
    def derive_id(secret: bytes) -> str:
        """The default id of a key: 8 hex digits of a SHA-256 of it (a check value, not the
        key: with a random key of 32+ characters it reveals nothing usable)."""
        return hashlib.sha256(b"qlp-audit-key-id:" + secret).hexdigest()[:8]

    @classmethod
    def of(cls, secret: str | bytes, key_id: str | None = None) -> AuditKey:
        raw = secret.encode("utf-8") if isinstance(secret, str) else secret
        if len(raw) < MIN_KEY_LENGTH:
            raise ValueError(f"an audit key must have at least {MIN_KEY_LENGTH} characters "
                             f"(this one has {len(raw)}); `openssl rand -hex 32` makes one")
        if key_id is not None and not (1 <= len(key_id) <= 16 and key_id.isascii()
                                       and all(c.isalnum() or c in "-_." for c in key_id)):
            raise ValueError("an audit key id is 1 to 16 ASCII letters, digits, '-', '_' or "
                             f"'.' (got {key_id!r})")
        return cls(key_id or cls.derive_id(raw), raw)


class AuditKeyring:
    """The current audit key (signs new rows) and the old ones (still verify older rows)."""

    def __init__(self, current: AuditKey | None, old: Sequence[AuditKey] = ()) -> None:
        self.current = current
        self._by_id: dict[str, AuditKey] = {}
        for key in [*old, *([current] if current else [])]:
            known = self._by_id.get(key.key_id)
            if known is not None and known.secret != key.secret:
                raise ValueError(f"two different audit keys share the id {key.key_id!r}")
            self._by_id[key.key_id] = key

    def get(self, key_id: str) -> AuditKey | None:
        return self._by_id.get(key_id)

    @property
    def key_ids(self) -> list[str]:
        return sorted(self._by_id)

    def describe(self) -> str:
        """``current a1b2c3d4, old 0badc0de`` (ids only)."""
        current = self.current.key_id if self.current else "none"
        old = [k for k in self.key_ids if not self.current or k != self.current.key_id]
        return f"current {current}" + (f", old {', '.join(old)}" if old else "")


_process_keyring: AuditKeyring | None = None


def use_keyring(keyring: AuditKeyring | None) -> None:
    """Set the keyring every :class:`AuditLog` of this process signs with unless it was given
    one (the composition root calls this once, from the settings); ``None``: unkeyed."""
    global _process_keyring
    _process_keyring = keyring


def process_keyring() -> AuditKeyring | None:
    return _process_keyring


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
    """sha256 over the canonical JSON of one event's content and its predecessor's hash (the
    unkeyed rows written before the chain was keyed)."""
    return hashlib.sha256(_blob(prev_hash, at, actor, action, deployment_id, environment,
                                detail)).hexdigest()


def keyed_event_hash(
    key: AuditKey,
    prev_hash: str,
    at: datetime,
    actor: str,
    action: str,
    deployment_id: int | None,
    environment: str | None,
    detail: Mapping[str, Any],
) -> str:
    """HMAC-SHA256 under ``key`` of the same document plus the key's id (so a row's key id
    cannot be changed either)."""
    blob = _blob(prev_hash, at, actor, action, deployment_id, environment, detail, key.key_id)
    return hmac.new(key.secret, blob, hashlib.sha256).hexdigest()


def _blob(prev_hash: str, at: datetime, actor: str, action: str, deployment_id: int | None,
          environment: str | None, detail: Mapping[str, Any], *extra: str) -> bytes:
    document = [
        prev_hash,
        at.astimezone(UTC).isoformat(timespec="microseconds"),
        actor,
        action,
        deployment_id,
        environment,
        detail,
        *extra,
    ]
    return json.dumps(
        document, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def seal(
    keyring: AuditKeyring | None,
    prev_hash: str,
    at: datetime,
    actor: str,
    action: str,
    deployment_id: int | None,
    environment: str | None,
    detail: Mapping[str, Any],
) -> tuple[str | None, str]:
    """``(key_id, hash)`` of a new event: keyed with the current key, else plain (no key)."""
    if keyring is None or keyring.current is None:
        return None, event_hash(prev_hash, at, actor, action, deployment_id, environment, detail)
    key = keyring.current
    return key.key_id, keyed_event_hash(key, prev_hash, at, actor, action, deployment_id,
                                        environment, detail)


def _plain_hash_of(event: AuditEvent) -> str:
    return event_hash(
        event.prev_hash, event.at, event.actor, event.action,
        event.deployment_id, event.environment, event.detail,
    )


def _keyed_hash_of(key: AuditKey, event: AuditEvent) -> str:
    return keyed_event_hash(
        key, event.prev_hash, event.at, event.actor, event.action,
        event.deployment_id, event.environment, event.detail,
    )


@dataclass(frozen=True)
class Anchor:
    """A chain head seen outside the database: row ``event_id`` had hash ``hash``."""

    event_id: int
    hash: str
    source: str
    at: str | None = None


@dataclass(frozen=True)
class VerifyResult:
    """The outcome of walking the chain: ``ok``, how many rows were checked, the first bad id.

    ``unkeyed`` rows (the legacy prefix), rows per key id in ``signed``, and ``anchors``
    checked (when :meth:`AuditLog.check_anchors` ran) say how much was proven.
    """

    ok: bool
    checked: int
    first_bad_id: int | None = None
    problem: str | None = None
    unkeyed: int = 0
    signed: Mapping[str, int] = field(default_factory=dict)
    wrong_key: bool = False
    anchors: int = 0
    notes: tuple[str, ...] = ()


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

    def __init__(self, database: Database, clock: Clock,
                 keyring: AuditKeyring | None = None) -> None:
        self._db = database
        self._clock = clock
        self._keyring = keyring
        self._rotation_checked_for: str | None = None

    @property
    def keyring(self) -> AuditKeyring | None:
        """The keyring given, else the process's (:func:`use_keyring`); ``None``: unkeyed."""
        return self._keyring if self._keyring is not None else _process_keyring

    def seal(self, prev_hash: str, at: datetime, actor: str, action: str,
             deployment_id: int | None, environment: str | None,
             detail: Mapping[str, Any]) -> tuple[str | None, str]:
        """``(key_id, hash)`` of a new event under this log's current key."""
        return seal(self.keyring, prev_hash, at, actor, action, deployment_id, environment,
                    detail)

    def rotation_row(self, session: Session, last_id: int, last_hash: str,
                     at: datetime) -> dict[str, Any] | None:
        """The ``audit.key_rotated`` event to write before the next one, when the last row
        of the chain was signed with another key than the current one (or none); once per
        log and key, under the head lock (``last_id``, ``last_hash``: the locked head)."""
        keyring = self.keyring
        if keyring is None or keyring.current is None or last_id == 0:
            return None
        current = keyring.current.key_id
        if self._rotation_checked_for == current:
            return None
        self._rotation_checked_for = current
        previous = session.exec(
            select(col(AuditEvent.key_id)).where(col(AuditEvent.id) == last_id)
        ).first()
        if previous == current:
            return None
        detail = {"from": previous or "unkeyed", "to": current}
        key_id, digest = self.seal(last_hash, at, ROTATION_ACTOR, ROTATION_ACTION, None, None,
                                   detail)
        return {"id": last_id + 1, "at": at, "actor": ROTATION_ACTOR,
                "action": ROTATION_ACTION, "deployment_id": None, "environment": None,
                "detail": detail, "prev_hash": last_hash, "hash": digest, "key_id": key_id}

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
            last_id, prev_hash = head.last_id, head.last_hash
            rotation = self.rotation_row(s, last_id, prev_hash, at)
            if rotation is not None:
                s.add(AuditEvent(**rotation))
                last_id, prev_hash = rotation["id"], rotation["hash"]
            key_id, digest = self.seal(prev_hash, at, actor, action, deployment_id,
                                       environment, document)
            event = AuditEvent(
                id=last_id + 1,
                at=at,
                actor=actor,
                action=action,
                deployment_id=deployment_id,
                environment=environment,
                detail=document,
                prev_hash=prev_hash,
                hash=digest,
                key_id=key_id,
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

    def head(self) -> tuple[int, str, str | None]:
        """``(last_id, last_hash, key id of that row)`` of the chain as the head says."""
        with self._db.session(read_only=True) as s:
            head = s.exec(select(AuditHead).where(col(AuditHead.id) == 1)).first()
            if head is None or head.last_id == 0:
                return 0, GENESIS_HASH, None
            key_id = s.exec(select(col(AuditEvent.key_id))
                            .where(col(AuditEvent.id) == head.last_id)).first()
            return head.last_id, head.last_hash, key_id

    def verify(self, keyring: AuditKeyring | None = None) -> VerifyResult:
        """Walk the whole chain; report the first row that was changed, removed or misplaced.

        Keyed rows are checked with the key their ``key_id`` names (``keyring``, default this
        log's); unkeyed rows only as the chain's prefix. With a current key, a chain of which
        no row is keyed is not proven (it may have been rewritten without the key).
        """
        walk = _Walk(keyring if keyring is not None else self.keyring)
        with self._db.session(read_only=True) as s:
            while walk.problem is None:
                batch = s.exec(
                    select(AuditEvent)
                    .where(col(AuditEvent.id) >= walk.expected_id)
                    .order_by(col(AuditEvent.id))
                    .limit(_VERIFY_BATCH)
                ).all()
                for event in batch:
                    if not walk.step(event, s):
                        break
                if len(batch) < _VERIFY_BATCH:
                    break
            if walk.problem is not None:
                return walk.result(False)
            head = s.exec(select(AuditHead).where(col(AuditHead.id) == 1)).first()
        last_id = head.last_id if head else 0
        last_hash = head.last_hash if head else GENESIS_HASH
        chain_end = walk.expected_id - 1
        if last_id > chain_end:
            return walk.fail(walk.expected_id,
                             f"events #{walk.expected_id}..#{last_id} are missing from the "
                             "end of the chain")
        if last_id < chain_end:
            return walk.fail(last_id + 1,
                             f"#{last_id + 1}..#{chain_end} were not appended through the log "
                             f"(the head says #{last_id})")
        if last_hash != walk.expected_prev:
            return walk.fail(last_id or None, f"the head's hash does not match #{last_id}")
        current = walk.keyring.current if walk.keyring else None
        if current is not None and walk.checked and not walk.signed:
            return walk.fail(1, f"none of the {walk.checked} rows is signed with an audit key: "
                                "they were all written before the chain was keyed (the bot's "
                                "next row seals them), or rewritten by someone without the key")
        return walk.result(True)

    def check_anchors(self, anchors: Iterable[Anchor]) -> tuple[int, list[tuple[int, str]]]:
        """Compare chain heads seen outside the database with the chain: ``(how many were
        checked, [(row id, problem)]``, the problems sorted by row id."""
        wanted: dict[int, list[Anchor]] = {}
        for anchor in anchors:
            wanted.setdefault(anchor.event_id, []).append(anchor)
        problems: list[tuple[int, str]] = []
        ids = sorted(wanted)
        with self._db.session(read_only=True) as s:
            for start in range(0, len(ids), _VERIFY_BATCH):
                chunk = ids[start:start + _VERIFY_BATCH]
                found = {row[0]: row[1] for row in s.exec(
                    select(col(AuditEvent.id), col(AuditEvent.hash))
                    .where(col(AuditEvent.id).in_(chunk))).all()}
                for event_id in chunk:
                    for anchor in wanted[event_id]:
                        when = f" at {anchor.at}" if anchor.at else ""
                        if event_id not in found:
                            problems.append((event_id, (
                                f"#{event_id} is missing, though it was anchored{when} "
                                f"({anchor.source}): the chain was cut back")))
                        elif found[event_id] != anchor.hash:
                            problems.append((event_id, (
                                f"#{event_id} no longer has the hash anchored{when} "
                                f"({anchor.source}): the chain was rewritten at or before "
                                f"#{event_id}")))
        return sum(len(v) for v in wanted.values()), sorted(problems)


class _Walk:
    """The state of one :meth:`AuditLog.verify` walk, row by row."""

    def __init__(self, keyring: AuditKeyring | None) -> None:
        self.keyring = keyring
        self.expected_id = 1
        self.expected_prev = GENESIS_HASH
        self.checked = 0
        self.unkeyed = 0
        self.signed: dict[str, int] = {}
        self.first_keyed: int | None = None
        self.problem: tuple[int | None, str] | None = None
        self.wrong_key = False
        self.notes: list[str] = []

    def result(self, ok: bool) -> VerifyResult:
        bad, problem = self.problem if self.problem else (None, None)
        return VerifyResult(ok, self.checked, bad, problem, unkeyed=self.unkeyed,
                            signed=dict(self.signed), wrong_key=self.wrong_key,
                            notes=tuple(self.notes))

    def fail(self, event_id: int | None, problem: str) -> VerifyResult:
        self.problem = (event_id, problem)
        return self.result(False)

    def _stop(self, event_id: int, problem: str) -> bool:
        self.problem = (event_id, problem)
        return False

    def step(self, event: AuditEvent, session: Session) -> bool:
        """Check one row; ``False`` (and ``problem`` set) at the first bad one."""
        assert event.id is not None
        eid = event.id
        if eid != self.expected_id:
            return self._stop(eid, f"gap before #{eid}: event #{self.expected_id} is missing")
        if event.prev_hash != self.expected_prev:
            return self._stop(eid, f"#{eid} does not link to the hash of #{eid - 1}")
        if event.key_id is None:
            if self.first_keyed is not None:
                return self._stop(eid, (
                    f"#{eid} carries no key id although #{self.first_keyed} before it was "
                    "signed with an audit key: it was rewritten by someone without the key"))
            if _plain_hash_of(event) != event.hash:
                return self._stop(eid, f"#{eid} was changed: its content no longer matches "
                                       "its hash")
            self.unkeyed += 1
        else:
            key = self.keyring.get(event.key_id) if self.keyring else None
            if key is None:
                self.wrong_key = True
                return self._stop(eid, self._unknown_key(eid, event.key_id))
            if _keyed_hash_of(key, event) != event.hash:
                return self._stop(eid, self._mismatch(event, key, session))
            self.signed[key.key_id] = self.signed.get(key.key_id, 0) + 1
            if self.first_keyed is None:
                self.first_keyed = eid
        self.checked += 1
        self.expected_id += 1
        self.expected_prev = event.hash
        return True

    def _unknown_key(self, eid: int, key_id: str) -> str:
        if self.keyring is None or not self.keyring.key_ids:
            return (f"#{eid} is signed with audit key {key_id}, but no audit key is configured: "
                    "set QLP_AUDIT_KEY (and QLP_AUDIT_OLD_KEYS) to the keys the bot uses")
        return (f"#{eid} is signed with audit key {key_id}, which is not among the keys given "
                f"({self.keyring.describe()}): a wrong QLP_AUDIT_KEY, or an old key missing "
                "from QLP_AUDIT_OLD_KEYS")

    def _mismatch(self, event: AuditEvent, key: AuditKey, session: Session) -> str:
        eid = event.id
        assert eid is not None
        if _plain_hash_of(event) == event.hash:
            return (f"#{eid} was changed: its hash is a plain SHA-256, as someone without the "
                    f"audit key computes it, not the HMAC of key {key.key_id}")
        if self.signed.get(key.key_id, 0) == 0 and not self._key_signs_any_later(
                key, eid, session):
            self.wrong_key = True
            return (f"#{eid} does not verify with audit key {key.key_id}, nor does any later "
                    f"row signed with that id: the key given as {key.key_id} is wrong (or "
                    "every one of its rows was rewritten)")
        return (f"#{eid} was changed: its content no longer matches its signature (key "
                f"{key.key_id})")

    @staticmethod
    def _key_signs_any_later(key: AuditKey, after: int, session: Session) -> bool:
        later = session.exec(
            select(AuditEvent)
            .where(col(AuditEvent.id) > after, col(AuditEvent.key_id) == key.key_id)
            .order_by(col(AuditEvent.id)).limit(20)
        ).all()
        return any(_keyed_hash_of(key, row) == row.hash for row in later)
