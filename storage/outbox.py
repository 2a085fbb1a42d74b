"""The notification outbox: every message the bot means to send, written before it is sent."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import case, func, update
from sqlalchemy.orm import aliased
from sqlmodel import Session, col, select

from procedures.clock import Clock
from storage.db import Database
from storage.models import NOTIFICATION_KINDS, Notification
from storage.sql import insert_ignoring_conflict

DEFAULT_LEASE = timedelta(seconds=60)
"""How long a claimed message is hidden from other senders before it is tried again."""

UNCONFIRMED = "unconfirmed: "
"""``last_error`` prefix: an earlier try may have reached the receiver (a timeout, a closed
connection, a 5xx); the sender looks the message up before sending it again."""
BLOCKED = "blocked: "
"""``last_error`` marker (after :data:`UNCONFIRMED` when both hold): the receiver refused the
message for a reason someone must fix (a revoked token, the bot removed from the channel); the
message stays pending and goes out once it is fixed. The receiver's error code follows."""

NORMAL = 0
URGENT = 10
"""``priority`` of a message people must see first (a card asking for approval, a failure, a
rollback): :meth:`Outbox.claim_due` hands out the heads of keys holding one before the others,
so a channel's sender serves them first. Order *within* a key never changes."""


def is_unconfirmed(last_error: str | None) -> bool:
    """Whether a pending message's ``last_error`` says an earlier try may have been delivered."""
    return last_error is not None and last_error.startswith(UNCONFIRMED)


def blocked_reason(last_error: str | None) -> str | None:
    """The error code after the :data:`BLOCKED` marker of ``last_error``, or None."""
    if last_error is None:
        return None
    _, marker, rest = last_error.partition(BLOCKED)
    if not marker:
        return None
    return rest.split(" ", 1)[0].strip(";,.") or None


def default_ordering_key(channel: str, deployment_id: int | None, thread_of: int | None) -> str:
    """Messages about one deployment keep their order; others keep the order of their channel.

    Per deployment, so the card is posted (and its ``ts`` known) before any thread reply,
    and one deployment's stuck message never holds back another's.
    """
    anchor = thread_of if thread_of is not None else deployment_id
    if anchor is not None:
        return f"deployment:{anchor}"
    return f"channel:{channel}"


class Outbox:
    """Durable, ordered, deduplicated notifications; the bot's sender delivers them.

    Messages with the same ``ordering_key`` are delivered strictly in id order:
    :meth:`claim_due` only ever hands out the oldest *pending* message of each key, so a
    message that keeps failing holds back the later ones of its key (and only those) until it
    is sent or declared dead. Claiming leases a message (its ``next_attempt_at`` moves
    ``lease`` ahead and ``attempts`` goes up), so several senders, even in several processes,
    never send the same message at once, and a sender that dies mid-send only delays it.
    """

    claimant: str | None = None
    """The worker id written on the messages this outbox claims (``claimed_by``), so that
    the claims of a replica that stopped or died can be handed on (:meth:`release_claims`)."""

    def __init__(self, database: Database, clock: Clock) -> None:
        self._db = database
        self._clock = clock

    @property
    def database(self) -> Database:
        """The database the outbox lives in: open a ``session()`` on it to commit a mark
        (``mark_sent(..., session=s)``) atomically with a write of your own."""
        return self._db

    def enqueue(
        self,
        channel: str,
        kind: str,
        payload: Mapping[str, Any],
        *,
        deployment_id: int | None = None,
        thread_of: int | None = None,
        ordering_key: str | None = None,
        dedup_key: str | None = None,
        session: Session | None = None,
        priority: int = NORMAL,
    ) -> int:
        """Store a message to send; returns its id (the existing one for a repeated dedup_key).

        ``priority`` (:data:`URGENT`, :data:`NORMAL`) orders the heads of different keys."""
        if kind not in NOTIFICATION_KINDS:
            raise ValueError(f"unknown notification kind {kind!r}; one of {NOTIFICATION_KINDS}")
        now = self._clock.now()
        values: dict[str, Any] = {
            "created_at": now,
            "channel": channel,
            "kind": kind,
            "payload": dict(payload),
            "deployment_id": deployment_id,
            "thread_of": thread_of,
            "ordering_key": ordering_key
            or default_ordering_key(channel, deployment_id, thread_of),
            "dedup_key": dedup_key,
            "state": "pending",
            "attempts": 0,
            "next_attempt_at": now,
            "priority": priority,
        }
        with self._db.using(session) as s:
            if dedup_key is None:
                notification = Notification(**values)
                s.add(notification)
                s.flush()
                assert notification.id is not None
                return notification.id
            inserted = s.exec(
                insert_ignoring_conflict(self._db, Notification, values, ["dedup_key"])
                .returning(col(Notification.id))
            ).scalar()
            if inserted is not None:
                return int(inserted)
            existing = s.exec(
                select(Notification.id).where(col(Notification.dedup_key) == dedup_key)
            ).one()
            assert existing is not None
            return existing

    def claim_due(
        self,
        now: datetime | None = None,
        limit: int = 50,
        *,
        lease: timedelta = DEFAULT_LEASE,
        kinds: Collection[str] | None = None,
        ids: Collection[int] | None = None,
    ) -> list[Notification]:
        """Lease and return the head pending message of each key that is due at ``now``.

        Returned in id order, except that keys holding an urgent message (the highest
        ``priority`` pending in the key) come first. Each call hands a message out at most
        once per lease; report the outcome with :meth:`mark_sent`, :meth:`mark_failed`,
        :meth:`mark_dead` or :meth:`release`.

        ``kinds`` limits the answer to heads of those kinds (each sender claims only what it
        delivers). The head of a key is still its oldest pending message of *any* kind, so
        order within a key holds across kinds: a key whose head belongs to another sender
        waits for that sender. ``ids`` limits it to those messages (the ones a sender chose
        from :meth:`due_heads`), still only if each is its key's due head.
        """
        now = now or self._clock.now()
        if not self._anything_due(now, kinds):
            # The common idle case, polled several times a second: answered by a plain read,
            # without taking SQLite's write lock or PostgreSQL row locks.
            return []
        statement = _due_heads(select(Notification), now, kinds).limit(limit)
        if ids is not None:
            statement = statement.where(col(Notification.id).in_(list(ids)))
        if self._db.is_postgresql:
            # Another sender's claim in flight: skip its rows rather than wait for them.
            statement = statement.with_for_update(skip_locked=True, of=Notification)
        with self._db.session() as s:
            claimed = list(s.exec(statement.execution_options(populate_existing=True)).all())
            for notification in claimed:
                notification.attempts += 1
                notification.next_attempt_at = now + lease
                notification.claimed_by = self.claimant
            s.flush()
            return claimed

    def due_heads(self, now: datetime | None = None, limit: int = 200, *,
                  kinds: Collection[str] | None = None) -> list[tuple[Notification, bool]]:
        """What :meth:`claim_due` would hand out, in its order, without claiming anything;
        with each head, whether a newer message is pending in its key (a card update that
        one replaces). A sender picks what it can deliver now from these and claims only
        those (``ids``), instead of claiming all and handing most of them back.
        """
        now = now or self._clock.now()
        newer = aliased(Notification)
        has_newer = (
            select(newer.id)
            .where(col(newer.state) == "pending",
                   col(newer.ordering_key) == Notification.ordering_key,
                   col(newer.id) > Notification.id)
            .exists()
        )
        statement = _due_heads(select(Notification, has_newer), now, kinds).limit(limit)
        with self._db.session(read_only=True) as s:
            return [(row, bool(flag)) for row, flag in s.exec(statement).all()]

    def _anything_due(self, now: datetime, kinds: Collection[str] | None) -> bool:
        statement = select(Notification.id).where(
            col(Notification.state) == "pending", col(Notification.next_attempt_at) <= now)
        if kinds is not None:
            statement = statement.where(col(Notification.kind).in_(list(kinds)))
        with self._db.session(read_only=True) as s:
            return s.exec(statement.limit(1)).first() is not None

    def mark_sent(
        self,
        id: int,
        slack_ts: str | None = None,
        *,
        now: datetime | None = None,
        note: str | None = None,
        session: Session | None = None,
    ) -> bool:
        """Record delivery (and the ``ts`` Slack returned); the next message of its key is due.

        ``note`` is kept in ``last_error`` (e.g. ``superseded`` for an update that was never
        sent because a newer one replaced it). With ``session`` the mark joins the caller's
        transaction (the sender stores a card's ``ts`` on its deployment in the same commit).
        """
        return self._set(
            id, state="sent", sent_at=now or self._clock.now(), slack_ts=slack_ts,
            last_error=note, session=session,
        )

    def mark_superseded(self, id: int, by: int, *, now: datetime | None = None,
                        session: Session | None = None) -> bool:
        """Record that ``id`` was never sent because the newer message ``by`` replaced it (a
        card update): kept, not counted as said; the next message of its key is due."""
        return self._set(id, state="superseded", sent_at=now or self._clock.now(),
                         last_error=f"superseded by #{by}", session=session)

    def mark_failed(
        self, id: int, error: str, retry_at: datetime, *, now: datetime | None = None
    ) -> bool:
        """Record a failed attempt; the message (and its key) waits until ``retry_at``."""
        del now  # accepted for symmetry with the other marks; the row keeps no failure time
        return self._set(id, state="pending", last_error=error, next_attempt_at=retry_at)

    def mark_dead(self, id: int, error: str) -> bool:
        """Give up on a message; later messages of its key are no longer held back by it."""
        return self._set(id, state="dead", last_error=error)

    def release(self, id: int, retry_at: datetime, note: str | None = None) -> bool:
        """Hand a claimed message back *untried*: due again at ``retry_at``, attempt not counted.

        For a sender that claimed a message it may not send yet (its channel is paced or
        rate-limited, its card has no ``ts`` yet): the claim's ``attempts`` increment is
        undone, so ``attempts`` counts only real tries. ``note`` replaces ``last_error``.
        """
        values: dict[str, Any] = {
            "state": "pending",
            "next_attempt_at": retry_at,
            "attempts": case(
                (col(Notification.attempts) > 0, col(Notification.attempts) - 1), else_=0
            ),
        }
        if note is not None:
            values["last_error"] = note
        return self._set(id, **values)

    def newest_pending_id(self, ordering_key: str, kind: str | None = None) -> int | None:
        """The id of the newest pending message of ``ordering_key`` (of ``kind``), if any.

        A sender holding an older one can tell it has been superseded (card updates coalesce).
        """
        statement = select(func.max(Notification.id)).where(
            col(Notification.state) == "pending",
            col(Notification.ordering_key) == ordering_key,
        )
        if kind is not None:
            statement = statement.where(col(Notification.kind) == kind)
        with self._db.session(read_only=True) as s:
            newest = s.exec(statement).one()
            return None if newest is None else int(newest)

    def pending_after(self, ordering_key: str, after_id: int, limit: int = 20
                      ) -> list[Notification]:
        """Pending messages queued behind ``after_id`` in its ordering key, in order.

        They are not claimed: nobody else sends them while ``after_id`` is the key's head, so
        the head's sender may merge them into its own delivery and mark them sent.
        """
        with self._db.session(read_only=True) as s:
            return list(s.exec(
                select(Notification)
                .where(col(Notification.ordering_key) == ordering_key,
                       col(Notification.state) == "pending",
                       col(Notification.id) > after_id)
                .order_by(col(Notification.id)).limit(limit)).all())

    def last_sent_ts(self, ordering_key: str, channel: str, before_id: int, *,
                     thread_of: int | None = None) -> str | None:
        """The newest Slack ``ts`` among the posts sent before ``before_id`` in its ordering
        key and ``channel`` (in the thread of deployment ``thread_of``, or top-level): a lower
        bound for the ts of ``before_id``'s own post, which Slack accepted later than theirs.

        The sender looks an unconfirmed post up from there (``oldest``), not through the whole
        channel. None when no such post is known.
        """
        statement = (
            select(Notification.slack_ts)
            .where(col(Notification.ordering_key) == ordering_key,
                   col(Notification.channel) == channel,
                   col(Notification.kind) == "post",
                   col(Notification.state) == "sent",
                   col(Notification.slack_ts).is_not(None),
                   col(Notification.id) < before_id)
            .order_by(col(Notification.id).desc())
            .limit(50)
        )
        if thread_of is None:
            statement = statement.where(col(Notification.thread_of).is_(None))
        else:
            statement = statement.where(col(Notification.thread_of) == thread_of)
        with self._db.session(read_only=True) as s:
            found = [str(ts) for ts in s.exec(statement).all() if ts]
        return max(found, key=_ts_key) if found else None

    def _set(self, id: int, *, session: Session | None = None, **values: Any) -> bool:
        values.setdefault("claimed_by", None)  # every outcome ends the claim
        with self._db.using(session) as s:
            result = s.exec(
                update(Notification)
                .where(col(Notification.id) == id, col(Notification.state) == "pending")
                .values(**values)
                .execution_options(synchronize_session=False)
            )
            return result.rowcount == 1

    def has(self, dedup_key: str) -> bool:
        """Whether a message with ``dedup_key`` was ever enqueued (whatever became of it)."""
        with self._db.session(read_only=True) as s:
            return s.exec(select(Notification.id).where(
                col(Notification.dedup_key) == dedup_key)).first() is not None

    def get(self, id: int) -> Notification | None:
        """One message by id."""
        with self._db.session(read_only=True) as s:
            return s.get(Notification, id)

    def pending_count(self, kinds: Collection[str] | None = None) -> int:
        """How many messages (of ``kinds``) wait to be delivered (``/metrics``, ``/healthz``)."""
        statement = select(func.count()).select_from(Notification).where(
            col(Notification.state) == "pending"
        )
        if kinds is not None:
            statement = statement.where(col(Notification.kind).in_(list(kinds)))
        with self._db.session(read_only=True) as s:
            return s.exec(statement).one()

    def undelivered(self, limit: int = 100) -> list[Notification]:
        """Messages not sent (pending or dead), oldest first."""
        with self._db.session(read_only=True) as s:
            return list(
                s.exec(
                    select(Notification)
                    .where(col(Notification.state).in_(("pending", "dead")))
                    .order_by(col(Notification.id))
                    .limit(limit)
                ).all()
            )

    # -- claims of senders that are gone (a replica's graceful stop, or its death) --------------

    def release_claims(self, claimant: str, now: datetime | None = None) -> list[int]:
        """Hand back, due at once, every message ``claimant`` still holds: its process is
        stopping (after its sender finished the message in hand). Returns their ids.

        Like a lease running out, only sooner: ``attempts`` and ``last_error`` stay, so a
        message that may have been tried is looked up before it is posted again
        (``bot.outbox_sender``: claimed again with ``attempts`` > 1).
        """
        return self._hand_on(col(Notification.claimed_by) == claimant, now)

    def retry_orphaned_claims(self, live: Collection[str],
                              now: datetime | None = None) -> list[int]:
        """Hand on, due at once, the claimed messages of senders not in ``live`` (the worker
        ids whose process still beats: ``storage.markers``), instead of after their lease.
        Returns their ids."""
        condition: Any = col(Notification.claimed_by).is_not(None)
        if live:
            condition = condition & col(Notification.claimed_by).not_in(list(live))
        return self._hand_on(condition, now)

    def _hand_on(self, condition: Any, now: datetime | None) -> list[int]:
        now = now or self._clock.now()
        with self._db.session() as s:
            result = s.exec(
                update(Notification)
                .where(condition, col(Notification.state) == "pending",
                       col(Notification.next_attempt_at) > now)
                .values(next_attempt_at=now, claimed_by=None)
                .returning(col(Notification.id))
                .execution_options(synchronize_session=False)
            )
            return sorted(int(row[0]) for row in result.all())


def _due_heads(statement: Any, now: datetime, kinds: Collection[str] | None) -> Any:
    """``statement`` narrowed to the due head of each ordering key (of ``kinds``), keys
    holding an urgent message first, then in id order."""
    older = aliased(Notification)
    head_of_key = (
        select(func.min(older.id))
        .where(col(older.state) == "pending",
               col(older.ordering_key) == Notification.ordering_key)
        .scalar_subquery()
    )
    in_key = aliased(Notification)
    key_priority = (
        select(func.max(in_key.priority))
        .where(col(in_key.state) == "pending",
               col(in_key.ordering_key) == Notification.ordering_key)
        .scalar_subquery()
    )
    statement = (
        statement.where(col(Notification.state) == "pending",
                        col(Notification.next_attempt_at) <= now,
                        col(Notification.id) == head_of_key)
        .order_by(key_priority.desc(), col(Notification.id))
    )
    if kinds is not None:
        statement = statement.where(col(Notification.kind).in_(list(kinds)))
    return statement


def _ts_key(ts: str) -> tuple[int, int]:
    seconds, _, micros = ts.partition(".")
    try:
        return int(seconds), int(micros or 0)
    except ValueError:
        return 0, 0
