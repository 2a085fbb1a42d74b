"""The test suite's recycled PostgreSQL databases (``tests.pg_recycle``) come back exactly as
the migrated template: no rows left, ids from 1 again, the template's own rows back; a
database whose schema or settings a test changed is dropped, not handed on."""

from __future__ import annotations

import psycopg
import pytest
from psycopg import sql

from tests.conftest import PostgresServer, _libpq_dsn

pytestmark = pytest.mark.postgres


def _rows(name: str, query: str) -> list[tuple[object, ...]]:
    with psycopg.connect(_libpq_dsn(name)) as connection:
        return list(connection.execute(query).fetchall())


def _exists(server: PostgresServer, name: str) -> bool:
    with psycopg.connect(_libpq_dsn("postgres")) as connection:
        return connection.execute("SELECT 1 FROM pg_database WHERE datname = %s",
                                  (name,)).fetchone() is not None


def test_a_given_back_database_is_the_template_again(postgres_template: str) -> None:
    server = PostgresServer()
    try:
        name = server.take_migrated(postgres_template)
        genesis = _rows(name, "SELECT * FROM audit_head")
        with psycopg.connect(_libpq_dsn(name)) as connection:
            connection.execute(
                "INSERT INTO deployments (kind, environment, requester, state, options, "
                "created_at, updated_at, revision) VALUES ('standard', 'production', 'U0DEV', "
                "'queued', '{}', now(), now(), 0)")
            connection.execute("UPDATE audit_head SET last_id = 7")
        held = psycopg.connect(_libpq_dsn(name))  # a session a test left open
        server.give_back(name)
        with pytest.raises(psycopg.OperationalError):  # ended, so it cannot write later
            held.execute("SELECT 1")
        held.close()
        again = server.take_migrated(postgres_template)
        assert again == name
        assert _rows(again, "SELECT count(*) FROM deployments") == [(0,)]
        assert _rows(again, "SELECT * FROM audit_head") == genesis
        with psycopg.connect(_libpq_dsn(again)) as connection:
            new_id = connection.execute(
                "INSERT INTO deployments (kind, environment, requester, state, options, "
                "created_at, updated_at, revision) VALUES ('standard', 'production', 'U0DEV', "
                "'queued', '{}', now(), now(), 0) RETURNING id").fetchone()
        assert new_id == (1,)

        # A schema a test changed is not handed on.
        with psycopg.connect(_libpq_dsn(again)) as connection:
            connection.execute("CREATE TABLE leftover (x int)")
        server.give_back(again)
        assert not _exists(server, again)
        # Nor a database a test made read-only.
        other = server.take_migrated(postgres_template)
        with psycopg.connect(_libpq_dsn("postgres"), autocommit=True) as admin:
            admin.execute(sql.SQL("ALTER DATABASE {} SET default_transaction_read_only = on")
                          .format(sql.Identifier(other)))
        server.give_back(other)
        assert not _exists(server, other)
    finally:
        server.close()
