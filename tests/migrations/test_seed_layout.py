"""The seed's ``schema_migrations(version)`` table, the down-script rollback and the file
header (``-- qlp: type=data app-update=/path``), against a real PostgreSQL."""

from __future__ import annotations

from datetime import timedelta

import pytest

from procedures.errors import PolicyRefusal, StepFailure
from procedures.migrations.files import MigrationDirectory
from procedures.migrations.ledger import seed_version
from procedures.migrations.runner import (
    MigrationAlreadyApplied,
    MigrationChanged,
    MigrationFailed,
    MigrationRunner,
    MigrationTimeouts,
)
from tests.migrations.conftest import MigrationsDir, query, tables

pytestmark = pytest.mark.postgres

SEED_TABLE = ("CREATE TABLE schema_migrations (version varchar(255) PRIMARY KEY, "
              "applied_at timestamp DEFAULT now())")
COLUMNS = ("SELECT column_name FROM information_schema.columns WHERE table_name = "
           "'schema_migrations' ORDER BY ordinal_position")


def _runner(url: str, **timeouts: timedelta) -> MigrationRunner:
    settings = {"lock": timedelta(seconds=2), "validate_statement": timedelta(seconds=20),
                "apply_statement": timedelta(seconds=30), **timeouts}
    return MigrationRunner(url, label="#7", timeouts=MigrationTimeouts(**settings))


def _versions(url: str) -> list[object]:
    return [row[0] for row in query(url, "SELECT version FROM schema_migrations ORDER BY 1")]


def _qlp_rows(url: str) -> list[tuple[object, ...]]:
    return query(url, "SELECT version, applied_by FROM qlp_schema_migrations ORDER BY 1")


def test_seed_version_drops_the_v_of_a_version_only() -> None:
    assert seed_version("v1.2.3") == "1.2.3"
    assert seed_version("v1.2.3-rc.1") == "1.2.3-rc.1"
    assert seed_version("2026_11_26_orders") == "2026_11_26_orders"
    assert seed_version("verify_orders") == "verify_orders"


def test_a_seed_table_is_used_as_it_is_and_the_team_rows_are_kept(
        app_db: str, migrations: MigrationsDir) -> None:
    query(app_db, SEED_TABLE)
    query(app_db, "INSERT INTO schema_migrations (version) VALUES ('1.2.1'), ('1.2.2')")
    path = migrations.write("v1.2.3", "CREATE TABLE orders (id int PRIMARY KEY);")
    directory = MigrationDirectory(migrations.root)
    runner = _runner(app_db)

    result = runner.apply(directory.load("v1.2.3"), applied_by="qlp #7 for U0DEV")
    assert not result.resumed and result.applied_at is not None
    # The seed's own check passes: SELECT version ... WHERE version = '$MIGRATION_VERSION'.
    assert query(app_db, "SELECT version FROM schema_migrations WHERE version = '1.2.3'") == [
        ("1.2.3",)]
    assert _versions(app_db) == ["1.2.1", "1.2.2", "1.2.3"]
    assert query(app_db, COLUMNS) == [("version",), ("applied_at",)]  # not altered
    assert _qlp_rows(app_db) == [("1.2.3", "qlp #7 for U0DEV")]
    assert runner.verify(directory.load("v1.2.3").up).checksum == result.checksum

    with pytest.raises(MigrationAlreadyApplied):
        runner.apply(directory.load("v1.2.3"), applied_by="qlp #8 for U0DEV")
    assert runner.apply(directory.load("v1.2.3"), applied_by="qlp #7 for U0DEV").resumed
    path.write_text("CREATE TABLE orders (id bigint PRIMARY KEY);", encoding="utf-8")
    with pytest.raises(MigrationChanged):
        runner.check_not_applied(directory.load("v1.2.3").up)


def test_a_version_the_seed_script_recorded_counts_as_applied(
        app_db: str, migrations: MigrationsDir) -> None:
    query(app_db, SEED_TABLE)
    query(app_db, "INSERT INTO schema_migrations (version) VALUES ('1.2.2')")
    migrations.write("v1.2.2", "CREATE TABLE orders (id int);")
    with pytest.raises(MigrationAlreadyApplied) as already:
        _runner(app_db).check_not_applied(MigrationDirectory(migrations.root).load("v1.2.2").up)
    assert "another tool (version 1.2.2 has no qlp record)" in already.value.message
    assert "an unknown time" in already.value.message
    assert "orders" not in tables(app_db)


def test_a_file_recording_its_own_version_is_not_recorded_twice(
        app_db: str, migrations: MigrationsDir) -> None:
    query(app_db, SEED_TABLE)
    migrations.write("v1.2.4", "CREATE TABLE refunds (id int);\n"
                               "INSERT INTO schema_migrations (version) VALUES ('1.2.4');\n")
    _runner(app_db).apply(MigrationDirectory(migrations.root).load("v1.2.4"),
                          applied_by="qlp #7")
    assert _versions(app_db) == ["1.2.4"]
    assert _qlp_rows(app_db) == [("1.2.4", "qlp #7")]


def test_a_named_migration_is_recorded_under_its_name(app_db: str,
                                                      migrations: MigrationsDir) -> None:
    query(app_db, "CREATE TABLE schema_migrations (version text PRIMARY KEY)")
    migrations.write("2026_11_26_orders", "CREATE TABLE orders (id int);")
    _runner(app_db).apply(MigrationDirectory(migrations.root).load("2026_11_26_orders"),
                          applied_by="qlp #7")
    assert _versions(app_db) == ["2026_11_26_orders"]


def test_a_seed_like_table_requiring_other_columns_is_refused(
        app_db: str, migrations: MigrationsDir) -> None:
    query(app_db, "CREATE TABLE schema_migrations (version text PRIMARY KEY, "
                  "author text NOT NULL)")
    migrations.write("v1.2.3", "SELECT 1;")
    with pytest.raises(StepFailure) as refused:
        _runner(app_db).apply(MigrationDirectory(migrations.root).load("v1.2.3"),
                              applied_by="qlp #7")
    assert "it requires author on every insert" in refused.value.message
    assert "columns found: version text, author text" in refused.value.message


@pytest.mark.parametrize("layout", ["seed", "qlp"])
def test_roll_back_runs_the_down_script_and_removes_the_record(
        app_db: str, migrations: MigrationsDir, layout: str) -> None:
    if layout == "seed":
        query(app_db, SEED_TABLE)
    migrations.write("v1.2.3", "CREATE TABLE orders (id int);")
    migrations.write("v1.2.3.down", "DROP TABLE orders;")
    directory = MigrationDirectory(migrations.root)
    runner = _runner(app_db)
    runner.apply(directory.load("v1.2.3"), applied_by="qlp #7")
    assert "orders" in tables(app_db)

    done = runner.roll_back(directory.load("v1.2.3"), applied_by="qlp #7")
    assert done == "ran v1.2.3.down.sql and removed its schema_migrations record"
    assert "orders" not in tables(app_db)
    assert runner.applied("v1.2.3") is None
    if layout == "seed":
        assert _versions(app_db) == [] and _qlp_rows(app_db) == []
    # Again (an undo re-run after a crash): the record is gone, the down script fails loudly.
    with pytest.raises(MigrationFailed, match=r"the down script v1\.2\.3\.down\.sql failed"):
        runner.roll_back(directory.load("v1.2.3"), applied_by="qlp #7")


def test_roll_back_without_a_down_script_is_refused(app_db: str,
                                                   migrations: MigrationsDir) -> None:
    migrations.write("v1.2.3", "CREATE TABLE orders (id int);")
    directory = MigrationDirectory(migrations.root)
    runner = _runner(app_db)
    runner.apply(directory.load("v1.2.3"), applied_by="qlp #7")
    with pytest.raises(MigrationFailed, match="has no down script"):
        runner.roll_back(directory.load("v1.2.3"), applied_by="qlp #7")
    assert "orders" in tables(app_db)


def test_a_data_migration_gets_the_longer_statement_timeout(app_db: str,
                                                            migrations: MigrationsDir) -> None:
    slow = "SELECT pg_sleep(1.5);\nCREATE TABLE done_{n} (id int);\n"
    migrations.write("schema_one", slow.format(n="schema"))
    migrations.write("data_one", "-- qlp: type=data\n" + slow.format(n="data"))
    directory = MigrationDirectory(migrations.root)
    runner = _runner(app_db, apply_statement=timedelta(seconds=1),
                     data_statement=timedelta(seconds=20))
    assert directory.load("data_one").up.migration_type == "data"
    with pytest.raises(MigrationFailed, match="statement timeout"):
        runner.apply(directory.load("schema_one"), applied_by="qlp #7")
    runner.apply(directory.load("data_one"), applied_by="qlp #7")
    assert "done_data" in tables(app_db) and "done_schema" not in tables(app_db)


def test_the_header_is_read_and_a_bad_one_refused(migrations: MigrationsDir) -> None:
    migrations.write("ok", "-- the orders\n-- qlp: type=performance, app-update=/admin/reload\n"
                           "CREATE INDEX i ON t (c);")
    up = MigrationDirectory(migrations.root).load("ok").up
    assert (up.migration_type, up.app_update) == ("performance", "/admin/reload")
    for text, problem in (("-- qlp: type=bulk\nSELECT 1;", "migration type `bulk` is unknown"),
                          ("-- qlp: kind=data\nSELECT 1;", "knows no key `kind`"),
                          ("-- qlp: app-update=http://evil/x\nSELECT 1;", "is not a path"),
                          ("-- qlp: app-update=/../x\nSELECT 1;", "is not a path"),
                          ("-- qlp: type\nSELECT 1;", "is not key=value")):
        migrations.write("bad", text)
        with pytest.raises(PolicyRefusal) as refused:
            MigrationDirectory(migrations.root).load("bad")
        assert problem in refused.value.message
        assert refused.value.rule == "migration-file"
