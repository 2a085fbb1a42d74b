"""The seed's two remaining dashboard figures (Monitoring and Alerting, "Deployment Dashboard"),
computed in SQL over any period:

- **Error rate during deployments**: failed requests over all requests in the monitoring
  windows of the deployments requested in the period that have ended (every run that was
  monitored, whether it passed or was rolled back: the ``monitor`` step's ``error_count`` and
  ``request_count``).
- **Performance impact post-deployment**: how the p95 response time of each version that went
  live in the period compares with the version before it in the same environment (the recorded
  performance baselines, ``response_ms_p95``, each against the previous one; summed per day by
  ``storage.stats_compare``).

The first is summed per UTC day of request in ``stats_monitor_days`` (:class:`StatsMonitorDay`),
kept exact like ``storage.stats_summary``'s tables: :func:`refresh_monitor_days` recomputes the
days a deployment's terminal transition touches, in that transaction (``stats_summary.refresh``
calls it, under its lock). A period adds its whole days from the summary and reads its partial
edge days from the step rows. The summary outlives the step results that retention purges.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import and_, delete, func, insert, or_, select
from sqlalchemy.engine import Connection
from sqlmodel import col

from procedures.model import TERMINAL_STATES, StepState
from storage.days import EPOCH, day_of, day_start
from storage.db import Database
from storage.models import Deployment, StatsMonitorDay, StepRun
from storage.stats_compare import compared

MONITOR_STEP = "monitor"
MONITOR_DAYS = StatsMonitorDay.__table__  # type: ignore[attr-defined]


@dataclass(frozen=True)
class DeploymentImpact:
    """The two figures over a period; None where nothing was measured."""

    monitored: int
    errors: int
    requests: int
    compared: int
    mean_p95_ratio: float | None

    @property
    def error_rate(self) -> float | None:
        return self.errors / self.requests if self.requests else None


def _monitored(ranges: list[tuple[datetime, datetime]], environment: str | None,
               by_day: bool = False) -> Any:
    """Monitored terminal deployments requested in any of the [since, until) ``ranges``:
    count, errors, requests (per environment and UTC day when ``by_day``)."""
    errors = StepRun.result["error_count"].as_float()  # type: ignore[index]
    requests = StepRun.result["request_count"].as_float()  # type: ignore[index]
    figures = (func.count(), func.sum(errors), func.sum(requests))
    statement = (
        select(*figures)
        .select_from(StepRun)
        .join(Deployment, col(Deployment.id) == col(StepRun.deployment_id))
        .where(col(StepRun.name) == MONITOR_STEP,
               col(StepRun.state).in_([StepState.SUCCEEDED, StepState.FAILED]),
               col(Deployment.state).in_(sorted(TERMINAL_STATES)),
               or_(*(and_(col(Deployment.created_at) >= since,
                          col(Deployment.created_at) < until) for since, until in ranges)),
               errors.is_not(None), requests.is_not(None)))
    if environment is not None:
        statement = statement.where(col(Deployment.environment) == environment)
    if by_day:
        statement = statement.add_columns(col(Deployment.environment),
                                          col(Deployment.created_at))
        statement = statement.group_by(col(Deployment.environment),
                                       col(Deployment.created_at))
    return statement


def refresh_monitor_days(connection: Connection, keys: Iterable[tuple[str, int]]) -> None:
    """Recompute the ``stats_monitor_days`` rows of (environment, day) ``keys`` from the
    step rows, inside the caller's transaction."""
    for environment, day in sorted(set(keys)):
        connection.execute(delete(MONITOR_DAYS).where(MONITOR_DAYS.c.day == day,
                                                      MONITOR_DAYS.c.environment == environment))
        count, errors, requests = connection.execute(
            _monitored([(day_start(day), day_start(day + 1))], environment)).one()
        if count:
            connection.execute(insert(MONITOR_DAYS), [{
                "day": day, "environment": environment, "monitored": int(count),
                "errors": int(errors or 0), "requests": int(requests or 0)}])


def rebuild_monitor_days(connection: Connection) -> None:
    """Recompute every ``stats_monitor_days`` row (migration 0010's backfill; a bulk load)."""
    connection.execute(delete(MONITOR_DAYS))
    days: dict[tuple[str, int], list[int]] = {}
    for count, errors, requests, environment, created in connection.execute(
            _monitored([(EPOCH, datetime.max.replace(tzinfo=UTC))], None, by_day=True)):
        moment = created if created.tzinfo else created.replace(tzinfo=UTC)
        total = days.setdefault((environment, day_of(moment)), [0, 0, 0])
        total[0] += int(count)
        total[1] += int(errors or 0)
        total[2] += int(requests or 0)
    if days:
        connection.execute(insert(MONITOR_DAYS), [
            {"environment": env, "day": day, "monitored": m, "errors": e, "requests": r}
            for (env, day), (m, e, r) in sorted(days.items())])


class ImpactQueries:
    """Reads :class:`DeploymentImpact` for a period (optionally one environment)."""

    def __init__(self, database: Database) -> None:
        self._db = database

    def impact(self, *, since: datetime, until: datetime, environment: str | None,
               connection: Connection | None = None) -> DeploymentImpact:
        """The figures over the deployments requested in ``[since, until)``, read on
        ``connection`` (one of :meth:`storage.db.Database.report`'s) or on one of its own."""
        if connection is None:
            with self._db.report() as own:
                return self.impact(since=since, until=until, environment=environment,
                                   connection=own)
        first = day_of(since) if since == day_start(day_of(since)) else day_of(since) + 1
        last = day_of(until) - 1  # whole days [first, last]; the edges are read from the steps
        totals = [0, 0, 0]
        if first <= last:
            whole = select(func.sum(MONITOR_DAYS.c.monitored),
                           func.sum(MONITOR_DAYS.c.errors),
                           func.sum(MONITOR_DAYS.c.requests)).where(
                MONITOR_DAYS.c.day >= first, MONITOR_DAYS.c.day <= last)
            if environment is not None:
                whole = whole.where(MONITOR_DAYS.c.environment == environment)
            edges = [(since, day_start(first)), (day_start(last + 1), until)]
            rows = [connection.execute(whole).one()]
        else:
            edges = [(since, until)]
            rows = []
        edges = [(start, end) for start, end in edges if start < end]
        if edges:  # both edges in one statement
            rows.append(connection.execute(_monitored(edges, environment)).one())
        for count, errors, requests in rows:
            totals[0] += int(count or 0)
            totals[1] += int(errors or 0)
            totals[2] += int(requests or 0)
        pairs, ratios = compared(connection, whole_days=(first, last) if first <= last else None,
                                 edges=edges, environment=environment)
        return DeploymentImpact(
            monitored=totals[0], errors=totals[1], requests=totals[2], compared=pairs,
            mean_p95_ratio=ratios / pairs if pairs else None)
