"""Outbox economy: a priority per message and the ``superseded`` state.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03

* ``notifications.priority`` (integer, 0 by default): the Slack sender serves the heads of a
  channel's ordering keys highest first (``storage.outbox.URGENT``: a card asking for approval,
  a failure or a rollback), so urgent posts do not wait behind other deployments' progress.
* ``superseded`` joins the states: a card update replaced by a newer one before it was sent is
  kept as what the bot meant to say, but not counted as said (``sent``).

SQLite cannot alter a CHECK constraint in place, so the table is rebuilt in batch mode there;
PostgreSQL drops and recreates the constraint. Self-contained (no model imports).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_STATES_BEFORE = "state IN ('pending', 'sent', 'dead')"
_STATES_AFTER = "state IN ('pending', 'sent', 'dead', 'superseded')"


def _states(condition: str) -> None:
    with op.batch_alter_table("notifications") as batch:
        batch.drop_constraint("ck_notifications_state", type_="check")
        batch.create_check_constraint("ck_notifications_state", condition)


def upgrade() -> None:
    with op.batch_alter_table("notifications") as batch:
        batch.add_column(sa.Column("priority", sa.Integer(), nullable=False,
                                   server_default="0"))
    _states(_STATES_AFTER)


def downgrade() -> None:
    op.execute("UPDATE notifications SET state = 'sent' WHERE state = 'superseded'")
    _states(_STATES_BEFORE)
    with op.batch_alter_table("notifications") as batch:
        batch.drop_column("priority")
