"""Alembic environment for the bot's own schema.

The database comes from the caller, never from alembic.ini or the environment:

* ``storage.migrate.upgrade()`` passes an open connection in ``config.attributes["connection"]``
  (already inside a transaction that holds the migration lock);
* the CLI passes ``-x url=...`` (see alembic.ini).
"""

from __future__ import annotations

from typing import Any, Literal

from alembic import context
from alembic.autogenerate.api import AutogenContext
from sqlalchemy.engine import Connection
from sqlalchemy.types import TypeDecorator

from storage.models import metadata

config = context.config


def _cli_url() -> str:
    url = context.get_x_argument(as_dictionary=True).get("url")
    if not url:
        raise RuntimeError(
            "no database given: call storage.migrate.upgrade(database), "
            "or pass -x url=sqlite:///path to the alembic CLI"
        )
    return url


def _render_item(
    type_: str, obj: Any, autogen_context: AutogenContext
) -> str | Literal[False]:
    # Migrations must not import storage.types: render our TypeDecorators as their plain
    # column types (the Python-side conversion does not change the DDL).
    if type_ == "type" and isinstance(obj, TypeDecorator):
        impl = obj.impl_instance
        autogen_context.imports.add("import sqlalchemy as sa")
        return f"sa.{impl!r}"
    return False


def _configure(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        compare_type=True,
        render_as_batch=connection.dialect.name == "sqlite",
        render_item=_render_item,
    )


def run_migrations_offline() -> None:
    context.configure(
        url=_cli_url(),
        target_metadata=metadata,
        literal_binds=True,
        render_as_batch=True,
        render_item=_render_item,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _configure(connection)
        with context.begin_transaction():
            context.run_migrations()
        return

    from storage.db import Database  # only the CLI path needs an engine of its own

    database = Database(_cli_url())
    try:
        with database.engine.connect() as own, own.begin():
            _configure(own)
            with context.begin_transaction():
                context.run_migrations()
    finally:
        database.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
