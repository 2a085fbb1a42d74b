"""The automatic rollback's undo of ``switch_traffic`` on Azure (the ARM double, which starts
from nothing deployed): the previous colour's container group was deleted, so the undo redeploys
the previous version into it (a PUT of the group, provisioning watched), switches Front Door back
and verifies the public URL. Time is the fixed clock the steps' sleep advances.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import pytest

from procedures.checks.http import HttpChecker
from procedures.errors import StepFailure
from procedures.model import Slot
from procedures.playbooks import standard_playbook
from procedures.playbooks.standard import SWITCH_TIMEOUT
from tests.azure.arm_double import ArmDouble
from tests.azure.test_azure_platform import (  # noqa: F401  (fixtures)
    FakeTime,
    Harness,
    azure_section,
    double,
    fake_time,
    make_platform,
)
from tests.fakes.policies import make_policy
from tests.playbooks.test_standard_steps import StepRunner

pytestmark = pytest.mark.slow  # starts HTTPS and HTTP servers


class NoMetrics:
    def error_count(self, slot: Slot, since: datetime) -> int | None:
        return 0

    def request_count(self, slot: Slot, since: datetime) -> int | None:
        return 0


def _runner(platform: Any, public_url: str, arm: ArmDouble, time: FakeTime,
            **monitoring: Any) -> StepRunner:
    env = {"platform": "azure", "url": public_url, "health": ["/health"],
           "azure": azure_section(arm, "route")}
    policy = make_policy(environments={"production": env},
                         monitoring={"duration": "10s", "interval": "1s", **monitoring})
    ctx = StepRunner(platform, NoMetrics(), policy, time.clock, "v1.2.3")
    ctx.results["snapshot"] = {"live_slot": "blue", "live_version": "v1.2.2",
                               "target_slot": "green"}
    ctx.deadline = time.clock.now() + SWITCH_TIMEOUT
    return ctx


def _blue_then_green_with_blue_deleted(platform: Any) -> None:
    platform.deploy(Slot.BLUE, "v1.2.2")
    platform.switch(Slot.BLUE)
    platform.deploy(Slot.GREEN, "v1.2.3")
    platform.switch(Slot.GREEN)
    platform.stop(Slot.BLUE)  # the old colour's container group is removed
    state = platform.traffic()
    assert state.live is Slot.GREEN and not state.slots[Slot.BLUE].running


def test_a_deleted_previous_group_is_redeployed_switched_back_and_verified(
        make_platform: Callable[..., Harness], double: ArmDouble,  # noqa: F811
        fake_time: FakeTime) -> None:  # noqa: F811
    platform, app, _ = make_platform("route")
    _blue_then_green_with_blue_deleted(platform)
    puts_before = len([c for c in double.calls_to("group", "PUT")
                       if c.path.endswith("/qlp-blue")])
    ctx = _runner(platform, f"{app.url}/public", double, fake_time)
    http = HttpChecker(timeout=3.0, connect_timeout=1.0)
    started = fake_time.clock.now()
    try:
        ctx.undo(standard_playbook(http=http), "switch_traffic")
    finally:
        http.close()

    puts = [c for c in double.calls_to("group", "PUT") if c.path.endswith("/qlp-blue")]
    assert len(puts) == puts_before + 1  # blue's group created again
    state = platform.traffic()
    assert state.live is Slot.BLUE and state.live_version == "v1.2.2"
    assert state.slots[Slot.GREEN].running  # blue-green: green served until the switch back
    assert ctx.switches == [(Slot.BLUE, "v1.2.2")]
    text = "\n".join(ctx.reports)
    assert "The previous blue slot is gone" in text and "redeploying v1.2.2 into it" in text
    assert "Traffic switched back to blue (v1.2.2), redeployed." in text
    assert f"Rollback verification: {app.url}/public answered 2xx on /health" in text
    assert "/qlp emergency" not in text
    assert fake_time.clock.now() - started < SWITCH_TIMEOUT


def test_a_public_url_that_stays_down_offers_the_emergency_deployment(
        make_platform: Callable[..., Harness], double: ArmDouble,  # noqa: F811
        fake_time: FakeTime) -> None:  # noqa: F811
    platform, app, _ = make_platform("route")
    _blue_then_green_with_blue_deleted(platform)
    # The public URL (Front Door's edge) answers 404 on this path: never healthy.
    ctx = _runner(platform, f"{app.url}/nowhere", double, fake_time, rollback_verify="30s")
    http = HttpChecker(timeout=3.0, connect_timeout=1.0)
    started = fake_time.clock.now()
    try:
        with pytest.raises(StepFailure, match="not healthy within 30s") as failed:
            ctx.undo(standard_playbook(http=http), "switch_traffic")
    finally:
        http.close()

    assert not failed.value.retryable
    assert platform.traffic().live is Slot.BLUE  # redeployed and switched, then not verified
    text = "\n".join(ctx.reports)
    assert ('`/qlp emergency outage v1.2.2 to production --reason "rollback of #1 failed"`'
            in text)
    assert fake_time.clock.now() - started >= timedelta(seconds=30)
