"""The verified rollback under the real Engine (SQLite and PostgreSQL): monitoring of 2.0.0
fails after blue (1.0.0) was removed. The compensation redeploys 1.0.0 into blue, switches,
verifies the public URL and ends ROLLED_BACK; when the redeploy fails too, the run needs
attention, keeps the environment locked, and the thread carries the exact ``/qlp emergency``
command for 1.0.0. Doubles and fixtures are :mod:`tests.playbooks.test_standard_failures`'.
"""

from __future__ import annotations

import dataclasses

from procedures.errors import StepFailure
from procedures.model import DeploymentState, Slot
from procedures.platforms.base import SlotStatus
from procedures.playbook import Playbook, StepContext, StepResult
from tests.playbooks.test_standard_failures import OLD, World, world  # noqa: F401  (fixture)

S = DeploymentState


def _monitor_fails_after_blue_is_removed(world: World,  # noqa: F811
                                         *, redeploy_fails: bool = False) -> Playbook:
    platform = world.platform

    def monitor(ctx: StepContext) -> StepResult:
        platform.slots[Slot.BLUE] = SlotStatus(Slot.BLUE, running=False, detail="removed")
        if redeploy_fails:
            platform.fail("deploy", message="the image pull failed (injected)")
        raise StepFailure("health checks failed (injected)")

    playbook = world.playbook()
    return dataclasses.replace(playbook, steps=tuple(
        dataclasses.replace(step, run=monitor) if step.name == "monitor" else step
        for step in playbook.steps))


def test_a_removed_previous_colour_is_redeployed_and_the_run_rolls_back(
        world: World) -> None:  # noqa: F811
    engine = world.engine(_monitor_fails_after_blue_is_removed(world))
    deployment_id = world.start(engine)

    assert engine.run(deployment_id) is S.ROLLED_BACK

    calls = [str(c) for c in world.platform.calls]
    assert calls[calls.index("switch(green)") + 1:][:5] == [
        "set_maintenance(False)",  # maintenance_off, then monitor fails
        "traffic()", f"deploy(blue, {OLD})", "wait_ready(blue)", "switch(blue)"]
    assert world.platform.live is Slot.BLUE
    assert world.environment_state()[:2] == (Slot.BLUE, OLD)
    # The public URL answered 200 from blue (1.0.0) after the switch back.
    url, status, version = world.web.seen[-1]
    assert "fake.invalid" not in url and (status, version) == (200, OLD)
    texts = "\n".join(world.h.reporter.texts(deployment_id))
    assert "The previous blue slot is gone (it does not run (removed))" in texts
    assert f"Traffic switched back to blue ({OLD}), redeployed." in texts
    assert "Rollback verification:" in texts and "at the first attempt" in texts
    assert world.h.environments.get("production").lock_holder is None


def test_a_failed_redeploy_needs_attention_and_offers_the_emergency(
        world: World) -> None:  # noqa: F811
    engine = world.engine(_monitor_fails_after_blue_is_removed(world, redeploy_fails=True))
    deployment_id = world.start(engine)

    state = engine.run(deployment_id)

    assert state is S.NEEDS_ATTENTION
    record = world.h.deployments.get(deployment_id)
    assert "rollback to 1.0.0 on blue failed" in (record.error or "")
    assert world.platform.live is Slot.GREEN  # never switched to a colour that is not there
    assert world.h.environments.get("production").lock_holder is not None  # stays locked
    broadcast = "\n".join(world.h.reporter.broadcasts())
    assert (f'`/qlp emergency outage {OLD} to production --reason '
            f'"rollback of #{deployment_id} failed"`') in broadcast
    assert "needs attention" in broadcast
