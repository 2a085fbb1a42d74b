"""Fixtures shared by the Azure tests: the double's self-signed certificate, and Azure
platforms whose SDK clients trust it (verification stays on) and talk to the double."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from procedures.platforms.azure import AzureClients, AzurePlatform
from procedures.policy import Environment
from tests.azure.arm_double import SUBSCRIPTION, ArmDouble, make_certificate
from tests.azure.test_azure_platform import StaticTokenCredential, azure_section


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
