"""``/qlp stats``' "performance impact post-deployment" at any period: how the p95 response
time of each performance baseline compares with the baseline before it in the same environment
(``response_ms_p95`` of both; pairs whose previous p95 is not above 0 are left out).

A comparison belongs to the day its baseline was recorded. ``stats_compare_days``
(:class:`storage.models.StatsCompareDay`) keeps, per UTC day and environment, how many
baselines compared and the sum of their ratios, so a period adds its whole days from the
summary and reads only its partial edge days from the baselines: each of those finds its
previous baseline by one probe of ``ix_performance_baselines_environment_recorded_at``. A
window over every baseline before the period's end took 150-200 ms at 37,000 baselines a
year (``benchmarks/scale.py``).

Kept exact by recomputing, as ``storage.stats_summary`` does: :func:`refresh_compare_days`
recomputes the day of a new baseline, and the day of the baseline after it when one was
recorded later (a clock set back), in the recording's own transaction.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import and_, delete, func, insert, or_, select, text
from sqlalchemy.engine import Connection

from storage.days import day_of, day_start
from storage.models import PerformanceBaseline, StatsCompareDay

BASELINES = PerformanceBaseline.__table__  # type: ignore[attr-defined]
COMPARE_DAYS = StatsCompareDay.__table__  # type: ignore[attr-defined]
LOCK_KEY = 0x51_4C_50_5F_43_4D_50  # "QLP_CMP": the pg_advisory_xact_lock of a refresh

Figures = tuple[int, float]
"""How many baselines compared, and the sum of their ratios."""


def _p95(table: Any) -> Any:
    return table.c.metrics["response_ms_p95"].as_float()


def _pairs(ranges: list[tuple[datetime, datetime]], environment: str | None) -> Any:
    """Count and ratio sum of the baselines recorded in any of the [since, until) ``ranges``
    (of ``environment``, or of all), each against the baseline just before it."""
    earlier = BASELINES.alias("earlier")
    b = BASELINES.c
    # The baseline just before: by (recorded_at, id), as a window's order would be; the
    # redundant "<=" lets the index start at the baseline itself and step back once.
    previous = (select(_p95(earlier))
                .where(earlier.c.environment == b.environment,
                       earlier.c.recorded_at <= b.recorded_at,
                       or_(earlier.c.recorded_at < b.recorded_at, earlier.c.id < b.id))
                .order_by(earlier.c.recorded_at.desc(), earlier.c.id.desc())
                .limit(1).scalar_subquery())
    pairs = select(_p95(BASELINES).label("p95"), previous.label("previous")).where(
        or_(*(and_(b.recorded_at >= since, b.recorded_at < until) for since, until in ranges)))
    if environment is not None:
        pairs = pairs.where(b.environment == environment)
    # OFFSET 0 keeps PostgreSQL from inlining the subquery, which would run the probe for
    # "previous" twice a row (in the filter and in the sum).
    pair = pairs.offset(0).subquery()
    return select(func.count(), func.sum(pair.c.p95 / pair.c.previous)).where(
        pair.c.p95.is_not(None), pair.c.previous > 0)


def compared(connection: Connection, *, whole_days: tuple[int, int] | None,
             edges: list[tuple[datetime, datetime]], environment: str | None) -> Figures:
    """The figures of the ``whole_days`` (first, last; from the summary) and of the
    ``edges`` (from the baselines)."""
    count, total = 0, 0.0
    if whole_days is not None:
        c = COMPARE_DAYS.c
        statement = select(func.sum(c.compared), func.sum(c.ratio_sum)).where(
            c.day >= whole_days[0], c.day <= whole_days[1])
        if environment is not None:
            statement = statement.where(c.environment == environment)
        n, ratios = connection.execute(statement).one()
        count, total = int(n or 0), float(ratios or 0.0)
    if edges:
        n, ratios = connection.execute(_pairs(edges, environment)).one()
        count, total = count + int(n or 0), total + float(ratios or 0.0)
    return count, total


def refresh_compare_days(connection: Connection, baseline_id: int) -> None:
    """Recompute the summary day of the baseline ``baseline_id`` (just recorded) and of the
    one after it in its environment, inside the caller's transaction."""
    b = BASELINES.c
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": LOCK_KEY})
    row = connection.execute(select(b.environment, b.recorded_at).where(
        b.id == baseline_id)).first()
    if row is None:
        return
    environment, recorded_at = row
    following = connection.execute(
        select(b.recorded_at).where(
            b.environment == environment, b.recorded_at >= recorded_at,
            or_(b.recorded_at > recorded_at, b.id > baseline_id))
        .order_by(b.recorded_at, b.id).limit(1)).scalar()
    days = {day_of(recorded_at)} | ({day_of(following)} if following is not None else set())
    for day in sorted(days):
        connection.execute(delete(COMPARE_DAYS).where(COMPARE_DAYS.c.day == day,
                                                      COMPARE_DAYS.c.environment == environment))
        n, ratios = connection.execute(
            _pairs([(day_start(day), day_start(day + 1))], environment)).one()
        if n:
            connection.execute(insert(COMPARE_DAYS), [{
                "day": day, "environment": environment, "compared": int(n),
                "ratio_sum": float(ratios)}])


def rebuild_compare_days(connection: Connection) -> None:
    """Recompute every ``stats_compare_days`` row in one pass over the baselines (migration
    0012's backfill; a bulk load)."""
    connection.execute(delete(COMPARE_DAYS))
    p95 = _p95(BASELINES)
    b = BASELINES.c
    ordered = select(b.environment, b.recorded_at, p95.label("p95"), func.lag(p95).over(
        partition_by=b.environment, order_by=(b.recorded_at, b.id)).label("previous"))
    days: dict[tuple[str, int], list[Any]] = {}
    for environment, recorded_at, value, previous in connection.execute(ordered):
        if value is None or previous is None or previous <= 0:
            continue
        total = days.setdefault((environment, day_of(recorded_at)), [0, 0.0])
        total[0] += 1
        total[1] += value / previous
    if days:
        connection.execute(insert(COMPARE_DAYS), [
            {"environment": env, "day": day, "compared": n, "ratio_sum": ratios}
            for (env, day), (n, ratios) in sorted(days.items())])
