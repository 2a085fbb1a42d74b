"""``/qlp stats`` and ``/qlp history``: exact over any number of deployments, fast at any period.

:meth:`StatsQueries.totals` assembles a period's :class:`procedures.stats.PeriodTotals` from

* the summary tables (:mod:`storage.stats_summary`, kept by every terminal transition) for the
  whole UTC days inside the period: the counts and duration sums of ``stats_days`` (the days
  of request strictly between the period's first and last), and time to restore from the
  ``stats_outcome_days`` segments (the days of finishing) whose outcomes were all requested in
  the period, with their ``stats_incidents``;
* the deployments themselves for the rest: the partial first and last days, the deployments
  still in progress (never in the summary), the finishing days whose outcomes were not all
  requested in the period (around its start);
* one index-only scan for the lead time median (``ix_deployments_lead_time``, a partial index
  of the succeeded changes): a median of arbitrary values cannot be added up from days, and
  this reads about 37,000 index entries for a year of 100,000 deployments, in ~15 ms.

Everything is folded by :mod:`procedures.stats` (:func:`~procedures.stats.counts_of`,
:func:`~procedures.stats.fold_segments`), whose :func:`~procedures.stats.totals_of` over
plain records is the reference the tests compare this with, on both backends: the figures are
exact to the microsecond, as before.

History reads the newest deployments by id (``ix_deployments_environment_id`` for one
environment) and their approvals in one more query, not one per line.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import BindParameter, and_, bindparam, func, or_, select, text, union_all
from sqlalchemy.engine import Connection
from sqlalchemy.types import String
from sqlmodel import col
from sqlmodel import select as sql_select

from procedures.model import TERMINAL_STATES, DeploymentState
from procedures.stats import (
    DeploymentFacts,
    FactsGroup,
    PeriodTotals,
    SegmentInMicroseconds,
    counts_of,
    fold_segments_us,
    groups_of,
    outcomes_of,
    segment_of,
)
from storage.days import day_of, day_start, to_us
from storage.db import Database
from storage.models import LEAD_TIME_ROWS, Approval, Deployment
from storage.stats_summary import (
    BLOCK_DAYS,
    BLOCKS,
    DAYS,
    DEPLOYMENTS,
    FACT_COLUMNS,
    OUTCOME_DAYS,
    fact_of,
    segment_in_us,
)
from storage.types import UTCDateTime

NOT_TERMINAL = sorted(set(DeploymentState) - TERMINAL_STATES)


def _lead_median_sql(dialect: str, *, one_environment: bool) -> str:
    """The one or two middle lead times of the period's succeeded changes (``:offset``,
    ``:limit``: their count is known from the groups already, so nothing is counted or
    sorted here). On PostgreSQL an ordered index-only scan of ``ix_deployments_lead_order``
    stops at the middle (about 18,000 entries for a year of 100,000 deployments, 4 ms where
    sorting them took 20), or, for a short period, the planner sorts the few rows
    ``ix_deployments_lead_time`` finds; SQLite sorts the period's values in microseconds."""
    where = (f"{LEAD_TIME_ROWS} AND created_at >= :since AND created_at <= :until"
             + (" AND environment = :environment" if one_environment else ""))
    if dialect == "postgresql":
        return (f"SELECT finished_at - created_at FROM deployments WHERE {where} "  # noqa: S608
                "ORDER BY finished_at - created_at LIMIT :limit OFFSET :offset")
    # SQLAlchemy stores 'YYYY-MM-DD HH:MM:SS.ffffff' (UTC) on SQLite. The seconds are read
    # without the fraction: SQLite rounds a parsed time to milliseconds.
    def us(column: str) -> str:
        return (f"(CAST(strftime('%s', substr({column}, 1, 19)) AS INTEGER) * 1000000"
                f" + CAST(substr({column}, 21, 6) AS INTEGER))")
    return (f"SELECT {us('finished_at')} - {us('created_at')} AS v "  # noqa: S608 (constant)
            f"FROM deployments WHERE {where} ORDER BY v LIMIT :limit OFFSET :offset")


def _restore_median_sql(dialect: str, *, one_environment: bool) -> str:
    """Count and two middle values (PostgreSQL: as an array; SQLite: their sum) of the
    incidents inside the period's whole finishing days and of ``:extra``."""
    where = ("o.day >= :first_day AND o.first_requested_us >= :since_us"
             " AND o.last_requested_us <= :until_us"
             + (" AND o.environment = :environment" if one_environment else ""))
    inside = ("SELECT i.duration_us AS v FROM stats_incidents AS i "  # noqa: S608 (constant)
              "JOIN stats_outcome_days AS o"
              f" ON o.day = i.day AND o.environment = i.environment WHERE {where}")
    if dialect == "postgresql":
        return (f"WITH src AS ({inside} UNION ALL "  # noqa: S608 (constant SQL)
                "SELECT unnest(CAST(:extra AS BIGINT[]))) "
                "SELECT count(*), percentile_disc(ARRAY[0.5, 0.5000000001]) WITHIN GROUP "
                "(ORDER BY v) FROM src")
    return (f"WITH src AS ({inside} UNION ALL "  # noqa: S608 (constant SQL)
            "SELECT value FROM json_each(:extra)), "
            "r AS (SELECT v, row_number() OVER (ORDER BY v) AS rn, count(*) OVER () AS n "
            "FROM src) "
            "SELECT (SELECT count(*) FROM src), "
            "(SELECT min(v) + max(v) FROM r WHERE rn IN ((n + 1) / 2, n / 2 + 1))")


class StatsQueries:
    """Reads for ``/qlp stats`` and ``/qlp history``, each in one read-only transaction."""

    def __init__(self, database: Database) -> None:
        self._db = database

    def totals(self, *, since: datetime, until: datetime, environment: str | None,
               frequency_environment: str,
               connection: Connection | None = None) -> PeriodTotals:
        """The totals over the deployments requested in ``[since, until]`` (of
        ``environment``, or of all), exact whatever their number; read on ``connection``
        (one of :meth:`storage.db.Database.report`'s) or on a report connection of its own."""
        if connection is None:
            with self._db.report() as own:
                return self.totals(since=since, until=until, environment=environment,
                                   frequency_environment=frequency_environment,
                                   connection=own)
        period = _Period(connection, since, until, environment)
        counts = counts_of(period.groups(), frequency_environment)
        around, still_open = fold_segments_us(period.segments().values())
        restore, restored = period.restore_median(self._db.dialect, around)
        # The lead times are those of the succeeded changes counted above (one snapshot).
        lead = period.lead_median(self._db.dialect, counts.succeeded)
        return replace(counts, lead_time_median=lead, restore_median=restore,
                       restored_incidents=restored, open_incidents=still_open)

    def history(self, environment: str | None, limit: int) -> list[HistoryEntry]:
        """The newest ``limit`` deployments (of ``environment``), newest first, each with the
        people who approved its current plan (oldest approval first): two queries."""
        statement = sql_select(Deployment)
        if environment is not None:
            statement = statement.where(col(Deployment.environment) == environment)
        statement = statement.order_by(col(Deployment.id).desc()).limit(limit)
        with self._db.session(read_only=True) as s:
            deployments = list(s.exec(statement).all())
            ids = [d.id for d in deployments if d.id is not None]
            approvals = s.exec(
                sql_select(Approval.deployment_id, Approval.actor, Approval.plan_hash)
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


class _Period:
    """The reads of one ``/qlp stats`` period, on one connection."""

    def __init__(self, connection: Connection, since: datetime, until: datetime,
                 environment: str | None) -> None:
        self.c = connection
        self.since, self.until, self.environment = since, until, environment
        # Whole days of request: strictly after the first day and before the last.
        self.first_day, self.last_day = day_of(since), day_of(until)
        # What groups() read from the deployments, and the finishing days whose outcomes
        # requested in the period are all among them: every day when it read the whole
        # period; else the first day (finished on it and requested since ``since``, on it).
        self._read: list[DeploymentFacts] = []
        self._read_covers: set[int] | None = set()

    def _env(self, table: Any) -> Any:
        return True if self.environment is None else table.c.environment == self.environment

    def groups(self) -> list[FactsGroup]:
        """The period's deployments grouped: whole days from ``stats_days``, the rest (edge
        days, in-progress deployments of the whole days) from the deployments."""
        d = DEPLOYMENTS.c
        in_period = (d.created_at >= self.since, d.created_at <= self.until,
                     self._env(DEPLOYMENTS))
        if self.last_day - self.first_day < 2:  # no whole day between: read it all
            raw = [select(*FACT_COLUMNS).where(*in_period)]
            summary: list[FactsGroup] = []
        else:
            inner_start, inner_end = day_start(self.first_day + 1), day_start(self.last_day)
            raw = [select(*FACT_COLUMNS).where(*in_period, d.created_at < inner_start),
                   select(*FACT_COLUMNS).where(*in_period, d.created_at >= inner_end),
                   select(*FACT_COLUMNS).where(d.state.in_(NOT_TERMINAL),
                                               d.created_at >= inner_start,
                                               d.created_at < inner_end,
                                               self._env(DEPLOYMENTS))]
            rows = self.c.execute(self._whole_days(self.first_day + 1, self.last_day - 1))
            summary = [FactsGroup(environment=e, is_change=bool(ch), state=DeploymentState(st),
                                  cancelled=bool(cx), deployments=int(n),
                                  duration_total=timedelta(microseconds=int(us)),
                                  durations=int(k))
                       for e, ch, st, cx, n, us, k in rows]
        facts = [fact_of(row) for row in self.c.execute(union_all(*raw)).fetchall()]
        self._read = facts
        self._read_covers = None if not summary else {self.first_day}
        return summary + groups_of(facts)

    def _whole_days(self, first: int, last: int) -> Any:
        """The summed groups of the request days [first, last]: the 32-day blocks inside it
        from ``stats_day_blocks``, the days around them from ``stats_days`` (a year: about a
        dozen blocks and up to 62 days instead of 365 days)."""
        columns = ("environment", "is_change", "state", "cancelled", "deployments",
                   "duration_us", "durations")
        first_block = -(-first // BLOCK_DAYS)  # the first block starting on or after first
        end_block = (last + 1) // BLOCK_DAYS  # blocks before it end on or before last
        parts = []
        if first_block < end_block:
            parts.append(select(*(BLOCKS.c[c] for c in columns)).where(
                BLOCKS.c.block >= first_block, BLOCKS.c.block < end_block,
                self._env(BLOCKS)))
            day_ranges = [(first, first_block * BLOCK_DAYS - 1),
                          (end_block * BLOCK_DAYS, last)]
        else:
            day_ranges = [(first, last)]
        parts += [select(*(DAYS.c[c] for c in columns)).where(
            DAYS.c.day >= start, DAYS.c.day <= end, self._env(DAYS))
            for start, end in day_ranges if start <= end]
        whole = union_all(*parts).subquery() if len(parts) > 1 else parts[0].subquery()
        return (select(whole.c.environment, whole.c.is_change, whole.c.state,
                       whole.c.cancelled, func.sum(whole.c.deployments),
                       func.sum(whole.c.duration_us), func.sum(whole.c.durations))
                .group_by(whole.c.environment, whole.c.is_change, whole.c.state,
                          whole.c.cancelled))

    def segments(self) -> dict[str, list[SegmentInMicroseconds]]:
        """Each environment's outcome segments, one per finishing day, in order: from the
        summary when every outcome of the day was requested in the period, else from the
        deployments of that day requested in it."""
        o = OUTCOME_DAYS.c
        since_us, until_us = to_us(self.since), to_us(self.until)
        # Outcomes finish after their request, so no day before the period's first counts.
        rows = self.c.execute(
            select(o.environment, o.day, o.first_requested_us, o.last_requested_us,
                   o.head_failure_us, o.first_success_us, o.tail_failure_us)
            .where(o.day >= self.first_day, o.first_requested_us <= until_us,
                   self._env(OUTCOME_DAYS))
            .order_by(o.environment, o.day)).fetchall()
        # The incidents inside the whole days need not be in order, nor be folded: they are
        # read apart (restore_median) as plain numbers.
        others = self._segments_from_deployments(
            [(r[0], r[1]) for r in rows if not (r[2] >= since_us and r[3] <= until_us)])
        segments: dict[str, list[SegmentInMicroseconds]] = {}
        for environment, day, first, last, head, success, tail in rows:
            segment = (SegmentInMicroseconds(head, success, (), tail)
                       if first >= since_us and last <= until_us else others[environment, day])
            segments.setdefault(environment, []).append(segment)
        return segments

    def restore_median(self, dialect: str,
                       around: list[int]) -> tuple[timedelta | None, int]:
        """The median and number of the period's closed incidents: those inside the whole
        finishing days (``stats_incidents`` of the days :meth:`segments` took from the
        summary) and ``around`` them (folded in Python, in microseconds), in one statement."""
        extra = around
        params: dict[str, Any] = {"first_day": self.first_day, "since_us": to_us(self.since),
                                  "until_us": to_us(self.until),
                                  "extra": extra if dialect == "postgresql"
                                  else json.dumps(extra)}
        if self.environment is not None:
            params["environment"] = self.environment
        row = self.c.execute(text(_restore_median_sql(
            dialect, one_environment=self.environment is not None)), params).one()
        count, middles = int(row[0]), row[1]
        if dialect == "postgresql":
            middles = None if not middles or middles[0] is None else middles[0] + middles[1]
        return (None if middles is None else timedelta(microseconds=int(middles)) / 2), count

    def _segments_from_deployments(
            self, days: list[tuple[str, int]]
    ) -> dict[tuple[str, int], SegmentInMicroseconds]:
        """The segments of these finishing days over the deployments requested in the
        period: from what :meth:`groups` read where that covers the day, else in one query
        (the days are few: around the period's edges)."""
        covers = self._read_covers
        missing = [(e, day) for e, day in days if covers is not None and day not in covers]
        queried: list[DeploymentFacts] = []
        if missing:
            d = DEPLOYMENTS.c
            queried = [fact_of(row) for row in self.c.execute(
                select(*FACT_COLUMNS).where(
                    or_(*(and_(d.environment == environment, d.finished_at >= day_start(day),
                               d.finished_at < day_start(day + 1))
                          for environment, day in missing)),
                    d.created_at >= self.since, d.created_at <= self.until)).fetchall()]
        segments = {}
        for environment, day in days:
            source = queried if (environment, day) in missing else self._read
            segments[environment, day] = segment_in_us(segment_of(outcomes_of(
                [f for f in source if f.finished_at is not None
                 and day_of(f.finished_at) == day], environment)))
        return segments

    def lead_median(self, dialect: str, succeeded: int) -> timedelta | None:
        """The median lead time of the ``succeeded`` changes requested in the period."""
        if not succeeded:
            return None
        params: dict[str, Any] = {"since": self.since, "until": self.until,
                                  "offset": (succeeded - 1) // 2, "limit": 2 - succeeded % 2}
        binds: list[BindParameter[Any]] = [bindparam("since", type_=UTCDateTime()),
                                           bindparam("until", type_=UTCDateTime())]
        if self.environment is not None:
            params["environment"] = self.environment
            binds.append(bindparam("environment", type_=String()))
        statement = text(_lead_median_sql(dialect, one_environment=self.environment
                                          is not None)).bindparams(*binds)
        middle = self.c.execute(statement, params).scalars().all()
        if not middle:  # cannot happen in one snapshot; no figure rather than a wrong one
            return None
        if dialect == "postgresql":
            return sum(middle, timedelta()) / len(middle)
        return timedelta(microseconds=sum(middle)) / len(middle)
