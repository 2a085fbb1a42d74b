"""The bot's initial schema.

Revision ID: 0001
Revises:
Create Date: 2026-05-10

Runs on SQLite and PostgreSQL. Only creates tables (no ALTER), so no batch mode is needed;
later revisions that alter tables must use ``op.batch_alter_table`` for SQLite.
Self-contained on purpose: a migration never imports the application's models.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

GENESIS_HASH = "0" * 64


def _json() -> sa.types.TypeEngine:
    return sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def _ts(name: str, nullable: bool = True) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "deployments",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("version", sa.String(128), nullable=True),
        sa.Column("environment", sa.String(64), nullable=False),
        sa.Column("requester", sa.String(64), nullable=False),
        sa.Column("state", sa.String(32), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("options", _json(), nullable=False),
        sa.Column("plan_hash", sa.String(128), nullable=True),
        sa.Column("channel", sa.String(64), nullable=True),
        sa.Column("card_ts", sa.String(32), nullable=True),
        _ts("created_at", nullable=False),
        _ts("updated_at", nullable=False),
        _ts("scheduled_at"),
        _ts("started_at"),
        _ts("finished_at"),
        sa.Column("current_step", sa.String(128), nullable=True),
        sa.Column("worker_id", sa.String(128), nullable=True),
        _ts("heartbeat_at"),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("request_key", sa.String(255), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_deployments"),
        sa.UniqueConstraint("request_key", name="uq_deployments_request_key"),
    )
    op.create_index("ix_deployments_state_created_at", "deployments", ["state", "created_at"])
    op.create_index(
        "ix_deployments_environment_created_at", "deployments", ["environment", "created_at"]
    )

    op.create_table(
        "step_runs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("deployment_id", sa.Integer(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("state", sa.String(32), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        _ts("started_at"),
        _ts("finished_at"),
        sa.Column("result", _json(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_step_runs"),
        sa.ForeignKeyConstraint(
            ["deployment_id"], ["deployments.id"],
            name="fk_step_runs_deployment_id_deployments", ondelete="CASCADE",
        ),
        sa.UniqueConstraint("deployment_id", "name", name="uq_step_runs_deployment_id_name"),
    )

    op.create_table(
        "approvals",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("deployment_id", sa.Integer(), nullable=False),
        sa.Column("actor", sa.String(64), nullable=False),
        sa.Column("decision", sa.String(16), nullable=False),
        sa.Column("plan_hash", sa.String(128), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        _ts("created_at", nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_approvals"),
        sa.ForeignKeyConstraint(
            ["deployment_id"], ["deployments.id"],
            name="fk_approvals_deployment_id_deployments", ondelete="CASCADE",
        ),
        sa.UniqueConstraint(
            "deployment_id", "actor", "decision", "plan_hash",
            name="uq_approvals_deployment_id_actor_decision_plan_hash",
        ),
        sa.CheckConstraint(
            "decision IN ('approve', 'reject', 'override')", name="ck_approvals_decision"
        ),
    )
    op.create_index("ix_approvals_deployment_id", "approvals", ["deployment_id"])

    op.create_table(
        "audit_events",
        sa.Column("id", sa.Integer(), nullable=False),
        _ts("at", nullable=False),
        sa.Column("actor", sa.String(64), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("deployment_id", sa.Integer(), nullable=True),
        sa.Column("environment", sa.String(64), nullable=True),
        sa.Column("detail", _json(), nullable=False),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_audit_events"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_audit_events_deployment_id", "audit_events", ["deployment_id"])

    audit_head = op.create_table(
        "audit_head",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("last_id", sa.Integer(), nullable=False),
        sa.Column("last_hash", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_audit_head"),
        sa.CheckConstraint("id = 1", name="ck_audit_head_single_row"),
    )
    op.bulk_insert(audit_head, [{"id": 1, "last_id": 0, "last_hash": GENESIS_HASH}])

    op.create_table(
        "notifications",
        sa.Column("id", sa.Integer(), nullable=False),
        _ts("created_at", nullable=False),
        sa.Column("channel", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("payload", _json(), nullable=False),
        sa.Column("deployment_id", sa.Integer(), nullable=True),
        sa.Column("thread_of", sa.Integer(), nullable=True),
        sa.Column("ordering_key", sa.String(128), nullable=False),
        sa.Column("dedup_key", sa.String(255), nullable=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        _ts("next_attempt_at", nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        _ts("sent_at"),
        sa.Column("slack_ts", sa.String(32), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_notifications"),
        sa.ForeignKeyConstraint(
            ["deployment_id"], ["deployments.id"],
            name="fk_notifications_deployment_id_deployments", ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["thread_of"], ["deployments.id"],
            name="fk_notifications_thread_of_deployments", ondelete="SET NULL",
        ),
        sa.UniqueConstraint("dedup_key", name="uq_notifications_dedup_key"),
        sa.CheckConstraint(
            "kind IN ('post', 'update', 'ephemeral', 'pagerduty', 'email')",
            name="ck_notifications_kind",
        ),
        sa.CheckConstraint("state IN ('pending', 'sent', 'dead')", name="ck_notifications_state"),
    )
    op.create_index(
        "ix_notifications_state_ordering_key_id", "notifications", ["state", "ordering_key", "id"]
    )
    op.create_index(
        "ix_notifications_state_next_attempt_at", "notifications", ["state", "next_attempt_at"]
    )

    op.create_table(
        "environment_state",
        sa.Column("environment", sa.String(64), nullable=False),
        sa.Column("live_slot", sa.String(16), nullable=True),
        sa.Column("live_version", sa.String(128), nullable=True),
        sa.Column("previous_slot", sa.String(16), nullable=True),
        sa.Column("previous_version", sa.String(128), nullable=True),
        sa.Column("lock_holder", sa.String(64), nullable=True),
        sa.Column("lock_reason", sa.Text(), nullable=True),
        _ts("locked_since"),
        sa.Column("lock_deployment_id", sa.Integer(), nullable=True),
        sa.Column("lock_owner", sa.String(128), nullable=True),
        _ts("lock_heartbeat_at"),
        _ts("updated_at", nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("environment", name="pk_environment_state"),
    )

    op.create_table(
        "performance_baselines",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("environment", sa.String(64), nullable=False),
        sa.Column("version", sa.String(128), nullable=False),
        _ts("recorded_at", nullable=False),
        sa.Column("metrics", _json(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_performance_baselines"),
    )
    op.create_index(
        "ix_performance_baselines_environment_recorded_at",
        "performance_baselines",
        ["environment", "recorded_at"],
    )

    op.create_table(
        "processed_requests",
        sa.Column("key", sa.String(255), nullable=False),
        _ts("created_at", nullable=False),
        sa.Column("outcome", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("key", name="pk_processed_requests"),
    )
    op.create_index("ix_processed_requests_created_at", "processed_requests", ["created_at"])


def downgrade() -> None:
    for table in (
        "processed_requests",
        "performance_baselines",
        "environment_state",
        "notifications",
        "audit_head",
        "audit_events",
        "approvals",
        "step_runs",
        "deployments",
    ):
        op.drop_table(table)
