"""The migration runner and files against a real PostgreSQL (a scratch database per test)."""

from __future__ import annotations

import hashlib
import os
import stat
import threading
from datetime import timedelta
from pathlib import Path

import pytest

from procedures.errors import PolicyRefusal, StepFailure
from procedures.migrations.backup import PgDump
from procedures.migrations.files import MigrationDirectory, split_statements
from procedures.migrations.runner import (
    ADVISORY_LOCK_KEY,
    MigrationAlreadyApplied,
    MigrationBusy,
    MigrationChanged,
    MigrationFailed,
    MigrationInvalid,
    MigrationRunner,
    MigrationTimeouts,
    libpq_url,
    same_database,
)
from tests.migrations.conftest import MigrationsDir, query, tables

pytestmark = pytest.mark.postgres

CREATE_USERS = """-- the users table
CREATE TABLE users (id serial PRIMARY KEY, email text NOT NULL);
INSERT INTO users (email) VALUES ('a@example.com'), ('b@example.com');
"""


def _runner(url: str, label: str = "#1") -> MigrationRunner:
    return MigrationRunner(url, label=label, timeouts=MigrationTimeouts(
        lock=timedelta(seconds=2), validate_statement=timedelta(seconds=20),
        apply_statement=timedelta(seconds=30)))


def _recorded(url: str) -> list[tuple[object, ...]]:
    if "schema_migrations" not in tables(url):
        return []
    return query(url, "SELECT name, checksum, applied_by FROM schema_migrations ORDER BY name")


# -- applying ---------------------------------------------------------------------------------


def test_valid_file_is_validated_applied_and_recorded_with_its_checksum(
        app_db: str, migrations: MigrationsDir) -> None:
    path = migrations.write("2026_11_26_users", CREATE_USERS)
    migration = MigrationDirectory(migrations.root).load("2026_11_26_users")
    runner = _runner(app_db)

    validation = runner.validate(migration)
    assert validation.executed
    assert tables(app_db) == []  # the dry run was rolled back

    result = runner.apply(migration, applied_by="qlp #1 for U0DEV")
    checksum = hashlib.sha256(path.read_bytes()).hexdigest()
    assert result.checksum == checksum and result.transactional and not result.resumed
    assert query(app_db, "SELECT count(*) FROM users") == [(2,)]
    assert _recorded(app_db) == [("2026_11_26_users", checksum, "qlp #1 for U0DEV")]
    assert runner.verify(migration.up).checksum == checksum
    # The lock is released at the end: another runner gets it.
    assert query(app_db, f"SELECT pg_try_advisory_lock({ADVISORY_LOCK_KEY})") == [(True,)]


def test_invalid_file_is_refused_at_validation_and_the_database_is_unchanged(
        app_db: str, migrations: MigrationsDir) -> None:
    query(app_db, "CREATE TABLE kept (id int)")
    migrations.write("bad", "CREATE TABLE added (id int);\n"
                            "ALTER TABLE added ADD COLUMN note text;\n"
                            "SELECT * FROM no_such_table;\n")
    migration = MigrationDirectory(migrations.root).load("bad")
    before = tables(app_db)

    with pytest.raises(MigrationInvalid) as refused:
        _runner(app_db).validate(migration)

    message = refused.value.message
    assert 'relation "no_such_table" does not exist' in message
    assert "(line 3)" in message and "42P01" in message and "Nothing was changed" in message
    assert tables(app_db) == before == ["kept"]
    assert _recorded(app_db) == []


def test_validation_runs_with_short_lock_and_statement_timeouts(
        app_db: str, migrations: MigrationsDir) -> None:
    migrations.write("slow", "SELECT pg_sleep(5);")
    migration = MigrationDirectory(migrations.root).load("slow")
    runner = MigrationRunner(app_db, timeouts=MigrationTimeouts(
        validate_statement=timedelta(milliseconds=300)))
    with pytest.raises(MigrationInvalid, match="statement timeout"):
        runner.validate(migration)


def test_file_failing_mid_way_rolls_back_by_itself(app_db: str,
                                                   migrations: MigrationsDir) -> None:
    migrations.write("half", "CREATE TABLE first_half (id int);\n"
                             "INSERT INTO first_half VALUES (1);\n"
                             "INSERT INTO first_half VALUES (1 / 0);\n")
    migration = MigrationDirectory(migrations.root).load("half")

    with pytest.raises(MigrationFailed) as failed:
        _runner(app_db).apply(migration, applied_by="qlp #1")

    assert failed.value.rolled_back
    assert "division by zero" in failed.value.message
    assert "rolled back by itself" in failed.value.message
    assert tables(app_db) == ["schema_migrations"]  # first_half is gone
    assert _recorded(app_db) == []


def test_create_index_concurrently_runs_alone_outside_a_transaction(
        app_db: str, migrations: MigrationsDir) -> None:
    query(app_db, "CREATE TABLE users (id int, email text)")
    query(app_db, "INSERT INTO users SELECT g, 'u' || g FROM generate_series(1, 500) g")
    migrations.write("users_email_idx",
                     "-- built without blocking writes\n"
                     "CREATE INDEX CONCURRENTLY IF NOT EXISTS users_email_idx ON users (email);")
    migration = MigrationDirectory(migrations.root).load("users_email_idx")
    assert migration.up.outside_transaction == "CREATE INDEX CONCURRENTLY"
    runner = _runner(app_db)

    validation = runner.validate(migration)  # the non-concurrent form, rolled back
    assert validation.executed and "non-concurrent" in validation.note
    assert query(app_db, "SELECT count(*) FROM pg_indexes WHERE indexname = "
                         "'users_email_idx'") == [(0,)]

    result = runner.apply(migration, applied_by="qlp #2")
    assert not result.transactional  # in a transaction block PostgreSQL would have refused it
    assert query(app_db, "SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON "
                         "c.oid = i.indexrelid WHERE c.relname = 'users_email_idx'") == [(True,)]
    assert [row[0] for row in _recorded(app_db)] == ["users_email_idx"]


def test_concurrently_with_other_statements_is_refused(migrations: MigrationsDir) -> None:
    migrations.write("mixed", "ALTER TABLE users ADD COLUMN age int;\n"
                              "CREATE INDEX CONCURRENTLY users_age ON users (age);\n")
    with pytest.raises(PolicyRefusal) as refused:
        MigrationDirectory(migrations.root).load("mixed")
    assert refused.value.rule == "migration-file"
    assert "CREATE INDEX CONCURRENTLY (line 2)" in refused.value.message
    assert "only statement" in refused.value.message and "holds 2" in refused.value.message


def test_failed_concurrent_index_runs_the_down_script(app_db: str,
                                                     migrations: MigrationsDir) -> None:
    query(app_db, "CREATE TABLE users (id int, email text)")
    query(app_db, "INSERT INTO users VALUES (1, 'same'), (2, 'same')")
    migrations.write("unique_email",
                     "CREATE UNIQUE INDEX CONCURRENTLY users_email_key ON users (email);")
    migrations.write("unique_email.down",
                     "DROP INDEX CONCURRENTLY IF EXISTS users_email_key;")
    migration = MigrationDirectory(migrations.root).load("unique_email")
    runner = _runner(app_db)
    with pytest.raises(MigrationInvalid, match="could not create unique index"):
        runner.validate(migration)  # validation finds it already

    with pytest.raises(MigrationFailed) as failed:  # and if it ran anyway:
        runner.apply(migration, applied_by="qlp #3")

    assert not failed.value.rolled_back
    assert "nothing rolled it back" in failed.value.message
    assert "the down script unique_email.down.sql ran" in failed.value.message
    # The INVALID index the failed build left behind was dropped by the down script.
    assert query(app_db, "SELECT count(*) FROM pg_class WHERE relname = "
                         "'users_email_key'") == [(0,)]
    assert _recorded(app_db) == []


def test_two_concurrent_migrations_one_runs_the_other_is_told_why_not(
        app_db: str, migrations: MigrationsDir) -> None:
    migrations.write("first", "CREATE TABLE first (id int);")
    migrations.write("second", "CREATE TABLE second (id int);")
    directory = MigrationDirectory(migrations.root)
    locked, tried = threading.Event(), threading.Event()
    outcome: dict[str, object] = {}
    start = threading.Barrier(2)

    def first() -> None:
        start.wait(10)

        def hold() -> None:  # the advisory lock is held: let the other one try now
            locked.set()
            tried.wait(10)

        outcome["first"] = _runner(app_db, "#11").apply(
            directory.load("first"), applied_by="qlp #11", on_locked=hold)

    def second() -> None:
        start.wait(10)
        locked.wait(10)
        try:
            _runner(app_db, "#12").apply(directory.load("second"), applied_by="qlp #12")
        except MigrationBusy as busy:
            outcome["second"] = busy
        finally:
            tried.set()

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)

    busy = outcome["second"]
    assert isinstance(busy, MigrationBusy)
    assert busy.message.startswith("another migration is running (#11)")
    assert "nothing was changed" in busy.message
    assert tables(app_db) == ["first", "schema_migrations"]
    assert [row[0] for row in _recorded(app_db)] == ["first"]


def test_already_applied_and_changed_files_are_refused(app_db: str,
                                                       migrations: MigrationsDir) -> None:
    path = migrations.write("once", "CREATE TABLE once (id int);")
    directory = MigrationDirectory(migrations.root)
    runner = _runner(app_db)
    runner.apply(directory.load("once"), applied_by="qlp #4 for U0DEV")

    with pytest.raises(MigrationAlreadyApplied) as again:
        runner.apply(directory.load("once"), applied_by="qlp #5 for U0DEV")
    assert "once was already applied on " in again.value.message
    assert "by qlp #4 for U0DEV" in again.value.message and again.value.rule == "migration-once"
    # The same run asking again (a resume after a crash) finds its own row: done.
    resumed = runner.apply(directory.load("once"), applied_by="qlp #4 for U0DEV")
    assert resumed.resumed

    path.write_text("CREATE TABLE once (id bigint);", encoding="utf-8")
    with pytest.raises(MigrationChanged) as changed:
        runner.check_not_applied(directory.load("once").up)
    assert "once changed since it was applied on " in changed.value.message
    assert changed.value.rule == "migration-checksum"


def test_foreign_schema_migrations_table_is_reported(app_db: str,
                                                     migrations: MigrationsDir) -> None:
    # golang-migrate's table: one row holding the current version as a number.
    query(app_db, "CREATE TABLE schema_migrations (version bigint PRIMARY KEY, dirty bool)")
    migrations.write("x", "SELECT 1;")
    migration = MigrationDirectory(migrations.root).load("x")
    with pytest.raises(StepFailure) as refused:
        _runner(app_db).check_not_applied(migration.up)
    message = refused.value.message
    assert "a layout qlp does not know (its version column is bigint, not text)" in message
    assert "columns found: version bigint, dirty boolean" in message
    assert "schema_migrations(version text PRIMARY KEY" in (refused.value.hint or "")
    with pytest.raises(StepFailure, match="layout qlp does not know"):
        _runner(app_db).apply(migration, applied_by="qlp #1")
    assert query(app_db, "SELECT count(*) FROM schema_migrations") == [(0,)]
    assert "qlp_schema_migrations" not in tables(app_db)


# -- files ------------------------------------------------------------------------------------


def test_path_traversal_and_links_outside_the_directory_are_refused(
        tmp_path: Path, migrations: MigrationsDir) -> None:
    secret = tmp_path / "secret.sql"
    secret.write_text("DROP TABLE users;", encoding="utf-8")
    (migrations.root / "evil.sql").symlink_to(secret)
    directory = MigrationDirectory(migrations.root)
    for name in ("../secret", "..", "a/../../secret", "/etc/passwd", "x.down"):
        with pytest.raises(PolicyRefusal) as refused:
            directory.load(name)
        assert refused.value.rule == "migration-name", name
    with pytest.raises(PolicyRefusal) as linked:
        directory.load("evil")
    assert "resolves outside the migrations directory" in linked.value.message
    assert "evil" in directory.names()  # listed, but never read


def test_unknown_name_lists_the_nearest_available(migrations: MigrationsDir) -> None:
    for name in ("2026_11_20_add_users", "2026_11_26_add_index", "2026_11_27_backfill"):
        migrations.write(name, "SELECT 1;")
    migrations.write("2026_11_26_add_index.down", "SELECT 1;")
    with pytest.raises(PolicyRefusal) as refused:
        MigrationDirectory(migrations.root).load("2026_11_26_add_indx")
    assert refused.value.rule == "known-migrations"
    assert refused.value.hint is not None
    assert refused.value.hint.startswith("Nearest available: `2026_11_26_add_index`")
    assert "(3 in all)" in refused.value.hint  # the down script is not a migration


def test_transaction_control_in_a_file_is_refused(migrations: MigrationsDir) -> None:
    migrations.write("sneaky", "BEGIN;\nCREATE TABLE t (id int);\nCOMMIT;\n")
    with pytest.raises(PolicyRefusal, match=r"controls transactions itself \(BEGIN on line 1\)"):
        MigrationDirectory(migrations.root).load("sneaky")
    # BEGIN inside a function body is not transaction control.
    migrations.write("function", "CREATE FUNCTION f() RETURNS int AS $$ BEGIN RETURN 1; END $$ "
                                 "LANGUAGE plpgsql;\nDO $x$ BEGIN PERFORM 1; END $x$;\n")
    assert len(MigrationDirectory(migrations.root).load("function").up.statements) == 2


def test_statements_split_like_postgresql() -> None:
    text = ("-- a comment; with a semicolon\n"
            "INSERT INTO t VALUES ('it''s; fine', E'\\'; also', \"odd;name\");\n"
            "/* nested /* ; */ ; */ CREATE FUNCTION g() RETURNS int LANGUAGE sql\n"
            "BEGIN ATOMIC SELECT CASE WHEN true THEN 1 END; SELECT 2; END;\n"
            "SELECT $tag$ ; $tag$, $1;\n")
    statements = split_statements(text)
    assert [s.keywords[0] for s in statements] == ["INSERT", "CREATE", "SELECT"]
    assert [s.line for s in statements] == [2, 3, 5]
    assert statements[1].text.startswith("CREATE FUNCTION g()")
    assert statements[1].text.endswith("SELECT 2; END")


def test_down_script_is_dry_run_after_the_migration(app_db: str,
                                                    migrations: MigrationsDir) -> None:
    migrations.write("cols", "CREATE TABLE cols (id int);")
    migrations.write("cols.down", "DROP TABLE colz;")
    with pytest.raises(MigrationInvalid, match="the down script, run after it"):
        _runner(app_db).validate(MigrationDirectory(migrations.root).load("cols"))
    assert tables(app_db) == []


# -- backup -----------------------------------------------------------------------------------


def test_pg_dump_backup_is_private_and_keeps_the_password_out_of_argv(
        app_db: str, tmp_path: Path) -> None:
    query(app_db, "CREATE TABLE kept (id int)")
    target = tmp_path / "backups" / "production" / "20261201T110000Z-x.dump"
    dump = PgDump().dump(app_db, target, wait=lambda: None)
    assert dump.path == target and dump.size > 0
    assert target.read_bytes().startswith(b"PGDMP")  # the custom format
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o600

    argv, password = PgDump("/usr/bin/pg_dump").argv(
        "postgresql+psycopg://app:s3cret@db.internal:5432/app", target)
    assert password == "s3cret"
    assert not any("s3cret" in part for part in argv)
    assert argv[0] == "/usr/bin/pg_dump" and "--no-password" in argv


def test_missing_pg_dump_fails_with_a_clear_message(app_db: str, tmp_path: Path) -> None:
    target = tmp_path / "b.dump"
    with pytest.raises(StepFailure, match="pg_dump is not available at /nowhere/pg_dump"):
        PgDump("/nowhere/pg_dump").dump(app_db, target, wait=lambda: None)
    assert not target.exists()


def test_failed_pg_dump_removes_its_partial_file(tmp_path: Path) -> None:
    target = tmp_path / "b.dump"
    with pytest.raises(StepFailure, match="pg_dump failed"):
        PgDump().dump("postgresql://postgres@127.0.0.1:5432/qlp_mig_missing", target,
                      wait=lambda: None)
    assert not target.exists()


def test_urls() -> None:
    assert libpq_url("postgresql+psycopg://u@h/db") == "postgresql://u@h/db"
    assert same_database("postgresql://a:x@h:5432/app", "postgresql://b@h/app")
    assert not same_database("postgresql://h/app", "postgresql://h/app_staging")
