"""The bot's own schema: Alembic from empty to head on both backends."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text

from storage.db import Database
from storage.migrate import current_revision, head_revision, is_up_to_date, upgrade
from storage.models import GENESIS_HASH, metadata
from tests.conftest import _Factory
from tests.storage.concurrency import run_concurrently

TABLES = {
    "deployments", "step_runs", "approvals", "audit_events", "audit_head", "notifications",
    "environment_state", "performance_baselines", "processed_requests",
    "scheduler_leases", "apscheduler_jobs", "bot_instances",
    "home_viewers", "home_watch",  # the App Home (0009)
    "stats_days", "stats_outcome_days", "stats_incidents",  # /qlp stats summary (0008)
    "stats_monitor_days",  # /qlp stats: the monitoring windows per day (0010)
    "stats_compare_days",  # /qlp stats: the baselines' p95 comparisons per day (0012)
    "stats_day_blocks",  # /qlp stats: stats_days over 32-day blocks (0013)
}


def _tables(database: Database) -> set[str]:
    with database.connect(read_only=True) as connection:
        return set(inspect(connection).get_table_names())


def test_upgrade_from_empty_creates_exactly_the_tables(empty_database: Database) -> None:
    assert current_revision(empty_database) is None
    assert not is_up_to_date(empty_database)
    upgrade(empty_database)
    assert _tables(empty_database) == TABLES | {"alembic_version"}
    assert current_revision(empty_database) == head_revision()
    assert is_up_to_date(empty_database)


def test_upgrade_again_is_a_no_op(empty_database: Database) -> None:
    upgrade(empty_database)
    upgrade(empty_database)
    assert current_revision(empty_database) == head_revision()
    with empty_database.connect(read_only=True) as connection:
        assert connection.execute(text("SELECT count(*) FROM audit_head")).scalar() == 1
        head = connection.execute(text("SELECT last_hash FROM audit_head")).scalar()
        assert head == GENESIS_HASH


# SQLite cannot reflect expression indexes; the PostgreSQL-only one (0011) is compared there.
@pytest.mark.filterwarnings("ignore:autogenerate skipping metadata-specified expression")
def test_the_migration_matches_the_models(database: Database) -> None:
    with database.connect(read_only=True) as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        assert compare_metadata(context, metadata) == []


def test_the_lead_order_index_exists_on_postgresql_only(database: Database) -> None:
    with database.connect(read_only=True) as connection:
        names = {i["name"] for i in inspect(connection).get_indexes("deployments")}
    assert ("ix_deployments_lead_order" in names) is database.is_postgresql
    assert "ix_deployments_lead_time" in names


def test_concurrent_upgrades_from_several_processes(database_factory: _Factory) -> None:
    # Each "process" has its own engine; on PostgreSQL the advisory lock serialises them.
    url = database_factory.url(migrated=False)
    handles = [database_factory.open(url) for _ in range(4)]
    run_concurrently(lambda i: upgrade(handles[i]), 4)
    assert current_revision(handles[0]) == head_revision()
    assert _tables(handles[0]) == TABLES | {"alembic_version"}
    with handles[0].connect(read_only=True) as connection:
        assert connection.execute(text("SELECT count(*) FROM alembic_version")).scalar() == 1
