"""The Azure platform's first real run, against the strict ARM double on one fake clock.

A fresh environment (``tests.azure.fresh_world``: Front Door's origins already point at the
FQDNs the colours' groups will get, the route at blue, no container group), the application
stand-in of ``tests.azure.app_standin`` (Front Door's edge serves what the double's edge
serves, with propagation lag on the model clock) and the bot's real SDK clients. The double's
model clock is the platform's fake clock, so a 90 s Front Door propagation takes no real time.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from procedures.errors import ExternalServiceError, StepFailure
from procedures.model import Slot
from procedures.platforms.azure import AzureClients, AzurePlatform
from procedures.platforms.azure.errors import AzureCalls, Sleeper
from procedures.platforms.azure.roles import denied_actions, role_hint
from procedures.platforms.base import SupportsWatchedSwitch
from procedures.policy import Environment
from tests.azure.app_standin import AppStandIn
from tests.azure.arm_double import SUBSCRIPTION, ArmDouble
from tests.azure.arm_double.authz import IDENTITY_ID, RESOURCE_GROUP_ID
from tests.azure.fresh_world import (
    fresh_classic_front_door,
    fresh_front_door,
    fresh_origins_front_door,
)
from tests.azure.test_azure_platform import (
    FRONT_DOORS,
    RG,
    FakeTime,
    StaticTokenCredential,
    azure_section,
)

pytestmark = pytest.mark.slow  # starts HTTPS and HTTP servers

Report = tuple[datetime, str]


@pytest.fixture
def fake_time() -> FakeTime:
    return FakeTime()


@pytest.fixture
def double(certificate: tuple[Path, Path], fake_time: FakeTime) -> Iterator[ArmDouble]:
    start = fake_time.clock.now()
    arm = ArmDouble(*certificate, clock=lambda: (fake_time.clock.now() - start).total_seconds())
    arm.start()
    yield arm
    arm.stop()


class Harness:
    """A platform on the double and the application stand-in behind its public URL."""

    def __init__(self, double: ArmDouble, certificate: Path, fake_time: FakeTime,
                 front_door: str, health_mode: str, changes: dict[str, Any]) -> None:
        self.fake_time = fake_time
        self.app = AppStandIn(double, FRONT_DOORS[front_door], health_mode=health_mode)
        section = azure_section(double, front_door, **{"secrets": {}, **changes})
        env = Environment.model_validate({
            "platform": "azure", "url": "https://api.qlp-hq.com", "health": ["/health"],
            "azure": section})
        clients = AzureClients(
            StaticTokenCredential(), SUBSCRIPTION, base_url=double.url,
            client_kwargs={"connection_verify": str(certificate), "polling_interval": 0,
                           "retry_total": 0})
        self.platform = AzurePlatform(
            "production", env, clients=clients,
            slot_base=lambda slot, host: self.app.host_url(host),
            public_url=self.app.public_url, clock=fake_time.clock, sleep=fake_time.sleep)
        self.reports: list[Report] = []

    def report(self, text: str) -> None:
        self.reports.append((self.fake_time.clock.now(), text))

    def ready(self, slot: Slot, version: str) -> None:
        self.platform.deploy(slot, version)
        self.platform.wait_ready(slot, timedelta(minutes=5))

    def switch(self, slot: Slot) -> None:
        self.platform.switch_watched(slot, report=self.report, sleep=self.fake_time.sleep)

    def close(self) -> None:
        self.platform.close()
        self.app.stop()


@pytest.fixture
def make(double: ArmDouble, certificate: tuple[Path, Path],
         fake_time: FakeTime) -> Iterator[Callable[..., Harness]]:
    made: list[Harness] = []

    def build(front_door: str = "route", health_mode: str = "json",
              **changes: Any) -> Harness:
        harness = Harness(double, certificate[0], fake_time, front_door, health_mode, changes)
        made.append(harness)
        return harness

    yield build
    for harness in made:
        harness.close()


# -- a fresh environment ----------------------------------------------------------------------


def test_first_deployment_into_an_empty_resource_group_then_the_next_one(
        make: Callable[..., Harness], double: ArmDouble, fake_time: FakeTime) -> None:
    fqdns = fresh_front_door(double)  # the route already points at blue; no group exists
    world = make(health_mode="plain", switch_confirm_timeout="10m")
    platform = world.platform
    assert isinstance(platform, SupportsWatchedSwitch)

    # Front Door points at blue, but nothing runs there: nothing is live, blue can be deployed.
    state = platform.traffic()
    assert state.live is None
    assert "routes here, but nothing serves yet" in state.slots[Slot.BLUE].detail
    world.ready(Slot.BLUE, "v1.0.0")
    assert double.groups["qlp-blue"]["properties"]["ipAddress"]["fqdn"] == fqdns["blue"]

    # The switch needs no route change; the public URL answers plain "OK" (no version).
    world.switch(Slot.BLUE)
    assert not double.calls_to("route", "PATCH")
    assert platform.traffic().live is Slot.BLUE
    probes = world.app.seen_public("/health")
    assert len(probes) == 6  # six good answers in a row
    assert all(p.headers.get("cache-control") == "no-cache" for p in probes)
    assert len({p.client_port for p in probes}) == len(probes)  # a new connection each
    assert sum(fake_time.sleeps[-5:]) == 60  # five gaps of 12 s: the window is 60 s

    # The next release goes to green; Front Door takes 90 s (model time) to propagate.
    double.propagation_seconds = 90
    world.ready(Slot.GREEN, "v1.1.0")
    world.reports.clear()
    started = fake_time.clock.now()
    world.switch(Slot.GREEN)
    took = (fake_time.clock.now() - started).total_seconds()
    assert took >= 90 + 60  # the rollout, then a full window of good answers
    assert platform.traffic().live is Slot.GREEN
    texts = [text for _, text in world.reports]
    assert texts[0].startswith("Front Door still deploying the switch to green (InProgress")
    assert any(t.startswith("Front Door still deploying") and "1m" in t for t in texts)
    assert any("answers from v1.1.0" in t for t in texts)
    moments = [at for at, _ in world.reports]
    assert all((b - a) >= timedelta(seconds=60) for a, b in itertools.pairwise(moments))
    # Nothing answered from blue once the rollout had succeeded: the edge serves green.
    late = [p for p in world.app.seen_public("/health") if p.group == "qlp-blue"]
    assert len(late) == 6  # only the six from the first switch


def test_switch_by_origins_and_classic_in_a_fresh_environment(
        make: Callable[..., Harness], double: ArmDouble) -> None:
    fresh_origins_front_door(double)
    fresh_classic_front_door(double)
    for kind in ("origins", "classic"):
        world = make(kind, health_mode="bare-version")
        assert world.platform.traffic().live is None
    world = make("origins", health_mode="bare-version")
    world.ready(Slot.BLUE, "v1.0.0")
    world.switch(Slot.BLUE)  # {"version": "1.0.0"} is v1.0.0
    assert world.platform.traffic().live is Slot.BLUE
    world.ready(Slot.GREEN, "v1.1.0")
    world.switch(Slot.GREEN)
    assert world.platform.traffic().live is Slot.GREEN

    # The same groups behind classic Front Door, whose rule forwards to blue's pool.
    classic = make("classic", health_mode="bare-version")
    assert classic.platform.traffic().live is Slot.BLUE
    classic.switch(Slot.GREEN)
    assert double.classic_pool("qlp-classic-fd", "default-routing-rule") == "qlp-green-pool"


# -- the confirmation --------------------------------------------------------------------------


def test_switch_confirm_version_needs_the_answer_to_name_it(
        make: Callable[..., Harness], double: ArmDouble, fake_time: FakeTime) -> None:
    fresh_front_door(double)
    world = make(health_mode="plain", switch_confirm="version")
    world.ready(Slot.BLUE, "v1.0.0")
    with pytest.raises(StepFailure, match=r"did not answer from v1\.0\.0") as caught:
        world.switch(Slot.BLUE)
    assert caught.value.retryable
    assert "without a version" in caught.value.message


def test_a_different_version_resets_the_window(
        make: Callable[..., Harness], double: ArmDouble) -> None:
    fresh_front_door(double)
    world = make(health_mode="bare-version")
    world.ready(Slot.BLUE, "v1.0.0")
    world.app.override("blue", 200, body={"version": "0.9.9"})
    with pytest.raises(StepFailure, match=r"answered by version 0\.9\.9"):
        world.switch(Slot.BLUE)


def test_the_wait_ends_with_its_step(make: Callable[..., Harness], double: ArmDouble,
                                     fake_time: FakeTime) -> None:
    """The step's sleep raises at its deadline: the platform does not wait on past it."""
    fresh_front_door(double)
    world = make(switch_confirm_timeout="30m")
    world.ready(Slot.BLUE, "v1.0.0")
    world.ready(Slot.GREEN, "v1.1.0")
    double.propagation_seconds = 3600  # Front Door never gets there within the step
    deadline = fake_time.clock.now() + timedelta(minutes=2)

    def step_sleep(seconds: float) -> None:
        if fake_time.clock.now() >= deadline:
            raise StepFailure("timed out after 2m")
        fake_time.sleep(seconds)

    with pytest.raises(StepFailure, match="timed out after 2m"):
        world.platform.switch_watched(Slot.GREEN, report=world.report, sleep=step_sleep)
    assert fake_time.clock.now() - deadline < timedelta(seconds=5)


# -- Front Door's origins against the groups ---------------------------------------------------


def test_an_origin_on_the_wrong_port_is_refused_with_the_fix(
        make: Callable[..., Harness], double: ArmDouble) -> None:
    fqdns = fresh_front_door(double, port=80)  # the app listens on 8080
    world = make()
    world.ready(Slot.BLUE, "v1.0.0")
    with pytest.raises(StepFailure) as caught:
        world.switch(Slot.BLUE)
    error = caught.value
    assert (f"origin qlp-blue of origin group qlp-blue-og (blue) points at {fqdns['blue']}:80, "
            f"but the container group answers at {fqdns['blue']}:8080") in error.message
    assert error.hint is not None
    assert (f"az afd origin update --resource-group {RG} --profile-name qlp-frontdoor "
            f"--origin-group-name qlp-blue-og --origin-name qlp-blue --host-name "
            f"{fqdns['blue']} --origin-host-header {fqdns['blue']} --http-port 8080"
            ) in error.hint
    assert not double.calls_to("route", "PATCH") and not world.app.seen_public()


def test_a_classic_backend_on_another_host_is_refused(
        make: Callable[..., Harness], double: ArmDouble) -> None:
    fresh_classic_front_door(double, label="someone-else")
    world = make("classic")
    world.ready(Slot.GREEN, "v1.0.0")
    with pytest.raises(StepFailure, match="backend 1 of backend pool qlp-green-pool") as caught:
        world.switch(Slot.GREEN)
    assert "az network front-door backend-pool backend update" in (caught.value.hint or "")
    assert not double.calls_to("frontdoor", "PUT")


def test_priority_decides_before_weight(make: Callable[..., Harness],
                                        double: ArmDouble) -> None:
    fqdns = fresh_origins_front_door(double)
    double.add_origin(RG, "qlp-frontdoor", "qlp-og", "qlp-green", host=fqdns["green"],
                      enabled=True, weight=1000, priority=2)
    double.add_origin(RG, "qlp-frontdoor", "qlp-og", "qlp-blue", host=fqdns["blue"],
                      enabled=True, weight=1, priority=1)
    world = make("origins")
    assert world.platform.front_door.live() is Slot.BLUE


# -- Azure's refusals ---------------------------------------------------------------------------


def test_a_missing_role_fails_with_azures_code_and_the_role_to_grant(
        make: Callable[..., Harness], double: ArmDouble) -> None:
    fresh_front_door(double)
    world = make()
    double.revoke(RESOURCE_GROUP_ID, "Container Instances Deployer")
    with pytest.raises(ExternalServiceError) as caught:
        world.platform.deploy(Slot.BLUE, "v1.0.0")
    error = caught.value
    assert error.code == "AuthorizationFailed" and not error.retryable
    assert "Microsoft.ContainerInstance/containerGroups/write" in error.message
    assert error.hint is not None
    assert f'--role "Contributor" --scope {RESOURCE_GROUP_ID}' in error.hint
    assert not double.groups  # nothing half done

    double.grant(RESOURCE_GROUP_ID, "Container Instances Deployer")
    double.revoke(IDENTITY_ID, "Managed Identity Operator")
    with pytest.raises(ExternalServiceError) as caught:
        world.platform.deploy(Slot.BLUE, "v1.0.0")
    assert caught.value.code == "LinkedAuthorizationFailed"
    assert f'--role "Managed Identity Operator" --scope {IDENTITY_ID}' in (caught.value.hint
                                                                         or "")
    assert not double.groups and not double.calls_to("group", "DELETE")


def test_a_conflict_on_the_put_deletes_nothing(make: Callable[..., Harness],
                                               double: ArmDouble) -> None:
    fresh_front_door(double)
    world = make()
    double.conflict_next("PUT", "/containerGroups/qlp-blue")
    with pytest.raises(ExternalServiceError) as caught:
        world.platform.deploy(Slot.BLUE, "v1.0.0")
    assert caught.value.code == "Conflict"
    assert len(double.calls_to("group", "PUT")) == 1
    assert not double.calls_to("group", "DELETE")


def test_a_polling_hiccup_never_puts_again(make: Callable[..., Harness],
                                           double: ArmDouble) -> None:
    fresh_front_door(double)
    world = make()
    double.provision_seconds = 30  # model time: the group ends provisioning on its own
    double.throttle("GET", "Microsoft.ContainerInstance/locations", times=1, retry_after="0")
    with pytest.raises(StepFailure, match="lost track of the creation") as caught:
        world.platform.deploy(Slot.BLUE, "v1.0.0")
    assert caught.value.retryable
    assert len(double.calls_to("group", "PUT")) == 1
    # The next attempt follows the group being created instead of PUTting it again.
    again = world.platform.deploy(Slot.BLUE, "v1.0.0")
    assert ("still being provisioned" in again.detail or "already runs" in again.detail)
    assert len(double.calls_to("group", "PUT")) == 1
    assert world.platform.wait_ready(Slot.BLUE, timedelta(minutes=1)).version == "v1.0.0"
    assert not double.calls_to("group", "DELETE")


def test_a_long_retry_after_is_not_cut_short(make: Callable[..., Harness],
                                             double: ArmDouble, fake_time: FakeTime) -> None:
    fresh_front_door(double)
    world = make()
    double.throttle("GET", "/routes/default-route", times=1, retry_after="300")
    world.platform.traffic()
    assert fake_time.sleeps == [300.0]  # honoured, not capped at 60 s
    double.throttle("GET", "/routes/default-route", times=1, retry_after="900")
    with pytest.raises(ExternalServiceError) as caught:
        world.platform.traffic()
    assert caught.value.retryable and caught.value.retry_after == 900.0
    assert fake_time.sleeps == [300.0]  # more than 10 minutes: left to the engine


# -- pieces -------------------------------------------------------------------------------------


def test_role_hints_read_azures_messages() -> None:
    linked = ("The client 'c' with object id 'o' has permission to perform action "
              "'Microsoft.ContainerInstance/containerGroups/write' on scope '/subscriptions/s/"
              "resourceGroups/rg/providers/Microsoft.ContainerInstance/containerGroups/g'; "
              "however, it does not have permission to perform action(s) 'Microsoft."
              "ManagedIdentity/userAssignedIdentities/assign/action' on the linked scope(s) "
              "'/subscriptions/s/resourceGroups/id-rg/providers/Microsoft.ManagedIdentity/"
              "userAssignedIdentities/uami' (respectively) or the linked scope(s) are invalid.")
    assert denied_actions(linked) == [(
        "Microsoft.ManagedIdentity/userAssignedIdentities/assign/action",
        "/subscriptions/s/resourceGroups/id-rg/providers/Microsoft.ManagedIdentity/"
        "userAssignedIdentities/uami")]
    vault = ("Caller is not authorized to perform action on resource. Action: 'Microsoft."
             "KeyVault/vaults/secrets/getSecret/action' Resource: '/subscriptions/s/"
             "resourcegroups/rg/providers/microsoft.keyvault/vaults/kv/secrets/db-url'")
    (action, scope), = denied_actions(vault)
    hint = role_hint(action, scope)
    assert "Key Vault Secrets User" in hint
    assert hint.endswith("--scope /subscriptions/s/resourcegroups/rg/providers/"
                         "microsoft.keyvault/vaults/kv")
    route = role_hint("Microsoft.Cdn/profiles/afdEndpoints/routes/write",
                      "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Cdn/profiles/p/"
                      "afdEndpoints/e/routes/r")
    assert '--role "CDN Profile Contributor" --scope /subscriptions/s/resourceGroups/rg/' \
           'providers/Microsoft.Cdn/profiles/p' in route
    assert "a role that allows Microsoft.Foo/bar/read" in role_hint("Microsoft.Foo/bar/read",
                                                                      "/subscriptions/s")


def test_a_lent_sleep_is_used_by_the_calls_of_that_thread_only() -> None:
    own: list[float] = []
    lent: list[float] = []
    sleeper = Sleeper(own.append)
    calls = AzureCalls("s", sleep=sleeper)
    with sleeper.using(lent.append):
        calls._sleep(3)  # what a retry waits through
    sleeper(4)
    assert (lent, own) == ([3], [4])
