"""The world of the Azure end-to-end tests: the ARM double (container groups, a Front Door
Standard route, Log Analytics queries, the PostgreSQL flexible server's backups) over HTTPS, a
plain-HTTP stand-in for the container groups' FQDNs and for the public URL (Front Door's edge,
serving the version of whichever colour the route points at), and the bot built on them.

The fixtures that use it are in ``tests/azure/conftest.py`` (``world``, ``azure_bot``,
``azure_bot_sqlite``); the helpers here drive a request through Slack and read the outcome.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from bot.platforms import AzureParts
from procedures.clock import Clock, SystemClock
from procedures.model import Slot
from procedures.platforms.azure import AzureClients, AzurePlatform
from procedures.platforms.azure.monitoring import AzureMetrics
from procedures.platforms.azure.settings import AzureSettings
from procedures.policy import Environment
from storage.db import Database
from storage.models import Deployment
from tests.azure.arm_double import SUBSCRIPTION, ArmDouble, make_certificate, set_backups
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

RG = "prod-qlp-rg"
WORKSPACE = "11111111-2222-3333-4444-555555555555"
ROUTE = ("qlp-frontdoor", "qlp-endpoint", "default-route")
DB_SERVER = "qlp-prod-db"
ENV = "production"
MONITORING = {"duration": "3s", "interval": "1s", "health_failure_ratio": 0.5,
              "response_time_ms": 2000, "error_threshold": 10}


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
            switch_confirm_timeout="30s", postgres_server=DB_SERVER,
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
        """What the bot's PlatformRegistry builds for an Azure environment, in these tests."""
        metrics = AzureMetrics(settings, credential=StaticTokenCredential(),
                               client_kwargs={"connection_verify": self.certificate,
                                              "retry_total": 0},
                               clock=clock, reuse_for=timedelta(seconds=0.5))
        return self.platform(name, env, clock=clock), metrics

    def put_live(self, slot: Slot, version: str, *, stop_other: bool = False) -> None:
        """Deploy ``version`` into ``slot`` and switch Front Door to it, through the platform
        itself on a fake clock (the state a run left behind, without a run)."""
        env = Environment.model_validate(self.environment())
        fake_time = FakeTime()
        platform = self.platform(ENV, env, clock=fake_time.clock, sleep=fake_time.sleep)
        try:
            platform.deploy(slot, version)
            platform.wait_ready(slot, timedelta(minutes=1))
            platform.switch(slot)
            if stop_other:
                platform.stop(slot.other)
        finally:
            platform.close()

    def backups_completed(self, *ages: timedelta) -> None:
        """The flexible server's backups: automatic ones that completed ``ages`` ago (real
        time: the bot runs on the system clock)."""
        now = datetime.now(UTC)
        set_backups(self.double, DB_SERVER, [
            (f"daily_{i}", "Full", (now - age).isoformat()) for i, age in enumerate(ages)])

    def public_version(self) -> str:
        """The version Front Door's public URL answers with now."""
        return str(httpx.get(f"{self.app.url}/public/health", timeout=5).json()["version"])

    def stop(self) -> None:
        self.app.stop()
        self.double.stop()


def start_world(tmp_path: Path) -> AzureWorld:
    """Production runs v0.9.0 on green (put there through the platform itself); Application
    Insights reports hardly any failed requests for either colour; the database's newest
    automatic backup completed 3 hours ago."""
    cert, key = make_certificate(tmp_path / "cert")
    double = ArmDouble(cert, key, polls=1).start()
    double.add_route(RG, *ROUTE, "qlp-blue-og")
    world = AzureWorld(double, cert)
    world.put_live(Slot.GREEN, "v0.9.0")
    assert double.route_origin_group(*ROUTE) == "qlp-green-og"
    double.set_requests("qlp-green", total=400, failed=1)
    double.set_requests("qlp-blue", total=350, failed=0)
    world.backups_completed(timedelta(hours=27), timedelta(hours=3))
    return world


def e2e_slack() -> SlackDouble:
    """The Slack double: U0LEAD1 approves (a named approver), U0LEAD2 is in S0RELEASE."""
    double = SlackDouble(token=BOT_TOKEN, groups={"S0RELEASE": ["U0LEAD2"]},
                         users={"U0DEV": "dev", "U0LEAD1": "lead1", "U0LEAD2": "lead2"})
    double.start()
    return double


def start_azure_bot(database: Database, slack: SlackDouble, home: Path,
                    world: AzureWorld) -> BotHarness:
    """The real bot with its worker, production on Azure (the world), staging local; always
    inside the window; monitoring 3 s every 1 s."""
    environments = {ENV: world.environment(), "staging": BASE["environments"]["staging"]}
    policy = make_policy(environments=environments, windows=ALWAYS_OPEN, monitoring=MONITORING)
    harness = BotHarness(database=database, policy=policy, clock=SystemClock(), home=home,
                         slack=slack, start_worker=True)
    # The test hook: the registry builds its Azure platform lazily, with this factory.
    harness.services.platforms.azure_factory = world.factory
    return harness


# -- driving a request ------------------------------------------------------------------------


def id_in(text: str) -> int:
    """The deployment number in a reply such as ``Hotfix #3 requested: ...``."""
    return int(text.split("#", 1)[1].split(" ", 1)[0].rstrip(":"))


def approve(bot: BotHarness, deployment_id: int, approver: str) -> None:
    """Press Approve on the deployment's card as ``approver``."""
    card: Any = bot.wait_for(lambda: _card(bot.slack, deployment_id), what="the card")
    answer = bot.press("qlp_approve", str(deployment_id), user=approver, message_ts=card.ts)
    assert answer.status_code == 200


def request_and_approve(bot: BotHarness, command: str, approver: str) -> int:
    """Send ``/qlp <command>``, check it was accepted, approve it; the deployment's id."""
    response = bot.command(command)
    assert response.status_code == 200
    assert "requested" in response.text, response.text
    deployment_id = id_in(response.text)
    approve(bot, deployment_id, approver)
    return deployment_id


def run_of(bot: BotHarness, deployment_id: int) -> Deployment:
    run = bot.services.deployments.get(deployment_id)
    assert run is not None
    return run


def wait_until_done(bot: BotHarness, deployment_id: int) -> Deployment:
    """Wait for the run to end (a terminal state); the row."""
    bot.wait_for(lambda: run_of(bot, deployment_id).state.terminal, timeout=120,
                 what=f"run #{deployment_id} to end")
    return run_of(bot, deployment_id)

