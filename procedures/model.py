"""The domain's vocabulary: procedure kinds and the states a deployment and a step pass through."""

from __future__ import annotations

from enum import StrEnum


class ProcedureKind(StrEnum):
    """What a run does; each kind has its own playbook and approval rule."""

    STANDARD = "standard"
    HOTFIX = "hotfix"
    EMERGENCY = "emergency"
    ROLLBACK = "rollback"
    MIGRATION = "migration"


class DeploymentState(StrEnum):
    """The life of a deployment. Terminal states never change again."""

    PENDING_APPROVAL = "pending_approval"  # parked at the approval gate, in the database
    SCHEDULED = "scheduled"  # approved or pending, waiting for a time
    QUEUED = "queued"  # ready; a worker will claim it
    RUNNING = "running"  # a worker holds it and executes steps
    ROLLING_BACK = "rolling_back"  # undoing completed steps after a failure or cancel
    SUCCEEDED = "succeeded"
    ROLLED_BACK = "rolled_back"  # failed or cancelled, every completed step undone
    FAILED = "failed"  # failed before any step changed anything
    CANCELLED = "cancelled"  # cancelled before it started
    REJECTED = "rejected"
    EXPIRED = "expired"
    NEEDS_ATTENTION = "needs_attention"  # an undo failed: a person must look

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_STATES

    @property
    def active(self) -> bool:
        """Holds (or is about to hold) the environment."""
        return self in ACTIVE_STATES


# Which states hold an environment, in one place (every module asks these):
HOLDING_STATES = (DeploymentState.RUNNING, DeploymentState.ROLLING_BACK)
"""A worker runs it now: the environment is this run's."""
ACTIVE_STATES = (DeploymentState.QUEUED, *HOLDING_STATES)
"""Holds the environment, or will as soon as a worker claims it."""
UNDER_WAY_STATES = (DeploymentState.PENDING_APPROVAL, *ACTIVE_STATES)
"""Blocks another request for the environment (one at a time): waiting for approval or active."""

TERMINAL_STATES = frozenset({
    DeploymentState.SUCCEEDED, DeploymentState.ROLLED_BACK, DeploymentState.FAILED,
    DeploymentState.CANCELLED, DeploymentState.REJECTED, DeploymentState.EXPIRED,
    DeploymentState.NEEDS_ATTENTION,
})


class StepState(StrEnum):
    """The life of one step of one run."""

    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"
    UNDOING = "undoing"
    UNDONE = "undone"
    UNDO_FAILED = "undo_failed"


class Slot(StrEnum):
    """Blue-green colours."""

    BLUE = "blue"
    GREEN = "green"

    @property
    def other(self) -> Slot:
        return Slot.GREEN if self is Slot.BLUE else Slot.BLUE
