"""Who holds an outbox message's claim: ``notifications.claimed_by``.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03

A sender claiming messages writes its worker id there (``storage.outbox.Outbox.claimant``);
every mark clears it. A replica that stops cleanly hands its claims back at once, and the
claims of a replica whose heartbeat row (``bot_instances``) is gone or stale are handed to the
others before their 60 s lease runs out. A nullable column: no batch mode needed on SQLite.
Self-contained (no model imports).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("notifications", sa.Column("claimed_by", sa.String(128), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("notifications") as batch:
        batch.drop_column("claimed_by")
