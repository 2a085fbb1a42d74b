"""The Database handle: dialect settings, sessions, health, and UTC timestamps."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlmodel import select

from procedures.errors import ConfigError
from procedures.model import DeploymentState, ProcedureKind
from storage.db import Database
from storage.migrate import upgrade
from storage.models import Deployment


def _deployment(at: datetime) -> Deployment:
    return Deployment(
        kind=ProcedureKind.STANDARD, version="v1.2.3", environment="staging",
        requester="U1", state=DeploymentState.PENDING_APPROVAL, created_at=at, updated_at=at,
    )


def test_dialect_and_ping(database: Database, backend: str) -> None:
    assert database.dialect == ("sqlite" if backend == "sqlite" else "postgresql")
    assert database.ping() is True


def test_ping_is_false_when_the_database_is_unreachable(tmp_path: Path) -> None:
    down = Database("postgresql+psycopg://postgres@127.0.0.1:1/nowhere?connect_timeout=1")
    try:
        assert down.ping() is False
    finally:
        down.dispose()


def test_unsupported_urls_are_config_errors() -> None:
    with pytest.raises(ConfigError):
        Database("mysql://root@localhost/qlp")
    with pytest.raises(ConfigError):
        Database("postgresql+psycopg2://postgres@localhost/qlp")


def test_session_commits_on_success_and_rolls_back_on_error(database: Database) -> None:
    now = datetime(2026, 11, 24, 10, tzinfo=UTC)
    with database.session() as s:
        s.add(_deployment(now))
    with pytest.raises(RuntimeError), database.session() as s:
        s.add(_deployment(now))
        s.flush()
        raise RuntimeError("boom")
    with database.session(read_only=True) as s:
        assert len(s.exec(select(Deployment)).all()) == 1


def test_timestamps_come_back_aware_utc(database: Database) -> None:
    paris = timezone(timedelta(hours=1))
    written = datetime(2026, 11, 24, 11, 30, 15, 123456, tzinfo=paris)
    with database.session() as s:
        row = _deployment(written)
        s.add(row)
        s.flush()
        row_id = row.id
    with database.session(read_only=True) as s:
        read = s.get(Deployment, row_id)
        assert read is not None
        assert read.created_at.tzinfo is not None
        assert read.created_at.utcoffset() == timedelta(0)
        assert read.created_at == written
        assert read.created_at.hour == 10
        assert read.scheduled_at is None


def test_naive_datetimes_are_refused(database: Database) -> None:
    with pytest.raises(Exception, match="naive datetime"), database.session() as s:
        s.add(_deployment(datetime(2026, 11, 24, 10)))  # naive on purpose
        s.flush()


def test_sqlite_pragmas(tmp_path: Path) -> None:
    database = Database(f"sqlite:///{tmp_path / 'deep' / 'dir' / 'qlp.db'}")
    try:
        with database.connect() as connection:
            assert connection.execute(text("PRAGMA journal_mode")).scalar() == "wal"
            assert connection.execute(text("PRAGMA foreign_keys")).scalar() == 1
            assert connection.execute(text("PRAGMA busy_timeout")).scalar() == 5000
        assert (tmp_path / "deep" / "dir" / "qlp.db").exists()
    finally:
        database.dispose()


def test_foreign_keys_are_enforced(database: Database) -> None:
    from storage.models import StepRun

    with pytest.raises(Exception, match=r"(?i)foreign key"), database.session() as s:
        s.add(StepRun(deployment_id=999, position=1, name="x", state="pending"))
        s.flush()


def test_in_memory_sqlite_works_across_threads() -> None:
    from concurrent.futures import ThreadPoolExecutor

    database = Database("sqlite://")
    try:
        upgrade(database)
        now = datetime(2026, 11, 24, 10, tzinfo=UTC)
        with database.session() as s:
            s.add(_deployment(now))

        def count() -> int:
            with database.session(read_only=True) as s:
                return len(s.exec(select(Deployment)).all())

        with ThreadPoolExecutor(2) as pool:
            assert pool.submit(count).result() == 1
    finally:
        database.dispose()
