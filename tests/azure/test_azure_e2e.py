"""The standard playbook end to end on Azure: signed Slack requests into the real Bolt app, the
real engine and worker, and the Azure platform's real SDK clients against the local ARM double
(container groups, Front Door Standard route, Log Analytics queries) over HTTPS.

A plain-HTTP stand-in answers for the container groups' FQDNs and for the public URL (Front
Door's edge): the public URL serves the version of whichever colour the double's route points
at. Production first runs v0.9.0 on green (put there through the platform itself).

1. ``/qlp deploy v1.0.0`` -> approve -> v1.0.0 goes to blue, the route is repointed at blue's
   origin group, monitoring sees few failed requests for ``qlp-blue``: SUCCEEDED.
2. ``/qlp deploy v1.1.0`` with a spike of failed requests for ``qlp-green`` in Logs: monitoring
   rolls back, the route points at blue again, ROLLED_BACK, and the thread says why.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from bot.platforms import AzureParts
from procedures.clock import Clock, SystemClock
from procedures.model import DeploymentState, Slot
from procedures.platforms.azure import AzureClients, AzurePlatform
from procedures.platforms.azure.monitoring import AzureMetrics
from procedures.platforms.azure.settings import AzureSettings
from procedures.policy import Environment
from storage.db import Database
from storage.models import Deployment
from tests.azure.arm_double import SUBSCRIPTION, ArmDouble, make_certificate
from tests.azure.test_azure_platform import (
    AppStandIn,
    FakeTime,
    StaticTokenCredential,
    azure_section,
)
from tests.fakes.bot_harness import BOT_TOKEN, BotHarness
from tests.fakes.policies import BASE, make_policy
from tests.fakes.slack_double import SlackDouble
from tests.fakes.slack_views import ALWAYS_OPEN
from tests.fakes.slack_views import card as _card
from tests.fakes.slack_views import thread_text as _thread_text

pytestmark = pytest.mark.slow  # HTTPS double, HTTP stand-in, the bot and its worker

RG = "prod-qlp-rg"
WORKSPACE = "11111111-2222-3333-4444-555555555555"
ROUTE = ("qlp-frontdoor", "qlp-endpoint", "default-route")


class AzureWorld:
    """The double, the application stand-in and how the bot's SDK clients reach them."""

    def __init__(self, double: ArmDouble, certificate: Path) -> None:
        self.double = double
        self.certificate = str(certificate)
        self.app = AppStandIn(double, self.live_colour)

    def live_colour(self) -> str:
        pool = self.double.route_origin_group(*ROUTE)
        return "blue" if "blue" in pool else "green"

    def environment(self) -> dict[str, Any]:
        section = azure_section(
            self.double, "route", secrets={}, poll_interval="1s", ready_timeout="30s",
            switch_confirm_timeout="30s",
            app_insights={"workspace_id": WORKSPACE, "endpoint": self.double.url})
        return {"platform": "azure", "url": f"{self.app.url}/public", "health": ["/health"],
                "azure": section}

    def clients(self) -> AzureClients:
        return AzureClients(
            StaticTokenCredential(), SUBSCRIPTION, base_url=self.double.url,
            client_kwargs={"connection_verify": self.certificate, "polling_interval": 0,
                           "retry_total": 0},
            keyvault_kwargs={"verify_challenge_resource": False})

    def platform(self, name: str, env: Environment, **kwargs: Any) -> AzurePlatform:
        return AzurePlatform(name, env, clients=self.clients(),
                             slot_base=lambda slot, host: f"{self.app.url}/hosts/{host}",
                             **kwargs)

    def factory(self, name: str, env: Environment, settings: AzureSettings,
                clock: Clock) -> AzureParts:
        """What the bot's PlatformRegistry builds for an Azure environment, in this test."""
        metrics = AzureMetrics(settings, credential=StaticTokenCredential(),
                               client_kwargs={"connection_verify": self.certificate,
                                              "retry_total": 0},
                               clock=clock, reuse_for=timedelta(seconds=0.5))
        return self.platform(name, env, clock=clock), metrics


@pytest.fixture
def world(tmp_path: Path) -> Iterator[AzureWorld]:
    cert, key = make_certificate(tmp_path / "cert")
    double = ArmDouble(cert, key, polls=1).start()
    double.add_route(RG, *ROUTE, "qlp-blue-og")
    world = AzureWorld(double, cert)
    # Production already runs v0.9.0 on green, put there through the platform itself.
    env = Environment.model_validate(world.environment())
    fake_time = FakeTime()
    seeding = world.platform("production", env, clock=fake_time.clock, sleep=fake_time.sleep)
    seeding.deploy(Slot.GREEN, "v0.9.0")
    seeding.wait_ready(Slot.GREEN, timedelta(minutes=1))
    seeding.switch(Slot.GREEN)
    seeding.close()
    assert double.route_origin_group(*ROUTE) == "qlp-green-og"
    # Application Insights: both colours report requests, hardly any failed.
    double.set_requests("qlp-green", total=400, failed=1)
    double.set_requests("qlp-blue", total=350, failed=0)
    yield world
    world.app.stop()
    double.stop()


@pytest.fixture
def slack() -> Iterator[SlackDouble]:
    double = SlackDouble(token=BOT_TOKEN, groups={"S0RELEASE": ["U0LEAD2"]},
                         users={"U0DEV": "dev", "U0LEAD1": "lead1", "U0LEAD2": "lead2"})
    double.start()
    yield double
    double.stop()


@pytest.fixture
def azure_bot(database: Database, slack: SlackDouble, tmp_path: Path,
              world: AzureWorld) -> Iterator[BotHarness]:
    environments = {"production": world.environment(),
                    "staging": BASE["environments"]["staging"]}
    policy = make_policy(environments=environments, windows=ALWAYS_OPEN,
                         monitoring={"duration": "3s", "interval": "1s",
                                     "health_failure_ratio": 0.5, "response_time_ms": 2000,
                                     "error_threshold": 10})
    harness = BotHarness(database=database, policy=policy, clock=SystemClock(),
                         home=tmp_path / "home", slack=slack, start_worker=True)
    # The test hook: the registry builds its Azure platform lazily, with this factory.
    harness.services.platforms.azure_factory = world.factory
    yield harness
    harness.close()


def _request_and_approve(bot: BotHarness, version: str, approver: str) -> int:
    response = bot.command(f"deploy {version}")
    assert response.status_code == 200
    assert "requested" in response.text, response.text
    deployment_id = int(response.text.split("#")[1].split(" ")[0].rstrip(":"))
    card: Any = bot.wait_for(lambda: _card(bot.slack, deployment_id), what="the card")
    answer = bot.press("qlp_approve", str(deployment_id), user=approver, message_ts=card.ts)
    assert answer.status_code == 200
    return deployment_id


def _run(bot: BotHarness, deployment_id: int) -> Deployment:
    run = bot.services.deployments.get(deployment_id)
    assert run is not None
    return run


def _public_version(world: AzureWorld) -> str:
    return str(httpx.get(f"{world.app.url}/public/health", timeout=5).json()["version"])


def test_deploy_and_automatic_rollback_through_front_door(azure_bot: BotHarness,
                                                          world: AzureWorld) -> None:
    bot, slack, double = azure_bot, azure_bot.slack, world.double

    # 1. v1.0.0 goes to blue; the route moves to blue's origin group; the run succeeds.
    first = _request_and_approve(bot, "v1.0.0", "U0LEAD1")
    bot.wait_for(lambda: _run(bot, first).state.terminal, timeout=120,
                 what="run #1 to end")
    run = _run(bot, first)
    assert run.state is DeploymentState.SUCCEEDED, (run.error, _thread_text(slack, first))
    assert double.route_origin_group(*ROUTE) == "qlp-blue-og"
    assert _public_version(world) == "v1.0.0"
    assert double.groups["qlp-blue"]["tags"]["qlp-version"] == "v1.0.0"
    assert "qlp-green" not in double.groups  # the old colour stopped after monitoring
    patches = double.calls_to("route", "PATCH")
    assert patches[-1].body["properties"]["originGroup"]["id"].endswith("/qlp-blue-og")
    queries = double.calls_to("logs", "POST")
    assert any('AppRoleName == "qlp-blue"' in q.body["query"] for q in queries)
    assert any('AppRoleName == "qlp-green"' in q.body["query"] for q in queries)  # pre-check
    assert all(q.authorized for q in queries)
    bot.wait_for(lambda: "Deployed v1.0.0 to production" in _thread_text(slack, first),
                 what="the final reply")
    thread = _thread_text(slack, first)
    for phrase in ("✓ Final validation", "✓ Switch traffic", "✓ Monitor the new version"):
        assert phrase in thread, (phrase, thread)

    # 2. v1.1.0 goes to green, whose role then reports a spike of failed requests.
    double.set_requests("qlp-green", total=300, failed=120)
    second = _request_and_approve(bot, "v1.1.0", "U0LEAD1")
    bot.wait_for(lambda: _run(bot, second).state.terminal, timeout=120,
                 what="run #2 to end")
    run = _run(bot, second)
    assert run.state is DeploymentState.ROLLED_BACK, (run.error, _thread_text(slack, second))
    assert double.route_origin_group(*ROUTE) == "qlp-blue-og"
    assert _public_version(world) == "v1.0.0"
    # Front Door was pointed at green, then back at blue.
    targets = [c.body["properties"]["originGroup"]["id"].rsplit("/", 1)[-1]
               for c in double.calls_to("route", "PATCH")]
    assert targets[-2:] == ["qlp-green-og", "qlp-blue-og"]
    bot.wait_for(lambda: "Traffic switched back" in _thread_text(slack, second),
                 what="the rollback replies")
    thread = _thread_text(slack, second)
    assert "Rolling back v1.1.0" in thread, thread
    assert "120 errors since the switch (> 10 allowed)" in thread, thread
    state = bot.services.environments.get("production")
    assert state is not None and state.lock_holder is None


def test_registry_checks_azure_sections_and_ready_timeout_reads_them(
        world: AzureWorld, tmp_path: Path) -> None:
    from bot.platforms import PlatformRegistry
    from procedures.errors import ConfigError
    from procedures.playbooks.standard import ready_timeout

    good = world.environment()
    policy = make_policy(environments={"production": good})
    assert ready_timeout(policy.environments["production"]) == timedelta(seconds=30)
    registry = PlatformRegistry(policy, tmp_path, SystemClock(), azure_factory=world.factory)
    assert isinstance(registry.platform_for("production"), AzurePlatform)
    assert isinstance(registry.metrics_for("production"), AzureMetrics)
    registry.close()

    bad = {**good, "azure": {**good["azure"], "front_door": {
        **good["azure"]["front_door"], "rout": "x"}}}
    with pytest.raises(ConfigError) as caught:
        PlatformRegistry(make_policy(environments={"production": bad}), tmp_path,
                         SystemClock())
    assert caught.value.key == "environments.production.azure.front_door.rout"
    assert "did you mean route" in str(caught.value)
