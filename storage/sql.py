"""Small dialect helpers shared by the repositories."""

from __future__ import annotations

from typing import Any

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.sql.dml import Insert

from storage.db import Database


def insert_ignoring_conflict(
    database: Database, model: Any, values: dict[str, Any], conflict_columns: list[str]
) -> Insert:
    """``INSERT ... ON CONFLICT (cols) DO NOTHING`` for the database's dialect.

    Insert-if-absent without a read first: concurrency-safe because the unique constraint
    decides, and a losing inserter gets no row instead of an error that would poison its
    transaction on PostgreSQL.
    """
    if database.is_postgresql:
        return (
            postgresql.insert(model).values(**values)
            .on_conflict_do_nothing(index_elements=conflict_columns)
        )
    return sqlite.insert(model).values(**values).on_conflict_do_nothing(
        index_elements=conflict_columns
    )


def upsert(
    database: Database,
    model: Any,
    values: dict[str, Any],
    conflict_columns: list[str],
    update_values: dict[str, Any],
) -> Insert:
    """``INSERT ... ON CONFLICT (cols) DO UPDATE SET ...`` for the database's dialect."""
    if database.is_postgresql:
        return postgresql.insert(model).values(**values).on_conflict_do_update(
            index_elements=conflict_columns, set_=update_values
        )
    return sqlite.insert(model).values(**values).on_conflict_do_update(
        index_elements=conflict_columns, set_=update_values
    )
