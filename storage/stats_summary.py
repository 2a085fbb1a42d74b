"""The ``/qlp stats`` summary tables, kept in step with the deployments.

``stats_monitor_days`` (``storage.stats_impact``) is kept by the same calls;
``stats_compare_days`` (``storage.stats_compare``) by the baselines' recording, and rebuilt
here too.
``stats_days`` holds, per UTC day of request and environment, the terminal deployments grouped
as :class:`procedures.stats.FactsGroup` (counts, duration sums); ``stats_outcome_days`` and
``stats_incidents`` hold, per UTC day of finishing and environment, the outcomes reduced to an
:class:`procedures.stats.OutcomeSegment` (time to restore). ``storage.stats_queries`` adds the
whole days of a period from them and computes its partial edge days from the deployments.

Kept exact by recomputing, not by increments: :func:`refresh` rebuilds the rows of the days a
deployment's terminal transition touches from that day's deployments (tens of rows), in the
transition's own transaction, so the summary is never out of step with what is committed.
Two such transactions on PostgreSQL are serialised by one transaction-scoped advisory lock:
each recomputation then sees the other's committed rows (READ COMMITTED reads afresh at each
statement), so no update is lost. SQLite's writers are serialised already. Terminal
transitions are a few an hour, so one lock for all of them costs nothing.

:func:`rebuild` recomputes everything (migration 0008's backfill; a bulk load bypassing the
repository, as the scale benchmark's, calls it after loading).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from itertools import groupby
from typing import Any

from sqlalchemy import delete, func, insert, literal, select, text
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from procedures.engine import CANCELLED_BY
from procedures.model import TERMINAL_STATES, DeploymentState, ProcedureKind
from procedures.stats import (
    DeploymentFacts,
    OutcomeSegment,
    SegmentInMicroseconds,
    groups_of,
    outcomes_of,
    segment_of,
)
from storage.days import day_of, day_start, to_us
from storage.models import (
    Deployment,
    StatsDay,
    StatsDayBlock,
    StatsIncident,
    StatsOutcomeDay,
)
from storage.stats_compare import rebuild_compare_days
from storage.stats_impact import rebuild_monitor_days, refresh_monitor_days

DEPLOYMENTS = Deployment.__table__  # type: ignore[attr-defined]
DAYS = StatsDay.__table__  # type: ignore[attr-defined]
BLOCKS = StatsDayBlock.__table__  # type: ignore[attr-defined]
BLOCK_DAYS = 32
"""``stats_day_blocks`` adds up ``stats_days`` over days [block * 32, block * 32 + 32)."""
OUTCOME_DAYS = StatsOutcomeDay.__table__  # type: ignore[attr-defined]
INCIDENTS = StatsIncident.__table__  # type: ignore[attr-defined]
LOCK_KEY = 0x51_4C_50_5F_53_54_41  # "QLP_STA": the pg_advisory_xact_lock of refresh()
FACT_COLUMNS = (DEPLOYMENTS.c.id, DEPLOYMENTS.c.kind, DEPLOYMENTS.c.environment,
                DEPLOYMENTS.c.state, DEPLOYMENTS.c.created_at, DEPLOYMENTS.c.started_at,
                DEPLOYMENTS.c.finished_at, DEPLOYMENTS.c.error)
TERMINAL = sorted(TERMINAL_STATES)
COUNTED_FIELDS = frozenset({"environment", "kind", "created_at", "started_at", "finished_at",
                            "error"})
"""Columns the summary depends on besides the state: setting one of them outside a
transition (``update_fields``) recomputes a terminal deployment's days too."""

Key = tuple[str, int]
"""(environment, day)."""


def fact_of(row: Any) -> DeploymentFacts:
    """The facts of a deployments row read with :data:`FACT_COLUMNS`."""
    return DeploymentFacts(
        id=row.id, kind=ProcedureKind(row.kind), environment=row.environment,
        state=DeploymentState(row.state), requested_at=row.created_at,
        started_at=row.started_at, finished_at=row.finished_at,
        cancelled=(row.error or "").startswith(CANCELLED_BY))


def keys_of(session: Session | Connection, deployment_id: int) -> tuple[set[Key], set[Key]]:
    """The summary days a deployment counts in now: its request day, and its finish day when
    it is an outcome candidate (finished). Empty sets when it is not terminal."""
    row = _connection(session).execute(select(*FACT_COLUMNS).where(
        DEPLOYMENTS.c.id == deployment_id)).first()
    if row is None or not DeploymentState(row.state).terminal:
        return set(), set()
    finished = {(row.environment, day_of(row.finished_at))} if row.finished_at else set()
    return {(row.environment, day_of(row.created_at))}, finished


def refresh(session: Session | Connection, deployment_id: int,
            before: tuple[set[Key], set[Key]] = (set(), set())) -> None:
    """Recompute the summary days of ``deployment_id`` (as it is now, and the days it counted
    in ``before`` a change), inside the caller's transaction."""
    connection = _connection(session)
    requested, finished = keys_of(connection, deployment_id)
    requested |= before[0]
    finished |= before[1]
    if not requested and not finished:
        return
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": LOCK_KEY})
    for environment, day in sorted(requested):
        _write_days(connection, environment, day, _facts(
            connection, DEPLOYMENTS.c.created_at, environment, day, terminal=True))
    for environment, block in sorted({(e, day // BLOCK_DAYS) for e, day in requested}):
        write_block(connection, environment, block)
    for environment, day in sorted(finished):
        _write_outcomes(connection, environment, day, _facts(
            connection, DEPLOYMENTS.c.finished_at, environment, day, terminal=False))
    # The monitoring windows' requests of the same request days (storage.stats_impact).
    refresh_monitor_days(connection, requested)


def rebuild(session: Session | Connection, *, monitor_days: bool = True,
            blocks: bool = True) -> None:
    """Recompute every summary row from the deployments (one pass, in the caller's
    transaction); ``monitor_days``: ``stats_monitor_days`` and ``stats_compare_days`` too
    (not in migration 0008, which comes before those tables); ``blocks``: ``stats_day_blocks``
    (from migration 0013)."""
    connection = _connection(session)
    for table in (INCIDENTS, OUTCOME_DAYS, DAYS):
        connection.execute(delete(table))
    facts = [fact_of(row) for row in connection.execute(
        select(*FACT_COLUMNS).where(DEPLOYMENTS.c.state.in_(TERMINAL)))]

    def requested(f: DeploymentFacts) -> Key:
        return f.environment, day_of(f.requested_at)

    for (environment, day), group in groupby(sorted(facts, key=requested), key=requested):
        _write_days(connection, environment, day, list(group), replace=False)
    if blocks:
        rebuild_blocks(connection)
    finished = sorted((f for f in facts if f.finished_at is not None),
                      key=lambda f: (f.environment, day_of(f.finished_at)))  # type: ignore[arg-type]
    for (environment, day), group in groupby(
            finished, key=lambda f: (f.environment, day_of(f.finished_at))):  # type: ignore[arg-type]
        _write_outcomes(connection, environment, day, list(group), replace=False)
    if monitor_days:
        rebuild_monitor_days(connection)
        rebuild_compare_days(connection)


def _connection(session: Session | Connection) -> Connection:
    return session if isinstance(session, Connection) else session.connection()


def _facts(session: Connection, column: Any, environment: str, day: int, *,
           terminal: bool) -> list[DeploymentFacts]:
    statement = select(*FACT_COLUMNS).where(
        DEPLOYMENTS.c.environment == environment, column >= day_start(day),
        column < day_start(day + 1))
    if terminal:
        statement = statement.where(DEPLOYMENTS.c.state.in_(TERMINAL))
    return [fact_of(row) for row in session.execute(statement)]


def _write_days(session: Connection, environment: str, day: int,
                facts: list[DeploymentFacts], *, replace: bool = True) -> None:
    if replace:
        session.execute(delete(DAYS).where(DAYS.c.day == day,
                                           DAYS.c.environment == environment))
    rows = [{"day": day, "environment": g.environment, "is_change": g.is_change,
             "state": g.state.value, "cancelled": g.cancelled, "deployments": g.deployments,
             "duration_us": g.duration_total // timedelta(microseconds=1),
             "durations": g.durations}
            for g in groups_of(f for f in facts if f.state.terminal)]
    if rows:
        session.execute(insert(DAYS), rows)


def write_block(connection: Connection, environment: str, block: int) -> None:
    """Recompute one ``stats_day_blocks`` key from its days' ``stats_days`` rows."""
    d = DAYS.c
    connection.execute(delete(BLOCKS).where(BLOCKS.c.block == block,
                                            BLOCKS.c.environment == environment))
    connection.execute(insert(BLOCKS).from_select(
        ["block", "environment", "is_change", "state", "cancelled", "deployments",
         "duration_us", "durations"],
        select(literal(block), d.environment, d.is_change, d.state, d.cancelled,
               func.sum(d.deployments), func.sum(d.duration_us), func.sum(d.durations))
        .where(d.environment == environment, d.day >= block * BLOCK_DAYS,
               d.day < (block + 1) * BLOCK_DAYS)
        .group_by(d.environment, d.is_change, d.state, d.cancelled)))


def rebuild_blocks(connection: Connection) -> None:
    """Recompute every ``stats_day_blocks`` row from ``stats_days`` (migration 0013's
    backfill; :func:`rebuild`)."""
    connection.execute(delete(BLOCKS))
    keys = {(e, day // BLOCK_DAYS) for e, day in connection.execute(
        select(DAYS.c.environment, DAYS.c.day).distinct())}
    for environment, block in sorted(keys):
        write_block(connection, environment, block)


def _write_outcomes(session: Connection, environment: str, day: int,
                    facts: list[DeploymentFacts], *, replace: bool = True) -> None:
    if replace:
        for table in (INCIDENTS, OUTCOME_DAYS):
            session.execute(delete(table).where(table.c.day == day,
                                                table.c.environment == environment))
    outcomes = outcomes_of(facts, environment)
    if not outcomes:
        return
    segment = segment_of(outcomes)
    session.execute(insert(OUTCOME_DAYS), [{
        "day": day, "environment": environment,
        "first_requested_us": min(to_us(f.requested_at) for f in outcomes),
        "last_requested_us": max(to_us(f.requested_at) for f in outcomes),
        "head_failure_us": _us(segment.head_failure),
        "first_success_us": _us(segment.first_success),
        "tail_failure_us": _us(segment.tail_failure)}])
    if segment.restores:
        session.execute(insert(INCIDENTS), [
            {"day": day, "environment": environment, "position": position,
             "duration_us": restore // timedelta(microseconds=1)}
            for position, restore in enumerate(segment.restores)])


def _us(moment: datetime | None) -> int | None:
    return None if moment is None else to_us(moment)


def segment_in_us(segment: OutcomeSegment) -> SegmentInMicroseconds:
    """``segment`` in integer microseconds, as :func:`_write_outcomes` stores it."""
    return SegmentInMicroseconds(
        head_failure=_us(segment.head_failure), first_success=_us(segment.first_success),
        restores=tuple(r // timedelta(microseconds=1) for r in segment.restores),
        tail_failure=_us(segment.tail_failure))
