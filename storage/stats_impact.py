"""The seed's two remaining dashboard figures (Monitoring and Alerting, "Deployment Dashboard"),
computed in SQL over any period:

- **Error rate during deployments**: failed requests over all requests in the monitoring
  windows of the deployments requested in the period (every run that was monitored, whether it
  passed or was rolled back: the ``monitor`` step's ``error_count`` and ``request_count``).
- **Performance impact post-deployment**: how the p95 response time of each version that went
  live in the period compares with the version before it in the same environment (the recorded
  performance baselines, ``response_ms_p95``, each against the previous one: a window function,
  ``LAG``, on both SQLite and PostgreSQL).

Step results are kept for ``retention.step_results`` (365 days by default); a longer period
counts the monitoring windows still kept, which :class:`DeploymentImpact` says.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlmodel import col

from procedures.model import StepState
from storage.db import Database
from storage.models import Deployment, PerformanceBaseline, StepRun

MONITOR_STEP = "monitor"


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


class ImpactQueries:
    """Reads :class:`DeploymentImpact` for a period (optionally one environment)."""

    def __init__(self, database: Database) -> None:
        self._db = database

    def impact(self, *, since: datetime, until: datetime,
               environment: str | None) -> DeploymentImpact:
        errors = StepRun.result["error_count"].as_float()  # type: ignore[index]
        requests = StepRun.result["request_count"].as_float()  # type: ignore[index]
        monitored = (
            select(func.count(), func.sum(errors), func.sum(requests))
            .select_from(StepRun)
            .join(Deployment, col(Deployment.id) == col(StepRun.deployment_id))
            .where(col(StepRun.name) == MONITOR_STEP,
                   col(StepRun.state).in_([StepState.SUCCEEDED, StepState.FAILED]),
                   col(Deployment.created_at) >= since, col(Deployment.created_at) < until,
                   errors.is_not(None), requests.is_not(None))
        )
        p95 = PerformanceBaseline.metrics["response_ms_p95"].as_float()
        ordered = (
            select(col(PerformanceBaseline.recorded_at).label("recorded_at"),
                   p95.label("p95"),
                   func.lag(p95).over(
                       partition_by=col(PerformanceBaseline.environment),
                       order_by=(col(PerformanceBaseline.recorded_at),
                                 col(PerformanceBaseline.id))).label("previous"))
            .where(col(PerformanceBaseline.recorded_at) < until)
        )
        if environment is not None:
            monitored = monitored.where(col(Deployment.environment) == environment)
            ordered = ordered.where(col(PerformanceBaseline.environment) == environment)
        pairs = ordered.subquery()
        compared = select(func.count(), func.avg(pairs.c.p95 / pairs.c.previous)).where(
            pairs.c.recorded_at >= since, pairs.c.p95.is_not(None),
            pairs.c.previous > 0)
        with self._db.session(read_only=True) as s:
            count, error_sum, request_sum = s.execute(monitored).one()
            pairs_count, ratio = s.execute(compared).one()
        return DeploymentImpact(
            monitored=int(count or 0), errors=int(error_sum or 0),
            requests=int(request_sum or 0), compared=int(pairs_count or 0),
            mean_p95_ratio=float(ratio) if ratio is not None else None)
