"""A graceful stop hands a run over at its next safe point (``Engine.request_stop``).

Where a step waits (``ctx.sleep``) or between steps, the run of a stopping worker goes back to
QUEUED (or stays ROLLING_BACK) without a worker and with its lock parked, so another worker
claims and resumes it at once, without waiting for ``stale_after``. Both backends.
"""

from __future__ import annotations

from datetime import timedelta

from bot.runner import RunQueueTask
from procedures.model import DeploymentState
from procedures.playbook import KeepsProgress, Step, StepContext
from tests.engine.conftest import REQUESTER, Harness


def _steps(h: Harness, stop: list[object]) -> list[Step]:
    """deploy, then a monitor that waits in slices (asking ``stop`` to stop its worker at its
    third slice), then finish."""

    def deploy(ctx: StepContext) -> None:
        h.log.append("run:deploy")

    def undo_deploy(ctx: StepContext) -> None:
        h.log.append("undo:deploy")

    def monitor(ctx: StepContext) -> None:
        h.log.append("run:monitor")
        for slice_ in range(5):
            if slice_ == 2 and stop:
                stop.pop().request_stop()  # type: ignore[attr-defined]
            ctx.sleep(1)

    def finish(ctx: StepContext) -> None:
        h.log.append("run:finish")

    return [Step("deploy", "Deploy", deploy, undo_deploy),
            Step("monitor", "Monitor the new version", monitor),
            Step("finish", "Finish", finish)]


def test_a_stopping_worker_hands_a_waiting_step_over_at_once(h: Harness) -> None:
    stop: list[object] = []
    steps = _steps(h, stop)
    first = h.engine(steps, worker_id="w1")
    stop.append(first)
    deployment_id = h.start(first)

    assert first.run(deployment_id) is DeploymentState.QUEUED
    record = h.deployments.get(deployment_id)
    assert record is not None and record.worker_id is None
    assert record.current_step == "monitor"
    # The lock stays the run's, parked without an owner: neither freed nor someone else's.
    assert h.lock() == (REQUESTER, f"deployment #{deployment_id}", deployment_id, None)
    assert h.audit_details("run.released") == [
        {"state": "queued", "step": "monitor", "worker": "w1"}]
    assert any(t.startswith("↪ Handed over during Monitor the new version")
               for t in h.reporter.texts(deployment_id))
    # Nothing was undone, and it is not stale: recover() would not take it for 30 s.
    assert [e for e in h.log if e.startswith("undo:")] == []
    assert h.deployments.stale(timedelta(seconds=30), h.clock.now()) == []

    # Another worker claims it at its next poll and resumes the interrupted step.
    second = h.restarted(steps, worker_id="w2")
    runs = RunQueueTask(second, second.deployments, worker_id="w2")
    try:
        assert runs.run_once() is True
        ended, left = runs.drain(30)
    finally:
        runs.shutdown()
    assert ended == {deployment_id: DeploymentState.SUCCEEDED} and left == []
    assert h.log.count("run:deploy") == 1 and h.log.count("run:monitor") == 2
    assert h.log[-1] == "run:finish"
    monitor = h.deployments.get_step(deployment_id, "monitor")
    assert monitor is not None and monitor.attempts == 2
    assert "run.taken_over" not in h.actions(deployment_id)
    assert h.lock() == (None, None, None, None)


def test_a_rollback_is_handed_over_and_claimed_by_the_next_worker(h: Harness) -> None:
    stop: list[object] = []

    def deploy(ctx: StepContext) -> None:
        h.log.append("run:deploy")

    def undo_deploy(ctx: StepContext) -> None:
        h.log.append("undo:deploy:start")
        if stop:
            stop.pop().request_stop()  # type: ignore[attr-defined]
        ctx.sleep(1)  # a wait inside an undo is a safe point too (undo is idempotent)
        h.log.append("undo:deploy:done")

    def broken(ctx: StepContext) -> None:
        raise RuntimeError("smoke test failed")

    steps = [Step("deploy", "Deploy", deploy, undo_deploy), Step("smoke", "Smoke", broken)]
    first = h.engine(steps, worker_id="w1")
    stop.append(first)
    deployment_id = h.start(first)

    assert first.run(deployment_id) is DeploymentState.ROLLING_BACK
    record = h.deployments.get(deployment_id)
    assert record is not None and record.worker_id is None
    assert h.audit_details("run.released")[0]["state"] == "rolling_back"

    second = h.restarted(steps, worker_id="w2")
    runs = RunQueueTask(second, second.deployments, worker_id="w2")
    try:
        assert runs.run_once() is True  # claimed without a worker: no stale wait
        ended, _ = runs.drain(30)
    finally:
        runs.shutdown()
    assert ended == {deployment_id: DeploymentState.ROLLED_BACK}
    assert h.log.count("undo:deploy:start") == 2 and h.log[-1] == "undo:deploy:done"


def test_a_stopping_task_claims_nothing(h: Harness) -> None:
    engine = h.engine(_steps(h, []), worker_id="w1")
    h.create()
    runs = RunQueueTask(engine, engine.deployments, worker_id="w1")
    try:
        runs.stop_claiming()
        assert runs.run_once() is False
        assert runs.held() == []
    finally:
        runs.shutdown()
    assert [d.state for d in h.deployments.list_in_states([DeploymentState.QUEUED])] == [
        DeploymentState.QUEUED]


def test_a_step_continues_from_the_progress_it_kept_before_the_hand_over(h: Harness) -> None:
    stop: list[object] = []
    seen: list[object] = []

    def deploy(ctx: StepContext) -> None:
        seen.append(("deploy kept", ctx.kept()))  # type: ignore[attr-defined]

    def watch(ctx: StepContext) -> dict[str, int]:
        assert isinstance(ctx, KeepsProgress)
        kept = ctx.kept()
        seen.append(kept)
        done = int(kept["slices"]) if kept else 0
        for slice_ in range(done, 5):
            if slice_ == 2 and stop:
                stop.pop().request_stop()  # type: ignore[attr-defined]
            ctx.sleep(1)
            ctx.keep({"slices": slice_ + 1})
        return {"slices": 5}

    steps = [Step("deploy", "Deploy", deploy), Step("monitor", "Monitor", watch)]
    first = h.engine(steps, worker_id="w1")
    stop.append(first)
    deployment_id = h.start(first)
    assert first.run(deployment_id) is DeploymentState.QUEUED
    # What the first worker kept is with the step while it is left RUNNING.
    record = h.deployments.get_step(deployment_id, "monitor")
    assert record is not None and record.result == {"progress": {"slices": 2}}

    second = h.restarted(steps, worker_id="w2")
    runs = RunQueueTask(second, second.deployments, worker_id="w2")
    try:
        assert runs.run_once() is True
        ended, _ = runs.drain(30)
    finally:
        runs.shutdown()
    assert ended == {deployment_id: DeploymentState.SUCCEEDED}
    # A first attempt has nothing kept; the second continues from slice 2, not from 0.
    assert seen == [("deploy kept", None), None, {"slices": 2}]
    record = h.deployments.get_step(deployment_id, "monitor")
    assert record is not None and record.result == {"slices": 5}  # the result replaces it
