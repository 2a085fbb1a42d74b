"""What the engine writes per step: one transaction as a step starts, one as it ends.

The start (current_step + RUNNING row + "step.started") is one ``record_step`` that itself
checks the run is still RUNNING and ours, so no read of the deployment is needed between
steps; a cancel or take-over in between is still noticed before the next step acts.
"""

from __future__ import annotations

from collections import Counter
from datetime import timedelta
from typing import Any

from procedures.model import DeploymentState, StepState
from procedures.playbook import Step, StepContext, StepResult
from tests.engine.conftest import Harness

S = DeploymentState


class Counting:
    """Forwards to a store and counts the calls by method name."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.calls: Counter[str] = Counter()

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._inner, name)
        if not callable(attribute):
            return attribute

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls[name] += 1
            return attribute(*args, **kwargs)

        return counted


def noop_steps(h: Harness, count: int, body: Any = None) -> list[Step]:
    def make(name: str) -> Step:
        def run(ctx: StepContext) -> StepResult:
            h.log.append(f"run:{name}")
            if body is not None:
                body(ctx, name)
            return None

        def undo(ctx: StepContext) -> None:
            h.log.append(f"undo:{name}")

        return Step(name, f"Step {name}", run, undo)

    return [make(f"s{i}") for i in range(count)]


def test_each_step_is_two_writes_and_no_reads_of_the_deployment(h: Harness) -> None:
    deployments, audit = Counting(h.deployments), Counting(h.audit)
    steps = 10
    engine = h.engine(noop_steps(h, steps), deployments=deployments, audit=audit)
    deployment_id = h.start(engine)

    assert engine.run(deployment_id) is S.SUCCEEDED

    calls = deployments.calls
    assert calls["record_step"] == 2 * steps
    assert calls["upsert_step"] == 0 and calls["update_fields"] == 0
    assert calls["get"] == 1  # run() reads it once; nothing per step
    assert calls["heartbeat"] == 1  # at the start; then only every heartbeat_every
    step_actions = [a for a in h.actions(deployment_id) if a.startswith("step.")]
    assert step_actions == ["step.started", "step.succeeded"] * steps
    assert audit.calls["append"] == 3  # run.started, lock.acquired, run.succeeded
    assert h.audit.verify().ok
    record = h.deployments.get(deployment_id)
    assert record is not None and record.current_step is None


def test_cancel_between_steps_is_noticed_by_the_next_start_which_writes_nothing(
    h: Harness,
) -> None:
    def cancel_after_s1(ctx: StepContext, name: str) -> None:
        if name == "s1":
            assert other.request_cancel(ctx.deployment_id, "U0LEAD1")

    other = h.restarted([], worker_id="api")
    engine = h.engine(noop_steps(h, 4, cancel_after_s1))
    deployment_id = h.start(engine)

    assert engine.run(deployment_id) is S.ROLLED_BACK

    assert [e for e in h.log if e.startswith(("run:", "undo:"))] == [
        "run:s0", "run:s1", "undo:s1", "undo:s0"]
    assert h.deployments.get_step(deployment_id, "s2") is None  # never recorded RUNNING
    started = [d["step"] for d in h.audit_details("step.started")]
    assert started == ["s0", "s1"]
    assert h.step_states(deployment_id) == {"s0": "undone", "s1": "undone"}
    assert "Cancelled by <@U0LEAD1>; undoing 2 steps" in h.reporter.broadcasts()


def test_take_over_between_steps_stops_before_the_next_step_touches_anything(
    h: Harness,
) -> None:
    def taken_over_after_s0(ctx: StepContext, name: str) -> None:
        if name == "s0":
            h.clock.advance(timedelta(minutes=2))
            assert second.recover(timedelta(minutes=1)) == [ctx.deployment_id]

    second = h.restarted([], worker_id="w2")
    engine = h.engine(noop_steps(h, 3, taken_over_after_s0))
    deployment_id = h.start(engine)

    assert engine.run(deployment_id) is S.QUEUED

    assert [e for e in h.log if e.startswith("run:")] == ["run:s0"]
    assert h.deployments.get_step(deployment_id, "s1") is None
    assert h.step_states(deployment_id) == {"s0": StepState.SUCCEEDED.value}
    assert "run.abandoned" in h.actions(deployment_id)


def test_a_step_waiting_in_ctx_sleep_still_notices_a_cancel_within_a_slice(h: Harness) -> None:
    def cancel_then_wait(ctx: StepContext, name: str) -> None:
        if name == "s1":
            assert other.request_cancel(ctx.deployment_id, "U0LEAD1")
            ctx.sleep(30)

    other = h.restarted([], worker_id="api")
    engine = h.engine(noop_steps(h, 3, cancel_then_wait))
    deployment_id = h.start(engine)

    assert engine.run(deployment_id) is S.ROLLED_BACK
    assert sum(h.sleeps) <= 1.0
    step = h.deployments.get_step(deployment_id, "s1")
    assert step is not None and step.error == "interrupted: cancelled by <@U0LEAD1>"
