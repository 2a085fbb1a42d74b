"""Platforms per environment, built lazily and kept for the life of the process."""

from __future__ import annotations

import threading
from pathlib import Path

from procedures.clock import Clock
from procedures.errors import PolicyRefusal
from procedures.platforms.base import Platform
from procedures.platforms.local.metrics import LocalMetrics
from procedures.platforms.local.platform import LocalPlatform
from procedures.playbook import MetricsSource
from procedures.policy import Policy


class PlatformRegistry:
    """``platform_for(env)`` and ``metrics_for(env)`` for the engine."""

    def __init__(self, policy: Policy, state_dir: Path, clock: Clock,
                 extra_env: dict[str, str] | None = None) -> None:
        self._policy = policy
        self._state_dir = state_dir
        self._clock = clock
        self._extra_env = extra_env or {}
        self._platforms: dict[str, LocalPlatform] = {}
        self._metrics: dict[str, LocalMetrics] = {}
        self._lock = threading.RLock()  # metrics_for builds the platform under the lock

    def platform_for(self, environment: str) -> Platform:
        return self._local(environment)

    def metrics_for(self, environment: str) -> MetricsSource:
        with self._lock:
            if environment not in self._metrics:
                self._metrics[environment] = LocalMetrics(self._local(environment),
                                                          clock=self._clock)
            return self._metrics[environment]

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

    def shutdown_all(self) -> None:
        """Stop every router and slot this registry started (tests and demos)."""
        for platform in self._platforms.values():
            platform.shutdown_all()
