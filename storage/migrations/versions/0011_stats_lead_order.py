"""``ix_deployments_lead_order``: the succeeded changes in order of lead time (PostgreSQL).

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-03

``/qlp stats`` knows how many succeeded changes a period holds before it reads their lead
times (``storage.stats_queries``), so the median is the one or two values at the middle of
this index (an ordered index-only scan that stops there) instead of a sort of the period's
values. Partial like ``ix_deployments_lead_time``; keyed by the expression
``finished_at - created_at``, with ``created_at`` and ``environment`` to filter by and
``finished_at`` included so the scan never reads the table. PostgreSQL only: SQLite cannot
subtract its stored times in an index expression, and sorts the period's values instead.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | Sequence[str] | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

LEAD_TIME_ROWS = "state = 'succeeded' AND kind <> 'rollback'"


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.create_index("ix_deployments_lead_order", "deployments",
                    [sa.text("(finished_at - created_at)"), "created_at", "environment"],
                    postgresql_include=["finished_at"],
                    postgresql_where=sa.text(LEAD_TIME_ROWS))


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.drop_index("ix_deployments_lead_order", table_name="deployments")
