"""Bring the bot's own schema up to date with Alembic, configured in code.

``upgrade()`` runs every migration in one transaction. On PostgreSQL that transaction first
takes an advisory lock, so two replicas starting together migrate one after the other (the
second finds the schema at head and does nothing). On SQLite the transaction starts with
``BEGIN IMMEDIATE``, which serialises concurrent upgrades the same way.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection

from storage.db import Database

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"

ADVISORY_LOCK_KEY = 0x51_4C_50_5F_4D_49_47  # "QLP_MIG": any constant shared by all replicas
"""The ``pg_advisory_xact_lock`` key held while migrating."""


def alembic_config(connection: Connection | None = None) -> Config:
    """An Alembic ``Config`` pointing at ``storage/migrations``; no ini file, no URL."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("path_separator", "os")
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def head_revision() -> str | None:
    """The newest revision the code knows about."""
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def upgrade(database: Database, revision: str = "head") -> None:
    """Migrate ``database`` to ``revision`` (default: head).

    Idempotent, and safe to call from several processes at once.
    """
    with database.engine.connect() as connection, connection.begin():
        if database.is_postgresql:
            # Transaction-scoped: released by the commit (or rollback) below, never leaked.
            connection.execute(
                text("SELECT pg_advisory_xact_lock(:key)"), {"key": ADVISORY_LOCK_KEY}
            )
        command.upgrade(alembic_config(connection), revision)


def current_revision(database: Database) -> str | None:
    """The revision the database is at, or ``None`` if it was never migrated."""
    with database.connect(read_only=True) as connection:
        if not inspect(connection).has_table("alembic_version"):
            return None
        return MigrationContext.configure(connection).get_current_revision()


def is_up_to_date(database: Database) -> bool:
    """True if the database is at the code's head revision (for ``/healthz``)."""
    return current_revision(database) == head_revision()
