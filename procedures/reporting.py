"""How the engine tells the world what happens: a snapshot of the run, given to a Reporter.

The engine never talks to Slack. ``bot.slack_reporter.SlackReporter`` turns these calls into
outbox messages (the card updated in place, one thread reply per phase or notable event).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from procedures.checks.findings import Evidence
from procedures.model import DeploymentState, ProcedureKind, StepState


@dataclass(frozen=True)
class StepSnapshot:
    """One step as the card shows it."""

    name: str
    title: str
    state: StepState
    attempts: int = 0
    started_at: datetime | None = None
    finished_at: datetime | None = None
    error: str | None = None

    @property
    def duration(self) -> timedelta | None:
        if self.started_at and self.finished_at:
            return self.finished_at - self.started_at
        return None


@dataclass(frozen=True)
class RunSnapshot:
    """A deployment and its steps at one moment: everything a card needs to render."""

    deployment_id: int
    kind: ProcedureKind
    version: str | None
    environment: str
    requester: str
    state: DeploymentState
    created_at: datetime
    steps: tuple[StepSnapshot, ...] = ()
    current_step: str | None = None
    reason: str | None = None
    error: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    approvers: tuple[str, ...] = ()
    approvals_required: int = 0
    options: Mapping[str, Any] = field(default_factory=dict)
    notes: tuple[str, ...] = ()  # short lines the card shows (e.g. "approval reset: plan changed")
    # The final-validation checks run before approval (bot.preflight), while it waits; else None.
    evidence: Evidence | None = None


class Reporter(Protocol):
    """Receives what the engine and the request flow want people to see."""

    def run_changed(self, run: RunSnapshot) -> None:
        """The run's state or progress changed: re-render its card."""
        ...

    def event(self, run: RunSnapshot, text: str, *, broadcast: bool = False) -> None:
        """A notable event: one reply in the run's thread (also in the channel if broadcast)."""
        ...


class NullReporter:
    """A reporter that drops everything (for benchmarks of the engine alone)."""

    def run_changed(self, run: RunSnapshot) -> None:
        return None

    def event(self, run: RunSnapshot, text: str, *, broadcast: bool = False) -> None:
        return None
