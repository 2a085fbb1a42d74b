"""Where a database records which migrations ran: its ``schema_migrations`` table.

Two layouts are accepted, told apart by their columns (:func:`read_layout`):

``qlp``
    ``schema_migrations(name text PRIMARY KEY, checksum, applied_at, applied_by)``: the table
    the bot creates when a database has none. One row per migration, holding everything.

``seed``
    The seed playbook's own ``schema_migrations(version)`` (``version`` a text/varchar column,
    usually the primary key, maybe ``applied_at`` and other columns that are nullable or have a
    default: Rails' table is the same shape). The seed's script verifies a migration with
    ``SELECT version FROM schema_migrations WHERE version = '$MIGRATION_VERSION'`` where the
    file is ``migrations/v$MIGRATION_VERSION.sql``, so a migration named ``v1.2.3`` is recorded
    as version ``1.2.3`` (:func:`seed_version`); any other name is recorded as it is. A row for
    either spelling counts as applied, and a file that inserts its own version row (as seed
    migrations may do) is not recorded twice.

    The bot never alters the team's table: what the seed's layout has no column for (checksum,
    who applied it, when) goes into a table of the bot's own, ``qlp_schema_migrations``,
    written in the same transaction as the ``version`` row. Adding columns to the team's table
    instead would change a table other tools (and the team's own migrations) write to, and a
    ``NOT NULL`` column could break their inserts. A version row with no ``qlp_schema_migrations``
    row was applied by something else (the seed's script, a person): it counts as applied, with
    its checksum unknown.

A table with neither layout (``golang-migrate``'s ``version bigint, dirty bool``, say) is
refused with the columns found and the layouts accepted; nothing is written to it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import psycopg

from procedures.errors import StepFailure

__all__ = [
    "LEDGER",
    "QLP_COLUMNS",
    "SIDE_TABLE",
    "AppliedMigration",
    "Layout",
    "forget",
    "read_applied",
    "read_layout",
    "record",
    "seed_version",
]

LEDGER = "schema_migrations"
SIDE_TABLE = "qlp_schema_migrations"
QLP_COLUMNS = ("name", "checksum", "applied_at", "applied_by")
UNKNOWN_CHECKSUM = ""
_TEXT_TYPES = ("text", "character varying", "character")

Layout = Literal["qlp", "seed"]

CREATE_QLP = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    name text PRIMARY KEY,
    checksum text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now(),
    applied_by text NOT NULL
)"""
_CREATE_SIDE = """
CREATE TABLE IF NOT EXISTS qlp_schema_migrations (
    version text PRIMARY KEY,
    checksum text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now(),
    applied_by text NOT NULL
)"""
# Every column of the table: name, type, and whether an INSERT may leave it out.
_COLUMNS = """
SELECT a.attname, format_type(a.atttypid, NULL),
       NOT a.attnotnull OR a.atthasdef OR a.attidentity <> '' OR a.attgenerated <> ''
FROM pg_attribute a
WHERE a.attrelid = to_regclass(%s) AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attnum"""


@dataclass(frozen=True)
class AppliedMigration:
    """A migration a database has recorded. ``checksum`` is empty and ``applied_at`` may be
    None when something other than the bot recorded it (a seed-layout row only)."""

    name: str
    checksum: str
    applied_at: datetime | None
    applied_by: str

    @property
    def checksum_known(self) -> bool:
        return self.checksum != UNKNOWN_CHECKSUM

    def describe(self) -> str:
        when = f"{self.applied_at:%Y-%m-%d %H:%M} UTC" if self.applied_at else "an unknown time"
        return f"{when} by {self.applied_by}"


def seed_version(name: str) -> str:
    """The ``version`` the seed records for migration ``name``: ``v1.2.3`` -> ``1.2.3``."""
    return name[1:] if re.match(r"^v[0-9]", name) else name


def _spellings(name: str) -> list[str]:
    return list(dict.fromkeys((name, seed_version(name))))


def read_layout(conn: psycopg.Connection[Any], where: str = "") -> Layout | None:
    """The layout of ``schema_migrations`` (None: no such table); StepFailure for another."""
    columns = conn.execute(_COLUMNS, (LEDGER,)).fetchall()
    if not columns:
        return None
    names = {str(row[0]) for row in columns}
    if set(QLP_COLUMNS) <= names:
        return "qlp"
    types = {str(row[0]): str(row[1]) for row in columns}
    required = sorted(str(row[0]) for row in columns if not row[2] and row[0] != "version")
    if types.get("version") in _TEXT_TYPES and not required:
        return "seed"
    found = ", ".join(f"{row[0]} {row[1]}" for row in columns)
    if "version" not in types:
        why = "it has neither a version column nor qlp's columns"
    elif types["version"] not in _TEXT_TYPES:
        why = f"its version column is {types['version']}, not text"
    else:
        why = f"it requires {', '.join(required)} on every insert"
    raise StepFailure(
        f"{LEDGER} exists{where} but has a layout qlp does not know ({why}); columns found: "
        f"{found}. Nothing was changed.",
        hint="qlp accepts the seed's schema_migrations(version text PRIMARY KEY, other "
             "columns nullable or with defaults) or its own (name, checksum, applied_at, "
             "applied_by). Another migration tool may own this table: give the application "
             "a database (or schema) where schema_migrations is one of those.")


def read_applied(conn: psycopg.Connection[Any], name: str,
                 where: str = "") -> AppliedMigration | None:
    """What ``schema_migrations`` says about ``name`` (None: not applied, or no table)."""
    layout = read_layout(conn, where)
    if layout is None:
        return None
    if layout == "qlp":
        row = conn.execute("SELECT name, checksum, applied_at, applied_by FROM "
                           "schema_migrations WHERE name = %s", (name,)).fetchone()
        if row is None:
            return None
        return AppliedMigration(str(row[0]), str(row[1]), row[2], str(row[3]))
    spellings = _spellings(name)
    row = conn.execute("SELECT version FROM schema_migrations WHERE version = ANY(%s) "
                       "ORDER BY version LIMIT 1", (spellings,)).fetchone()
    if row is None:
        return None
    version = str(row[0])
    if conn.execute("SELECT to_regclass(%s)", (SIDE_TABLE,)).fetchone() != (None,):
        side = conn.execute("SELECT checksum, applied_at, applied_by FROM "
                            "qlp_schema_migrations WHERE version = %s", (version,)).fetchone()
        if side is not None:
            return AppliedMigration(name, str(side[0]), side[1], str(side[2]))
    return AppliedMigration(name, UNKNOWN_CHECKSUM, None,
                            f"another tool (version {version} has no qlp record)")


def prepare(conn: psycopg.Connection[Any], where: str = "") -> Layout:
    """Make sure the tables exist (qlp's layout where there is none); return the layout."""
    layout = read_layout(conn, where)
    if layout is None:
        conn.execute(CREATE_QLP)
        return "qlp"
    if layout == "seed":
        conn.execute(_CREATE_SIDE)
    return layout


def record(conn: psycopg.Connection[Any], name: str, checksum: str, applied_by: str,
           layout: Layout) -> None:
    """Record ``name`` as applied (inside the caller's transaction, when it has one)."""
    if layout == "qlp":
        conn.execute("INSERT INTO schema_migrations (name, checksum, applied_by) "
                     "VALUES (%s, %s, %s)", (name, checksum, applied_by))
        return
    row = conn.execute("SELECT version FROM schema_migrations WHERE version = ANY(%s) "
                       "ORDER BY version LIMIT 1", (_spellings(name),)).fetchone()
    if row is None:  # the file did not record itself, as the seed's files may
        version = seed_version(name)
        conn.execute("INSERT INTO schema_migrations (version) VALUES (%s)", (version,))
    else:
        version = str(row[0])
    conn.execute("INSERT INTO qlp_schema_migrations (version, checksum, applied_by) "
                 "VALUES (%s, %s, %s)", (version, checksum, applied_by))


def forget(conn: psycopg.Connection[Any], name: str, applied_by: str) -> bool:
    """Remove the record of ``name`` that ``applied_by`` wrote (after its down script ran);
    whether there was one. A record written by anyone else is left alone."""
    layout = read_layout(conn)
    if layout is None:
        return False
    if layout == "qlp":
        return conn.execute("DELETE FROM schema_migrations WHERE name = %s AND applied_by = %s",
                            (name, applied_by)).rowcount > 0
    if conn.execute("SELECT to_regclass(%s)", (SIDE_TABLE,)).fetchone() == (None,):
        return False
    rows = conn.execute("DELETE FROM qlp_schema_migrations WHERE version = ANY(%s) AND "
                        "applied_by = %s RETURNING version",
                        (_spellings(name), applied_by)).fetchall()
    for (version,) in rows:
        conn.execute("DELETE FROM schema_migrations WHERE version = %s", (version,))
    return bool(rows)
