"""Long Azure operations end with their step: the watched deploy and wait sleep only through
the step's sleep, which stops them at the step's deadline.

The strict ARM double provisions a group in model time (``provision_seconds``: Pending, then
Creating while the image is pulled, then Running) on the fake clock that the platform and the
step share. The platform's own sleep fails the test if anything waits with it: every poll and
every ``Retry-After`` of a watched call must go through the sleep the step lends.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from procedures.durations import format_duration
from procedures.errors import StepFailure
from procedures.model import Slot
from procedures.platforms.azure import AzureClients, AzurePlatform
from procedures.platforms.base import SupportsWatchedDeploy
from procedures.policy import Environment
from tests.azure.app_standin import AppStandIn
from tests.azure.arm_double import SUBSCRIPTION, ArmDouble
from tests.azure.fresh_world import fresh_front_door
from tests.azure.test_azure_platform import (
    FRONT_DOORS,
    FakeTime,
    StaticTokenCredential,
    azure_section,
)

pytestmark = pytest.mark.slow  # starts HTTPS and HTTP servers

STEP_LIMIT = timedelta(minutes=10)  # deploy_idle_slot's time limit in the standard playbook
PROVISIONING = 15 * 60.0  # model seconds: slower than the step
PROGRESS = re.compile(r"qlp-blue: provisioning (Pending|Creating)(, [a-z ,]+)? \((\d+m)( \d+s)?\)")


class StepSleep:
    """The step's sleep as the engine lends it (``ctx.sleep``): model time passes on the fake
    clock, and once the step's deadline is reached it raises the engine's StepFailure ("timed
    out after ..."), never sleeping past the deadline."""

    def __init__(self, fake_time: FakeTime, limit: timedelta) -> None:
        self.fake_time = fake_time
        self.limit = limit
        self.deadline = fake_time.clock.now() + limit
        self.asked: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.asked.append(seconds)
        remaining = max(seconds, 0.0)
        while True:
            now = self.fake_time.clock.now()
            if now >= self.deadline:
                raise StepFailure(f"timed out after {format_duration(self.limit)}")
            if remaining <= 1e-9:
                return
            chunk = min(remaining, (self.deadline - now).total_seconds())
            self.fake_time.sleep(chunk)
            remaining -= chunk


def own_sleep(seconds: float) -> None:
    raise AssertionError(f"the platform slept {seconds} s with its own sleep, not the step's")


class World:
    """A platform on the double whose own sleep must never be used, the application
    stand-in, and the thread's progress lines with their model time."""

    def __init__(self, double: ArmDouble, certificate: Path, fake_time: FakeTime) -> None:
        self.fake_time = fake_time
        self.app = AppStandIn(double, FRONT_DOORS["route"], health_mode="json")
        env = Environment.model_validate({
            "platform": "azure", "url": "https://api.qlp-hq.com", "health": ["/health"],
            "azure": azure_section(double, "route", secrets={}, poll_interval="15s")})
        clients = AzureClients(
            StaticTokenCredential(), SUBSCRIPTION, base_url=double.url,
            client_kwargs={"connection_verify": str(certificate), "polling_interval": 0,
                           "retry_total": 0})
        self.platform = AzurePlatform(
            "production", env, clients=clients,
            slot_base=lambda slot, host: self.app.host_url(host),
            public_url=self.app.public_url, clock=fake_time.clock, sleep=own_sleep)
        self.reports: list[tuple[datetime, str]] = []

    def report(self, text: str) -> None:
        self.reports.append((self.fake_time.clock.now(), text))

    def texts(self, since: datetime | None = None) -> list[str]:
        return [text for at, text in self.reports if since is None or at >= since]

    def close(self) -> None:
        self.platform.close()
        self.app.stop()


@pytest.fixture
def fake_time() -> FakeTime:
    return FakeTime()


@pytest.fixture
def double(certificate: tuple[Path, Path], fake_time: FakeTime) -> Iterator[ArmDouble]:
    start = fake_time.clock.now()
    arm = ArmDouble(*certificate, clock=lambda: (fake_time.clock.now() - start).total_seconds())
    arm.start()
    fresh_front_door(arm)  # a new user's environment: the route on blue, no group
    arm.provision_seconds = PROVISIONING
    yield arm
    arm.stop()


@pytest.fixture
def world(double: ArmDouble, certificate: tuple[Path, Path],
          fake_time: FakeTime) -> Iterator[World]:
    made = World(double, certificate[0], fake_time)
    yield made
    made.close()


def puts(double: ArmDouble) -> int:
    return len(double.calls_to("group", "PUT"))


def test_a_provisioning_slower_than_the_step_stops_at_its_deadline_and_is_followed_next_time(
        world: World, double: ArmDouble, fake_time: FakeTime) -> None:
    platform = world.platform
    assert isinstance(platform, SupportsWatchedDeploy)
    started = fake_time.clock.now()
    step = StepSleep(fake_time, STEP_LIMIT)
    with pytest.raises(StepFailure, match="timed out after 10m"):
        platform.deploy_watched(Slot.BLUE, "v1.0.0", report=world.report, sleep=step)
    # Stopped by the step's sleep at the step's deadline, not at provisioning_timeout (30 m).
    assert fake_time.clock.now() - started == STEP_LIMIT
    assert step.asked and max(step.asked) <= 15  # status reads every poll_interval
    assert puts(double) == 1 and not double.calls_to("group", "DELETE")
    assert double.groups["qlp-blue"]["properties"]["provisioningState"] == "Creating"

    # About once a minute, where provisioning is.
    times = [at for at, _ in world.reports]
    assert 8 <= len(times) <= 10
    assert all(later - earlier >= timedelta(seconds=60)
               for earlier, later in itertools.pairwise(times))
    texts = world.texts()
    assert all(PROGRESS.fullmatch(text) for text in texts), texts
    assert texts[0] == "qlp-blue: provisioning Pending (1m)"
    assert any(text.startswith("qlp-blue: provisioning Creating, pulling the image (")
               for text in texts)

    # The step's next attempt: the group being created is followed, never PUT again.
    again = StepSleep(fake_time, STEP_LIMIT)
    retried = fake_time.clock.now()
    status = platform.deploy_watched(Slot.BLUE, "v1.0.0", report=world.report, sleep=again)
    assert not status.running and "still being provisioned" in status.detail
    ready = platform.wait_ready_watched(Slot.BLUE, timedelta(minutes=9), report=world.report,
                                        sleep=again)
    assert ready.running and ready.version == "v1.0.0"
    assert puts(double) == 1 and not double.calls_to("group", "DELETE")
    assert again.asked  # wait_ready's polls went through the step's sleep
    # Running once provisioning is over (15 minutes after the PUT), not before.
    assert fake_time.clock.now() - started >= timedelta(seconds=PROVISIONING)
    waited = world.texts(since=retried)
    assert waited[:2] == ["qlp-blue: provisioning Creating, pulling the image (1m)",
                          "qlp-blue: provisioning Creating, image pulled, starting the "
                          "containers (2m)"]


def test_deploy_gives_up_within_the_time_given_with_a_retryable_failure(
        world: World, double: ArmDouble, fake_time: FakeTime) -> None:
    # A throttled read first: its Retry-After is waited through the step's sleep too.
    double.throttle("GET", "/containerGroups/qlp-blue", times=1, retry_after="20")
    started = fake_time.clock.now()
    step = StepSleep(fake_time, STEP_LIMIT)
    within = STEP_LIMIT - timedelta(seconds=30)
    with pytest.raises(StepFailure, match=r"qlp-blue is still provisioning \(InProgress\) "
                                          r"after 9m 10s") as caught:
        world.platform.deploy_watched(Slot.BLUE, "v1.0.0", report=world.report, sleep=step,
                                      within=within)
    assert caught.value.retryable  # the engine tries the step again, which follows the group
    assert step.asked[0] == 20.0  # Retry-After, through the step
    assert fake_time.clock.now() - started == within  # before the step's deadline
    assert puts(double) == 1


def test_a_slow_readiness_stops_at_the_steps_deadline(world: World, double: ArmDouble,
                                                      fake_time: FakeTime) -> None:
    double.provision_seconds = 0
    world.platform.deploy_watched(Slot.BLUE, "v1.0.0", report=world.report,
                                  sleep=StepSleep(fake_time, STEP_LIMIT))
    fqdn = double.groups["qlp-blue"]["properties"]["ipAddress"]["fqdn"]
    world.app.override("blue", 503, body={"status": "starting"})
    started = fake_time.clock.now()
    step = StepSleep(fake_time, timedelta(minutes=3))
    with pytest.raises(StepFailure, match="timed out after 3m"):
        world.platform.wait_ready_watched(Slot.BLUE, timedelta(minutes=30),
                                          report=world.report, sleep=step)
    assert fake_time.clock.now() - started == timedelta(minutes=3)
    assert any(f"qlp-blue not ready yet: GET {world.app.host_url(fqdn)}/health: HTTP 503"
               in text for text in world.texts(since=started))


def test_callers_of_the_plain_methods_keep_the_platforms_own_sleep(
        double: ArmDouble, fake_time: FakeTime, world: World) -> None:
    # A watched call lends its sleep for its own duration only: afterwards the platform's
    # own sleep is back (here: the one that fails the test).
    double.provision_seconds = 0
    world.platform.deploy_watched(Slot.BLUE, "v1.0.0", report=world.report,
                                  sleep=StepSleep(fake_time, STEP_LIMIT))
    double.throttle("GET", "/containerGroups/qlp-blue", times=1, retry_after="5")
    with pytest.raises(AssertionError, match="with its own sleep"):
        world.platform.wait_ready(Slot.BLUE, timedelta(minutes=1))



def test_a_stop_waits_only_through_the_steps_sleep_and_ends_with_it(
        world: World, double: ArmDouble, fake_time: FakeTime) -> None:
    double.provision_seconds = 0
    world.platform.deploy_watched(Slot.GREEN, "v1.0.0", report=world.report,
                                  sleep=StepSleep(fake_time, STEP_LIMIT))
    assert "qlp-green" in double.groups
    # ARM throttles the deletion for 20 s: waited through the step's sleep, never the platform's.
    double.throttle("DELETE", "/containerGroups/qlp-green", times=1, retry_after="20")
    step = StepSleep(fake_time, timedelta(minutes=2))  # stop_old_slot's time limit
    world.platform.stop_watched(Slot.GREEN, sleep=step)
    assert step.asked[0] == 20.0
    assert "qlp-green" not in double.groups

    # A deletion ARM keeps throttling past the step's limit ends with the step.
    world.platform.deploy_watched(Slot.GREEN, "v1.0.1", report=world.report,
                                  sleep=StepSleep(fake_time, STEP_LIMIT))
    double.throttle("DELETE", "/containerGroups/qlp-green", times=10, retry_after="100")
    started = fake_time.clock.now()
    with pytest.raises(StepFailure, match="timed out after 2m"):
        world.platform.stop_watched(Slot.GREEN, sleep=StepSleep(fake_time, timedelta(minutes=2)))
    assert fake_time.clock.now() - started == timedelta(minutes=2)
