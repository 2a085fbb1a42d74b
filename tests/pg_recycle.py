"""Migrated PostgreSQL scratch databases handed from one test to the next in a test worker.

Cloning the migrated template costs about half a second a test on this kind of machine
(``CREATE DATABASE ... TEMPLATE`` writes every page of the catalog and the schema through the
WAL), and dropping it another fraction: for the ~600 PostgreSQL tests of the fast lane, most of
their time. A database a test is done with is instead emptied to the template's state and kept
for the worker's next test: its other sessions ended, every table truncated with its identity
sequences restarted, and the template's own rows (``audit_head``'s genesis row) copied back.

A database is only recycled when nothing but rows changed: a test that altered the schema
(a migration's downgrade), set a per-database setting (a read-only database) or left anything
unexpected gets its database dropped, as before.
"""

from __future__ import annotations

from collections.abc import Callable

import psycopg
from psycopg import sql

KEPT = frozenset({"alembic_version"})  # the migration head: the same in every database


def _shape(connection: psycopg.Connection) -> list[tuple[str, ...]]:
    """Every relation outside the system schemas, and the migration head."""
    rows = connection.execute(
        "SELECT n.nspname, c.relname, c.relkind::text FROM pg_class c "
        "JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname NOT LIKE 'pg\\_%' AND n.nspname <> 'information_schema' "
        "ORDER BY 1, 2").fetchall()
    head = connection.execute("SELECT version_num FROM alembic_version").fetchall()
    return [tuple(r) for r in rows] + [("alembic_version", *map(str, h)) for h in head]


def _tables(connection: psycopg.Connection) -> list[str]:
    return [r[0] for r in connection.execute(
        "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1").fetchall()
        if r[0] not in KEPT]


class RecycledDatabases:
    """A worker's migrated scratch databases (see the module docstring)."""

    def __init__(self, admin: psycopg.Connection, dsn: Callable[[str], str],
                 template: str) -> None:
        self._admin, self._dsn, self._template = admin, dsn, template
        self._free: list[str] = []
        with psycopg.connect(dsn(template)) as connection:
            self._shape = _shape(connection)
            self._seed: dict[str, bytes] = {}
            for table in _tables(connection):
                data = bytearray()
                with connection.cursor().copy(sql.SQL("COPY {} TO STDOUT").format(
                        sql.Identifier(table))) as copy:
                    for chunk in copy:
                        data += chunk
                if data:
                    self._seed[table] = bytes(data)

    def take(self, create: Callable[[], str]) -> str:
        """A database in the template's state: a recycled one, else a new clone."""
        return self._free.pop() if self._free else create()

    def give_back(self, name: str, drop: Callable[[str], None]) -> None:
        """Empty ``name`` for the next test, or ``drop`` it when more than rows changed."""
        try:
            if self._reset(name):
                self._free.append(name)
                return
        except psycopg.Error:
            pass
        drop(name)

    def names(self) -> list[str]:
        return list(self._free)

    def _reset(self, name: str) -> bool:
        settings = self._admin.execute(
            "SELECT count(*) FROM pg_db_role_setting s JOIN pg_database d "
            "ON d.oid = s.setdatabase WHERE d.datname = %s", (name,)).fetchone()
        if settings is None or settings[0]:
            return False
        self._admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid()", (name,))
        with psycopg.connect(self._dsn(name)) as connection:
            if _shape(connection) != self._shape:
                return False
            tables = _tables(connection)
            if tables:
                connection.execute(sql.SQL("TRUNCATE {} RESTART IDENTITY CASCADE").format(
                    sql.SQL(", ").join(sql.Identifier(t) for t in tables)))
            for table, data in self._seed.items():
                with connection.cursor().copy(sql.SQL("COPY {} FROM STDIN").format(
                        sql.Identifier(table))) as copy:
                    copy.write(data)
            connection.commit()
        return True
