"""The durable engine on real repositories, on SQLite and on PostgreSQL.

Playbooks are built here: their steps append ``run:<name>`` / ``undo:<name>`` to a shared log
(the fake platform appends its calls to the same log), so each test asserts the exact order of
what ran and what was undone. Time only moves through the injected sleep (a FixedClock).
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest

from procedures.engine import Engine
from procedures.errors import ConflictError, ExternalServiceError, StepFailure
from procedures.model import DeploymentState, Slot, StepState
from procedures.playbook import RetryPolicy, Step, StepContext, StepResult
from procedures.reporting import RunSnapshot
from storage.environments import EnvironmentStateRepository
from tests.engine.conftest import ENV, REQUESTER, START, Harness
from tests.storage.concurrency import run_concurrently

S = DeploymentState


class Crash(BaseException):
    """A simulated process death: the engine catches Exception, never this."""


def steps_log(h: Harness) -> list[str]:
    """The run/undo entries of the shared log (platform calls left out)."""
    return [entry for entry in h.log if entry.startswith(("run:", "undo:"))]


def blue_green(h: Harness, *, switch_retry: RetryPolicy | None = None) -> list[Step]:
    """Deploy to green, wait until ready, switch, stop blue: each with its platform calls."""
    log = h.log

    def deploy(ctx: StepContext) -> StepResult:
        log.append("run:deploy")
        assert ctx.version is not None
        ctx.platform.deploy(Slot.GREEN, ctx.version)
        return {"slot": "green"}

    def undo_deploy(ctx: StepContext) -> None:
        log.append("undo:deploy")
        ctx.platform.stop(Slot(ctx.result_of("deploy")["slot"]))

    def ready(ctx: StepContext) -> StepResult:
        log.append("run:ready")
        ctx.platform.wait_ready(Slot.GREEN, timedelta(seconds=30))
        ctx.sleep(2)
        return None

    def switch(ctx: StepContext) -> StepResult:
        log.append("run:switch")
        assert ctx.version is not None
        ctx.platform.switch(Slot.GREEN)
        ctx.record_switch(Slot.GREEN, ctx.version)
        return {"previous": "blue"}

    def undo_switch(ctx: StepContext) -> None:
        log.append("undo:switch")
        ctx.platform.switch(Slot(ctx.result_of("switch")["previous"]))
        ctx.record_switch(Slot.BLUE, "1.0.0")

    def stop_old(ctx: StepContext) -> StepResult:
        log.append("run:stop_old")
        ctx.platform.stop(Slot.BLUE)
        return None

    def undo_stop_old(ctx: StepContext) -> None:
        log.append("undo:stop_old")
        ctx.platform.deploy(Slot.BLUE, "1.0.0")

    return [
        Step("deploy", "Deploy to green", deploy, undo_deploy),
        Step("ready", "Wait until ready", ready),
        Step("switch", "Switch traffic to green", switch, undo_switch,
             retry=switch_retry or RetryPolicy()),
        Step("stop_old", "Stop blue", stop_old, undo_stop_old),
    ]


def simple(
    h: Harness, name: str, *, undo: bool = True, body: Callable[[StepContext], Any] | None = None,
    undo_body: Callable[[StepContext], Any] | None = None, **kwargs: Any,
) -> Step:
    """A step that logs ``run:<name>`` (then calls ``body``) and ``undo:<name>``."""

    def run(ctx: StepContext) -> StepResult:
        h.log.append(f"run:{name}")
        result = body(ctx) if body else None
        return result if isinstance(result, dict) else {"step": name}

    def undo_fn(ctx: StepContext) -> None:
        h.log.append(f"undo:{name}")
        if undo_body:
            undo_body(ctx)

    return Step(name, f"Step {name.upper()}", run, undo_fn if undo else None, **kwargs)


# -- the happy path -----------------------------------------------------------------------------


def test_happy_path_runs_steps_in_order_and_persists_everything(h: Harness) -> None:
    steps = blue_green(h)
    seen_locks: list[tuple[Any, ...]] = []

    def observe(ctx: StepContext) -> bool:
        seen_locks.append(h.lock())
        return True

    steps[1] = dataclasses.replace(steps[1], when=observe)
    engine = h.engine(steps)
    deployment_id = h.start(engine)

    assert engine.run(deployment_id) is S.SUCCEEDED

    assert steps_log(h) == ["run:deploy", "run:ready", "run:switch", "run:stop_old"]
    assert [str(c) for c in h.platform.calls] == [
        "deploy(green, 2.0.0)", "wait_ready(green)", "switch(green)", "stop(blue)",
    ]
    # The lock was held during the run, by the requester for this deployment and worker.
    assert seen_locks == [(REQUESTER, f"deployment #{deployment_id}", deployment_id, "w1")]
    assert h.lock() == (None, None, None, None)

    record = h.deployments.get(deployment_id)
    assert record is not None
    assert (record.state, record.current_step, record.error) == (S.SUCCEEDED, None, None)
    assert record.finished_at == START + timedelta(seconds=2)
    runs = {s.name: s for s in h.deployments.steps(deployment_id)}
    assert [(s.name, s.state, s.attempts) for s in h.deployments.steps(deployment_id)] == [
        ("deploy", StepState.SUCCEEDED, 1), ("ready", StepState.SUCCEEDED, 1),
        ("switch", StepState.SUCCEEDED, 1), ("stop_old", StepState.SUCCEEDED, 1),
    ]
    assert runs["deploy"].result == {"slot": "green"}
    assert runs["ready"].started_at == START
    assert runs["ready"].finished_at == START + timedelta(seconds=2)
    env = h.environments.get(ENV)
    assert env is not None and (env.live_slot, env.live_version) == (Slot.GREEN, "2.0.0")

    assert h.reporter.texts(deployment_id) == [
        "✓ Deploy to green (0ms)", "✓ Wait until ready (2s)", "✓ Switch traffic to green (0ms)",
        "✓ Stop blue (0ms)", "Deployed 2.0.0 to production in 2s",
    ]
    assert h.reporter.broadcasts() == ["Deployed 2.0.0 to production in 2s"]
    assert h.reporter.changes[-1].state is S.SUCCEEDED
    assert any(c.current_step == "switch" for c in h.reporter.changes)

    assert h.actions(deployment_id) == [
        "run.started", "lock.acquired",
        *(["step.started", "step.succeeded"] * 4),
        "run.succeeded",
    ]
    succeeded = h.audit_details("step.succeeded")
    assert succeeded[1] == {"step": "ready", "attempts": 1, "duration_s": 2.0}
    assert h.audit.verify().ok


def test_when_skips_and_results_flow_between_steps(h: Harness) -> None:
    seen: dict[str, Any] = {}

    def second(ctx: StepContext) -> dict[str, Any]:
        seen["first"] = ctx.result_of("first")
        seen["skipped"] = ctx.result_of("skipped")
        seen["env"] = (ctx.environment_name, ctx.environment.url, ctx.kind, ctx.options)
        ctx.record_baseline({"p95_ms": 120})
        ctx.report("found something", broadcast=True)
        return {"at": ctx.now()}  # not JSON: stored as a string

    engine = h.engine([
        simple(h, "first", body=lambda ctx: {"token": 42}),
        simple(h, "skipped", when=lambda ctx: False),
        simple(h, "second", body=second),
    ])
    deployment_id = h.start(engine)
    assert engine.run(deployment_id) is S.SUCCEEDED

    assert steps_log(h) == ["run:first", "run:second"]
    assert h.step_states(deployment_id) == {
        "first": "succeeded", "skipped": "skipped", "second": "succeeded"}
    assert seen["first"] == {"token": 42}
    assert seen["skipped"] == {}
    assert seen["env"] == (ENV, "http://127.0.0.1:1", "standard", {})
    assert h.deployments.get_step(deployment_id, "second").result == {  # type: ignore[union-attr]
        "at": str(START)}
    baseline = h.stores.baselines.latest(ENV)
    assert baseline is not None and (baseline.version, baseline.metrics) == (
        "2.0.0", {"p95_ms": 120})
    assert (deployment_id, "found something", True) in h.reporter.events
    assert "step.skipped" in h.actions(deployment_id)


def test_snapshot_shows_every_step_of_the_playbook(h: Harness) -> None:
    engine = h.engine(blue_green(h))
    deployment_id = h.create()
    before = engine.snapshot(deployment_id)
    assert [(s.name, s.state) for s in before.steps] == [
        ("deploy", StepState.PENDING), ("ready", StepState.PENDING),
        ("switch", StepState.PENDING), ("stop_old", StepState.PENDING),
    ]
    assert (before.state, before.version, before.environment, before.requester) == (
        S.QUEUED, "2.0.0", ENV, REQUESTER)
    h.deployments.claim_next("w1")
    engine.run(deployment_id)
    after = engine.snapshot(deployment_id)
    assert after.state is S.SUCCEEDED
    assert after.steps[0].title == "Deploy to green"
    assert after.steps[1].duration == timedelta(seconds=2)


# -- failures and compensation ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("failing", "operation", "undone", "final"),
    [
        ("deploy", "deploy", [], S.FAILED),
        ("ready", "wait_ready", ["undo:deploy"], S.ROLLED_BACK),
        ("switch", "switch", ["undo:deploy"], S.ROLLED_BACK),  # ready has no undo
        ("stop_old", "stop", ["undo:switch", "undo:deploy"], S.ROLLED_BACK),
    ],
)
def test_failure_at_each_step_undoes_the_succeeded_ones_in_reverse(
    h: Harness, failing: str, operation: str, undone: list[str], final: DeploymentState
) -> None:
    engine = h.engine(blue_green(h))
    deployment_id = h.start(engine)
    h.platform.fail(operation)

    assert engine.run(deployment_id) is final

    order = ["deploy", "ready", "switch", "stop_old"]
    ran = [f"run:{name}" for name in order[: order.index(failing) + 1]]
    assert steps_log(h) == ran + undone
    states = h.step_states(deployment_id)
    assert states[failing] == "failed"
    for name in undone:
        assert states[name.removeprefix("undo:")] == "undone"
    if failing in ("switch", "stop_old"):
        assert states["ready"] == "succeeded"  # no undo: left as it was
    assert h.lock() == (None, None, None, None)
    record = h.deployments.get(deployment_id)
    assert record is not None and record.finished_at is not None
    title = engine.playbooks[record.kind].step(failing).title
    assert record.error == f"{title} failed: {operation} failed (injected)"
    assert f"✗ {title} failed: {operation} failed (injected). Rolling back." in (
        h.reporter.broadcasts())
    actions = h.actions(deployment_id)
    assert actions.count("step.undone") == len(undone)
    assert "step.failed" in actions and actions[-1] == f"run.{final.value}"
    if final is S.ROLLED_BACK:
        env = h.environments.get(ENV)
        assert env is not None and env.live_slot in (None, Slot.BLUE)


def test_unexpected_exception_records_its_message_not_a_traceback(h: Harness) -> None:
    def broken(ctx: StepContext) -> None:
        raise KeyError("gone")

    engine = h.engine([simple(h, "a"), simple(h, "b", body=broken)])
    deployment_id = h.start(engine)
    assert engine.run(deployment_id) is S.ROLLED_BACK
    step = h.deployments.get_step(deployment_id, "b")
    assert step is not None and step.error == "KeyError: 'gone'"
    assert steps_log(h) == ["run:a", "run:b", "undo:a"]


def test_retryable_error_is_retried_then_succeeds(h: Harness) -> None:
    engine = h.engine(blue_green(h, switch_retry=RetryPolicy(attempts=3)))
    deployment_id = h.start(engine)
    h.platform.fail("switch", times=2, retryable=True)

    assert engine.run(deployment_id) is S.SUCCEEDED

    switch = h.deployments.get_step(deployment_id, "switch")
    assert switch is not None and (switch.state, switch.attempts) == (StepState.SUCCEEDED, 3)
    assert len(h.platform.called("switch")) == 3
    assert sum(h.sleeps) == pytest.approx(2 + 1 + 2)  # ready's 2s, then backoff 1s and 2s
    assert ("↻ Switch traffic to green: switch failed (injected); trying again in 1s "
            "(attempt 2 of 3)") in h.reporter.texts()
    assert h.actions(deployment_id).count("step.retrying") == 2


def test_retry_after_of_the_service_wins_over_a_shorter_backoff(h: Harness) -> None:
    engine = h.engine(blue_green(h, switch_retry=RetryPolicy(attempts=2)))
    deployment_id = h.start(engine)
    h.platform.fail("switch", retryable=True, external=True, retry_after=10)
    assert engine.run(deployment_id) is S.SUCCEEDED
    assert sum(h.sleeps) == pytest.approx(2 + 10)
    assert max(h.sleeps) <= 1.0  # slept in slices, so cancel and heartbeats are noticed


def test_non_retryable_error_fails_at_once(h: Harness) -> None:
    engine = h.engine(blue_green(h, switch_retry=RetryPolicy(attempts=3)))
    deployment_id = h.start(engine)
    h.platform.fail("switch", retryable=False)
    assert engine.run(deployment_id) is S.ROLLED_BACK
    switch = h.deployments.get_step(deployment_id, "switch")
    assert switch is not None and (switch.state, switch.attempts) == (StepState.FAILED, 1)
    assert len(h.platform.called("switch")) == 1


def test_retries_stop_when_attempts_run_out(h: Harness) -> None:
    engine = h.engine(blue_green(h, switch_retry=RetryPolicy(attempts=3)))
    deployment_id = h.start(engine)
    h.platform.fail("switch", times=5, retryable=True)
    assert engine.run(deployment_id) is S.ROLLED_BACK
    switch = h.deployments.get_step(deployment_id, "switch")
    assert switch is not None and (switch.state, switch.attempts) == (StepState.FAILED, 3)
    assert switch.error == "switch failed (injected)"


def test_undo_failure_needs_attention_keeps_the_lock_and_stops_undoing(h: Harness) -> None:
    steps = blue_green(h)

    def stop_old(ctx: StepContext) -> None:
        h.log.append("run:stop_old")
        h.platform.fail("switch", message="router unreachable")  # the undo of switch will fail
        raise StepFailure("blue would not stop")

    steps[3] = dataclasses.replace(steps[3], run=stop_old)
    engine = h.engine(steps)
    deployment_id = h.start(engine)

    assert engine.run(deployment_id) is S.NEEDS_ATTENTION

    assert steps_log(h) == [
        "run:deploy", "run:ready", "run:switch", "run:stop_old", "undo:switch"]  # not deploy
    assert h.step_states(deployment_id) == {
        "deploy": "succeeded", "ready": "succeeded", "switch": "undo_failed",
        "stop_old": "failed"}
    message = "undo of Switch traffic to green failed: router unreachable"
    record = h.deployments.get(deployment_id)
    assert record is not None and record.error == message
    assert h.lock() == (REQUESTER, f"needs attention after #{deployment_id}: {message}",
                        deployment_id, None)
    assert h.reporter.broadcasts()[-1] == (
        f":rotating_light: #{deployment_id} needs attention: {message}. "
        "The environment production stays locked.")
    assert h.actions(deployment_id)[-2:] == ["step.undo_failed", "run.needs_attention"]

    # The kept lock has no owner: recover() never reaps it, and nobody else can deploy.
    h.clock.advance(timedelta(hours=1))
    assert engine.recover(timedelta(minutes=1)) == []
    assert h.lock()[0] == REQUESTER
    other = h.start(engine)
    assert engine.run(other) is S.FAILED
    assert h.deployments.get(other).error == (  # type: ignore[union-attr]
        f"production is locked by <@{REQUESTER}> (needs attention after #{deployment_id}: "
        f"{message})")


# -- the lock -----------------------------------------------------------------------------------


def test_lock_held_by_another_deployment_fails_closed(h: Harness) -> None:
    other = h.create(S.PENDING_APPROVAL, requester="U0OTHER")
    assert h.environments.acquire_lock(ENV, "U0OTHER", f"deployment #{other}", other, "w9")
    engine = h.engine(blue_green(h))
    deployment_id = h.start(engine)

    assert engine.run(deployment_id) is S.FAILED

    record = h.deployments.get(deployment_id)
    assert record is not None
    assert record.error == f"production is locked by <@U0OTHER> (deployment #{other})"
    assert h.log == [] and h.platform.calls == []
    assert h.deployments.steps(deployment_id) == []
    assert h.lock() == ("U0OTHER", f"deployment #{other}", other, "w9")  # untouched
    assert h.reporter.broadcasts() == [
        f"✗ #{deployment_id} did not start: {record.error}. Nothing was changed."]
    assert h.actions(deployment_id) == ["run.started", "run.failed"]


def test_manual_lock_fails_closed(h: Harness) -> None:
    assert h.environments.acquire_lock(ENV, "U0OPS", "database maintenance", None, None)
    engine = h.engine(blue_green(h))
    deployment_id = h.start(engine)
    assert engine.run(deployment_id) is S.FAILED
    record = h.deployments.get(deployment_id)
    assert record is not None
    assert record.error == "production is locked by <@U0OPS> (database maintenance)"
    assert h.log == []
    assert h.lock() == ("U0OPS", "database maintenance", None, None)


class BrokenLocks(EnvironmentStateRepository):
    def acquire_lock(self, *args: Any, **kwargs: Any) -> bool:
        raise ExternalServiceError("database", "connection refused", retryable=True)


def test_a_store_error_taking_the_lock_fails_closed(h: Harness) -> None:
    engine = h.engine(blue_green(h), environments=BrokenLocks(h.database, h.clock))
    deployment_id = h.start(engine)
    assert engine.run(deployment_id) is S.FAILED
    record = h.deployments.get(deployment_id)
    assert record is not None
    assert record.error == "could not take the lock on production: database: connection refused"
    assert h.log == []


def test_lock_taken_by_someone_else_during_the_run_fails_the_step(h: Harness) -> None:
    def grab(ctx: StepContext) -> None:
        h.environments.force_release(ENV)
        h.environments.acquire_lock(ENV, "U0OPS", "hands off", None, None)
        ctx.sleep(6)  # the heartbeat at 5s finds the lock gone

    engine = h.engine([simple(h, "a"), simple(h, "b", body=grab), simple(h, "c")])
    deployment_id = h.start(engine)
    assert engine.run(deployment_id) is S.ROLLED_BACK
    step = h.deployments.get_step(deployment_id, "b")
    assert step is not None
    assert step.error == "lost the lock: production is locked by <@U0OPS> (hands off)"
    assert steps_log(h) == ["run:a", "run:b", "undo:a"]
    assert h.lock() == ("U0OPS", "hands off", None, None)  # the person's lock is not released


# -- timeout and heartbeat ----------------------------------------------------------------------


def test_timeout_through_ctx_sleep(h: Harness) -> None:
    def forever(ctx: StepContext) -> None:
        while True:
            ctx.sleep(1)

    engine = h.engine([simple(h, "a"),
                       simple(h, "wait", body=forever, timeout=timedelta(seconds=5))])
    deployment_id = h.start(engine)
    assert engine.run(deployment_id) is S.ROLLED_BACK
    step = h.deployments.get_step(deployment_id, "wait")
    assert step is not None and step.error == "timed out after 5s"
    assert step.finished_at == START + timedelta(seconds=5)
    assert steps_log(h) == ["run:a", "run:wait", "undo:a"]


def test_a_step_that_overruns_without_sleeping_is_accepted(h: Harness) -> None:
    engine = h.engine([
        simple(h, "slow", body=lambda ctx: h.clock.advance(timedelta(minutes=10)),
               timeout=timedelta(minutes=1)),
        simple(h, "next"),
    ])
    deployment_id = h.start(engine)
    assert engine.run(deployment_id) is S.SUCCEEDED
    assert steps_log(h) == ["run:slow", "run:next"]


def test_heartbeats_while_a_step_waits(h: Harness) -> None:
    beats: list[Any] = []

    def wait(ctx: StepContext) -> None:
        ctx.sleep(12)
        record = h.deployments.get(ctx.deployment_id)
        env = h.environments.get(ENV)
        assert record is not None and env is not None
        beats.extend([record.heartbeat_at, env.lock_heartbeat_at])

    engine = h.engine([simple(h, "wait", body=wait)], heartbeat_every=timedelta(seconds=5))
    deployment_id = h.start(engine)
    assert engine.run(deployment_id) is S.SUCCEEDED
    assert beats == [START + timedelta(seconds=10)] * 2


def test_a_failing_reporter_never_breaks_the_run(h: Harness) -> None:
    class Broken:
        def run_changed(self, run: RunSnapshot) -> None:
            raise RuntimeError("slack is down")

        def event(self, run: RunSnapshot, text: str, *, broadcast: bool = False) -> None:
            raise RuntimeError("slack is down")

    engine = h.engine(blue_green(h), reporter=Broken())
    deployment_id = h.start(engine)
    assert engine.run(deployment_id) is S.SUCCEEDED


# -- crash and resume ---------------------------------------------------------------------------


def crashing_once(h: Harness, name: str, **kwargs: Any) -> Step:
    """A step that kills the 'process' the first time it runs."""
    calls = {"n": 0}

    def body(ctx: StepContext) -> None:
        calls["n"] += 1
        if calls["n"] == 1:
            raise Crash()

    return simple(h, name, body=body, **kwargs)


@pytest.mark.parametrize("rerun", [True, False])
def test_resume_after_a_crash(h: Harness, rerun: bool) -> None:
    steps = [simple(h, "a"), simple(h, "b"), crashing_once(h, "c", rerun_on_resume=rerun),
             simple(h, "d")]
    first = h.engine(steps, worker_id="w1")
    deployment_id = h.start(first)
    with pytest.raises(Crash):
        first.run(deployment_id)  # the engine does not catch BaseException
    assert h.state(deployment_id) is S.RUNNING
    assert h.step_states(deployment_id)["c"] == "running"
    assert h.lock()[2:] == (deployment_id, "w1")

    # A restarted bot: new engine, new connections, same database; the old heartbeat is stale.
    second = h.restarted(steps, worker_id="w2")
    assert second.recover(timedelta(minutes=1)) == []  # not stale yet
    h.clock.advance(timedelta(minutes=2))
    assert second.recover(timedelta(minutes=1)) == [deployment_id]
    record = h.deployments.get(deployment_id)
    assert record is not None and (record.state, record.worker_id) == (S.QUEUED, None)
    assert h.lock()[2:] == (deployment_id, None)  # parked: not reaped, nobody else can take it
    claimed = second.deployments.claim_next("w2")
    assert claimed is not None and claimed.id == deployment_id

    if rerun:
        assert second.run(deployment_id) is S.SUCCEEDED
        assert steps_log(h) == ["run:a", "run:b", "run:c", "run:c", "run:d"]
        step = h.deployments.get_step(deployment_id, "c")
        assert step is not None and step.attempts == 2
    else:
        assert second.run(deployment_id) is S.ROLLED_BACK
        assert steps_log(h) == ["run:a", "run:b", "run:c", "undo:b", "undo:a"]
        step = h.deployments.get_step(deployment_id, "c")
        assert step is not None and step.state is StepState.FAILED
        assert step.error is not None and step.error.startswith("interrupted")
    assert h.lock() == (None, None, None, None)
    assert "run.taken_over" in h.actions(deployment_id)
    assert "run.resumed" in h.actions(deployment_id)
    taken = h.audit_details("run.taken_over")
    assert taken[0]["previous_worker"] == "w1"


def test_crash_during_compensation_then_resume_continues_undoing(h: Harness) -> None:
    undo_calls = {"n": 0}

    def undo_b(ctx: StepContext) -> None:
        undo_calls["n"] += 1
        if undo_calls["n"] == 1:
            raise Crash()

    def fail(ctx: StepContext) -> None:
        raise StepFailure("boom")

    steps = [simple(h, "a"), simple(h, "b", undo_body=undo_b), simple(h, "c", body=fail)]
    first = h.engine(steps, worker_id="w1")
    deployment_id = h.start(first)
    with pytest.raises(Crash):
        first.run(deployment_id)
    assert h.state(deployment_id) is S.ROLLING_BACK
    assert h.step_states(deployment_id) == {"a": "succeeded", "b": "undoing", "c": "failed"}

    second = h.restarted(steps, worker_id="w2")
    with pytest.raises(ConflictError):
        second.run(deployment_id)  # still w1's until its heartbeat is stale
    h.clock.advance(timedelta(minutes=2))
    assert second.recover(timedelta(minutes=1)) == [deployment_id]
    record = h.deployments.get(deployment_id)
    assert record is not None and (record.state, record.worker_id) == (S.ROLLING_BACK, "w2")

    assert second.run(deployment_id) is S.ROLLED_BACK
    assert steps_log(h) == ["run:a", "run:b", "run:c", "undo:b", "undo:b", "undo:a"]
    assert h.step_states(deployment_id) == {"a": "undone", "b": "undone", "c": "failed"}
    assert h.lock() == (None, None, None, None)
    assert "Resuming the rollback: undoing 2 steps" in h.reporter.texts(deployment_id)


def test_a_taken_over_run_stops_without_touching_anything(h: Harness) -> None:
    steps: list[Step] = []
    calls = {"n": 0}

    def stall(ctx: StepContext) -> None:
        calls["n"] += 1
        if calls["n"] == 1:  # the first worker looks dead to the second one...
            h.clock.advance(timedelta(minutes=2))
            assert second.recover(timedelta(minutes=1)) == [ctx.deployment_id]
            ctx.sleep(1)  # ...and notices the take-over here

    steps.extend([simple(h, "a"), simple(h, "b", body=stall), simple(h, "c")])
    second = h.restarted(steps, worker_id="w2")
    first = h.engine(steps, worker_id="w1")
    deployment_id = h.start(first)

    assert first.run(deployment_id) is S.QUEUED
    assert steps_log(h) == ["run:a", "run:b"]  # no undo, c not run
    assert h.step_states(deployment_id)["b"] == "running"
    assert h.lock()[2:] == (deployment_id, None)  # parked for the resumed run
    assert "run.abandoned" in h.actions(deployment_id)

    assert second.deployments.claim_next("w2") is not None
    assert second.run(deployment_id) is S.SUCCEEDED
    assert steps_log(h) == ["run:a", "run:b", "run:b", "run:c"]


# -- cancel -------------------------------------------------------------------------------------


def test_cancel_from_inside_a_step_interrupts_it_and_compensates(h: Harness) -> None:
    other = h.restarted([], worker_id="api")  # another process (the Slack listener)

    def cancel_then_wait(ctx: StepContext) -> None:
        assert other.request_cancel(ctx.deployment_id, "U0LEAD1")
        ctx.sleep(30)

    engine = h.engine([simple(h, "a"), simple(h, "b", body=cancel_then_wait), simple(h, "c")])
    deployment_id = h.start(engine)

    assert engine.run(deployment_id) is S.ROLLED_BACK

    assert steps_log(h) == ["run:a", "run:b", "undo:a"]
    record = h.deployments.get(deployment_id)
    assert record is not None and record.error == "cancelled by <@U0LEAD1>"
    step = h.deployments.get_step(deployment_id, "b")
    assert step is not None and step.state is StepState.FAILED
    assert step.error == "interrupted: cancelled by <@U0LEAD1>"
    assert sum(h.sleeps) <= 1.0  # noticed within the first slice
    assert "Cancelled by <@U0LEAD1>; undoing 1 step" in h.reporter.broadcasts()
    assert h.lock() == (None, None, None, None)
    assert "run.cancel_requested" in h.actions(deployment_id)


def test_cancel_from_another_thread(h: Harness) -> None:
    started, proceed = threading.Event(), threading.Event()

    def wait_for_cancel(ctx: StepContext) -> None:
        started.set()
        assert proceed.wait(30)
        ctx.sleep(5)

    engine = h.engine([simple(h, "a"), simple(h, "b", body=wait_for_cancel), simple(h, "c")])
    deployment_id = h.start(engine)
    result: list[DeploymentState] = []
    worker = threading.Thread(target=lambda: result.append(engine.run(deployment_id)))
    worker.start()
    assert started.wait(30)
    assert h.restarted([], worker_id="api").request_cancel(deployment_id, "U0LEAD1")
    proceed.set()
    worker.join(30)
    assert result == [S.ROLLED_BACK]
    assert steps_log(h) == ["run:a", "run:b", "undo:a"]


def test_cancel_between_steps_undoes_everything_done(h: Harness) -> None:
    engine = h.engine([
        simple(h, "a"),
        simple(h, "b", body=lambda ctx: engine.request_cancel(ctx.deployment_id, "U0LEAD1")),
        simple(h, "c"),
    ])
    deployment_id = h.start(engine)
    assert engine.run(deployment_id) is S.ROLLED_BACK
    assert steps_log(h) == ["run:a", "run:b", "undo:b", "undo:a"]
    assert "Cancelled by <@U0LEAD1>; undoing 2 steps" in h.reporter.broadcasts()


def test_cancel_before_anything_succeeded_ends_cancelled(h: Harness) -> None:
    def cancel_then_wait(ctx: StepContext) -> None:
        engine.request_cancel(ctx.deployment_id, "U0LEAD1")
        ctx.sleep(1)

    engine = h.engine([simple(h, "a", body=cancel_then_wait), simple(h, "b")])
    deployment_id = h.start(engine)
    assert engine.run(deployment_id) is S.CANCELLED
    assert steps_log(h) == ["run:a"]
    assert h.lock() == (None, None, None, None)


@pytest.mark.parametrize("state", [S.QUEUED, S.PENDING_APPROVAL, S.SCHEDULED])
def test_cancel_before_start_is_immediate(h: Harness, state: DeploymentState) -> None:
    engine = h.engine(blue_green(h))
    deployment_id = h.create(state)
    assert engine.request_cancel(deployment_id, "U0LEAD1")
    record = h.deployments.get(deployment_id)
    assert record is not None
    assert (record.state, record.error) == (S.CANCELLED, "cancelled by <@U0LEAD1>")
    assert record.finished_at is not None
    assert not engine.request_cancel(deployment_id, "U0LEAD1")  # already done
    assert h.reporter.texts(deployment_id) == ["Cancelled by <@U0LEAD1> before it started."]
    assert h.actions(deployment_id) == ["run.cancelled"]
    assert h.deployments.claim_next("w1") is None


def test_cancel_of_a_finished_run_changes_nothing(h: Harness) -> None:
    engine = h.engine(blue_green(h))
    deployment_id = h.start(engine)
    engine.run(deployment_id)
    assert not engine.request_cancel(deployment_id, "U0LEAD1")
    assert h.state(deployment_id) is S.SUCCEEDED
    assert not engine.request_cancel(999_999, "U0LEAD1")


@pytest.mark.parametrize("state", [S.QUEUED, S.RUNNING])
def test_two_concurrent_cancels_exactly_one_wins(h: Harness, state: DeploymentState) -> None:
    engine = h.engine([simple(h, "a")])
    deployment_id = h.start(engine) if state is S.RUNNING else h.create()
    results = run_concurrently(lambda i: engine.request_cancel(deployment_id, f"U0CAN{i}"), 6)
    assert sorted(results) == [False] * 5 + [True]
    if state is S.RUNNING:
        assert h.state(deployment_id) is S.ROLLING_BACK
        assert engine.run(deployment_id) is S.CANCELLED  # the worker notices; nothing ran
        assert h.log == []
    else:
        assert h.state(deployment_id) is S.CANCELLED


@pytest.mark.parametrize("via_recover", [True, False])
def test_cancel_of_a_requeued_run_with_done_steps_compensates(
    h: Harness, via_recover: bool
) -> None:
    steps = [simple(h, "a"), crashing_once(h, "b"), simple(h, "c")]
    first = h.engine(steps, worker_id="w1")
    deployment_id = h.start(first)
    with pytest.raises(Crash):
        first.run(deployment_id)
    h.clock.advance(timedelta(minutes=2))
    second = h.restarted(steps, worker_id="w2")
    assert second.recover(timedelta(minutes=1)) == [deployment_id]
    assert h.state(deployment_id) is S.QUEUED

    assert second.request_cancel(deployment_id, "U0LEAD1")
    record = h.deployments.get(deployment_id)
    assert record is not None  # step a changed something: undo it; no worker owns it yet
    assert (record.state, record.worker_id) == (S.ROLLING_BACK, None)
    if via_recover:
        assert second.recover(timedelta(minutes=1)) == [deployment_id]
    assert second.run(deployment_id) is S.ROLLED_BACK  # run() takes an unowned rollback
    assert steps_log(h) == ["run:a", "run:b", "undo:a"]
    assert h.lock() == (None, None, None, None)


# -- recover ------------------------------------------------------------------------------------


def test_recover_requeues_stale_runs_and_reaps_stale_locks(h: Harness) -> None:
    engine = h.engine(blue_green(h), worker_id="w2")
    dead = h.create()
    assert h.deployments.claim_next("dead") is not None
    assert h.environments.acquire_lock(ENV, REQUESTER, f"deployment #{dead}", dead, "dead")
    alive = h.create(environment="staging")
    assert h.deployments.claim_next("alive") is not None
    assert h.environments.acquire_lock("ghost-env", "U0X", "deployment #0", None, "ghost")
    assert h.environments.acquire_lock("qa", "U0OPS", "manual", None, None)

    h.clock.advance(timedelta(minutes=2))
    assert h.deployments.heartbeat(alive, "alive")
    assert engine.recover(timedelta(minutes=1)) == [dead]

    record = h.deployments.get(dead)
    assert record is not None and (record.state, record.worker_id) == (S.QUEUED, None)
    assert h.state(alive) is S.RUNNING
    assert h.lock() == (REQUESTER, f"deployment #{dead}", dead, None)  # parked, not reaped
    ghost = h.environments.get("ghost-env")
    assert ghost is not None and ghost.lock_holder is None  # reaped
    qa = h.environments.get("qa")
    assert qa is not None and qa.lock_holder == "U0OPS"  # a person's lock is never reaped
    assert h.actions() == ["run.taken_over", "lock.reaped"]
    assert engine.recover(timedelta(minutes=1)) == []  # nothing left to take


def test_recover_claims_a_stale_rollback_for_this_worker(h: Harness) -> None:
    engine = h.engine(blue_green(h), worker_id="w2")
    deployment_id = h.create()
    h.deployments.claim_next("dead")
    assert h.deployments.transition(deployment_id, [S.RUNNING], S.ROLLING_BACK, error="x")
    h.clock.advance(timedelta(minutes=2))
    other = h.restarted(blue_green(h), worker_id="w3")
    results = run_concurrently(
        lambda i: (engine if i == 0 else other).recover(timedelta(minutes=1)), 2)
    assert sorted(results) == [[], [deployment_id]]  # exactly one replica took it
    record = h.deployments.get(deployment_id)
    assert record is not None and record.state is S.ROLLING_BACK
    winner = engine if results[0] else other
    assert record.worker_id == winner.worker_id
    assert winner.run(deployment_id) is S.FAILED  # nothing had run: nothing to undo


def test_run_refuses_a_deployment_it_did_not_claim(h: Harness) -> None:
    engine: Engine = h.engine(blue_green(h))
    queued = h.create()
    with pytest.raises(ConflictError):
        engine.run(queued)
    h.deployments.claim_next("someone-else")
    with pytest.raises(ConflictError):
        engine.run(queued)
    with pytest.raises(LookupError):
        engine.run(999_999)


def test_resume_refuses_when_someone_else_took_the_environment(h: Harness) -> None:
    steps = [simple(h, "a"), crashing_once(h, "b"), simple(h, "c")]
    first = h.engine(steps, worker_id="w1")
    deployment_id = h.start(first)
    with pytest.raises(Crash):
        first.run(deployment_id)
    h.clock.advance(timedelta(minutes=2))
    second = h.restarted(steps, worker_id="w2")
    assert second.recover(timedelta(minutes=1)) == [deployment_id]
    assert h.environments.force_release(ENV) == REQUESTER  # someone unlocked by hand...
    assert h.environments.acquire_lock(ENV, "U0OPS", "hotfix by hand", None, None)  # ...and took it
    assert second.deployments.claim_next("w2") is not None

    assert second.run(deployment_id) is S.NEEDS_ATTENTION

    assert steps_log(h) == ["run:a", "run:b"]  # nothing re-run, nothing undone without the lock
    record = h.deployments.get(deployment_id)
    assert record is not None and record.error == (
        f"production is locked by <@U0OPS> (hotfix by hand); cannot resume #{deployment_id} "
        "without it")
    assert h.lock() == ("U0OPS", "hotfix by hand", None, None)
    assert h.reporter.broadcasts()[-1].startswith(f":rotating_light: #{deployment_id} needs")
