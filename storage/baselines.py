"""Performance baselines (the seed's ``performance-baseline.json``, as rows)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlmodel import Session, col, select

from procedures.clock import Clock
from storage.db import Database
from storage.models import PerformanceBaseline
from storage.stats_compare import refresh_compare_days


class BaselineRepository:
    """Records the metrics of a known-good version; monitoring compares against the latest."""

    def __init__(self, database: Database, clock: Clock) -> None:
        self._db = database
        self._clock = clock

    def record(
        self,
        environment: str,
        version: str,
        metrics: Mapping[str, Any],
        *,
        session: Session | None = None,
    ) -> PerformanceBaseline:
        """Store a new baseline for ``environment`` taken now."""
        baseline = PerformanceBaseline(
            environment=environment,
            version=version,
            recorded_at=self._clock.now(),
            metrics=dict(metrics),
        )
        with self._db.using(session) as s:
            s.add(baseline)
            s.flush()
            # /qlp stats' p95 comparison, in the same transaction (storage.stats_compare)
            refresh_compare_days(s.connection(), baseline.id or 0)
            return baseline

    def latest(self, environment: str) -> PerformanceBaseline | None:
        """The newest baseline of ``environment``, if any."""
        with self._db.session(read_only=True) as s:
            return s.exec(
                select(PerformanceBaseline)
                .where(col(PerformanceBaseline.environment) == environment)
                .order_by(
                    col(PerformanceBaseline.recorded_at).desc(),
                    col(PerformanceBaseline.id).desc(),
                )
                .limit(1)
            ).first()

    def history(self, environment: str, limit: int = 10) -> list[PerformanceBaseline]:
        """The newest baselines of ``environment``, newest first."""
        with self._db.session(read_only=True) as s:
            return list(
                s.exec(
                    select(PerformanceBaseline)
                    .where(col(PerformanceBaseline.environment) == environment)
                    .order_by(
                        col(PerformanceBaseline.recorded_at).desc(),
                        col(PerformanceBaseline.id).desc(),
                    )
                    .limit(limit)
                ).all()
            )
