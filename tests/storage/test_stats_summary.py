"""The ``/qlp stats`` summary (``storage.stats_summary``) kept by the repository's transitions.

Random lives of deployments over a few weeks, driven through ``DeploymentRepository`` with a
clock that moves (retries put back in line, cancels, rollbacks, undos that fail, terminal
revision bumps moving a finish across midnight): after them the summary tables hold exactly
what a rebuild from the deployments makes, and every period's totals equal the reference
computed in Python from the same rows. Both backends.
"""

from __future__ import annotations

import random
from datetime import timedelta
from typing import Any

import pytest
from alembic import command
from sqlalchemy import select

from procedures.clock import FixedClock
from procedures.engine import CANCELLED_BY
from procedures.model import DeploymentState as S
from procedures.model import ProcedureKind as K
from procedures.stats import period_start, totals_of
from storage.db import Database
from storage.deployments import DeploymentRepository
from storage.migrate import alembic_config
from storage.stats_queries import StatsQueries
from storage.stats_summary import (
    BLOCKS,
    DAYS,
    DEPLOYMENTS,
    FACT_COLUMNS,
    INCIDENTS,
    OUTCOME_DAYS,
    fact_of,
    rebuild,
)
from tests.storage.concurrency import run_concurrently
from tests.test_stats import NOW

ENVIRONMENTS = ("production", "staging")
# Paths through procedures.model.TRANSITIONS, each ending in a terminal state.
LIVES: tuple[tuple[S, ...], ...] = (
    (S.QUEUED, S.RUNNING, S.SUCCEEDED),
    (S.QUEUED, S.RUNNING, S.QUEUED, S.RUNNING, S.SUCCEEDED),  # a dead worker's run, retried
    (S.QUEUED, S.RUNNING, S.ROLLING_BACK, S.ROLLED_BACK),
    (S.QUEUED, S.RUNNING, S.ROLLING_BACK, S.NEEDS_ATTENTION),
    (S.QUEUED, S.RUNNING, S.FAILED),
    (S.QUEUED, S.FAILED),
    (S.QUEUED, S.CANCELLED),
    (S.REJECTED,),
    (S.EXPIRED,),
    (S.QUEUED, S.RUNNING),  # still running
    (),  # still waiting for approval
)


def _summary(database: Database) -> dict[str, list[tuple[Any, ...]]]:
    with database.connect(read_only=True) as connection:
        return {table.name: sorted(tuple(row) for row in connection.execute(select(table)))
                for table in (DAYS, BLOCKS, OUTCOME_DAYS, INCIDENTS)}


def _live_randomly(database: Database, clock: FixedClock, rng: random.Random,
                   count: int) -> None:
    repository = DeploymentRepository(database, clock)
    for _ in range(count):
        clock.advance(timedelta(minutes=rng.randrange(1, 240), microseconds=rng.randrange(10**6)))
        kind = K.ROLLBACK if rng.random() < 0.15 else rng.choice([K.STANDARD, K.HOTFIX])
        created = repository.create(kind, "v1.0.0", rng.choice(ENVIRONMENTS), "U0DEV")
        assert created.id is not None
        state = S.PENDING_APPROVAL
        cancel = rng.random() < 0.3
        for to_state in rng.choice(LIVES):
            # Whole minutes sometimes, so that outcomes finish at the same moment.
            clock.advance(timedelta(minutes=rng.randrange(1, 90)) if rng.random() < 0.3 else
                          timedelta(seconds=rng.randrange(1, 5000),
                                    microseconds=rng.randrange(10**6)))
            fields: dict[str, Any] = {}
            if to_state in (S.ROLLING_BACK, S.CANCELLED) and cancel:
                fields["error"] = f"{CANCELLED_BY}<@U0LEAD1>"
            elif to_state in (S.FAILED, S.ROLLING_BACK):
                fields["error"] = "5 of 10 health checks failed"
            assert repository.transition(created.id, [state], to_state, **fields)
            state = to_state
        if state.terminal and rng.random() < 0.1:
            # A revision bump in the terminal state: finished_at moves (maybe to another day).
            clock.advance(timedelta(hours=rng.randrange(1, 30)))
            assert repository.transition(created.id, [state], state)
        if state.terminal and rng.random() < 0.05:
            # A later correction of a counted column outside a transition.
            repository.update_fields(created.id, error=f"{CANCELLED_BY}<@U0LEAD2>")


@pytest.mark.parametrize("seed", [21, 22])
@pytest.mark.slow  # 23 s of the fast lane, measured
def test_random_transitions_keep_the_summary_equal_to_a_rebuild(database: Database,
                                                                 seed: int) -> None:
    clock = FixedClock(NOW - timedelta(days=40))
    _live_randomly(database, clock, random.Random(seed), 320)
    kept = _summary(database)
    assert kept["stats_days"] and kept["stats_outcome_days"] and kept["stats_incidents"]
    with database.connect() as connection, connection.begin():
        rebuild(connection)
    assert _summary(database) == kept

    with database.connect(read_only=True) as connection:
        facts = [fact_of(row) for row in connection.execute(select(*FACT_COLUMNS))]
    now = clock.now()
    for days in (1, 3, 10, 45):
        for environment in (None, "staging"):
            frequency = environment or "production"
            since = period_start(now, days)
            period = [f for f in facts if since <= f.requested_at <= now
                      and environment in (None, f.environment)]
            assert StatsQueries(database).totals(
                since=since, until=now, environment=environment,
                frequency_environment=frequency) == totals_of(period, frequency), (days,
                                                                                   environment)


def test_the_migration_backfills_the_summary_of_existing_deployments(
        database: Database) -> None:
    clock = FixedClock(NOW - timedelta(days=10))
    _live_randomly(database, clock, random.Random(23), 60)
    kept = _summary(database)
    with database.engine.connect() as connection, connection.begin():
        config = alembic_config(connection)
        command.downgrade(config, "0008-1")  # before the summary: its tables are dropped
        assert "stats_days" not in database.engine.dialect.get_table_names(connection)
        command.upgrade(config, "head")  # made again from the deployments (0008, 0013)
    assert _summary(database) == kept
    with database.connect(read_only=True) as connection:
        assert connection.execute(select(DEPLOYMENTS.c.id)).first() is not None


def test_concurrent_terminal_transitions_lose_no_update(database: Database) -> None:
    # Eight workers end deployments of the same environment and day at once, each in its own
    # transaction: every recomputation waits for the others' commits (PostgreSQL: the
    # advisory lock; SQLite: one writer at a time), so the summary counts all of them.
    clock = FixedClock(NOW - timedelta(hours=3))
    repository = DeploymentRepository(database, clock)
    ids = []
    for _ in range(8):
        created = repository.create(K.STANDARD, "v1.0.0", "production", "U0DEV")
        assert created.id is not None
        assert repository.transition(created.id, [S.PENDING_APPROVAL], S.QUEUED)
        assert repository.transition(created.id, [S.QUEUED], S.RUNNING)
        ids.append(created.id)
    clock.advance(timedelta(minutes=30))

    def finish(i: int) -> bool:
        return repository.transition(ids[i], [S.RUNNING],
                                     S.SUCCEEDED if i % 2 else S.ROLLED_BACK)

    assert run_concurrently(finish, 8) == [True] * 8
    kept = _summary(database)
    assert sum(row[5] for row in kept["stats_days"]) == 8  # the deployments column
    with database.connect() as connection, connection.begin():
        rebuild(connection)
    assert _summary(database) == kept
