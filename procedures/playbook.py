"""What a playbook is made of: steps, their retry policy and the context they run in.

A playbook is data: an ordered tuple of :class:`Step`. The engine (``procedures.engine``) runs
the steps in order, persisting each one before it acts, and undoes completed steps in reverse
when a later one fails or the run is cancelled. Steps never talk to Slack or the database: they
act through ``ctx.platform`` and ``ctx.checks`` and tell people what they found through
``ctx.report``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol, runtime_checkable

from procedures.model import ProcedureKind, Slot
from procedures.platforms.base import Platform
from procedures.policy import Environment, Policy

StepResult = Mapping[str, Any] | None


@dataclass(frozen=True)
class RetryPolicy:
    """How often a step is tried when its adapter marks the error retryable."""

    attempts: int = 1
    backoff: timedelta = timedelta(seconds=1)
    max_backoff: timedelta = timedelta(seconds=30)

    def delay(self, attempt: int) -> timedelta:
        """Wait before attempt ``attempt + 1`` (exponential, capped)."""
        return min(self.backoff * (2 ** max(attempt - 1, 0)), self.max_backoff)


class MetricsSource(Protocol):
    """Error and latency figures of one slot, from the platform's own monitoring.

    ``None`` means no data: the caller must treat that as inconclusive, never as a pass.
    A source whose monitoring cannot be read (no permission, a query error, a partial
    result) raises :class:`~procedures.errors.MetricsUnavailable` instead, carrying the
    platform's code and message: inconclusive too, but the caller shows that reason.
    """

    def error_count(self, slot: Slot, since: datetime) -> int | None: ...

    def request_count(self, slot: Slot, since: datetime) -> int | None: ...


@runtime_checkable
class ProvidesLatency(Protocol):
    """Optional on a :class:`MetricsSource`: the slot's request duration as the platform saw it.

    ``duration_p95_ms`` is the 95th percentile duration (milliseconds) of the requests ``slot``
    served since ``since``; ``None`` means no data (inconclusive for that figure, never a pass).
    A source may also have a ``latency_source`` string naming where the figure comes from
    ("Application Insights"), used in reports. Not every platform has it (the local one does
    not): the ``monitor`` step checks with ``isinstance``.
    """

    def duration_p95_ms(self, slot: Slot, since: datetime) -> float | None: ...


class StepContext(Protocol):
    """What a step may use. Built by the engine for each attempt."""

    @property
    def deployment_id(self) -> int: ...
    @property
    def kind(self) -> ProcedureKind: ...
    @property
    def version(self) -> str | None: ...
    @property
    def environment_name(self) -> str: ...
    @property
    def environment(self) -> Environment: ...
    @property
    def policy(self) -> Policy: ...
    @property
    def options(self) -> Mapping[str, Any]: ...
    @property
    def platform(self) -> Platform: ...
    @property
    def metrics(self) -> MetricsSource: ...
    @property
    def deadline(self) -> datetime:
        """When this attempt times out; long steps check it through ``sleep``/``remaining``."""
        ...

    def now(self) -> datetime: ...

    def sleep(self, seconds: float) -> None:
        """Wait (through the injected clock); also heartbeats and raises on deadline/cancel."""
        ...

    def result_of(self, step_name: str) -> Mapping[str, Any]:
        """The persisted result of an earlier step of this run ({} if none)."""
        ...

    def report(self, text: str, *, broadcast: bool = False) -> None:
        """Tell the deployment's thread something this step found."""
        ...

    def record_switch(self, live: Slot, version: str) -> None:
        """Record in the bot's state which colour and version now serve traffic."""
        ...

    def record_baseline(self, metrics: Mapping[str, Any]) -> None: ...


@runtime_checkable
class KeepsProgress(Protocol):
    """Optional on a :class:`StepContext`: a long step's progress, kept with the step while it
    runs, so that the attempt of the worker that takes the run over (a graceful hand-over, a
    stale take-over) continues where the last one was rather than starting again. ``monitor``
    keeps its window this way: the checks seen, the warnings said.

    ``keep`` replaces what was kept (a small JSON-able mapping; raises as ``sleep`` does when
    the run is no longer this worker's); ``kept`` is what the previous attempt kept, or None
    (a first attempt, or nothing kept).
    """

    def keep(self, progress: Mapping[str, Any]) -> None: ...

    def kept(self) -> Mapping[str, Any] | None: ...


StepFn = Callable[[StepContext], StepResult]
UndoFn = Callable[[StepContext], None]
Condition = Callable[[StepContext], bool]


@dataclass(frozen=True)
class Step:
    """One durable step of a playbook.

    ``run`` returns a small JSON-able mapping (persisted as the step's result, readable by later
    steps and by ``undo``). ``undo`` must be idempotent: it may run again after a crash.
    ``when`` skips the step (state SKIPPED) when it returns False. A step left RUNNING by a
    crash is run again when ``rerun_on_resume`` (the step is idempotent), otherwise it counts
    as failed and the run is compensated.
    """

    name: str
    title: str
    run: StepFn
    undo: UndoFn | None = None
    timeout: timedelta = timedelta(minutes=5)
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    when: Condition | None = None
    rerun_on_resume: bool = True


@dataclass(frozen=True)
class Playbook:
    """An ordered tuple of steps for one procedure kind."""

    kind: ProcedureKind
    title: str
    steps: tuple[Step, ...]

    def __post_init__(self) -> None:
        names = [step.name for step in self.steps]
        if len(names) != len(set(names)):
            raise ValueError(f"{self.title}: step names must be unique: {names}")

    def step(self, name: str) -> Step:
        for step in self.steps:
            if step.name == name:
                return step
        raise KeyError(name)
