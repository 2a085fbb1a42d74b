"""The protocol every platform implements; the playbooks only ever talk to this."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol, runtime_checkable

from procedures.model import Slot


@dataclass(frozen=True)
class SlotStatus:
    """What a platform knows about one colour."""

    slot: Slot
    running: bool
    version: str | None = None
    url: str | None = None  # where the slot answers directly (bypassing the router / Front Door)
    detail: str = ""


@dataclass(frozen=True)
class TrafficState:
    """Which colour the public URL serves, read from the platform itself (never from a file)."""

    live: Slot | None
    slots: dict[Slot, SlotStatus] = field(default_factory=dict)

    @property
    def live_version(self) -> str | None:
        if self.live is None:
            return None
        status = self.slots.get(self.live)
        return status.version if status else None


class Platform(Protocol):
    """Blue-green operations on one environment.

    Every operation is idempotent: calling it again after a crash, with the same arguments,
    converges on the same state. Failures raise ``StepFailure`` or ``ExternalServiceError``
    (marked retryable where trying again may help).
    """

    def traffic(self) -> TrafficState:
        """Read the live colour and each slot's state from the platform."""
        ...

    def deploy(self, slot: Slot, version: str) -> SlotStatus:
        """Start ``version`` in ``slot`` (replacing whatever ran there)."""
        ...

    def wait_ready(self, slot: Slot, timeout: timedelta) -> SlotStatus:
        """Block until ``slot`` is running and healthy, or raise StepFailure at ``timeout``."""
        ...

    def switch(self, slot: Slot) -> None:
        """Route the public URL to ``slot`` atomically."""
        ...

    def stop(self, slot: Slot) -> None:
        """Stop ``slot``; stopping a stopped slot is fine."""
        ...

    def slot_url(self, slot: Slot) -> str:
        """Base URL that reaches ``slot`` directly, for smoke tests before the switch."""
        ...


@runtime_checkable
class SupportsMaintenance(Protocol):
    """A platform that can put the public URL into maintenance mode (optional capability).

    While on, the public URL answers 503 to every request; the slots keep running and stay
    reachable directly (``Platform.slot_url``). Both calls are idempotent. Playbooks test for it
    with ``isinstance(platform, SupportsMaintenance)`` and say so when a platform lacks it.
    """

    def set_maintenance(self, on: bool) -> None:
        """Turn maintenance mode on or off (verified by reading it back)."""
        ...

    def maintenance(self) -> bool:
        """Whether the public URL is in maintenance mode now, read from the platform."""
        ...


class BackupReport(Protocol):
    """The newest backup of an environment's database, as a platform reports it."""

    @property
    def fresh(self) -> bool:
        """Whether it is recent enough by the platform's own limit (False: none at all)."""
        ...

    def describe(self) -> str:
        """One line for a thread: which database, when its newest backup completed, how old."""
        ...


@runtime_checkable
class SupportsBackupAge(Protocol):
    """A platform that can tell how old the newest backup of the environment's database is
    (optional capability). It only reads: it takes no backup. Playbooks test for it with
    ``isinstance(platform, SupportsBackupAge)``.
    """

    def newest_backup(self, now: datetime) -> BackupReport | None:
        """The newest backup as seen at ``now``; None when the environment names no database
        whose backups the platform can read. Raises ``ExternalServiceError`` when the
        platform cannot answer."""
        ...


@dataclass(frozen=True)
class DatabaseBackup:
    """What a platform's :class:`SupportsBackup` did: a backup ``taken`` (its ``name``, where
    it is, its size when the platform knows it, how long it took), or not taken and why
    (``reason``: a server tier without on-demand backups...)."""

    taken: bool
    name: str | None = None
    location: str = ""  # a file path, or "PostgreSQL server <name>"
    size_bytes: int | None = None
    duration: timedelta = timedelta(0)
    reason: str = ""
    restore_hint: str = ""


@runtime_checkable
class SupportsBackup(Protocol):
    """A platform that can take an on-demand backup of the environment's database (optional
    capability): locally a ``pg_dump`` of ``database_url`` into the bot's backups directory, on
    Azure an on-demand backup of the PostgreSQL flexible server. Playbooks test for it with
    ``isinstance(platform, SupportsBackup)``, never by the platform's name.
    """

    def backup_target(self) -> str | None:
        """What would be backed up (a database, a server), None when the environment has no
        database configured."""
        ...

    def take_backup(self, name: str, *, report: Callable[[str], None],
                    sleep: Callable[[float], None]) -> DatabaseBackup:
        """Take a backup called ``name`` (letters, digits, ``-_.``) and wait for it, sleeping
        only through ``sleep`` (the step's own). Raises StepFailure or ExternalServiceError
        when it fails; returns ``taken=False`` with a reason when the database cannot take
        one by design (say, its tier)."""
        ...


@runtime_checkable
class SupportsWatchedSwitch(Protocol):
    """A platform whose switch takes long enough to be watched (optional capability): Front
    Door propagates a change to its edges for minutes, while a local router switches at once.

    ``switch_watched`` does what ``Platform.switch`` does, but says how the wait goes through
    ``report`` (a line for the deployment thread, at most about once a minute) and sleeps
    only through ``sleep``: the step's own sleep, which heartbeats and raises at the step's
    deadline or on cancel, so the wait ends with its step. Playbooks test for it with
    ``isinstance(platform, SupportsWatchedSwitch)`` and call plain ``switch`` otherwise.
    """

    def switch_watched(self, slot: Slot, *, report: Callable[[str], None],
                       sleep: Callable[[float], None]) -> None:
        """Route the public URL to ``slot`` and wait until it is served from there."""
        ...


@runtime_checkable
class SupportsWatchedDeploy(Protocol):
    """A platform whose deployment takes long enough to be watched (optional capability): an
    Azure container group takes minutes to provision and pull its image, while a local
    container starts at once.

    ``deploy_watched`` and ``wait_ready_watched`` do what ``Platform.deploy`` and
    ``Platform.wait_ready`` do, but say how the wait goes through ``report`` (a line for the
    deployment thread, at most about once a minute) and sleep only through ``sleep``: the
    step's own sleep, which heartbeats and raises at the step's deadline or on cancel, so no
    wait (a poll, a ``Retry-After``) outlives its step. ``within`` bounds the deployment's wait
    for the platform (what is left of the step, less a margin): past it the platform raises a
    retryable StepFailure, and the next attempt follows what it started instead of starting it
    again. Playbooks test for it with ``isinstance(platform, SupportsWatchedDeploy)`` and call
    the plain methods otherwise.
    """

    def deploy_watched(self, slot: Slot, version: str, *, report: Callable[[str], None],
                       sleep: Callable[[float], None],
                       within: timedelta | None = None) -> SlotStatus:
        """Start ``version`` in ``slot``, waiting for it at most ``within``."""
        ...

    def wait_ready_watched(self, slot: Slot, timeout: timedelta, *,
                           report: Callable[[str], None],
                           sleep: Callable[[float], None]) -> SlotStatus:
        """Wait until ``slot`` is running and healthy; StepFailure at ``timeout``."""
        ...


@runtime_checkable
class SupportsWatchedStop(Protocol):
    """A platform whose stop takes long enough to be watched (optional capability): deleting
    an Azure container group is a long-running operation. ``stop_watched`` does what
    ``Platform.stop`` does, sleeping only through ``sleep`` (the step's own, which raises at
    the step's deadline or on cancel), so the wait never outlives its step."""

    def stop_watched(self, slot: Slot, *, sleep: Callable[[float], None]) -> None:
        """Stop ``slot`` (never the live one)."""
        ...


@runtime_checkable
class SupportsVersionList(Protocol):
    """A platform that can list the versions that exist for its environment (optional
    capability): on Azure the tags of the image repository in the container registry, read
    through the registry's data plane. A platform without it (the local one runs any version)
    leaves the choice to what the bot's own history knows. The deploy dialog tests for it with
    ``isinstance(platform, SupportsVersionList)``.
    """

    def available_versions(self, limit: int) -> list[str]:
        """At most ``limit`` tags, newest first, as the registry spells them (not validated:
        the caller keeps only those its version grammar accepts). Raises
        ``ExternalServiceError`` when the registry cannot answer."""
        ...
