"""The scheduler: its lease, and APScheduler's job store table.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26

``scheduler_leases`` says which bot process runs timed work (``storage.leases``).
``apscheduler_jobs`` is exactly the table ``apscheduler.jobstores.sqlalchemy`` (APScheduler
3.x) creates for itself; creating it here keeps the whole schema in Alembic (APScheduler's own
``CREATE TABLE IF NOT EXISTS`` at start then finds it and does nothing). Only creates tables,
so no batch mode is needed on SQLite. Self-contained: imports neither models nor APScheduler.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _ts(name: str) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=False)


def upgrade() -> None:
    op.create_table(
        "scheduler_leases",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("holder", sa.String(128), nullable=False),
        sa.Column("term", sa.Integer(), nullable=False),
        _ts("acquired_at"),
        _ts("renewed_at"),
        _ts("expires_at"),
        sa.PrimaryKeyConstraint("name", name="pk_scheduler_leases"),
    )

    # apscheduler/jobstores/sqlalchemy.py: id Unicode(191) primary key, next_run_time
    # Float(25) indexed, job_state LargeBinary not null.
    op.create_table(
        "apscheduler_jobs",
        sa.Column("id", sa.Unicode(191), nullable=False),
        sa.Column("next_run_time", sa.Float(25), nullable=True),
        sa.Column("job_state", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_apscheduler_jobs"),
    )
    op.create_index(
        "ix_apscheduler_jobs_next_run_time", "apscheduler_jobs", ["next_run_time"]
    )


def downgrade() -> None:
    op.drop_index("ix_apscheduler_jobs_next_run_time", table_name="apscheduler_jobs")
    op.drop_table("apscheduler_jobs")
    op.drop_table("scheduler_leases")
