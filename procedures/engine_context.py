"""What a step sees while the engine runs it: :class:`EngineContext`, and how a run is interrupted.

The context is built by the engine for each attempt of a step (and for each undo). Everything
that touches the outside world goes through the run that built it, so waiting heartbeats,
notices a cancel or a take-over, and times out cooperatively.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any, Protocol

from procedures.engine_loans import LoanedEnvironment
from procedures.model import ProcedureKind, Slot
from procedures.mrkdwn import escape
from procedures.platforms.base import Platform
from procedures.playbook import MetricsSource, Step
from procedures.policy import Environment, Policy


class RunInterrupted(BaseException):
    """Unwinds a step when the run must stop (not a failure of the step).

    Derived from ``BaseException`` (as ``asyncio.CancelledError`` is) so that a step's
    ``except Exception`` cannot swallow it; the engine catches these by name.
    """


class RunCancelled(RunInterrupted):
    """Someone cancelled the run (it is ROLLING_BACK): stop and compensate."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class RunTakenOver(RunInterrupted):
    """Another worker took the run over (our heartbeat was stale): stop, touch nothing."""


LIVE_AFTER = timedelta(seconds=5)


class RunServices(Protocol):
    """What the engine's run offers a context (implemented by ``procedures.engine``)."""

    @property
    def deployment_id(self) -> int: ...
    @property
    def kind(self) -> ProcedureKind: ...
    @property
    def version(self) -> str | None: ...
    @property
    def environment_name(self) -> str: ...
    @property
    def options(self) -> Mapping[str, Any]: ...
    @property
    def policy(self) -> Policy: ...
    @property
    def platform(self) -> Platform: ...
    @property
    def metrics(self) -> MetricsSource: ...

    def now(self) -> datetime: ...

    def other_environment(self, name: str) -> LoanedEnvironment: ...

    def wait(
        self, seconds: float, *, deadline: datetime | None, timeout: timedelta | None,
        forward: bool,
    ) -> None: ...

    def result_of(self, step_name: str) -> Mapping[str, Any]: ...

    def report(self, text: str, *, broadcast: bool = False) -> None: ...

    def hold(self, text: str) -> None: ...

    def with_held(self, text: str) -> str: ...

    def record_switch(self, live: Slot, version: str) -> None: ...

    def record_baseline(self, metrics: Mapping[str, Any]) -> None: ...

    def baseline(self) -> Mapping[str, Any] | None: ...

    def keep_progress(self, step: Step, progress: Mapping[str, Any]) -> None: ...

    def kept_progress(self, step: Step) -> Mapping[str, Any] | None: ...


class EngineContext:
    """The :class:`procedures.playbook.StepContext` the engine gives one attempt of one step.

    ``deadline`` is the attempt's start plus ``step.timeout``. ``sleep`` waits through the
    injected sleep in slices of at most a second; between slices it heartbeats, notices a
    cancel (``RunCancelled``, only while running forward; undo is never cancelled) or a
    take-over (``RunTakenOver``), and raises ``StepFailure("timed out after ...")`` once the
    deadline has come. A step that never sleeps is not interrupted: if it returns after its
    deadline its result is still accepted, since it finished.
    """

    def __init__(self, run: RunServices, step: Step, deadline: datetime, *, undoing: bool) -> None:
        self._run = run
        self._step = step
        self._deadline = deadline
        self._undoing = undoing

    # -- facts ----------------------------------------------------------------------------------

    @property
    def deployment_id(self) -> int:
        return self._run.deployment_id

    @property
    def kind(self) -> ProcedureKind:
        return self._run.kind

    @property
    def version(self) -> str | None:
        return self._run.version

    @property
    def environment_name(self) -> str:
        return self._run.environment_name

    @property
    def environment(self) -> Environment:
        name = self._run.environment_name
        try:
            return self._run.policy.environments[name]
        except KeyError:
            raise KeyError(f"environment {name!r} is not in the policy") from None

    @property
    def policy(self) -> Policy:
        return self._run.policy

    @property
    def options(self) -> Mapping[str, Any]:
        return self._run.options

    @property
    def platform(self) -> Platform:
        return self._run.platform

    @property
    def metrics(self) -> MetricsSource:
        return self._run.metrics

    @property
    def deadline(self) -> datetime:
        return self._deadline

    @property
    def undoing(self) -> bool:
        """True inside ``undo`` (not part of the protocol; for steps that log differently)."""
        return self._undoing

    # -- acting ---------------------------------------------------------------------------------

    def now(self) -> datetime:
        return self._run.now()

    def other_environment(self, name: str) -> LoanedEnvironment:
        """Another environment of the policy, for a step that acts there too (the rehearsal
        on staging): its platform, state record and lock (``procedures.engine_loans``)."""
        return self._run.other_environment(name)

    def remaining(self) -> timedelta:
        """Time left before the deadline (never negative)."""
        return max(self._deadline - self._run.now(), timedelta(0))

    def sleep(self, seconds: float) -> None:
        self._run.wait(
            seconds, deadline=self._deadline, timeout=self._step.timeout,
            forward=not self._undoing,
        )

    def result_of(self, step_name: str) -> Mapping[str, Any]:
        return self._run.result_of(step_name)

    def report(self, text: str, *, broadcast: bool = False) -> None:
        # A playbook's text is plain: the services' words in it (a version a slot reported on
        # /health, an error body) are shown, never rendered (issue 13, finding 4).
        text = escape(text)
        # Quick findings ride with the step's "✓"/"✗" reply (one post per phase); a long
        # step (monitoring) or a broadcast speaks at once, with whatever was held before.
        started = self._deadline - self._step.timeout
        if broadcast or self._undoing or self._run.now() - started > LIVE_AFTER:
            self._run.report(self._run.with_held(text), broadcast=broadcast)
        else:
            self._run.hold(text)

    def record_switch(self, live: Slot, version: str) -> None:
        self._run.record_switch(live, version)

    def keep(self, progress: Mapping[str, Any]) -> None:
        """Keep the step's progress with its row (``procedures.playbook.KeepsProgress``)."""
        self._run.keep_progress(self._step, progress)

    def kept(self) -> Mapping[str, Any] | None:
        """What the previous attempt kept, when this attempt continues a run taken over."""
        return None if self._undoing else self._run.kept_progress(self._step)

    def record_baseline(self, metrics: Mapping[str, Any]) -> None:
        self._run.record_baseline(metrics)

    def baseline(self) -> Mapping[str, Any] | None:
        """The environment's newest recorded performance baseline (the version deployed before
        this run), or None: what ``monitor`` applies ``response_time_ratio`` and
        ``error_rate_ratio`` to (``procedures.playbooks.standard.ProvidesBaseline``)."""
        return self._run.baseline()
