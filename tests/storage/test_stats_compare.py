"""``storage.stats_compare``: the p95 comparisons of the baselines over any period, on both
backends, against a reference computed in Python from the rows (each baseline against the one
just before it in its environment, by recorded_at then id), with the summary kept by
``BaselineRepository.record`` (clock set back included) and by a rebuild."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlmodel import select

from procedures.clock import FixedClock
from storage.baselines import BaselineRepository
from storage.days import day_of, day_start
from storage.db import Database
from storage.models import PerformanceBaseline
from storage.stats_compare import COMPARE_DAYS, compared, rebuild_compare_days

START = datetime(2026, 1, 1, tzinfo=UTC)
ENVIRONMENTS = ("production", "staging")


def _record_randomly(database: Database, count: int, seed: int) -> None:
    rng = random.Random(seed)
    clock = FixedClock(START)
    baselines = BaselineRepository(database, clock)
    for _ in range(count):
        # Mostly forward, sometimes the same instant, now and then a clock set back a day.
        step = rng.choice([timedelta(hours=rng.uniform(0, 48)), timedelta(0),
                           timedelta(hours=-rng.uniform(0, 24))])
        clock.set(clock.now() + step)
        metrics: dict[str, Any] = {"response_ms_p95": round(rng.uniform(0, 400), 1)}
        if rng.random() < 0.1:
            metrics = {"error_rate": 0.0}  # no p95: neither compared nor a yardstick
        elif rng.random() < 0.05:
            metrics["response_ms_p95"] = 0  # a yardstick of 0 compares nothing
        baselines.record(rng.choice(ENVIRONMENTS), "v1", metrics)


def _reference(database: Database, since: datetime, until: datetime,
               environment: str | None) -> tuple[int, float]:
    with database.session(read_only=True) as s:
        rows = sorted(s.exec(select(PerformanceBaseline)).all(),
                      key=lambda b: (b.environment, b.recorded_at, b.id))
    count, total = 0, 0.0
    previous: dict[str, Any] = {}
    for b in rows:
        p95, before = b.metrics.get("response_ms_p95"), previous.get(b.environment)
        previous[b.environment] = p95
        if environment not in (None, b.environment) or not since <= b.recorded_at < until:
            continue
        if p95 is not None and before is not None and before > 0:
            count, total = count + 1, total + p95 / before
    return count, total


def _figures(database: Database, since: datetime, until: datetime,
             environment: str | None) -> tuple[int, float]:
    # As storage.stats_impact splits a period: whole days from the summary, edges raw.
    first = day_of(since) if since == day_start(day_of(since)) else day_of(since) + 1
    last = day_of(until) - 1
    if first <= last:
        edges = [(since, day_start(first)), (day_start(last + 1), until)]
    else:
        edges = [(since, until)]
    with database.report() as connection:
        return compared(connection, whole_days=(first, last) if first <= last else None,
                        edges=[(a, b) for a, b in edges if a < b], environment=environment)


@pytest.mark.slow  # 12 s of the fast lane, measured
def test_any_period_matches_the_reference_and_the_summary_a_rebuild(database: Database) -> None:
    _record_randomly(database, 300, seed=14)
    rng = random.Random(3)
    end = START + timedelta(days=60)  # about where 300 records end
    for _ in range(40):
        since = START + timedelta(seconds=rng.uniform(-86_400, 60 * 86_400))
        until = since + timedelta(seconds=rng.uniform(0, 40 * 86_400))
        until = min(until, end)
        environment = rng.choice([None, *ENVIRONMENTS])
        count, total = _figures(database, since, until, environment)
        expected_count, expected_total = _reference(database, since, until, environment)
        assert count == expected_count, (since, until, environment)
        assert abs(total - expected_total) < 1e-9 * max(1.0, expected_total)
    with database.connect(read_only=True) as connection:
        kept = sorted(connection.execute(COMPARE_DAYS.select()).all())
    with database.connect() as connection, connection.begin():
        rebuild_compare_days(connection)
    with database.connect(read_only=True) as connection:
        rebuilt = sorted(connection.execute(COMPARE_DAYS.select()).all())
    assert [r[:3] for r in kept] == [r[:3] for r in rebuilt]
    assert all(abs(a[3] - b[3]) < 1e-9 * max(1.0, b[3]) for a, b in zip(kept, rebuilt,
                                                                       strict=True))
    assert len(kept) > 40  # days of both environments
