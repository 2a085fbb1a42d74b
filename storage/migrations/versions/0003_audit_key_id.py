"""The audit chain is keyed: each event records which audit key signed it.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02

``audit_events.key_id`` names the key (never the key itself: keys live in the settings,
``QLP_AUDIT_KEY``) whose HMAC-SHA256 is the row's ``hash``. Rows written before this revision
keep ``key_id`` NULL: their ``hash`` stays the plain SHA-256 it was, and ``qlp-bot audit verify``
reports them as unkeyed legacy rows. A nullable column added at the end: no batch mode needed
on SQLite, no rewrite of the table on PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("audit_events", sa.Column("key_id", sa.String(16), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("audit_events") as batch:
        batch.drop_column("key_id")
