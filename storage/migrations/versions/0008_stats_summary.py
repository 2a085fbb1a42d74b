"""``/qlp stats`` summary tables, backfilled, and the indexes that read the rest.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03

* ``stats_days``: per UTC day of request and environment, the terminal deployments grouped by
  what counts about them (change or rollback, state, cancelled), with duration sums;
* ``stats_outcome_days`` and ``stats_incidents``: per UTC day of finishing and environment, the
  outcomes reduced to what time to restore needs, and the incidents inside the day;
* ``ix_deployments_environment_finished_at``: a finishing day's deployments, read by every
  terminal transition to recompute its day (``storage.stats_summary.refresh``);
* ``ix_deployments_lead_time``: partial (succeeded changes), covering created_at, finished_at
  and environment, so the lead time median is an index-only scan.

The backfill runs ``storage.stats_summary.rebuild`` in the migration's transaction: the
summary's rules are those of ``procedures.stats`` (one definition of every figure), which SQL
here would have to copy. It reads the deployments once (100,000 took 28 s on a busy 2-core
machine). Creates tables and indexes only, so no batch mode is needed on SQLite.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | Sequence[str] | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

LEAD_TIME_ROWS = "state = 'succeeded' AND kind <> 'rollback'"


def upgrade() -> None:
    op.create_table(
        "stats_days",
        sa.Column("day", sa.Integer(), nullable=False),
        sa.Column("environment", sa.String(64), nullable=False),
        sa.Column("is_change", sa.Boolean(), nullable=False),
        sa.Column("state", sa.String(32), nullable=False),
        sa.Column("cancelled", sa.Boolean(), nullable=False),
        sa.Column("deployments", sa.Integer(), nullable=False),
        sa.Column("duration_us", sa.BigInteger(), nullable=False),
        sa.Column("durations", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("day", "environment", "is_change", "state", "cancelled",
                                name="pk_stats_days"),
    )
    op.create_table(
        "stats_outcome_days",
        sa.Column("day", sa.Integer(), nullable=False),
        sa.Column("environment", sa.String(64), nullable=False),
        sa.Column("first_requested_us", sa.BigInteger(), nullable=False),
        sa.Column("last_requested_us", sa.BigInteger(), nullable=False),
        sa.Column("head_failure_us", sa.BigInteger(), nullable=True),
        sa.Column("first_success_us", sa.BigInteger(), nullable=True),
        sa.Column("tail_failure_us", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("day", "environment", name="pk_stats_outcome_days"),
    )
    op.create_table(
        "stats_incidents",
        sa.Column("day", sa.Integer(), nullable=False),
        sa.Column("environment", sa.String(64), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("duration_us", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("day", "environment", "position", name="pk_stats_incidents"),
    )
    op.create_index("ix_deployments_environment_finished_at", "deployments",
                    ["environment", "finished_at"])
    op.create_index("ix_deployments_lead_time", "deployments",
                    ["created_at", "finished_at", "environment"],
                    postgresql_where=sa.text(LEAD_TIME_ROWS),
                    sqlite_where=sa.text(LEAD_TIME_ROWS))
    from storage.stats_summary import rebuild  # the rules of procedures.stats, see above

    # stats_monitor_days comes with 0010, stats_day_blocks with 0013
    rebuild(op.get_bind(), monitor_days=False, blocks=False)


def downgrade() -> None:
    op.drop_index("ix_deployments_lead_time", table_name="deployments")
    op.drop_index("ix_deployments_environment_finished_at", table_name="deployments")
    op.drop_table("stats_incidents")
    op.drop_table("stats_outcome_days")
    op.drop_table("stats_days")
