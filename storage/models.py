"""The bot's tables, as SQLModel classes.

Timestamps are aware UTC on both backends (:class:`storage.types.UTCDateTime`); states are the
enums of :mod:`procedures.model`, stored as their string values. The migration in
``storage/migrations/versions`` creates exactly these tables; a test compares the two.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    Float,
    Index,
    Integer,
    LargeBinary,
    Table,
    Text,
    Unicode,
    UniqueConstraint,
    text,
)
from sqlmodel import Field, SQLModel

from procedures.model import DeploymentState, ProcedureKind, Slot, StepState
from storage.types import JSONDocument, StrEnumType, UTCDateTime

# Deterministic constraint and index names, so migrations can refer to them on both backends.
SQLModel.metadata.naming_convention = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

GENESIS_HASH = "0" * 64
"""``prev_hash`` of the first audit event."""

NOTIFICATION_KINDS = ("post", "update", "ephemeral", "pagerduty", "email", "home")
NOTIFICATION_STATES = ("pending", "sent", "dead", "superseded")
APPROVAL_DECISIONS = ("approve", "reject", "override")


def _in(column: str, values: tuple[str, ...]) -> str:
    # Only ever called with the constants above, never with user input.
    quoted = ", ".join(f"'{v}'" for v in values)
    return f"{column} IN ({quoted})"


LEAD_TIME_ROWS = "state = 'succeeded' AND kind <> 'rollback'"
"""The deployments whose lead time ``/qlp stats`` takes the median of: succeeded changes."""


class Deployment(SQLModel, table=True):
    """One requested run of a procedure; ``id`` is the ``#id`` people see in Slack."""

    __tablename__ = "deployments"
    __table_args__ = (
        Index("ix_deployments_state_created_at", "state", "created_at"),
        Index("ix_deployments_environment_created_at", "environment", "created_at"),
        Index("ix_deployments_created_at", "created_at"),  # /qlp stats (migration 0004)
        Index("ix_deployments_environment_id", "environment", "id"),  # /qlp history <env>
        # /qlp stats: a finishing day's outcomes (storage.stats_summary, migration 0008)
        Index("ix_deployments_environment_finished_at", "environment", "finished_at"),
        # /qlp stats' lead time median: an index-only scan of the succeeded changes
        Index("ix_deployments_lead_time", "created_at", "finished_at", "environment",
              postgresql_where=text(LEAD_TIME_ROWS), sqlite_where=text(LEAD_TIME_ROWS)),
        # ... and its middle values without a sort, on PostgreSQL (migration 0011)
        Index("ix_deployments_lead_order", text("(finished_at - created_at)"), "created_at",
              "environment", postgresql_include=["finished_at"],
              postgresql_where=text(LEAD_TIME_ROWS)).ddl_if(dialect="postgresql"),
    )

    id: int | None = Field(default=None, primary_key=True)
    kind: ProcedureKind = Field(sa_type=StrEnumType(ProcedureKind), nullable=False)
    version: str | None = Field(default=None, max_length=128)
    environment: str = Field(max_length=64)
    requester: str = Field(max_length=64)
    state: DeploymentState = Field(sa_type=StrEnumType(DeploymentState), nullable=False)
    reason: str | None = Field(default=None, sa_type=Text)
    options: dict[str, Any] = Field(default_factory=dict, sa_type=JSONDocument, nullable=False)
    plan_hash: str | None = Field(default=None, max_length=128)
    channel: str | None = Field(default=None, max_length=64)
    card_ts: str | None = Field(default=None, max_length=32)
    created_at: datetime = Field(sa_type=UTCDateTime, nullable=False)
    updated_at: datetime = Field(sa_type=UTCDateTime, nullable=False)
    scheduled_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    started_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    finished_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    current_step: str | None = Field(default=None, max_length=128)
    worker_id: str | None = Field(default=None, max_length=128)
    heartbeat_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    revision: int = Field(default=0, nullable=False)
    request_key: str | None = Field(default=None, max_length=255, unique=True)
    error: str | None = Field(default=None, sa_type=Text)


class StepRun(SQLModel, table=True):
    """The persisted state of one step of one deployment (written before the step acts)."""

    __tablename__ = "step_runs"
    __table_args__ = (UniqueConstraint("deployment_id", "name"),)

    id: int | None = Field(default=None, primary_key=True)
    deployment_id: int = Field(foreign_key="deployments.id", ondelete="CASCADE", nullable=False)
    position: int = Field(nullable=False)
    name: str = Field(max_length=128)
    state: StepState = Field(sa_type=StrEnumType(StepState), nullable=False)
    attempts: int = Field(default=0, nullable=False)
    started_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    finished_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    result: dict[str, Any] | None = Field(default=None, sa_type=JSONDocument)
    error: str | None = Field(default=None, sa_type=Text)


class Approval(SQLModel, table=True):
    """One person's decision on one plan of one deployment."""

    __tablename__ = "approvals"
    __table_args__ = (
        UniqueConstraint("deployment_id", "actor", "decision", "plan_hash"),
        CheckConstraint(_in("decision", APPROVAL_DECISIONS), name="decision"),
    )

    id: int | None = Field(default=None, primary_key=True)
    deployment_id: int = Field(
        foreign_key="deployments.id", ondelete="CASCADE", nullable=False, index=True
    )
    actor: str = Field(max_length=64)
    decision: str = Field(max_length=16)
    plan_hash: str = Field(default="", max_length=128)
    reason: str | None = Field(default=None, sa_type=Text)
    created_at: datetime = Field(sa_type=UTCDateTime, nullable=False)


class AuditEvent(SQLModel, table=True):
    """One link of the append-only, hash-chained audit log.

    ``id`` is assigned under the :class:`AuditHead` lock, so ids are contiguous and a gap
    means a deleted row.
    """

    __tablename__ = "audit_events"
    __table_args__ = ({"sqlite_autoincrement": True},)

    id: int | None = Field(default=None, primary_key=True)
    at: datetime = Field(sa_type=UTCDateTime, nullable=False)
    actor: str = Field(max_length=64)
    action: str = Field(max_length=64)
    deployment_id: int | None = Field(default=None, index=True)
    environment: str | None = Field(default=None, max_length=64)
    detail: dict[str, Any] = Field(default_factory=dict, sa_type=JSONDocument, nullable=False)
    prev_hash: str = Field(max_length=64)
    hash: str = Field(max_length=64)
    # The audit key whose HMAC-SHA256 ``hash`` is (storage.audit); NULL: a plain SHA-256 row
    # written before the chain was keyed.
    key_id: str | None = Field(default=None, max_length=16)


class AuditHead(SQLModel, table=True):
    """The single row (``id = 1``) that points at the last audit event; appends lock it."""

    __tablename__ = "audit_head"
    __table_args__ = (CheckConstraint("id = 1", name="single_row"),)

    id: int | None = Field(
        default=None, primary_key=True, sa_column_kwargs={"autoincrement": False}
    )
    last_id: int = Field(default=0, nullable=False)
    last_hash: str = Field(default=GENESIS_HASH, max_length=64)


class Notification(SQLModel, table=True):
    """One message in the outbox; a sender delivers them and records the outcome."""

    __tablename__ = "notifications"
    __table_args__ = (
        Index("ix_notifications_state_ordering_key_id", "state", "ordering_key", "id"),
        Index("ix_notifications_state_next_attempt_at", "state", "next_attempt_at"),
        Index("ix_notifications_state_sent_at", "state", "sent_at"),  # retention (0004)
        CheckConstraint(_in("kind", NOTIFICATION_KINDS), name="kind"),
        CheckConstraint(_in("state", NOTIFICATION_STATES), name="state"),
    )

    id: int | None = Field(default=None, primary_key=True)
    created_at: datetime = Field(sa_type=UTCDateTime, nullable=False)
    channel: str = Field(max_length=64)
    kind: str = Field(max_length=16)
    payload: dict[str, Any] = Field(default_factory=dict, sa_type=JSONDocument, nullable=False)
    deployment_id: int | None = Field(
        default=None, foreign_key="deployments.id", ondelete="SET NULL", nullable=True
    )
    thread_of: int | None = Field(
        default=None, foreign_key="deployments.id", ondelete="SET NULL", nullable=True
    )
    ordering_key: str = Field(max_length=128)
    dedup_key: str | None = Field(default=None, max_length=255, unique=True)
    state: str = Field(default="pending", max_length=16)
    attempts: int = Field(default=0, nullable=False)
    next_attempt_at: datetime = Field(sa_type=UTCDateTime, nullable=False)
    last_error: str | None = Field(default=None, sa_type=Text)
    sent_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    slack_ts: str | None = Field(default=None, max_length=32)
    # The worker id of the sender holding the message's claim (storage.outbox: a claim of a
    # replica that stopped or died is handed to the others before its lease runs out).
    claimed_by: str | None = Field(default=None, max_length=128)
    # Higher goes first among the heads of the channel's keys (storage.outbox.URGENT).
    priority: int = Field(default=0, nullable=False, sa_column_kwargs={"server_default": "0"})


class EnvironmentStateRow(SQLModel, table=True):
    """What is live in one environment, and who holds its lock (the seed's ``/tmp`` files)."""

    __tablename__ = "environment_state"

    environment: str = Field(primary_key=True, max_length=64)
    live_slot: Slot | None = Field(default=None, sa_type=StrEnumType(Slot, 16))
    live_version: str | None = Field(default=None, max_length=128)
    previous_slot: Slot | None = Field(default=None, sa_type=StrEnumType(Slot, 16))
    previous_version: str | None = Field(default=None, max_length=128)
    lock_holder: str | None = Field(default=None, max_length=64)
    lock_reason: str | None = Field(default=None, sa_type=Text)
    locked_since: datetime | None = Field(default=None, sa_type=UTCDateTime)
    lock_deployment_id: int | None = Field(default=None, sa_type=Integer)
    lock_owner: str | None = Field(default=None, max_length=128)
    lock_heartbeat_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    updated_at: datetime = Field(sa_type=UTCDateTime, nullable=False)
    revision: int = Field(default=0, nullable=False)


class PerformanceBaseline(SQLModel, table=True):
    """Metrics of a known-good version, the yardstick of post-deploy monitoring."""

    __tablename__ = "performance_baselines"
    __table_args__ = (
        Index("ix_performance_baselines_environment_recorded_at", "environment", "recorded_at"),
        # /qlp stats' p95 comparisons of a period's edges, every environment (migration 0012)
        Index("ix_performance_baselines_recorded_at", "recorded_at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    environment: str = Field(max_length=64)
    version: str = Field(max_length=128)
    recorded_at: datetime = Field(sa_type=UTCDateTime, nullable=False)
    metrics: dict[str, Any] = Field(default_factory=dict, sa_type=JSONDocument, nullable=False)


class StatsDay(SQLModel, table=True):
    """``/qlp stats`` summary: the terminal deployments requested on one UTC day, grouped as
    :class:`procedures.stats.FactsGroup` (kept by ``storage.stats_summary``)."""

    __tablename__ = "stats_days"

    day: int = Field(primary_key=True)  # days since 1970-01-01 (UTC) of created_at
    environment: str = Field(primary_key=True, max_length=64)
    is_change: bool = Field(primary_key=True)
    state: str = Field(primary_key=True, max_length=32)
    cancelled: bool = Field(primary_key=True)
    deployments: int = Field(nullable=False)
    duration_us: int = Field(sa_type=BigInteger, nullable=False)
    durations: int = Field(nullable=False)


class StatsDayBlock(SQLModel, table=True):
    """``/qlp stats`` summary: :class:`StatsDay` added up over blocks of 32 days (``block`` =
    day // 32), so a year is read as a dozen blocks and its edge days (kept by
    ``storage.stats_summary`` from ``stats_days``)."""

    __tablename__ = "stats_day_blocks"

    block: int = Field(primary_key=True)  # day // 32
    environment: str = Field(primary_key=True, max_length=64)
    is_change: bool = Field(primary_key=True)
    state: str = Field(primary_key=True, max_length=32)
    cancelled: bool = Field(primary_key=True)
    deployments: int = Field(nullable=False)
    duration_us: int = Field(sa_type=BigInteger, nullable=False)
    durations: int = Field(nullable=False)


class StatsOutcomeDay(SQLModel, table=True):
    """``/qlp stats`` summary: one environment's outcomes that finished on one UTC day, as a
    :class:`procedures.stats.OutcomeSegment` (times in microseconds since the epoch), and the
    span of their request times (a period holds the whole day only if it holds that span)."""

    __tablename__ = "stats_outcome_days"

    day: int = Field(primary_key=True)  # days since 1970-01-01 (UTC) of finished_at
    environment: str = Field(primary_key=True, max_length=64)
    first_requested_us: int = Field(sa_type=BigInteger, nullable=False)
    last_requested_us: int = Field(sa_type=BigInteger, nullable=False)
    head_failure_us: int | None = Field(default=None, sa_type=BigInteger)
    first_success_us: int | None = Field(default=None, sa_type=BigInteger)
    tail_failure_us: int | None = Field(default=None, sa_type=BigInteger)


class StatsIncident(SQLModel, table=True):
    """An incident opened and closed within one :class:`StatsOutcomeDay` (its ``restores``)."""

    __tablename__ = "stats_incidents"

    day: int = Field(primary_key=True)
    environment: str = Field(primary_key=True, max_length=64)
    position: int = Field(primary_key=True)
    duration_us: int = Field(sa_type=BigInteger, nullable=False)


class StatsMonitorDay(SQLModel, table=True):
    """``/qlp stats`` summary: the monitoring windows of one environment's terminal deployments
    requested on one UTC day: how many were monitored, their failed and total requests (kept
    by ``storage.stats_impact``)."""

    __tablename__ = "stats_monitor_days"

    day: int = Field(primary_key=True)  # days since 1970-01-01 (UTC) of created_at
    environment: str = Field(primary_key=True, max_length=64)
    monitored: int = Field(nullable=False)
    errors: int = Field(sa_type=BigInteger, nullable=False)
    requests: int = Field(sa_type=BigInteger, nullable=False)


class StatsCompareDay(SQLModel, table=True):
    """``/qlp stats`` summary: the performance baselines of one environment recorded on one
    UTC day that compare with the one before them (``response_ms_p95`` of both, the previous
    one above 0): how many, and the sum of their ratios (kept by ``storage.stats_compare``)."""

    __tablename__ = "stats_compare_days"

    day: int = Field(primary_key=True)  # days since 1970-01-01 (UTC) of recorded_at
    environment: str = Field(primary_key=True, max_length=64)
    compared: int = Field(nullable=False)
    ratio_sum: float = Field(nullable=False)


class ProcessedRequest(SQLModel, table=True):
    """A Slack request (retry, double click) already handled once."""

    __tablename__ = "processed_requests"

    key: str = Field(primary_key=True, max_length=255)
    created_at: datetime = Field(sa_type=UTCDateTime, nullable=False, index=True)
    outcome: str | None = Field(default=None, sa_type=Text)


class SchedulerLease(SQLModel, table=True):
    """Which bot process runs timed work: the holder until ``expires_at``, renewed while alive.

    One row per lease name. A process takes the lease when there is no row, when the row has
    expired (its holder died or stopped renewing), or renews it when it is already the holder;
    each is one conditional statement (see :mod:`storage.leases`). ``term`` counts holders.
    """

    __tablename__ = "scheduler_leases"

    name: str = Field(primary_key=True, max_length=64)
    holder: str = Field(max_length=128)
    term: int = Field(default=1, nullable=False)
    acquired_at: datetime = Field(sa_type=UTCDateTime, nullable=False)
    renewed_at: datetime = Field(sa_type=UTCDateTime, nullable=False)
    expires_at: datetime = Field(sa_type=UTCDateTime, nullable=False)


APSCHEDULER_JOBS = Table(
    "apscheduler_jobs",
    SQLModel.metadata,
    # Exactly the table apscheduler.jobstores.sqlalchemy (3.x) defines, so that its job store
    # finds it ready (created by our migration, not by APScheduler at start). 191 and 25 are
    # APScheduler's own choices (MySQL key length; a precision that maps to an 8-byte float).
    Column("id", Unicode(191), primary_key=True),
    Column("next_run_time", Float(25), index=True),
    Column("job_state", LargeBinary, nullable=False),
)
"""APScheduler's job store table (rows are pickled jobs, written only by APScheduler)."""


class BotInstance(SQLModel, table=True):
    """A running bot process, its mode (``serve``, ``socket``, ``shell``) and its heartbeat.

    Each process writes its row at start and refreshes ``heartbeat_at`` while it runs
    (:mod:`storage.markers`); the local shell refuses a database whose served bot beat
    recently, unless told the database is shared on purpose.
    """

    __tablename__ = "bot_instances"

    id: str = Field(primary_key=True, max_length=128)
    mode: str = Field(max_length=16)
    host: str = Field(max_length=255)
    pid: int = Field(nullable=False)
    started_at: datetime = Field(sa_type=UTCDateTime, nullable=False)
    heartbeat_at: datetime = Field(sa_type=UTCDateTime, nullable=False)


class HomeViewer(SQLModel, table=True):
    """Someone who opened the bot's App Home tab, and when (``storage.home_viewers``): their
    Home is republished when what it shows changes, for a while after they opened it.
    ``notice`` is the answer to their last click on a Home button, shown at its top."""

    __tablename__ = "home_viewers"

    user_id: str = Field(primary_key=True, max_length=64)
    team_id: str | None = Field(default=None, max_length=64)
    opened_at: datetime = Field(sa_type=UTCDateTime, nullable=False, index=True)
    published_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    notice: str | None = Field(default=None, sa_type=Text)
    notice_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class HomeWatchRow(SQLModel, table=True):
    """One row: the last audit event the App Home publisher has seen and the window state it
    last showed, advanced compare-and-set so one replica republishes each change."""

    __tablename__ = "home_watch"

    id: int = Field(primary_key=True)
    audit_id: int = Field(nullable=False)
    window_key: str = Field(default="", sa_type=Text, nullable=False)


metadata = SQLModel.metadata
"""All tables of the bot (the migration target)."""
