"""A run heartbeats while a step blocks, so another replica never takes over a live run."""

from __future__ import annotations

import threading
from datetime import timedelta

from procedures.model import DeploymentState
from procedures.playbook import Step, StepContext
from tests.engine.conftest import Harness


def test_a_blocking_step_keeps_its_run_alive(h: Harness) -> None:
    beats: list[object] = []
    release = threading.Event()

    def blocking(ctx: StepContext) -> None:
        # Blocks without ctx.sleep, as a readiness wait inside an SDK call would; the
        # deployment's heartbeat must keep moving meanwhile.
        deadline = 50
        while not release.wait(0.02) and deadline:
            deadline -= 1
            record = h.deployments.get(ctx.deployment_id)
            if record is not None and record.heartbeat_at not in beats:
                beats.append(record.heartbeat_at)
                h.clock.advance(timedelta(seconds=1))  # each beat is visible as a new time
            if len(beats) >= 3:
                release.set()

    engine = h.engine([Step("block", "Block", blocking)],
                      heartbeat_every=timedelta(milliseconds=50))
    deployment_id = h.start(engine)
    assert engine.run(deployment_id) is DeploymentState.SUCCEEDED
    assert len(beats) >= 3, beats
    # Nothing was taken over: a replica looking now sees a fresh heartbeat.
    assert engine.recover(timedelta(seconds=30)) == []
