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


_S = DeploymentState
TRANSITIONS: dict[DeploymentState, frozenset[DeploymentState]] = {
    # Waiting for approval: a decision bumps its revision in place (same state); approved, it
    # is queued or, when its moment is still ahead, scheduled.
    _S.PENDING_APPROVAL: frozenset({_S.PENDING_APPROVAL, _S.QUEUED, _S.SCHEDULED, _S.REJECTED,
                                    _S.EXPIRED, _S.CANCELLED, _S.FAILED}),
    # Approved ahead of its moment: T-0 queues it; a failed preflight sends it back for a
    # fresh approval; it may be cancelled or expire.
    _S.SCHEDULED: frozenset({_S.SCHEDULED, _S.QUEUED, _S.PENDING_APPROVAL, _S.CANCELLED,
                             _S.EXPIRED, _S.FAILED}),
    # Ready: a worker claims it, or the gate refuses it at its start (FAILED, nothing done).
    _S.QUEUED: frozenset({_S.QUEUED, _S.RUNNING, _S.CANCELLED, _S.FAILED, _S.EXPIRED,
                          _S.ROLLING_BACK}),
    # Running: recovery puts a dead worker's run back in line (QUEUED); the run ends, or
    # compensates.
    _S.RUNNING: frozenset({_S.RUNNING, _S.QUEUED, _S.ROLLING_BACK, _S.SUCCEEDED, _S.FAILED,
                           _S.NEEDS_ATTENTION, _S.CANCELLED, _S.ROLLED_BACK}),
    # Undoing: everything undone (ROLLED_BACK, or CANCELLED when nothing had changed yet),
    # or an undo failed.
    _S.ROLLING_BACK: frozenset({_S.ROLLING_BACK, _S.ROLLED_BACK, _S.CANCELLED,
                                _S.NEEDS_ATTENTION, _S.FAILED}),
}
"""The one transition table: from each non-terminal state, the states a deployment may move
to (``storage.deployments.DeploymentRepository.transition`` refuses any other move). Terminal
states move nowhere; "moving" to the same state is a revision bump, allowed in any state."""


def may_move(from_state: DeploymentState, to_state: DeploymentState) -> bool:
    """May a deployment in ``from_state`` move to ``to_state`` (:data:`TRANSITIONS`)?"""
    from_state = DeploymentState(from_state)
    if to_state == from_state:  # a revision bump (compare-and-set of other fields), no move
        return True
    return to_state in TRANSITIONS.get(from_state, frozenset())


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
