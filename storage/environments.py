"""What is live in each environment, and the per-environment lock."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, or_, update
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session, col, select

from procedures.clock import Clock
from procedures.errors import ExternalServiceError
from procedures.model import Slot
from storage.db import Database
from storage.models import EnvironmentStateRow
from storage.sql import insert_ignoring_conflict

_LOCK_CLEARED: dict[str, Any] = {
    "lock_holder": None,
    "lock_reason": None,
    "locked_since": None,
    "lock_deployment_id": None,
    "lock_owner": None,
    "lock_heartbeat_at": None,
}


PASSED_BY = "pass#"
"""``lock_owner`` of a pass of a person's lock: ``pass#<deployment>:<worker>``."""


class EnvironmentStateRepository:
    """Rows of ``environment_state``: live/previous slot and version, and the lock.

    The lock is a conditional ``UPDATE`` on the environment's row, so exactly one of any number
    of concurrent callers gets it. A lock taken for a deployment carries the worker id
    (``owner``) and a heartbeat; :meth:`reap_stale_locks` frees locks whose worker stopped
    beating. A lock without an owner (a person's ``/qlp lock``) is never reaped.

    A break-glass run past a person's lock *passes* it (:meth:`pass_lock`): the run becomes
    the owner (``pass#<deployment>:<worker>``, with a heartbeat) of the person's row, whose
    holder, reason and time stay as they are; :meth:`end_pass` (or the reaper, for a pass whose
    worker stopped) clears only the owner, so the person's lock is there when the run ends.
    """

    def __init__(self, database: Database, clock: Clock) -> None:
        self._db = database
        self._clock = clock

    # -- reading ------------------------------------------------------------------------------

    def get(self, environment: str) -> EnvironmentStateRow | None:
        """The environment's row, or ``None`` if nothing was ever recorded for it."""
        with self._db.session(read_only=True) as s:
            return s.get(EnvironmentStateRow, environment)

    def all(self) -> list[EnvironmentStateRow]:
        """Every known environment, by name."""
        with self._db.session(read_only=True) as s:
            return list(
                s.exec(
                    select(EnvironmentStateRow).order_by(col(EnvironmentStateRow.environment))
                ).all()
            )

    # -- writing ------------------------------------------------------------------------------

    def ensure(self, environment: str, *, session: Session | None = None) -> EnvironmentStateRow:
        """The environment's row, created empty (unlocked, nothing live) if missing."""
        with self._db.using(session) as s:
            self._ensure(s, environment)
            row = s.exec(
                select(EnvironmentStateRow)
                .where(col(EnvironmentStateRow.environment) == environment)
                .execution_options(populate_existing=True)
            ).one()
            return row

    def _ensure(self, session: Session, environment: str) -> None:
        session.exec(
            insert_ignoring_conflict(
                self._db,
                EnvironmentStateRow,
                {"environment": environment, "updated_at": self._clock.now(), "revision": 0},
                ["environment"],
            )
        )

    def record_switch(
        self,
        environment: str,
        live_slot: Slot,
        live_version: str,
        *,
        session: Session | None = None,
    ) -> EnvironmentStateRow:
        """Traffic now goes to ``live_slot`` running ``live_version``; the old live becomes
        previous (what a rollback returns to)."""
        with self._db.using(session) as s:
            self._ensure(s, environment)
            # SET expressions see the row's old values on both backends: live moves to previous.
            s.exec(
                update(EnvironmentStateRow)
                .where(col(EnvironmentStateRow.environment) == environment)
                .values(
                    previous_slot=EnvironmentStateRow.live_slot,
                    previous_version=EnvironmentStateRow.live_version,
                    live_slot=Slot(live_slot),
                    live_version=live_version,
                    updated_at=self._clock.now(),
                    revision=EnvironmentStateRow.revision + 1,
                )
                .execution_options(synchronize_session=False)
            )
            return s.exec(
                select(EnvironmentStateRow)
                .where(col(EnvironmentStateRow.environment) == environment)
                .execution_options(populate_existing=True)
            ).one()

    # -- the lock -----------------------------------------------------------------------------

    def acquire_lock(
        self,
        environment: str,
        holder: str,
        reason: str | None,
        deployment_id: int | None,
        owner: str | None,
        now: datetime | None = None,
    ) -> bool:
        """Take the environment's lock; True if taken (or already held by this deployment).

        Re-entrant for the same ``deployment_id`` (a resumed run re-takes its own lock, with
        the new worker as owner); for a person's lock (``deployment_id=None``) for the same
        ``holder``. Fails closed: any database error raises ``ExternalServiceError``, it never
        reads as "acquired".
        """
        now = now or self._clock.now()
        row = EnvironmentStateRow
        if deployment_id is not None:
            ours = col(row.lock_deployment_id) == deployment_id
        else:
            ours = and_(col(row.lock_deployment_id).is_(None), col(row.lock_holder) == holder)
        try:
            with self._db.session() as s:
                self._ensure(s, environment)
                result = s.exec(
                    update(row)
                    .where(
                        col(row.environment) == environment,
                        or_(col(row.lock_holder).is_(None), ours),
                    )
                    .values(
                        lock_holder=holder,
                        lock_reason=reason,
                        locked_since=now,
                        lock_deployment_id=deployment_id,
                        lock_owner=owner,
                        lock_heartbeat_at=now,
                        updated_at=now,
                        revision=row.revision + 1,
                    )
                    .execution_options(synchronize_session=False)
                )
                return result.rowcount == 1
        except SQLAlchemyError as exc:
            raise ExternalServiceError(
                "database", f"could not take the lock on {environment}: {exc}", retryable=True
            ) from exc

    def pass_lock(self, environment: str, deployment_id: int, worker_id: str,
                  now: datetime | None = None) -> str | None:
        """Pass a person's lock for one run; the pass's owner id (for :meth:`heartbeat` and
        :meth:`end_pass`), or None if it cannot be passed.

        Only a person's lock (no deployment) that no other run passes; re-entrant for the same
        run. The holder, reason and ``locked_since`` are left untouched. Fails closed like
        :meth:`acquire_lock`.
        """
        now = now or self._clock.now()
        owner = f"{PASSED_BY}{deployment_id}:{worker_id}"[:128]
        row = EnvironmentStateRow
        try:
            with self._db.session() as s:
                result = s.exec(
                    update(row)
                    .where(
                        col(row.environment) == environment,
                        col(row.lock_holder).is_not(None),
                        col(row.lock_deployment_id).is_(None),
                        or_(col(row.lock_owner).is_(None), col(row.lock_owner) == owner),
                    )
                    .values(lock_owner=owner, lock_heartbeat_at=now, updated_at=now,
                            revision=row.revision + 1)
                    .execution_options(synchronize_session=False)
                )
                return owner if result.rowcount == 1 else None
        except SQLAlchemyError as exc:
            raise ExternalServiceError(
                "database", f"could not pass the lock on {environment}: {exc}", retryable=True
            ) from exc

    def end_pass(self, environment: str, owner: str) -> bool:
        """End the pass ``owner`` (from :meth:`pass_lock`): the lock stays the person's. True if
        a pass ended (False: the person unlocked meanwhile, or it was not passed)."""
        row = EnvironmentStateRow
        with self._db.session() as s:
            return self._end_pass_in(
                s, col(row.environment) == environment, col(row.lock_owner) == owner)

    def _end_pass_in(self, session: Session, *conditions: Any) -> bool:
        row = EnvironmentStateRow
        result = session.exec(
            update(row)
            .where(col(row.lock_deployment_id).is_(None),
                   col(row.lock_owner).startswith(PASSED_BY, autoescape=True),
                   *conditions)
            .values(lock_owner=None, lock_heartbeat_at=None, updated_at=self._clock.now(),
                    revision=row.revision + 1)
            .execution_options(synchronize_session=False)
        )
        return result.rowcount == 1

    def release_lock(self, environment: str, deployment_id: int | None) -> bool:
        """Free the lock if this deployment holds it (``None``: a person's lock). True if freed."""
        row = EnvironmentStateRow
        if deployment_id is not None:
            ours = col(row.lock_deployment_id) == deployment_id
        else:
            ours = and_(col(row.lock_deployment_id).is_(None), col(row.lock_holder).is_not(None))
        return self._clear_lock(col(row.environment) == environment, ours)

    def force_release(self, environment: str) -> str | None:
        """Free the lock whoever holds it (``/qlp unlock``); returns the former holder."""
        with self._db.session() as s:
            current = s.exec(
                select(EnvironmentStateRow.lock_holder)
                .where(col(EnvironmentStateRow.environment) == environment)
            ).first()
            if current is None:
                return None
            self._clear_lock_in(
                s,
                col(EnvironmentStateRow.environment) == environment,
                col(EnvironmentStateRow.lock_holder) == current,
            )
            return current

    def heartbeat(self, environment: str, owner: str, now: datetime | None = None) -> bool:
        """The owning worker is alive; False if it no longer holds the lock (stop working)."""
        now = now or self._clock.now()
        row = EnvironmentStateRow
        with self._db.session() as s:
            result = s.exec(
                update(row)
                .where(col(row.environment) == environment, col(row.lock_owner) == owner)
                .values(lock_heartbeat_at=now)
                .execution_options(synchronize_session=False)
            )
            return result.rowcount == 1

    def reap_stale_locks(self, now: datetime | None, max_age: timedelta) -> list[str]:
        """Free locks whose owning worker has not beaten for ``max_age``; returns their names.

        A stale *pass* of a person's lock only ends (the person's lock stays, and is not
        reported as freed)."""
        now = now or self._clock.now()
        cutoff = now - max_age
        row = EnvironmentStateRow
        stale = and_(
            col(row.lock_holder).is_not(None),
            col(row.lock_owner).is_not(None),
            col(row.lock_heartbeat_at) < cutoff,
        )
        reaped: list[str] = []
        with self._db.session() as s:
            self._end_pass_in(s, stale)
            names = s.exec(select(row.environment).where(stale).order_by(col(row.environment)))
            for name in list(names):
                # Re-checked per row: a heartbeat that lands in between keeps its lock.
                if self._clear_lock_in(s, col(row.environment) == name, stale):
                    reaped.append(name)
        return reaped

    def _clear_lock(self, *conditions: Any) -> bool:
        with self._db.session() as s:
            return self._clear_lock_in(s, *conditions)

    def _clear_lock_in(self, session: Session, *conditions: Any) -> bool:
        result = session.exec(
            update(EnvironmentStateRow)
            .where(*conditions)
            .values(
                **_LOCK_CLEARED,
                updated_at=self._clock.now(),
                revision=EnvironmentStateRow.revision + 1,
            )
            .execution_options(synchronize_session=False)
        )
        return result.rowcount == 1
