"""Fixtures shared by the Azure tests: the double's self-signed certificate, Azure platforms
whose SDK clients trust it (verification stays on) and talk to the double, and the end-to-end
world (``world``) with the real bot on it (``azure_bot`` on both databases, ``azure_bot_sqlite``
on SQLite only), see ``tests.azure.e2e_world``."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from procedures.platforms.azure import AzureClients, AzurePlatform
from procedures.policy import Environment
from storage.db import Database
from tests.azure.arm_double import SUBSCRIPTION, ArmDouble, make_certificate
from tests.azure.e2e_world import AzureWorld, e2e_slack, start_azure_bot, start_world
from tests.azure.test_azure_platform import StaticTokenCredential, azure_section
from tests.fakes.bot_harness import BotHarness
from tests.fakes.slack_double import SlackDouble


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate and key for one module's ARM double."""
    return make_certificate(tmp_path_factory.mktemp("arm-double"))


@pytest.fixture
def make_platform(double: ArmDouble, certificate: tuple[Path, Path]
                  ) -> Iterator[Callable[..., AzurePlatform]]:
    """``make(**azure_changes)``: an AzurePlatform for production on the double."""
    made: list[AzurePlatform] = []

    def make(**changes: Any) -> AzurePlatform:
        env = Environment.model_validate({
            "platform": "azure", "url": "https://api.qlp-hq.com",
            "azure": azure_section(double, **changes)})
        clients = AzureClients(StaticTokenCredential(), SUBSCRIPTION, base_url=double.url,
                               client_kwargs={"connection_verify": str(certificate[0]),
                                              "retry_total": 0})
        platform = AzurePlatform("production", env, clients=clients)
        made.append(platform)
        return platform

    yield make
    for platform in made:
        platform.close()


# -- the end-to-end world (tests.azure.e2e_world) -----------------------------------------------


@pytest.fixture
def world(tmp_path: Path) -> Iterator[AzureWorld]:
    """The ARM double and the application stand-in; production runs v0.9.0 on green."""
    started = start_world(tmp_path)
    yield started
    started.stop()


@pytest.fixture
def world_slack() -> Iterator[SlackDouble]:
    double = e2e_slack()
    yield double
    double.stop()


@pytest.fixture
def azure_bot(database: Database, world_slack: SlackDouble, tmp_path: Path,
              world: AzureWorld) -> Iterator[BotHarness]:
    """The real bot and worker on ``world``, on SQLite and on PostgreSQL."""
    harness = start_azure_bot(database, world_slack, tmp_path / "home", world)
    yield harness
    harness.close()


@pytest.fixture
def azure_bot_sqlite(sqlite_database: Database, world_slack: SlackDouble, tmp_path: Path,
                     world: AzureWorld) -> Iterator[BotHarness]:
    """The same bot on SQLite only: for runs whose point is the platform, not the storage
    (the standard playbook's end-to-end test covers both databases)."""
    harness = start_azure_bot(sqlite_database, world_slack, tmp_path / "home", world)
    yield harness
    harness.close()
