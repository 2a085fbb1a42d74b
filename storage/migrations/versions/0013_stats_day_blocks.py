"""``stats_day_blocks``: ``stats_days`` added up over blocks of 32 days, so ``/qlp stats``
reads a year as a dozen blocks and the days around them, backfilled.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-03

The backfill runs ``storage.stats_summary.rebuild_blocks`` in the migration's transaction
(one grouped read of ``stats_days`` per block). Creates a table only, so no batch mode is
needed on SQLite.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | Sequence[str] | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "stats_day_blocks",
        sa.Column("block", sa.Integer(), nullable=False),
        sa.Column("environment", sa.String(64), nullable=False),
        sa.Column("is_change", sa.Boolean(), nullable=False),
        sa.Column("state", sa.String(32), nullable=False),
        sa.Column("cancelled", sa.Boolean(), nullable=False),
        sa.Column("deployments", sa.Integer(), nullable=False),
        sa.Column("duration_us", sa.BigInteger(), nullable=False),
        sa.Column("durations", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("block", "environment", "is_change", "state", "cancelled",
                                name="pk_stats_day_blocks"),
    )
    from storage.stats_summary import rebuild_blocks

    rebuild_blocks(op.get_bind())


def downgrade() -> None:
    op.drop_table("stats_day_blocks")
