"""``stats_compare_days``: the performance baselines' p95 comparisons per day, for ``/qlp
stats``' "performance impact post-deployment" at any period (``storage.stats_compare``),
backfilled.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-03

The backfill runs ``storage.stats_compare.rebuild_compare_days`` in the migration's
transaction (one ordered read of the baselines). ``ix_performance_baselines_recorded_at``
finds a period's edge baselines of every environment. Creates a table and an index only, so no
batch mode is needed on SQLite.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | Sequence[str] | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "stats_compare_days",
        sa.Column("day", sa.Integer(), nullable=False),
        sa.Column("environment", sa.String(64), nullable=False),
        sa.Column("compared", sa.Integer(), nullable=False),
        sa.Column("ratio_sum", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("day", "environment", name="pk_stats_compare_days"),
    )
    op.create_index("ix_performance_baselines_recorded_at", "performance_baselines",
                    ["recorded_at"])
    from storage.stats_compare import rebuild_compare_days

    rebuild_compare_days(op.get_bind())


def downgrade() -> None:
    op.drop_index("ix_performance_baselines_recorded_at", table_name="performance_baselines")
    op.drop_table("stats_compare_days")
