"""The world of the Azure end-to-end tests: the ARM double (container groups, a Front Door
Standard route, Log Analytics queries, the PostgreSQL flexible server's backups) over HTTPS, the
application stand-in (``tests.azure.app_standin``: each container group's FQDN, and Front
Door's public URL serving whatever the double's edge serves now), and the bot built on them.

The world starts as a new user's does (``tests.azure.fresh_world``): a Front Door profile whose
route already points at the blue origin group, origins waiting at the FQDNs the colours' groups
will get, and no container group at all. ``start_world`` then puts v0.9.0 live on green through
the platform itself (the state earlier runs left behind); ``start_fresh_world`` leaves it empty.

Time: the double and the Azure platform share a :class:`ModelClock`, real time sped up
``SPEED`` times, so that Azure's minutes (provisioning, Front Door's propagation, the switch's
stable window) take seconds here while every wait still runs through the platform's own clock
and the step's own sleep. The bot itself (engine, outbox, monitoring) keeps the system clock.

Telemetry comes from the applications: ``AzureWorld.telemetry`` says how many requests (and
failed ones) each container group serves, and the Logs double reports them under the cloud role
name *that group's environment* names in ``OTEL_SERVICE_NAME``, the variable the bot injects. A
group started without it reports nothing, as a real app would.

The fixtures that use it are in ``tests/azure/conftest.py`` (``world``, ``fresh_world``,
``azure_bot``, ``azure_bot_sqlite``); the helpers here drive a request through Slack and read
the outcome.
"""

from __future__ import annotations

import time
from collections.abc import Callable
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
from procedures.platforms.base import SlotStatus
from procedures.policy import Environment
from storage.db import Database
from storage.models import Deployment
from tests.azure.app_standin import AppStandIn
from tests.azure.arm_double import SUBSCRIPTION, ArmDouble, Request, make_certificate, set_backups
from tests.azure.arm_double.core import Answer
from tests.azure.fresh_world import fresh_front_door
from tests.azure.test_azure_platform import (
    FRONT_DOORS,
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
              "response_time_ms": 2000, "error_threshold": 10, "emergency_stability": "3s",
              "extended_health": "5s"}
SPEED = 30.0  # model seconds per real second: Azure's 90 s of propagation take 3 s here


class ModelClock:
    """Azure's time in these tests: real time sped up ``speed`` times (``now``, ``seconds``
    for the double, ``sleep`` in model seconds)."""

    def __init__(self, speed: float = SPEED) -> None:
        self.speed = speed
        self._origin = time.monotonic()
        self._start = datetime.now(UTC)

    def seconds(self) -> float:
        return (time.monotonic() - self._origin) * self.speed

    def now(self) -> datetime:
        return self._start + timedelta(seconds=self.seconds())

    def sleep(self, seconds: float) -> None:
        time.sleep(max(seconds, 0.0) / self.speed)


class ModelTimePlatform(AzurePlatform):
    """The Azure platform on model time. The watched calls' waits go through the step's own
    sleep (which heartbeats and stops at the step's deadline); here that sleep is given model
    seconds, so they are scaled to real ones on the way, and the step's time budgets (real
    time) are scaled to model time."""

    def __init__(self, *args: Any, model: ModelClock, **kwargs: Any) -> None:
        super().__init__(*args, clock=model, sleep=model.sleep, **kwargs)
        self._model = model

    def switch_watched(self, slot: Slot, *, report: Callable[[str], None],
                       sleep: Callable[[float], None]) -> None:
        speed = self._model.speed
        super().switch_watched(slot, report=report, sleep=lambda s: sleep(s / speed))

    def deploy_watched(self, slot: Slot, version: str, *, report: Callable[[str], None],
                       sleep: Callable[[float], None],
                       within: timedelta | None = None) -> SlotStatus:
        speed = self._model.speed
        return super().deploy_watched(slot, version, report=report,
                                      sleep=lambda s: sleep(s / speed),
                                      within=within * speed if within is not None else None)

    def stop_watched(self, slot: Slot, *, sleep: Callable[[float], None]) -> None:
        speed = self._model.speed
        super().stop_watched(slot, sleep=lambda s: sleep(s / speed))

    def wait_ready_watched(self, slot: Slot, timeout: timedelta, *,
                           report: Callable[[str], None],
                           sleep: Callable[[float], None]) -> SlotStatus:
        speed = self._model.speed
        return super().wait_ready_watched(slot, timeout * speed, report=report,
                                          sleep=lambda s: sleep(s / speed))


class AzureWorld:
    """The double, the application stand-in and how the bot's SDK clients reach them."""

    def __init__(self, double: ArmDouble, certificate: Path, model: ModelClock, *,
                 health_mode: str = "json") -> None:
        self.double = double
        self.certificate = str(certificate)
        self.model = model
        self.app = AppStandIn(double, FRONT_DOORS["route"], health_mode=health_mode)
        # Requests (total, failed) each container group's application serves, by group name.
        self.telemetry: dict[str, tuple[int, int]] = {}
        self._answer_logs = double._logs_request
        double._logs_request = self._logs_with_telemetry  # type: ignore[method-assign]

    def live_colour(self) -> str:
        pool = self.double.route_origin_group(*ROUTE)
        return "blue" if "blue" in pool else "green"

    def environment(self, **changes: Any) -> dict[str, Any]:
        section = azure_section(
            self.double, "route", secrets={}, poll_interval="5s", ready_timeout="10m",
            postgres_server=DB_SERVER,
            app_insights={"workspace_id": WORKSPACE, "endpoint": self.double.url})
        section.pop("switch_confirm_timeout", None)  # the default: 30 minutes
        section.update(changes)
        return {"platform": "azure", "url": f"{self.app.url}/public", "health": ["/health"],
                "azure": section}

    def clients(self) -> AzureClients:
        return AzureClients(
            StaticTokenCredential(), SUBSCRIPTION, base_url=self.double.url,
            client_kwargs={"connection_verify": self.certificate, "polling_interval": 0,
                           "retry_total": 0},
            keyvault_kwargs={"verify_challenge_resource": False})

    def slot_base(self, slot: Slot, host: str) -> str:
        return f"{self.app.url}/hosts/{host}"

    def platform(self, name: str, env: Environment, **kwargs: Any) -> AzurePlatform:
        """An Azure platform on the double (on a fake clock when one is given)."""
        return AzurePlatform(name, env, clients=self.clients(), slot_base=self.slot_base,
                             **kwargs)

    def factory(self, name: str, env: Environment, settings: AzureSettings,
                clock: Clock) -> AzureParts:
        """What the bot's PlatformRegistry builds for an Azure environment, in these tests."""
        metrics = AzureMetrics(settings, credential=StaticTokenCredential(),
                               client_kwargs={"connection_verify": self.certificate,
                                              "retry_total": 0},
                               clock=clock, reuse_for=timedelta(seconds=0.5))
        platform = ModelTimePlatform(name, env, clients=self.clients(),
                                     slot_base=self.slot_base, model=self.model)
        return platform, metrics

    def put_live(self, slot: Slot, version: str, *, stop_other: bool = False) -> None:
        """Deploy ``version`` into ``slot`` and switch Front Door to it, through the platform
        itself on a fake clock (the state a run left behind, without a run)."""
        env = Environment.model_validate(self.environment(switch_confirm="off"))
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

    def injected_role(self, group: str) -> str | None:
        """The cloud role name the group's application reports under: its
        ``OTEL_SERVICE_NAME`` (None when the group has none, or does not exist)."""
        with self.double.lock:
            found = self.double.groups.get(group)
            containers = found["properties"].get("containers", []) if found else []
        for container in containers:
            for variable in container.get("properties", {}).get("environmentVariables", []):
                if variable.get("name") == "OTEL_SERVICE_NAME":
                    return str(variable.get("value"))
        return None

    def _logs_with_telemetry(self, request: Request) -> Answer:
        # The applications' telemetry reaches Logs under the role names their groups carry.
        for group, (total, failed) in self.telemetry.items():
            role = self.injected_role(group)
            if role is not None:
                self.double.set_requests(role, total=total, failed=failed)
        return self._answer_logs(request)

    def stop(self) -> None:
        self.app.stop()
        self.double.stop()


def new_world(tmp_path: Path, *, health_mode: str = "json") -> AzureWorld:
    """A new user's Azure: Front Door set up with its route on blue, no container group, the
    database's newest automatic backup 3 hours old; applications report few failed
    requests."""
    cert, key = make_certificate(tmp_path / "cert")
    model = ModelClock()
    double = ArmDouble(cert, key, polls=1, clock=model.seconds).start()
    fresh_front_door(double, RG, *ROUTE)
    world = AzureWorld(double, cert, model, health_mode=health_mode)
    world.telemetry.update({"qlp-green": (400, 1), "qlp-blue": (350, 0)})
    world.backups_completed(timedelta(hours=27), timedelta(hours=3))
    return world


def start_world(tmp_path: Path) -> AzureWorld:
    """A new user's Azure (``new_world``) where production then runs v0.9.0 on green, put
    there through the platform itself."""
    world = new_world(tmp_path)
    world.put_live(Slot.GREEN, "v0.9.0")
    assert world.double.route_origin_group(*ROUTE) == "qlp-green-og"
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

