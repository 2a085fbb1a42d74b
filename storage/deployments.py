"""Deployments and their step runs."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, literal, update
from sqlmodel import Session, col, select

from procedures.clock import Clock
from procedures.model import DeploymentState, ProcedureKind, StepState
from storage.db import Database
from storage.models import Deployment, StepRun
from storage.sql import insert_ignoring_conflict, upsert
from storage.types import UTCDateTime

ACTIVE_STATES = (DeploymentState.QUEUED, DeploymentState.RUNNING, DeploymentState.ROLLING_BACK)

# Columns transition(**fields) may set. id/state/revision/created_at are managed here.
TRANSITION_FIELDS = frozenset({
    "reason", "options", "plan_hash", "channel", "card_ts", "scheduled_at", "started_at",
    "finished_at", "current_step", "worker_id", "heartbeat_at", "error", "version",
})
STEP_FIELDS = frozenset({"attempts", "started_at", "finished_at", "result", "error"})


class DeploymentRepository:
    """Creates deployments, moves them between states, and hands queued ones to workers.

    Every state change is one conditional ``UPDATE ... WHERE state IN (...)`` that bumps
    ``revision``: of any number of concurrent callers (two approvers clicking at once, a
    cancel racing the worker) exactly one wins and the others see ``False``.
    """

    def __init__(self, database: Database, clock: Clock) -> None:
        self._db = database
        self._clock = clock

    # -- creating -----------------------------------------------------------------------------

    def create(
        self,
        kind: ProcedureKind,
        version: str | None,
        environment: str,
        requester: str,
        *,
        state: DeploymentState = DeploymentState.PENDING_APPROVAL,
        reason: str | None = None,
        options: Mapping[str, Any] | None = None,
        plan_hash: str | None = None,
        channel: str | None = None,
        scheduled_at: datetime | None = None,
        request_key: str | None = None,
        session: Session | None = None,
    ) -> Deployment:
        """A new deployment; with a ``request_key`` seen before, the deployment it created."""
        deployment, _created = self.create_or_get(
            kind, version, environment, requester, state=state, reason=reason,
            options=options, plan_hash=plan_hash, channel=channel, scheduled_at=scheduled_at,
            request_key=request_key, session=session,
        )
        return deployment

    def create_or_get(
        self,
        kind: ProcedureKind,
        version: str | None,
        environment: str,
        requester: str,
        *,
        state: DeploymentState = DeploymentState.PENDING_APPROVAL,
        reason: str | None = None,
        options: Mapping[str, Any] | None = None,
        plan_hash: str | None = None,
        channel: str | None = None,
        scheduled_at: datetime | None = None,
        request_key: str | None = None,
        session: Session | None = None,
    ) -> tuple[Deployment, bool]:
        """Like :meth:`create`, and whether this call created it (False: a repeated request)."""
        now = self._clock.now()
        values: dict[str, Any] = {
            "kind": ProcedureKind(kind),
            "version": version,
            "environment": environment,
            "requester": requester,
            "state": DeploymentState(state),
            "reason": reason,
            "options": dict(options or {}),
            "plan_hash": plan_hash,
            "channel": channel,
            "scheduled_at": scheduled_at,
            "request_key": request_key,
            "created_at": now,
            "updated_at": now,
            "revision": 0,
        }
        with self._db.using(session) as s:
            if request_key is None:
                deployment = Deployment(**values)
                s.add(deployment)
                s.flush()
                return deployment, True
            new_id = s.exec(
                insert_ignoring_conflict(self._db, Deployment, values, ["request_key"])
                .returning(col(Deployment.id))
            ).scalar()
            existing = s.exec(
                select(Deployment)
                .where(col(Deployment.request_key) == request_key)
                .execution_options(populate_existing=True)
            ).one()
            return existing, new_id is not None

    # -- reading ------------------------------------------------------------------------------

    def get(self, id: int, *, session: Session | None = None) -> Deployment | None:
        """One deployment by id."""
        with self._db.using(session, read_only=True) as s:
            return s.get(Deployment, id, populate_existing=True)

    def list_recent(self, environment: str | None = None, limit: int = 10) -> list[Deployment]:
        """The newest deployments, newest first (``/qlp history``)."""
        statement = select(Deployment)
        if environment is not None:
            statement = statement.where(col(Deployment.environment) == environment)
        statement = statement.order_by(col(Deployment.id).desc()).limit(limit)
        with self._db.session(read_only=True) as s:
            return list(s.exec(statement).all())

    def list_in_states(
        self, states: Collection[DeploymentState], environment: str | None = None
    ) -> list[Deployment]:
        """Deployments in any of ``states``, oldest first."""
        statement = select(Deployment).where(col(Deployment.state).in_(list(states)))
        if environment is not None:
            statement = statement.where(col(Deployment.environment) == environment)
        with self._db.session(read_only=True) as s:
            return list(s.exec(statement.order_by(col(Deployment.id))).all())

    def active_for(self, environment: str) -> list[Deployment]:
        """The environment's queued, running or rolling-back deployments, oldest first."""
        return self.list_in_states(ACTIVE_STATES, environment)

    def due_scheduled(self, now: datetime | None = None) -> list[Deployment]:
        """SCHEDULED deployments whose time has come, oldest first (for the scheduler)."""
        now = now or self._clock.now()
        with self._db.session(read_only=True) as s:
            return list(
                s.exec(
                    select(Deployment)
                    .where(
                        col(Deployment.state) == DeploymentState.SCHEDULED,
                        col(Deployment.scheduled_at) <= now,
                    )
                    .order_by(col(Deployment.scheduled_at), col(Deployment.id))
                ).all()
            )

    def stale(self, max_age: timedelta, now: datetime | None = None) -> list[Deployment]:
        """Running or rolling-back deployments whose worker stopped beating (to resume)."""
        cutoff = (now or self._clock.now()) - max_age
        with self._db.session(read_only=True) as s:
            return list(
                s.exec(
                    select(Deployment)
                    .where(
                        col(Deployment.state).in_(
                            [DeploymentState.RUNNING, DeploymentState.ROLLING_BACK]
                        ),
                        col(Deployment.heartbeat_at) < cutoff,
                    )
                    .order_by(col(Deployment.id))
                ).all()
            )

    # -- changing -----------------------------------------------------------------------------

    def transition(
        self,
        id: int,
        from_states: Collection[DeploymentState],
        to_state: DeploymentState,
        *,
        expected_revision: int | None = None,
        session: Session | None = None,
        **fields: Any,
    ) -> bool:
        """Move ``id`` to ``to_state`` if it is in ``from_states`` (and at ``expected_revision``).

        One conditional UPDATE; True only for the caller that changed the row. ``fields`` sets
        other columns in the same statement (see ``TRANSITION_FIELDS``). ``updated_at`` is set
        to now; entering a terminal state sets ``finished_at`` and entering RUNNING sets
        ``started_at`` (first time only), unless given.
        """
        unknown = set(fields) - TRANSITION_FIELDS
        if unknown:
            raise ValueError(f"transition() cannot set {sorted(unknown)}")
        if not from_states:
            raise ValueError("transition() needs at least one from_state")
        to_state = DeploymentState(to_state)
        now = self._clock.now()
        values: dict[str, Any] = dict(fields)
        values.update(state=to_state, updated_at=now, revision=Deployment.revision + 1)
        if to_state.terminal and "finished_at" not in values:
            values["finished_at"] = now
        if to_state is DeploymentState.RUNNING and "started_at" not in values:
            values["started_at"] = func.coalesce(
                Deployment.started_at, literal(now, UTCDateTime())
            )
        statement = update(Deployment).where(
            col(Deployment.id) == id,
            col(Deployment.state).in_([DeploymentState(s) for s in from_states]),
        )
        if expected_revision is not None:
            statement = statement.where(col(Deployment.revision) == expected_revision)
        with self._db.using(session) as s:
            result = s.exec(
                statement.values(**values).execution_options(synchronize_session=False)
            )
            return result.rowcount == 1

    def update_fields(
        self, id: int, *, session: Session | None = None, **fields: Any
    ) -> bool:
        """Set non-state columns (``card_ts`` after the card is posted, ``current_step``...)."""
        unknown = set(fields) - TRANSITION_FIELDS
        if unknown:
            raise ValueError(f"update_fields() cannot set {sorted(unknown)}")
        values: dict[str, Any] = dict(fields)
        values.update(updated_at=self._clock.now(), revision=Deployment.revision + 1)
        with self._db.using(session) as s:
            result = s.exec(
                update(Deployment)
                .where(col(Deployment.id) == id)
                .values(**values)
                .execution_options(synchronize_session=False)
            )
            return result.rowcount == 1

    def claim_next(self, worker_id: str, now: datetime | None = None) -> Deployment | None:
        """Take the oldest QUEUED deployment for ``worker_id`` (now RUNNING), or ``None``.

        PostgreSQL: ``SELECT ... FOR UPDATE SKIP LOCKED`` so replicas never wait on or take
        each other's pick. SQLite: the write transaction is exclusive and the UPDATE is
        conditional on QUEUED anyway. Either way each deployment is claimed exactly once.
        """
        now = now or self._clock.now()
        pick = (
            select(Deployment.id)
            .where(col(Deployment.state) == DeploymentState.QUEUED)
            .order_by(col(Deployment.created_at), col(Deployment.id))
            .limit(1)
        )
        if self._db.is_postgresql:
            pick = pick.with_for_update(skip_locked=True)
        with self._db.session() as s:
            while True:
                picked = s.exec(pick).first()
                if picked is None:
                    return None
                won = s.exec(
                    update(Deployment)
                    .where(
                        col(Deployment.id) == picked,
                        col(Deployment.state) == DeploymentState.QUEUED,
                    )
                    .values(
                        state=DeploymentState.RUNNING,
                        worker_id=worker_id,
                        heartbeat_at=now,
                        started_at=func.coalesce(
                            Deployment.started_at, literal(now, UTCDateTime())
                        ),
                        updated_at=now,
                        revision=Deployment.revision + 1,
                    )
                    .execution_options(synchronize_session=False)
                ).rowcount
                if won == 1:
                    return s.get(Deployment, picked, populate_existing=True)

    def heartbeat(self, id: int, worker_id: str, now: datetime | None = None) -> bool:
        """The worker still runs ``id``; False if another worker took it over (stop)."""
        with self._db.session() as s:
            result = s.exec(
                update(Deployment)
                .where(col(Deployment.id) == id, col(Deployment.worker_id) == worker_id)
                .values(heartbeat_at=now or self._clock.now())
                .execution_options(synchronize_session=False)
            )
            return result.rowcount == 1

    # -- step runs ----------------------------------------------------------------------------

    def upsert_step(
        self,
        deployment_id: int,
        name: str,
        position: int,
        state: StepState,
        *,
        session: Session | None = None,
        **fields: Any,
    ) -> StepRun:
        """Create or update the run of step ``name``; ``fields`` are set in both cases."""
        unknown = set(fields) - STEP_FIELDS
        if unknown:
            raise ValueError(f"upsert_step() cannot set {sorted(unknown)}")
        changes: dict[str, Any] = {"position": position, "state": StepState(state), **fields}
        values: dict[str, Any] = {
            "deployment_id": deployment_id, "name": name, "attempts": 0, **changes
        }
        with self._db.using(session) as s:
            s.exec(upsert(self._db, StepRun, values, ["deployment_id", "name"], changes))
            return s.exec(
                select(StepRun)
                .where(col(StepRun.deployment_id) == deployment_id, col(StepRun.name) == name)
                .execution_options(populate_existing=True)
            ).one()

    def get_step(self, deployment_id: int, name: str) -> StepRun | None:
        """The run of one step, if it was ever recorded."""
        with self._db.session(read_only=True) as s:
            return s.exec(
                select(StepRun).where(
                    col(StepRun.deployment_id) == deployment_id, col(StepRun.name) == name
                )
            ).first()

    def steps(self, deployment_id: int) -> list[StepRun]:
        """Every recorded step run of a deployment, in playbook order."""
        with self._db.session(read_only=True) as s:
            return list(
                s.exec(
                    select(StepRun)
                    .where(col(StepRun.deployment_id) == deployment_id)
                    .order_by(col(StepRun.position), col(StepRun.id))
                ).all()
            )
