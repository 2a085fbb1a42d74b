"""The App Home: its viewers, its change watermark and the ``home`` outbox kind.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03

* ``home_viewers``: one row per person who opened the bot's Home tab (``storage.home_viewers``),
  with when they last opened it, when it was last published to them and the answer to their
  last click on a Home button.
* ``home_watch``: one row, the last audit event the Home publisher has seen and the window
  state it last showed; advanced compare-and-set, so one replica republishes each change.
* ``home`` joins the outbox kinds: a republish of one person's Home (``views.publish``).

SQLite cannot alter a CHECK constraint in place, so ``notifications`` is rebuilt in batch mode
there; PostgreSQL drops and recreates the constraint. Self-contained (no model imports).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | Sequence[str] | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_KINDS_BEFORE = "kind IN ('post', 'update', 'ephemeral', 'pagerduty', 'email')"
_KINDS_AFTER = "kind IN ('post', 'update', 'ephemeral', 'pagerduty', 'email', 'home')"


def _kinds(condition: str) -> None:
    with op.batch_alter_table("notifications") as batch:
        batch.drop_constraint("ck_notifications_kind", type_="check")
        batch.create_check_constraint("ck_notifications_kind", condition)


def upgrade() -> None:
    op.create_table(
        "home_viewers",
        sa.Column("user_id", sa.String(64), nullable=False),
        sa.Column("team_id", sa.String(64), nullable=True),
        sa.Column("opened_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("published_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("notice", sa.Text(), nullable=True),
        sa.Column("notice_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("user_id", name="pk_home_viewers"),
    )
    op.create_index("ix_home_viewers_opened_at", "home_viewers", ["opened_at"])
    op.create_table(
        "home_watch",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("audit_id", sa.Integer(), nullable=False),
        sa.Column("window_key", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_home_watch"),
    )
    _kinds(_KINDS_AFTER)


def downgrade() -> None:
    op.execute("DELETE FROM notifications WHERE kind = 'home'")
    _kinds(_KINDS_BEFORE)
    op.drop_table("home_watch")
    op.drop_index("ix_home_viewers_opened_at", table_name="home_viewers")
    op.drop_table("home_viewers")
