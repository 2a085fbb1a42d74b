"""Indexes for statistics over any period and for retention's batched deletes.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02

* ``ix_deployments_created_at``: ``/qlp stats`` over every environment reads the deployments
  requested in its period (``storage.stats_queries``); with one environment it uses the
  existing ``ix_deployments_environment_created_at``.
* ``ix_deployments_environment_id``: ``/qlp history <env> n`` reads the newest n of one
  environment by id without walking the others.
* ``ix_notifications_state_sent_at``: retention deletes sent outbox rows by ``sent_at`` in
  small batches (``storage.retention``) without scanning the whole outbox for each batch.

Only creates indexes, so no batch mode is needed on SQLite. Self-contained (no model imports).
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_deployments_created_at", "deployments", ["created_at"])
    op.create_index("ix_deployments_environment_id", "deployments", ["environment", "id"])
    op.create_index("ix_notifications_state_sent_at", "notifications", ["state", "sent_at"])


def downgrade() -> None:
    op.drop_index("ix_notifications_state_sent_at", table_name="notifications")
    op.drop_index("ix_deployments_environment_id", table_name="deployments")
    op.drop_index("ix_deployments_created_at", table_name="deployments")
