"""Running bot processes and their heartbeats.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02

``bot_instances`` has one row per running bot process: its mode (``serve``, ``socket`` or
``shell``), host, pid and a heartbeat refreshed while it runs (``storage.markers``). The local
shell reads it to refuse a database a served bot uses. Only creates a table, so no batch mode
is needed on SQLite. Self-contained (no model imports).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "bot_instances",
        sa.Column("id", sa.String(128), nullable=False),
        sa.Column("mode", sa.String(16), nullable=False),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_bot_instances"),
    )


def downgrade() -> None:
    op.drop_table("bot_instances")
