"""``stats_monitor_days``: the monitoring windows' requests per day, for ``/qlp stats``'s "error
rate during deployments" at any period (``storage.stats_impact``), backfilled.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-03

The backfill runs ``storage.stats_impact.rebuild_monitor_days`` in the migration's transaction
(one read of the monitor steps of terminal deployments). Creates a table only, so no batch mode
is needed on SQLite.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | Sequence[str] | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "stats_monitor_days",
        sa.Column("day", sa.Integer(), nullable=False),
        sa.Column("environment", sa.String(64), nullable=False),
        sa.Column("monitored", sa.Integer(), nullable=False),
        sa.Column("errors", sa.BigInteger(), nullable=False),
        sa.Column("requests", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("day", "environment", name="pk_stats_monitor_days"),
    )
    from storage.stats_impact import rebuild_monitor_days

    rebuild_monitor_days(op.get_bind())


def downgrade() -> None:
    op.drop_table("stats_monitor_days")
