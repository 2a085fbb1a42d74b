"""A migrated scratch PostgreSQL database for a benchmark, made and dropped around its use."""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from typing import Any

import psycopg
from psycopg import sql
from sqlalchemy.engine import make_url

from storage.db import Database
from storage.migrate import upgrade

POSTGRES_URL = os.environ.get(
    "QLP_BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")


def admin_connection() -> psycopg.Connection[Any]:
    """An autocommit connection to the server's ``postgres`` database (raises
    ``psycopg.OperationalError`` when the server is not reachable)."""
    url = make_url(POSTGRES_URL).set(drivername="postgresql", database="postgres")
    return psycopg.connect(url.render_as_string(hide_password=False), autocommit=True,
                           connect_timeout=5)


@contextlib.contextmanager
def scratch_postgres(admin: psycopg.Connection[Any]) -> Iterator[Database]:
    """A migrated scratch database ``qlp_bench_<hex>`` (made and dropped through ``admin``)."""
    name = "qlp_bench_" + secrets.token_hex(6)
    database: Database | None = None
    try:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        database = Database(make_url(POSTGRES_URL).set(database=name))
        upgrade(database)
        yield database
    finally:
        if database is not None:
            database.dispose()
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
            sql.Identifier(name)))
