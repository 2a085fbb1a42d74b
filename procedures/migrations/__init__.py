"""Migrations of the application's database (PostgreSQL, through psycopg 3).

``files`` finds and checks a migration file safely, ``runner`` validates, applies and verifies
it, ``backup`` takes the ``pg_dump`` before it; ``procedures.playbooks.migration`` puts them on
the engine as durable steps.
"""

from procedures.migrations.backup import PgDump
from procedures.migrations.files import MigrationDirectory, MigrationFile, MigrationScript
from procedures.migrations.runner import (
    MigrationAlreadyApplied,
    MigrationBusy,
    MigrationChanged,
    MigrationFailed,
    MigrationInvalid,
    MigrationRunner,
    MigrationTimeouts,
)

__all__ = [
    "MigrationAlreadyApplied",
    "MigrationBusy",
    "MigrationChanged",
    "MigrationDirectory",
    "MigrationFailed",
    "MigrationFile",
    "MigrationInvalid",
    "MigrationRunner",
    "MigrationScript",
    "MigrationTimeouts",
    "PgDump",
]
