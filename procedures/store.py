"""What the domain needs from persistence, as protocols.

``storage`` implements these (``storage.conformance`` has mypy prove it); the domain and its
tests depend only on this module. Records are read-only views: the storage rows satisfy them
structurally, and so can a plain dataclass in a test fake.

No database library is imported here (import-linter enforces it).
"""

from __future__ import annotations

import enum
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final, Protocol

from procedures.errors import ConflictError
from procedures.model import DeploymentState, ProcedureKind, Slot, StepState

# -- records ------------------------------------------------------------------------------------


class DeploymentRecord(Protocol):
    """A deployment as stored. ``id`` is set once stored (``None`` only before)."""

    @property
    def id(self) -> int | None: ...
    @property
    def kind(self) -> ProcedureKind: ...
    @property
    def version(self) -> str | None: ...
    @property
    def environment(self) -> str: ...
    @property
    def requester(self) -> str: ...
    @property
    def state(self) -> DeploymentState: ...
    @property
    def reason(self) -> str | None: ...
    @property
    def options(self) -> Mapping[str, Any]: ...
    @property
    def plan_hash(self) -> str | None: ...
    @property
    def channel(self) -> str | None: ...
    @property
    def card_ts(self) -> str | None: ...
    @property
    def created_at(self) -> datetime: ...
    @property
    def updated_at(self) -> datetime: ...
    @property
    def scheduled_at(self) -> datetime | None: ...
    @property
    def started_at(self) -> datetime | None: ...
    @property
    def finished_at(self) -> datetime | None: ...
    @property
    def current_step(self) -> str | None: ...
    @property
    def worker_id(self) -> str | None: ...
    @property
    def revision(self) -> int: ...
    @property
    def error(self) -> str | None: ...


class StepRecord(Protocol):
    """The persisted run of one step."""

    @property
    def deployment_id(self) -> int: ...
    @property
    def position(self) -> int: ...
    @property
    def name(self) -> str: ...
    @property
    def state(self) -> StepState: ...
    @property
    def attempts(self) -> int: ...
    @property
    def started_at(self) -> datetime | None: ...
    @property
    def finished_at(self) -> datetime | None: ...
    @property
    def result(self) -> Mapping[str, Any] | None: ...
    @property
    def error(self) -> str | None: ...


class EnvironmentRecord(Protocol):
    """What is live in an environment and who holds its lock."""

    @property
    def environment(self) -> str: ...
    @property
    def live_slot(self) -> Slot | None: ...
    @property
    def live_version(self) -> str | None: ...
    @property
    def previous_slot(self) -> Slot | None: ...
    @property
    def previous_version(self) -> str | None: ...
    @property
    def lock_holder(self) -> str | None: ...
    @property
    def lock_reason(self) -> str | None: ...
    @property
    def locked_since(self) -> datetime | None: ...
    @property
    def lock_deployment_id(self) -> int | None: ...
    @property
    def lock_owner(self) -> str | None: ...


class AuditRecord(Protocol):
    """One audit event."""

    @property
    def id(self) -> int | None: ...
    @property
    def at(self) -> datetime: ...
    @property
    def actor(self) -> str: ...
    @property
    def action(self) -> str: ...
    @property
    def deployment_id(self) -> int | None: ...
    @property
    def environment(self) -> str | None: ...
    @property
    def detail(self) -> Mapping[str, Any]: ...


class BaselineRecord(Protocol):
    """Metrics of a known-good version."""

    @property
    def environment(self) -> str: ...
    @property
    def version(self) -> str: ...
    @property
    def recorded_at(self) -> datetime: ...
    @property
    def metrics(self) -> Mapping[str, Any]: ...


class ApprovalRecord(Protocol):
    """One person's decision on one plan."""

    @property
    def deployment_id(self) -> int: ...
    @property
    def actor(self) -> str: ...
    @property
    def decision(self) -> str: ...
    @property
    def plan_hash(self) -> str: ...
    @property
    def reason(self) -> str | None: ...
    @property
    def created_at(self) -> datetime: ...


# -- values passed to stores --------------------------------------------------------------------


@dataclass(frozen=True)
class AuditEntry:
    """An audit event to append in the same transaction as a change (``record_step``).

    The deployment id is the one of the change it rides with.
    """

    actor: str
    action: str
    environment: str | None = None
    detail: Mapping[str, Any] = field(default_factory=dict)


class Unchanged(enum.Enum):
    """The type of :data:`UNCHANGED`: "leave this column as it is" (``None`` clears it)."""

    UNCHANGED = "unchanged"


UNCHANGED: Final = Unchanged.UNCHANGED


class NotRunning(ConflictError):
    """``record_step(running_for=...)`` found the deployment not RUNNING for that worker.

    Nothing was written: it was cancelled (ROLLING_BACK), taken over or moved on meanwhile.
    """


# -- stores -------------------------------------------------------------------------------------


class AuditSink(Protocol):
    """Where decisions and actions are recorded, append-only."""

    def append(
        self,
        actor: str,
        action: str,
        *,
        deployment_id: int | None = None,
        environment: str | None = None,
        detail: Mapping[str, Any] | None = None,
    ) -> AuditRecord: ...


class NotificationQueue(Protocol):
    """The outbox: messages are stored first and delivered by the bot's sender."""

    def enqueue(
        self,
        channel: str,
        kind: str,
        payload: Mapping[str, Any],
        *,
        deployment_id: int | None = None,
        thread_of: int | None = None,
        ordering_key: str | None = None,
        dedup_key: str | None = None,
        priority: int = 0,
    ) -> int: ...


class EnvironmentStore(Protocol):
    """Live/previous slots per environment and the per-environment lock."""

    def get(self, environment: str) -> EnvironmentRecord | None: ...

    def ensure(self, environment: str) -> EnvironmentRecord: ...

    def record_switch(
        self, environment: str, live_slot: Slot, live_version: str
    ) -> EnvironmentRecord: ...

    def acquire_lock(
        self,
        environment: str,
        holder: str,
        reason: str | None,
        deployment_id: int | None,
        owner: str | None,
        now: datetime | None = None,
    ) -> bool:
        """True if taken; raises (never returns True) when the store cannot tell."""
        ...

    def release_lock(self, environment: str, deployment_id: int | None) -> bool: ...

    def heartbeat(self, environment: str, owner: str, now: datetime | None = None) -> bool: ...

    def reap_stale_locks(self, now: datetime | None, max_age: timedelta) -> Sequence[str]: ...

    def pass_lock(self, environment: str, deployment_id: int, worker_id: str,
                  now: datetime | None = None) -> str | None:
        """A break-glass run past a person's lock (``/qlp lock``) *passes* it rather than
        taking it over or freeing it: the run becomes the owner (with a heartbeat) of the
        person's row, which keeps its holder, reason and time. Returns the pass's owner id
        (``heartbeat`` and ``end_pass`` take it), None when there is no person's lock."""
        ...

    def end_pass(self, environment: str, owner: str) -> bool:
        """End a pass: clear only its owner; the person's lock stays."""
        ...


class DeploymentStore(Protocol):
    """Deployments, their state machine and their step runs."""

    def get(self, id: int) -> DeploymentRecord | None: ...

    def transition(
        self,
        id: int,
        from_states: Collection[DeploymentState],
        to_state: DeploymentState,
        *,
        expected_revision: int | None = None,
        **fields: Any,
    ) -> bool:
        """True only for the one caller whose conditional update changed the row."""
        ...

    def claim_next(self, worker_id: str, now: datetime | None = None) -> DeploymentRecord | None:
        ...

    def heartbeat(self, id: int, worker_id: str, now: datetime | None = None) -> bool: ...

    def update_fields(self, id: int, **fields: Any) -> bool:
        """Set non-state columns (``current_step``, ``card_ts``...) without a transition."""
        ...

    def stale(self, max_age: timedelta, now: datetime | None = None) -> Sequence[DeploymentRecord]:
        """RUNNING/ROLLING_BACK deployments whose heartbeat is older than ``max_age``."""
        ...

    def upsert_step(
        self, deployment_id: int, name: str, position: int, state: StepState, **fields: Any
    ) -> StepRecord: ...

    def record_step(
        self,
        deployment_id: int,
        name: str,
        position: int,
        state: StepState,
        *,
        audit: AuditEntry | None = None,
        current_step: str | Unchanged | None = UNCHANGED,
        running_for: str | None = None,
        **fields: Any,
    ) -> StepRecord:
        """``upsert_step`` plus, in the SAME transaction, the deployment's ``current_step``
        (unless ``UNCHANGED``) and the ``audit`` event (appended last): all or nothing.

        With ``running_for`` (a worker id) it writes only if the deployment is RUNNING and
        claimed by that worker, checked in the transaction; otherwise it writes nothing and
        raises :class:`NotRunning`.
        """
        ...

    def get_step(self, deployment_id: int, name: str) -> StepRecord | None: ...

    def steps(self, deployment_id: int) -> Sequence[StepRecord]: ...


class ApprovalStore(Protocol):
    """Approval decisions."""

    def record(
        self,
        deployment_id: int,
        actor: str,
        decision: str,
        plan_hash: str = "",
        reason: str | None = None,
    ) -> bool: ...

    def for_deployment(
        self, deployment_id: int, plan_hash: str | None = None
    ) -> Sequence[ApprovalRecord]: ...


class BaselineStore(Protocol):
    """Performance baselines per environment."""

    def record(
        self, environment: str, version: str, metrics: Mapping[str, Any]
    ) -> BaselineRecord: ...

    def latest(self, environment: str) -> BaselineRecord | None: ...


class RequestDeduplicator(Protocol):
    """Tells a first request from its retries."""

    def first_time(self, key: str) -> bool: ...
