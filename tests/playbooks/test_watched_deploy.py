"""The playbooks deploy and wait through the step on a platform that watches its deployment
(``SupportsWatchedDeploy``: Azure), and call the plain methods on one that does not.

Every playbook with a deploy and a wait (standard, hotfix, rollback, emergency) goes through
``deploy_platform`` and ``wait_ready_platform`` (``procedures.playbooks.standard``): the
platform gets the step's report and sleep, and a limit that ends its own wait before the
step's deadline.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from procedures.checks.http import HttpChecker
from procedures.clock import FixedClock
from procedures.model import Slot
from procedures.platforms.base import SlotStatus, SupportsWatchedDeploy, SupportsWatchedStop
from procedures.playbook import Playbook
from procedures.playbooks.emergency import FAST_TRACK_READY, emergency_playbook
from procedures.playbooks.hotfix import hotfix_playbook
from procedures.playbooks.rollback import rollback_playbook
from procedures.playbooks.standard import WATCH_MARGIN, standard_playbook
from tests.fakes.platform import FakePlatform
from tests.playbooks.test_standard_steps import StepRunner, step_policy

WAIT = 5.0  # what each watched call sleeps (through the step)


class WatchedPlatform(FakePlatform):
    """The fake platform with the optional ``SupportsWatchedDeploy``: each watched call
    records what it was given, reports a line and sleeps through the sleep it was lent."""

    def __init__(self) -> None:
        super().__init__()
        self.watched: list[tuple[str, Slot, timedelta | None]] = []

    def deploy_watched(self, slot: Slot, version: str, *, report: Callable[[str], None],
                       sleep: Callable[[float], None],
                       within: timedelta | None = None) -> SlotStatus:
        self.watched.append(("deploy_watched", slot, within))
        report(f"{slot}: provisioning Creating, pulling the image (5s)")
        sleep(WAIT)
        return self.deploy(slot, version)

    def wait_ready_watched(self, slot: Slot, timeout: timedelta, *,
                           report: Callable[[str], None],
                           sleep: Callable[[float], None]) -> SlotStatus:
        self.watched.append(("wait_ready_watched", slot, timeout))
        sleep(WAIT)
        return self.wait_ready(slot, timeout)

    def stop_watched(self, slot: Slot, *, sleep: Callable[[float], None]) -> None:
        self.watched.append(("stop_watched", slot, None))
        sleep(WAIT)
        self.stop(slot)


def runner(platform: FakePlatform, **options: object) -> StepRunner:
    ctx = StepRunner(platform, None, step_policy(),  # type: ignore[arg-type]
                     FixedClock(datetime(2026, 12, 1, 11, 0, tzinfo=UTC)), "1.0.1",
                     options=options)
    # What the snapshot step found: blue live, green to deploy into.
    ctx.results["snapshot"] = {"live_slot": "blue", "live_version": "1.0.0",
                               "target_slot": "green"}
    return ctx


HTTP = HttpChecker(timeout=1.0, connect_timeout=1.0)
PLAYBOOKS: dict[str, tuple[Playbook, dict[str, object]]] = {
    "standard": (standard_playbook(http=HTTP), {}),
    "hotfix": (hotfix_playbook(http=HTTP), {}),
    "rollback": (rollback_playbook(http=HTTP), {}),
    "emergency": (emergency_playbook(http=HTTP), {"category": "outage"}),
}


@pytest.mark.parametrize("kind", sorted(PLAYBOOKS))
def test_a_watched_platform_deploys_and_waits_through_the_step(kind: str) -> None:
    playbook, options = PLAYBOOKS[kind]
    platform = WatchedPlatform()
    assert isinstance(platform, SupportsWatchedDeploy)
    ctx = runner(platform, **options)

    ctx.run(playbook, "deploy_idle_slot")
    ctx.run(playbook, "wait_healthy")

    deploy_limit = playbook.step("deploy_idle_slot").timeout
    (_, deployed, within), (_, waited, timeout) = platform.watched
    assert (deployed, waited) == (Slot.GREEN, Slot.GREEN)
    # The platform's own wait ends a margin before the step's deadline.
    assert within == deploy_limit - WATCH_MARGIN
    assert timeout is not None and timeout <= playbook.step("wait_healthy").timeout - WATCH_MARGIN
    if kind == "emergency":
        assert timeout <= FAST_TRACK_READY
    assert ctx.slept == 2 * WAIT  # both waits went through the step's sleep
    assert "green: provisioning Creating, pulling the image (5s)" in ctx.reports
    assert [str(c) for c in platform.calls] == ["deploy(green, 1.0.1)", "wait_ready(green)"]


@pytest.mark.parametrize("kind", sorted(PLAYBOOKS))
def test_a_plain_platform_is_called_as_before(kind: str) -> None:
    playbook, options = PLAYBOOKS[kind]
    platform = FakePlatform()
    assert not isinstance(platform, SupportsWatchedDeploy)
    ctx = runner(platform, **options)
    ctx.run(playbook, "deploy_idle_slot")
    ctx.run(playbook, "wait_healthy")
    assert [str(c) for c in platform.calls] == ["deploy(green, 1.0.1)", "wait_ready(green)"]
    assert ctx.slept == 0


def test_a_short_step_keeps_a_quarter_of_its_time_for_the_platform_to_finish() -> None:
    playbook, _ = PLAYBOOKS["standard"]
    platform = WatchedPlatform()
    ctx = runner(platform)
    # The deploy step started long ago: 40 s of its 10 minutes are left.
    step = playbook.step("deploy_idle_slot")
    ctx.deadline = ctx.now() + timedelta(seconds=40)
    step.run(ctx)
    assert platform.watched[0][2] == timedelta(seconds=30)


def test_the_old_slot_and_an_undone_deployment_are_stopped_through_the_step() -> None:
    playbook, _ = PLAYBOOKS["standard"]
    platform = WatchedPlatform()
    assert isinstance(platform, SupportsWatchedStop)
    ctx = runner(platform)
    ctx.run(playbook, "deploy_idle_slot")
    playbook.step("deploy_idle_slot").undo(ctx)  # type: ignore[misc]
    assert ("stop_watched", Slot.GREEN, None) in platform.watched
    assert ctx.slept == 2 * WAIT  # the deploy's wait and the stop's, both the step's
    assert "stop(green)" in [str(c) for c in platform.calls]
