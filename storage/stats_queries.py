"""``/qlp stats`` and ``/qlp history`` in SQL: exact over any number of deployments.

:class:`StatsQueries` computes a period's :class:`procedures.stats.PeriodTotals` in one
statement of aggregates and window functions. The definitions are those of
:mod:`procedures.stats`, whose :func:`~procedures.stats.totals_of` is the reference the tests
compare this SQL with, on both backends.

Both statements are exact to the microsecond, so sums and medians are those Python computes over
``timedelta``: PostgreSQL's (:func:`totals_sql_postgresql`) keeps timestamps and intervals and
takes each median as the mean of the two middle values ``percentile_disc`` returns; SQLite's
(:func:`totals_sql`) turns its stored text into integer microseconds since the epoch and takes
the middle rows of a ``row_number()`` window.

Indexes (migration 0004): the period is read through ``ix_deployments_created_at``, or
``ix_deployments_environment_created_at`` for one environment; history reads the newest
deployments by id (``ix_deployments_environment_id`` for one environment) and their approvals
in one more query, not one per line.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import BindParameter, bindparam, text
from sqlalchemy.types import String
from sqlmodel import col, select

from procedures.engine import CANCELLED_BY
from procedures.model import TERMINAL_STATES, DeploymentState, ProcedureKind
from procedures.stats import PeriodTotals
from storage.db import Database
from storage.models import Approval, Deployment
from storage.types import UTCDateTime

S = DeploymentState
WORK_MEM = "32MB"
"""PostgreSQL's ``work_mem`` for the stats statement (one transaction): a year of deployments
is sorted in memory instead of in temporary files."""


def _quoted(*values: str) -> str:
    # Only ever called with enum values (constants of the code), never with user input.
    return ", ".join(f"'{v}'" for v in values)


def _epoch_us(dialect: str, column: str) -> str:
    """SQL for ``column`` (a timestamp) as integer microseconds since the epoch."""
    if dialect == "postgresql":
        return f"CAST(EXTRACT(EPOCH FROM {column}) * 1000000 AS BIGINT)"
    # SQLAlchemy stores 'YYYY-MM-DD HH:MM:SS.ffffff' (UTC) on SQLite. The seconds are read
    # without the fraction: SQLite rounds a parsed time to milliseconds, so '...:59.9996'
    # would count as the next second.
    return (f"(CAST(strftime('%s', substr({column}, 1, 19)) AS INTEGER) * 1000000"
            f" + CAST(substr({column}, 21, 6) AS INTEGER))")


def _median_sql(dialect: str, source: str) -> str:
    """A one-row query over ``source`` (a query with an integer column ``v``) answering
    ``mid2``: the sum of its two middle values (the middle one twice for an odd count), or
    NULL when it has no rows; the median is ``mid2 / 2``, exactly as Python takes it."""
    if dialect == "postgresql":
        return (f"SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY v) * 2 AS mid2 "  # noqa: S608
                f"FROM ({source}) AS m")
    return (f"SELECT min(v) + max(v) AS mid2 FROM ("  # noqa: S608 (constant SQL)
            f"SELECT v, row_number() OVER (ORDER BY v) AS rn, count(*) OVER () AS n "
            f"FROM ({source}) AS m) AS r WHERE rn IN ((n + 1) / 2, n / 2 + 1)")


def _cancelled_sql() -> str:
    """1 when a person cancelled the deployment (its error starts with ``CANCELLED_BY``).

    The one place that knows how a cancel is recorded; a ``cancelled_by`` column would
    replace this expression."""
    return f"CASE WHEN substr(error, 1, {len(CANCELLED_BY):d}) = :cancelled_by THEN 1 ELSE 0 END"


def totals_sql(dialect: str, *, one_environment: bool) -> str:
    """The statement behind :meth:`StatsQueries.totals` on SQLite (it also runs on PostgreSQL,
    slower than :func:`totals_sql_postgresql`)."""
    materialized = "MATERIALIZED " if dialect == "postgresql" else ""
    where_env = " AND environment = :environment" if one_environment else ""
    terminal = _quoted(*sorted(s.value for s in TERMINAL_STATES))
    undone = _quoted(S.FAILED, S.ROLLED_BACK)
    lead = "SELECT f_us - c_us AS v FROM p WHERE ok = 1 AND f_us IS NOT NULL"
    restore = "SELECT closed - opened AS v FROM incidents WHERE closed IS NOT NULL"
    # Every piece interpolated below is a constant of this module or an enum value; the
    # values (period, environments, the cancel prefix) are bound parameters.
    return f"""
WITH q AS (
    SELECT id, environment, state,
           CASE WHEN kind <> '{ProcedureKind.ROLLBACK.value}' THEN 1 ELSE 0 END AS ch,
           {_cancelled_sql()} AS cx,
           {_epoch_us(dialect, "created_at")} AS c_us,
           {_epoch_us(dialect, "started_at")} AS s_us,
           {_epoch_us(dialect, "finished_at")} AS f_us
    FROM deployments
    WHERE created_at >= :since AND created_at <= :until{where_env}
),
p AS {materialized}(
    SELECT q.*,
           CASE WHEN ch = 1 AND state = '{S.SUCCEEDED.value}' THEN 1 ELSE 0 END AS ok,
           CASE WHEN ch = 1 AND (state = '{S.NEEDS_ATTENTION.value}'
                                 OR (state IN ({undone}) AND cx = 0))
                THEN 1 ELSE 0 END AS bad
    FROM q
),
totals AS (
    SELECT count(*) AS deployments,
           coalesce(sum(ch), 0) AS requests,
           coalesce(sum(ok), 0) AS succeeded,
           coalesce(sum(bad), 0) AS failed,
           coalesce(sum(CASE WHEN ch = 1 AND (state = '{S.CANCELLED.value}'
                                              OR (cx = 1 AND state IN ({undone})))
                        THEN 1 ELSE 0 END), 0) AS cancelled,
           coalesce(sum(CASE WHEN ch = 1 AND state IN ({_quoted(S.REJECTED, S.EXPIRED)})
                        THEN 1 ELSE 0 END), 0) AS not_run,
           coalesce(sum(CASE WHEN ch = 1 AND state NOT IN ({terminal})
                        THEN 1 ELSE 0 END), 0) AS in_progress,
           coalesce(sum(CASE WHEN ok + bad = 1 AND s_us IS NOT NULL AND f_us IS NOT NULL
                        THEN f_us - s_us END), 0) AS duration_total,
           coalesce(sum(CASE WHEN ok + bad = 1 AND s_us IS NOT NULL AND f_us IS NOT NULL
                        THEN 1 ELSE 0 END), 0) AS durations,
           coalesce(sum(CASE WHEN ch = 1 AND state = '{S.ROLLED_BACK.value}' AND cx = 0
                        THEN 1 ELSE 0 END), 0) AS automatic_rollbacks,
           coalesce(sum(CASE WHEN ch = 0 AND state = '{S.SUCCEEDED.value}'
                        THEN 1 ELSE 0 END), 0) AS manual_rollbacks,
           coalesce(sum(CASE WHEN ok = 1 AND environment = :frequency_environment
                        THEN 1 ELSE 0 END), 0) AS production_successes
    FROM p
),
outcomes AS (
    SELECT environment, id, f_us,
           CASE WHEN state = '{S.SUCCEEDED.value}' THEN 1 ELSE 0 END AS won
    FROM p
    WHERE f_us IS NOT NULL AND (state = '{S.SUCCEEDED.value}' OR bad = 1)
),
runs AS (
    -- Outcomes in order of finishing, per environment; grp counts the successes before each
    -- one, so the failures after the k-th success and the (k+1)-th success that closes them
    -- share grp k: an incident is a grp with a failure, open while it has no success.
    SELECT environment, f_us, won,
           sum(won) OVER (PARTITION BY environment ORDER BY f_us, id
                          ROWS UNBOUNDED PRECEDING) - won AS grp
    FROM outcomes
),
incidents AS (
    SELECT min(CASE WHEN won = 0 THEN f_us END) AS opened,
           max(CASE WHEN won = 1 THEN f_us END) AS closed
    FROM runs
    GROUP BY environment, grp
    HAVING min(won) = 0
),
incident_counts AS (
    SELECT count(closed) AS restored_incidents, count(*) - count(closed) AS open_incidents
    FROM incidents
),
lead AS ({_median_sql(dialect, lead)}),
restore AS ({_median_sql(dialect, restore)})
SELECT totals.*, incident_counts.*, lead.mid2 AS lead_mid2, restore.mid2 AS restore_mid2
FROM totals, incident_counts, lead, restore
"""  # noqa: S608


_MIDDLES = "ARRAY[0.5, 0.5000000001]"
"""``percentile_disc`` at these gives the two middle values of an even count (the middle one
twice for an odd count) of up to 10^9 values: the median is their mean, as Python takes it."""


def totals_sql_postgresql(*, one_environment: bool) -> str:
    """PostgreSQL's statement: times stay timestamps and intervals (no per-row arithmetic
    on epochs), medians are ``percentile_disc`` pairs, counts ``FILTER`` clauses."""
    where_env = " AND environment = :environment" if one_environment else ""
    terminal = _quoted(*sorted(s.value for s in TERMINAL_STATES))
    undone = _quoted(S.FAILED, S.ROLLED_BACK)
    ok_state = f"'{S.SUCCEEDED.value}'"
    return f"""
WITH q AS (
    SELECT id, environment, state, created_at, started_at, finished_at,
           kind <> '{ProcedureKind.ROLLBACK.value}' AS ch,
           coalesce(substr(error, 1, {len(CANCELLED_BY):d}) = :cancelled_by, false) AS cx
    FROM deployments
    WHERE created_at >= :since AND created_at <= :until{where_env}
),
f AS MATERIALIZED (
    SELECT q.*, ch AND state = {ok_state} AS ok,
           ch AND (state = '{S.NEEDS_ATTENTION.value}' OR (state IN ({undone}) AND NOT cx))
             AS bad
    FROM q
),
totals AS (
    SELECT count(*) AS deployments,
           count(*) FILTER (WHERE ch) AS requests,
           count(*) FILTER (WHERE ok) AS succeeded,
           count(*) FILTER (WHERE bad) AS failed,
           count(*) FILTER (WHERE ch AND (state = '{S.CANCELLED.value}'
                                          OR (cx AND state IN ({undone})))) AS cancelled,
           count(*) FILTER (WHERE ch AND state IN ({_quoted(S.REJECTED, S.EXPIRED)}))
             AS not_run,
           count(*) FILTER (WHERE ch AND state NOT IN ({terminal})) AS in_progress,
           sum(finished_at - started_at) FILTER (WHERE ok OR bad) AS duration_total,
           count(finished_at - started_at) FILTER (WHERE ok OR bad) AS durations,
           count(*) FILTER (WHERE ch AND state = '{S.ROLLED_BACK.value}' AND NOT cx)
             AS automatic_rollbacks,
           count(*) FILTER (WHERE NOT ch AND state = {ok_state}) AS manual_rollbacks,
           count(*) FILTER (WHERE ok AND environment = :frequency_environment)
             AS production_successes,
           percentile_disc({_MIDDLES}) WITHIN GROUP (ORDER BY finished_at - created_at)
             FILTER (WHERE ok) AS lead_middles
    FROM f
),
runs AS (
    -- See totals_sql: grp counts the successes before each outcome, per environment.
    SELECT environment, finished_at, state = {ok_state} AS won,
           count(*) FILTER (WHERE state = {ok_state})
             OVER (PARTITION BY environment ORDER BY finished_at, id ROWS UNBOUNDED PRECEDING)
           - (state = {ok_state})::int AS grp
    FROM f
    WHERE finished_at IS NOT NULL AND (state = {ok_state} OR bad)
),
incidents AS (
    SELECT min(finished_at) FILTER (WHERE NOT won) AS opened,
           max(finished_at) FILTER (WHERE won) AS closed
    FROM runs GROUP BY environment, grp HAVING bool_or(NOT won)
)
SELECT totals.*,
       (SELECT count(closed) FROM incidents) AS restored_incidents,
       (SELECT count(*) - count(closed) FROM incidents) AS open_incidents,
       (SELECT percentile_disc({_MIDDLES}) WITHIN GROUP (ORDER BY closed - opened)
        FROM incidents WHERE closed IS NOT NULL) AS restore_middles
FROM totals
"""  # noqa: S608


def _mean_of(middles: list[timedelta] | None) -> timedelta | None:
    if not middles or middles[0] is None:
        return None
    return (middles[0] + middles[1]) / 2


def _half(mid2: Any) -> timedelta | None:
    """The median from the sum of the two middle values (microseconds)."""
    if mid2 is None:
        return None
    return timedelta(microseconds=round(float(mid2))) / 2


class StatsQueries:
    """Reads for ``/qlp stats`` and ``/qlp history``, each in one read-only transaction."""

    def __init__(self, database: Database) -> None:
        self._db = database

    def totals(self, *, since: datetime, until: datetime, environment: str | None,
               frequency_environment: str) -> PeriodTotals:
        """The totals over the deployments requested in ``[since, until]`` (of
        ``environment``, or of all), exact whatever their number."""
        postgresql = self._db.is_postgresql
        one = environment is not None
        statement = text(totals_sql_postgresql(one_environment=one) if postgresql
                         else totals_sql(self._db.dialect, one_environment=one))
        params: dict[str, Any] = {"since": since, "until": until,
                                  "cancelled_by": CANCELLED_BY,
                                  "frequency_environment": frequency_environment}
        binds: list[BindParameter[Any]] = [bindparam("since", type_=UTCDateTime()),
                 bindparam("until", type_=UTCDateTime()),
                 bindparam("cancelled_by", type_=String()),
                 bindparam("frequency_environment", type_=String())]
        if environment is not None:
            params["environment"] = environment
            binds.append(bindparam("environment", type_=String()))
        with self._db.connect(read_only=True) as connection:
            if postgresql:  # the period's rows and sorts stay in memory
                connection.execute(text(f"SET LOCAL work_mem = '{WORK_MEM}'"))
            row = connection.execute(statement.bindparams(*binds), params).one()
        r = row._mapping
        if postgresql:
            return PeriodTotals(
                deployments=r["deployments"], requests=r["requests"],
                succeeded=r["succeeded"], failed=r["failed"], cancelled=r["cancelled"],
                not_run=r["not_run"], in_progress=r["in_progress"],
                duration_total=r["duration_total"] or timedelta(), durations=r["durations"],
                automatic_rollbacks=r["automatic_rollbacks"],
                manual_rollbacks=r["manual_rollbacks"],
                production_successes=r["production_successes"],
                lead_time_median=_mean_of(r["lead_middles"]),
                restore_median=_mean_of(r["restore_middles"]),
                restored_incidents=r["restored_incidents"],
                open_incidents=r["open_incidents"])
        return PeriodTotals(
            deployments=int(r["deployments"]), requests=int(r["requests"]),
            succeeded=int(r["succeeded"]), failed=int(r["failed"]),
            cancelled=int(r["cancelled"]), not_run=int(r["not_run"]),
            in_progress=int(r["in_progress"]),
            duration_total=timedelta(microseconds=int(r["duration_total"])),
            durations=int(r["durations"]),
            automatic_rollbacks=int(r["automatic_rollbacks"]),
            manual_rollbacks=int(r["manual_rollbacks"]),
            production_successes=int(r["production_successes"]),
            lead_time_median=_half(r["lead_mid2"]),
            restore_median=_half(r["restore_mid2"]),
            restored_incidents=int(r["restored_incidents"]),
            open_incidents=int(r["open_incidents"]),
        )

    def history(self, environment: str | None, limit: int) -> list[HistoryEntry]:
        """The newest ``limit`` deployments (of ``environment``), newest first, each with the
        people who approved its current plan (oldest approval first): two queries."""
        statement = select(Deployment)
        if environment is not None:
            statement = statement.where(col(Deployment.environment) == environment)
        statement = statement.order_by(col(Deployment.id).desc()).limit(limit)
        with self._db.session(read_only=True) as s:
            deployments = list(s.exec(statement).all())
            ids = [d.id for d in deployments if d.id is not None]
            approvals = s.exec(
                select(Approval.deployment_id, Approval.actor, Approval.plan_hash)
                .where(col(Approval.deployment_id).in_(ids),
                       col(Approval.decision) == "approve")
                .order_by(col(Approval.id))).all() if ids else []
        approvers: dict[tuple[int, str], list[str]] = {}
        for deployment_id, actor, plan_hash in approvals:
            approvers.setdefault((deployment_id, plan_hash), []).append(actor)
        return [HistoryEntry(d, tuple(approvers.get((d.id or 0, d.plan_hash or ""), ())))
                for d in deployments]


@dataclass(frozen=True)
class HistoryEntry:
    """One line of ``/qlp history``: a deployment and who approved its plan."""

    deployment: Deployment
    approvers: tuple[str, ...]
