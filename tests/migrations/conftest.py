"""Scratch application databases for the migration tests.

``app_db`` is a new, empty PostgreSQL database ``qlp_mig_<hex>`` on the test server (created
with an autocommit psycopg connection, dropped ``WITH (FORCE)`` afterwards), given as a libpq
URL: the application's database a migration runs against. ``migrations`` is an empty
migrations directory under ``tmp_path`` with a ``write(name, sql)`` helper.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from tests.conftest import _libpq_dsn

PREFIX = "qlp_mig_"


class ScratchDatabases:
    """Creates and drops ``qlp_mig_<hex>`` databases (an autocommit admin connection)."""

    def __init__(self) -> None:
        self._admin = psycopg.connect(_libpq_dsn("postgres"), autocommit=True,
                                      connect_timeout=5)
        self._names: list[str] = []

    def create(self) -> str:
        """A new empty database; returns its libpq URL."""
        name = PREFIX + secrets.token_hex(6)
        self._admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        self._names.append(name)
        return _libpq_dsn(name)

    def close(self) -> None:
        for name in self._names:
            self._admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                sql.Identifier(name)))
        self._admin.close()


@pytest.fixture
def scratch() -> Iterator[ScratchDatabases]:
    try:
        databases = ScratchDatabases()
    except psycopg.OperationalError as exc:
        pytest.fail(f"PostgreSQL is not reachable: {exc}", pytrace=False)
    try:
        yield databases
    finally:
        databases.close()


@pytest.fixture
def app_db(scratch: ScratchDatabases) -> str:
    """The libpq URL of a new, empty application database."""
    return scratch.create()


class MigrationsDir:
    """A migrations directory for one test."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def write(self, name: str, text: str) -> Path:
        path = self.root / f"{name}.sql"
        path.write_text(text, encoding="utf-8")
        return path


@pytest.fixture
def migrations(tmp_path: Path) -> MigrationsDir:
    return MigrationsDir(tmp_path / "migrations")


def query(url: str, text: str) -> list[tuple[object, ...]]:
    """Rows of one query on ``url`` (a fresh autocommit connection)."""
    with psycopg.connect(url, autocommit=True) as conn:
        cursor = conn.execute(text)  # type: ignore[arg-type]
        return list(cursor.fetchall()) if cursor.description is not None else []


def tables(url: str) -> list[str]:
    return [str(row[0]) for row in query(
        url, "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1")]

