"""Deployments and their step runs."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Select, Table, bindparam, func, insert, literal, or_, text, update
from sqlalchemy.dialects import postgresql
from sqlalchemy.sql.dml import Insert, Update
from sqlmodel import Session, col, select

from procedures.clock import Clock
from procedures.decision import ONE_AT_A_TIME
from procedures.errors import PolicyRefusal
from procedures.model import (
    ACTIVE_STATES,
    HOLDING_STATES,
    UNDER_WAY_STATES,
    DeploymentState,
    ProcedureKind,
    StepState,
    may_move,
)
from procedures.store import UNCHANGED, AuditEntry, NotRunning, Unchanged
from storage import stats_summary
from storage.audit import AuditLog, canonical_detail
from storage.db import Database
from storage.models import AuditEvent, AuditHead, Deployment, StepRun
from storage.sql import insert_ignoring_conflict, upsert
from storage.types import UTCDateTime

"""A deployment in these states holds its environment for a new request ("one at a time")."""

EXCLUSIVE_KINDS = frozenset({ProcedureKind.STANDARD, ProcedureKind.HOTFIX,
                             ProcedureKind.MIGRATION})
"""Kinds whose request is refused while another deployment of the environment is under way
or waiting for approval (``procedures.decision``'s rule [1]). Emergencies and rollbacks are
judged on running deployments only by their commands; they are not guarded here by default."""

_REQUEST_LOCK_CLASS = 0x51_4C_50_01
"""First key of ``pg_advisory_xact_lock(class, hashtext(environment))``: one lock per
environment, held by whoever is writing a request for it until its transaction ends."""

# Columns transition(**fields) may set. id/state/revision/created_at are managed here.
TRANSITION_FIELDS = frozenset({
    "reason", "options", "plan_hash", "channel", "card_ts", "scheduled_at", "started_at",
    "finished_at", "current_step", "worker_id", "heartbeat_at", "error", "version",
})
STEP_FIELDS = frozenset({"attempts", "started_at", "finished_at", "result", "error"})

_DEPLOYMENTS: Table = Deployment.__table__  # type: ignore[attr-defined]
_STEP_RUNS: Table = StepRun.__table__  # type: ignore[attr-defined]
_AUDIT_EVENTS: Table = AuditEvent.__table__  # type: ignore[attr-defined]
_AUDIT_HEAD: Table = AuditHead.__table__  # type: ignore[attr-defined]


def _step_columns(fields: frozenset[str]) -> list[str]:
    """The columns a step upsert inserts: the key, position, state, attempts, ``fields``."""
    return list(dict.fromkeys(
        ["deployment_id", "name", "position", "state", "attempts", *sorted(fields)]))


def _step_changes(fields: frozenset[str]) -> list[str]:
    """The columns it sets on an existing row: position, state and ``fields``."""
    return ["position", "state", *sorted(fields)]


def _step_params(
    deployment_id: int, name: str, position: int, state: StepState, fields: Mapping[str, Any]
) -> dict[str, Any]:
    return {"deployment_id": deployment_id, "name": name, "position": position,
            "state": StepState(state), "attempts": 0, **fields}


def _step_run(row: Any) -> StepRun:
    """A ``StepRun`` from a row that starts with every column of ``step_runs``."""
    return StepRun(**{c.name: row._mapping[c] for c in _STEP_RUNS.c})


def _head_select() -> Select[Any]:
    return select(_AUDIT_HEAD.c.last_id, _AUDIT_HEAD.c.last_hash).where(_AUDIT_HEAD.c.id == 1)


def _not_running(deployment_id: int, worker: str | None, step: str) -> NotRunning:
    return NotRunning(f"#{deployment_id} is not running for {worker}; step {step} was not "
                      "recorded")


class DeploymentRepository:
    """Creates deployments, moves them between states, and hands queued ones to workers.

    Every state change is one conditional ``UPDATE ... WHERE state IN (...)`` that bumps
    ``revision``: of any number of concurrent callers (two approvers clicking at once, a
    cancel racing the worker) exactly one wins and the others see ``False``.
    """

    def __init__(self, database: Database, clock: Clock) -> None:
        self._db = database
        self._clock = clock
        # Appends inside record_step's transaction; the audit_head lock keeps one chain with
        # every other appender on the same database.
        self._audit = AuditLog(database, clock)
        self._statements: dict[tuple[Any, ...], Insert | Update] = {}

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
        exclusive_of: Collection[DeploymentState] | None = None,
        session: Session | None = None,
    ) -> tuple[Deployment, bool]:
        """Like :meth:`create`, and whether this call created it (False: a repeated request).

        One at a time, atomically: when ``exclusive_of`` names states, the request is refused
        (:class:`~procedures.errors.PolicyRefusal`, rule ``one-at-a-time``) if another
        deployment of the environment is in one of them. Writers for one environment are
        serialised (SQLite: the write lock taken at BEGIN; PostgreSQL: a transaction-scoped
        advisory lock per environment), so of any number of concurrent requests to an
        environment with nothing under way exactly one is created, whether or not the
        environment has any history. The caller's own check (``decide``) answers first with
        the full reason; this closes the race between that check and the write.

        By default (``None``) a person's request (it carries a ``request_key``) for a kind in
        :data:`EXCLUSIVE_KINDS`, PENDING_APPROVAL and not scheduled for later, is exclusive of
        :data:`UNDER_WAY_STATES`; everything else is not checked. ``()`` turns the check off.
        A repeated request (same ``request_key``) returns the deployment it created, never a
        refusal.
        """
        if exclusive_of is None:
            exclusive_of = (UNDER_WAY_STATES if request_key is not None
                            and ProcedureKind(kind) in EXCLUSIVE_KINDS
                            and DeploymentState(state) is DeploymentState.PENDING_APPROVAL
                            and scheduled_at is None else ())
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
        blocker: Deployment | None = None
        with self._db.using(session) as s:
            if exclusive_of:
                self._lock_requests_for(s, environment)
                if request_key is not None:
                    repeated = s.exec(
                        select(Deployment)
                        .where(col(Deployment.request_key) == request_key)
                        .execution_options(populate_existing=True)
                    ).first()
                    if repeated is not None:
                        return repeated, False
                blocker = s.exec(
                    select(Deployment)
                    .where(col(Deployment.environment) == environment,
                           col(Deployment.state).in_([DeploymentState(x)
                                                      for x in exclusive_of]))
                    .order_by(col(Deployment.id)).limit(1)
                ).first()
            if blocker is None and request_key is None:
                deployment = Deployment(**values)
                s.add(deployment)
                s.flush()
                return deployment, True
            if blocker is None:
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
        assert blocker is not None
        raise self._refuse_busy(blocker, kind, version, environment, requester,
                                audited=session is None)

    def _lock_requests_for(self, session: Session, environment: str) -> None:
        """Serialise the writers of requests for ``environment`` until the transaction ends.

        SQLite already holds the database's write lock (``BEGIN IMMEDIATE``). On PostgreSQL a
        row lock is no help when the environment has no row yet (nothing to lock, so two
        writers both see nothing under way): an advisory lock on the environment's name is.
        """
        if self._db.is_postgresql:
            session.execute(
                text("SELECT pg_advisory_xact_lock(:class, hashtext(:environment))"),
                {"class": _REQUEST_LOCK_CLASS, "environment": environment})

    def _refuse_busy(self, blocker: Deployment, kind: ProcedureKind, version: str | None,
                     environment: str, requester: str, *, audited: bool) -> PolicyRefusal:
        """The one-at-a-time refusal of a request that lost the race to ``blocker``."""
        what = f"{blocker.version}, " if blocker.version else ""
        state = blocker.state.value.replace("_", " ")
        reason = (f"Deployment #{blocker.id} ({what}{state}) is already under way for "
                  f"{environment}; one deployment at a time")
        if audited:  # the caller's own check passed a moment ago: say why it was refused
            self._audit.append(requester, "deployment.refused", environment=environment,
                               detail={"version": version, "kind": ProcedureKind(kind).value,
                                       "rule": ONE_AT_A_TIME, "reason": reason,
                                       "blocked_by": blocker.id})
        return PolicyRefusal(f"{reason}.", rule=ONE_AT_A_TIME,
                             hint=f"Wait for it, or `/qlp cancel {blocker.id}`.")

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
        self, states: Collection[DeploymentState], environment: str | None = None, *,
        kind: ProcedureKind | None = None,
    ) -> list[Deployment]:
        """Deployments in any of ``states`` (of ``kind``), oldest first."""
        statement = select(Deployment).where(col(Deployment.state).in_(list(states)))
        if environment is not None:
            statement = statement.where(col(Deployment.environment) == environment)
        if kind is not None:
            statement = statement.where(col(Deployment.kind) == ProcedureKind(kind))
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

    def with_schedule(self, finished_since: datetime) -> list[Deployment]:
        """Deployments with a ``scheduled_at`` that are not over, or ended after
        ``finished_since`` (the scheduler still owes them a summary), by time then id."""
        terminal = [state for state in DeploymentState if state.terminal]
        with self._db.session(read_only=True) as s:
            return list(s.exec(
                select(Deployment)
                .where(col(Deployment.scheduled_at).is_not(None),
                       or_(col(Deployment.state).not_in(terminal),
                           col(Deployment.finished_at) >= finished_since))
                .order_by(col(Deployment.scheduled_at), col(Deployment.id))).all())

    def stale(self, max_age: timedelta, now: datetime | None = None) -> list[Deployment]:
        """Running or rolling-back deployments whose worker stopped beating (to resume)."""
        cutoff = (now or self._clock.now()) - max_age
        with self._db.session(read_only=True) as s:
            return list(
                s.exec(
                    select(Deployment)
                    .where(
                        col(Deployment.state).in_(HOLDING_STATES),
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
        illegal = [DeploymentState(s).value for s in from_states
                   if not may_move(DeploymentState(s), to_state)]
        if illegal:  # a bug in the caller, never a race: the table is procedures.model's
            raise ValueError(f"transition() from {', '.join(illegal)} to {to_state.value} is "
                             "not in procedures.model.TRANSITIONS")
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
            # A terminal state counts in /qlp stats' summary: its days are recomputed in this
            # transaction (and the days it counted in, if it was terminal already).
            before = stats_summary.keys_of(s, id) if to_state.terminal else None
            result = s.exec(
                statement.values(**values).execution_options(synchronize_session=False)
            )
            if before is not None and result.rowcount == 1:
                stats_summary.refresh(s, id, before)
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
        counted = bool(fields.keys() & stats_summary.COUNTED_FIELDS)
        with self._db.using(session) as s:
            before = stats_summary.keys_of(s, id) if counted else None
            result = s.exec(
                update(Deployment)
                .where(col(Deployment.id) == id)
                .values(**values)
                .execution_options(synchronize_session=False)
            )
            if before is not None and result.rowcount == 1:
                stats_summary.refresh(s, id, before)  # a terminal one's /qlp stats days
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
        params = _step_params(deployment_id, name, position, state, fields)
        with self._db.using(session) as s:
            row = s.connection().execute(self._step_upsert(frozenset(fields)), params).one()
            return _step_run(row)

    def record_step(
        self,
        deployment_id: int,
        name: str,
        position: int,
        state: StepState,
        *,
        audit: AuditEntry | None = None,
        current_step: str | Unchanged | None = UNCHANGED,
        running_for: str | None = None,
        session: Session | None = None,
        **fields: Any,
    ) -> StepRun:
        """:meth:`upsert_step`, the deployment's ``current_step`` and an audit event, atomically.

        One transaction (or the caller's ``session``): the deployment row (only when
        ``current_step`` is given or ``running_for`` guards the write), the step row, then
        the ``audit`` event, whose chain head stays locked until commit. With ``running_for``
        the deployment must be RUNNING and claimed by that worker, or nothing is written and
        :class:`NotRunning` is raised.

        SQLite runs one statement per row. PostgreSQL, where each statement is a round trip,
        runs two: ``WITH guard AS (UPDATE deployments ...), head AS (SELECT ... FOR UPDATE)
        INSERT INTO step_runs SELECT ... FROM guard ...`` (no row from ``guard``, no step
        row), then ``WITH event AS (INSERT INTO audit_events ...) UPDATE audit_head``.
        """
        unknown = set(fields) - STEP_FIELDS
        if unknown:
            raise ValueError(f"record_step() cannot set {sorted(unknown)}")
        guarded = running_for is not None
        set_current_step = current_step is not UNCHANGED
        params = _step_params(deployment_id, name, position, state, fields)
        guard = {"g_deployment": deployment_id, "g_worker": running_for,
                 "g_now": self._clock.now(), "g_step": current_step}
        head: tuple[int, str] | None = None
        with self._db.using(session) as s:
            connection = s.connection()
            if self._db.is_postgresql:
                statement = self._pg_step_statement(
                    frozenset(fields), guarded or set_current_step, guarded, set_current_step,
                    audit is not None)
                row = connection.execute(
                    statement, {**guard, **{f"s_{k}": v for k, v in params.items()}}
                ).first()
                if row is None:
                    raise _not_running(deployment_id, running_for, name)
                if audit is not None and row.head_id is not None:
                    head = (row.head_id, row.head_hash)
            else:
                if guarded or set_current_step:
                    changed = connection.execute(
                        self._step_guard(guarded, set_current_step), guard).rowcount
                    if guarded and changed != 1:
                        raise _not_running(deployment_id, running_for, name)
                row = connection.execute(self._step_upsert(frozenset(fields)), params).one()
            step = _step_run(row)
            if audit is not None:
                self._append_audit(s, deployment_id, audit, head)
            return step

    # The statements of upsert_step/record_step are built once per shape and cached: building
    # a statement costs more than running it (SQLAlchemy caches only the compiled SQL).

    def _step_upsert(self, fields: frozenset[str]) -> Insert:
        """``INSERT ... ON CONFLICT (deployment_id, name) DO UPDATE`` of ``fields`` (plus
        position and state), ``RETURNING`` the row; parameters are named as the columns."""
        statement = self._statements.get(("upsert", fields))
        if statement is None:
            names = _step_columns(fields)
            values = {n: bindparam(n, type_=_STEP_RUNS.c[n].type) for n in names}
            changes = {n: values[n] for n in _step_changes(fields)}
            statement = upsert(
                self._db, _STEP_RUNS, values, ["deployment_id", "name"], changes
            ).returning(*_STEP_RUNS.c)
            self._statements[("upsert", fields)] = statement
        assert isinstance(statement, Insert)
        return statement

    def _step_guard(self, guarded: bool, set_current_step: bool) -> Update:
        """The UPDATE of the deployment that goes with a step (parameters ``g_*``): set
        ``current_step`` and/or check that it is RUNNING for worker ``g_worker``."""
        key = ("guard", guarded, set_current_step)
        statement = self._statements.get(key)
        if statement is None:
            columns = _DEPLOYMENTS.c
            statement = update(_DEPLOYMENTS).where(columns.id == bindparam("g_deployment"))
            if guarded:
                statement = statement.where(
                    columns.state == DeploymentState.RUNNING,
                    columns.worker_id == bindparam("g_worker"),
                )
            values: dict[str, Any] = {
                "updated_at": bindparam("g_now", type_=columns.updated_at.type)}
            if set_current_step:
                values.update(current_step=bindparam("g_step"), revision=columns.revision + 1)
            statement = statement.values(**values)
            self._statements[key] = statement
        assert isinstance(statement, Update)
        return statement

    def _pg_step_statement(
        self, fields: frozenset[str], touch: bool, guarded: bool, set_current_step: bool,
        lock_head: bool,
    ) -> Insert:
        """PostgreSQL: the deployment UPDATE (if ``touch``), the audit head lock (if
        ``lock_head``) and the step upsert in one statement; parameters ``g_*`` and ``s_*``
        (prefixed, so that none is taken for a column value of another table)."""
        key = ("pg", fields, touch, guarded, set_current_step, lock_head)
        statement = self._statements.get(key)
        if statement is None:
            names = _step_columns(fields)
            binds = [bindparam(f"s_{n}", type_=_STEP_RUNS.c[n].type) for n in names]
            insert_ = postgresql.insert(_STEP_RUNS)
            ctes = []
            if touch:
                guard = self._step_guard(guarded, set_current_step).returning(
                    _DEPLOYMENTS.c.id).cte("guard")
                ctes.append(guard)
                insert_ = insert_.from_select(names, select(*binds).select_from(guard))
            else:
                insert_ = insert_.values(dict(zip(names, binds, strict=True)))
            insert_ = insert_.on_conflict_do_update(
                index_elements=["deployment_id", "name"],
                set_={n: insert_.excluded[n] for n in _step_changes(fields)},
            )
            returning: list[Any] = list(_STEP_RUNS.c)
            if lock_head:
                head = _head_select().with_for_update().cte("head")
                ctes.append(head)
                returning += [select(head.c.last_id).scalar_subquery().label("head_id"),
                              select(head.c.last_hash).scalar_subquery().label("head_hash")]
            statement = insert_.add_cte(*ctes).returning(*returning)
            self._statements[key] = statement
        assert isinstance(statement, Insert)
        return statement

    def _append_audit(
        self, session: Session, deployment_id: int, entry: AuditEntry,
        head: tuple[int, str] | None,
    ) -> None:
        """``AuditLog.append(..., session=session)`` in Core statements (as
        ``GroupCommitAuditLog`` writes a batch): lock the ``audit_head`` row (unless the
        caller already did and passes ``head``), insert the next event of the chain (same id
        rule, same key and hash: :meth:`AuditLog.seal`), move the head. The head stays locked
        until the transaction ends, so this must come last in it."""
        connection = session.connection()
        if head is None:
            statement = _head_select()
            if self._db.is_postgresql:
                statement = statement.with_for_update()
            found = connection.execute(statement).first()
            if found is None:  # tables created without the migration: AuditLog seeds it
                seeded = self._audit._lock_head(session)
                head = (seeded.last_id, seeded.last_hash)
            else:
                head = (found.last_id, found.last_hash)
        last_id, last_hash = head
        detail = canonical_detail(entry.detail)
        at = self._clock.now().astimezone(UTC)
        key_id, digest = self._audit.seal(last_hash, at, entry.actor, entry.action,
                                          deployment_id, entry.environment, detail)
        values = {
            "e_id": last_id + 1, "e_at": at, "e_actor": entry.actor, "e_action": entry.action,
            "e_deployment_id": deployment_id, "e_environment": entry.environment,
            "e_detail": detail, "e_prev_hash": last_hash, "e_hash": digest, "e_key_id": key_id,
        }
        for write in self._audit_statements():
            connection.execute(write, values)

    def _audit_statements(self) -> tuple[Insert | Update, ...]:
        """Insert the event and move the head (parameters ``e_*``): on PostgreSQL one
        statement, ``WITH event AS (INSERT INTO audit_events ...) UPDATE audit_head``."""
        insert_ = self._statements.get(("event",))
        move = self._statements.get(("head",))
        if insert_ is None or move is None:
            insert_ = insert(_AUDIT_EVENTS).values({
                c: bindparam(f"e_{c}", type_=_AUDIT_EVENTS.c[c].type) for c in (
                    "id", "at", "actor", "action", "deployment_id", "environment", "detail",
                    "prev_hash", "hash", "key_id")
            })
            move = update(_AUDIT_HEAD).where(_AUDIT_HEAD.c.id == 1).values(
                last_id=bindparam("e_id"), last_hash=bindparam("e_hash"))
            if self._db.is_postgresql:
                move = move.add_cte(insert_.cte("event"))
            self._statements[("event",)], self._statements[("head",)] = insert_, move
        return (move,) if self._db.is_postgresql else (insert_, move)

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
