"""Platforms per environment, built lazily and kept for the life of the process."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from procedures.clock import Clock
from procedures.errors import PolicyRefusal
from procedures.platforms.azure.settings import AzureSettings, parse_azure_settings
from procedures.platforms.base import Platform
from procedures.platforms.local.metrics import LocalMetrics
from procedures.platforms.local.platform import LocalPlatform
from procedures.playbook import MetricsSource
from procedures.policy import Environment, Policy

if TYPE_CHECKING:
    from procedures.platforms.azure.monitoring import AzureMetrics
    from procedures.platforms.azure.platform import AzurePlatform

log = logging.getLogger(__name__)

AzureParts = tuple["AzurePlatform", "AzureMetrics"]
AzureFactory = Callable[[str, Environment, AzureSettings, Clock], AzureParts]


def production_azure(name: str, env: Environment, settings: AzureSettings,
                     clock: Clock) -> AzureParts:
    """The real thing: DefaultAzureCredential (built on first use), ARM and Logs endpoints
    from the settings."""
    # Imported here: the Azure SDKs load only when an Azure environment is first used.
    from procedures.platforms.azure.clients import AzureClients
    from procedures.platforms.azure.monitoring import AzureMetrics
    from procedures.platforms.azure.platform import AzurePlatform

    clients = AzureClients.for_settings(settings)
    platform = AzurePlatform(name, env, clients=clients, clock=clock)
    return platform, AzureMetrics(settings, credential=clients.credential, clock=clock)


class PlatformRegistry:
    """``platform_for(env)`` and ``metrics_for(env)`` for the engine.

    Every ``azure:`` section of the policy is validated when the registry is built (a
    ConfigError naming the key). ``azure_factory`` builds an Azure environment's platform and
    metrics source; the default is :func:`production_azure`. Tests pass (or set, before the
    first use) a factory that points the SDK clients at a local double.
    """

    def __init__(self, policy: Policy, state_dir: Path, clock: Clock,
                 extra_env: dict[str, str] | None = None, *,
                 azure_factory: AzureFactory | None = None) -> None:
        self._policy = policy
        self._state_dir = state_dir
        self._clock = clock
        self._extra_env = extra_env or {}
        self.azure_factory: AzureFactory = azure_factory or production_azure
        self._azure_settings: dict[str, AzureSettings] = {
            name: parse_azure_settings(env.azure, where=f"environments.{name}.azure")
            for name, env in policy.environments.items()
            if env.platform == "azure" and env.azure is not None
        }
        self._platforms: dict[str, LocalPlatform] = {}
        self._metrics: dict[str, LocalMetrics] = {}
        self._azure: dict[str, AzureParts] = {}
        self._lock = threading.RLock()  # metrics_for builds the platform under the lock

    def platform_for(self, environment: str) -> Platform:
        if self._policy.environments[environment].platform == "azure":
            return self._azure_parts(environment)[0]
        return self._local(environment)

    def metrics_for(self, environment: str) -> MetricsSource:
        if self._policy.environments[environment].platform == "azure":
            return self._azure_parts(environment)[1]
        with self._lock:
            if environment not in self._metrics:
                self._metrics[environment] = LocalMetrics(self._local(environment),
                                                          clock=self._clock)
            return self._metrics[environment]

    def _azure_parts(self, environment: str) -> AzureParts:
        with self._lock:
            if environment not in self._azure:
                settings = self._policy.environments[environment]
                self._azure[environment] = self.azure_factory(
                    environment, settings, self._azure_settings[environment], self._clock)
            return self._azure[environment]

    def _local(self, environment: str) -> LocalPlatform:
        settings = self._policy.environments[environment]
        if settings.platform != "local":
            raise PolicyRefusal(f"{environment} runs on {settings.platform}, which this "
                                "version of the bot cannot deploy to yet.",
                                rule="not-implemented")
        with self._lock:
            if environment not in self._platforms:
                self._platforms[environment] = LocalPlatform(
                    environment, settings, self._state_dir, clock=self._clock,
                    extra_env=self._extra_env)
            return self._platforms[environment]

    def close(self) -> None:
        for platform in self._platforms.values():
            platform.close()
        with self._lock:
            azure, self._azure = list(self._azure.items()), {}
        for name, (azure_platform, metrics) in azure:
            for part in (metrics, azure_platform):
                try:
                    part.close()
                except Exception:  # closing one environment must not stop the others
                    log.warning("closing the %s Azure clients failed", name, exc_info=True)

    def shutdown_all(self) -> None:
        """Stop every router and slot this registry started (tests and demos)."""
        for platform in self._platforms.values():
            platform.shutdown_all()
