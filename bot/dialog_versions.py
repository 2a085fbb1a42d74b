"""The deploy dialog's version menu: which versions an environment offers, newest first.

On a platform that lists versions (``SupportsVersionList``: Azure's registry tags, newest
first) the list is read on a background thread, waited for at most :data:`REGISTRY_WAIT` (the
menu's ``block_suggestion`` must be answered within Slack's 3 s) and kept :data:`FRESH_FOR`,
so typing never waits on the registry twice, and a registry that hangs fills the list for the
next keystroke. Elsewhere (the local platform runs any version) the versions the bot's history
knows: requested or deployed, live, previous, highest first. Only versions the grammar takes
as they are (``v1.2.3``) are offered; the typed text always is (``bot.deploy_dialog_view``).
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from bot.deploy_dialog_view import read_state, version_options
from bot.grammar import normalise_version
from procedures import log_context
from procedures.errors import ExternalServiceError, UserError
from procedures.model import ProcedureKind
from procedures.platforms.base import SupportsVersionList
from procedures.policy import Policy

if TYPE_CHECKING:
    from bot.ports import HandlerServices

__all__ = ["FRESH_FOR", "REGISTRY_WAIT", "VersionCatalog", "semver_key", "version_menu"]

log = logging.getLogger(__name__)

REGISTRY_WAIT = 2.0
"""Seconds the version menu waits for the registry (Slack gives the answer 3 s)."""
FRESH_FOR = timedelta(seconds=60)
"""How long a registry's tag list is reused."""
MAX_TAGS = 200  # read from the registry; the menu shows at most 100



@dataclass
class _Fetch:
    """One environment's registry read: its result once done, and when."""

    done: threading.Event
    versions: list[str] | None = None
    error: str | None = None
    at: datetime | None = None


class VersionCatalog:
    """The versions the dialog offers for an environment (see the module docstring)."""

    def __init__(self, services: HandlerServices, *, wait: float = REGISTRY_WAIT,
                 fresh_for: timedelta = FRESH_FOR) -> None:
        self._services = services
        self._wait = wait
        self._fresh_for = fresh_for
        self._lock = threading.Lock()
        self._fetches: dict[str, _Fetch] = {}

    def versions(self, environment: str) -> tuple[list[str], str | None]:
        """(versions newest first, a note when the list is incomplete)."""
        platform = self._services.platforms.platform_for(environment)
        if isinstance(platform, SupportsVersionList):
            return self._registry(environment, platform)
        return self._history(environment), None

    def _registry(self, environment: str,
                  platform: SupportsVersionList) -> tuple[list[str], str | None]:
        fetch = self._fetch(environment, platform)
        if not fetch.done.wait(self._wait):
            return [], "The registry is slow: type a version, or reopen the menu"
        if fetch.versions is None:
            return [], "The registry did not answer: type a version"
        return fetch.versions, None

    def _fetch(self, environment: str, platform: SupportsVersionList) -> _Fetch:
        now = self._services.clock.now()
        with self._lock:
            fetch = self._fetches.get(environment)
            fresh = fetch is not None and (not fetch.done.is_set() or (
                fetch.versions is not None and fetch.at is not None
                and now - fetch.at < self._fresh_for))
            if fetch is not None and fresh:
                return fetch
            fetch = self._fetches[environment] = _Fetch(threading.Event())
        # A daemon thread: a registry that hangs past the menu's answer fills the list for the
        # next keystroke, and never holds up the bot's exit.
        threading.Thread(target=self._read, args=(environment, platform, fetch), daemon=True,
                         name=f"qlp-versions-{environment}").start()
        return fetch

    def _read(self, environment: str, platform: SupportsVersionList, fetch: _Fetch) -> None:
        try:
            # Counted as an Azure call like the runs' (qlp_azure_calls_total): this thread
            # reports to the engine's observer, the bot's metrics.
            with log_context.scope(self._services.engine.observer):
                tags = platform.available_versions(MAX_TAGS)
            fetch.versions = [tag for tag in tags if _is_version(tag)]
        except ExternalServiceError as error:
            fetch.error = error.message
            log.warning("the registry of %s did not list its versions: %s", environment,
                        error.message)
        except Exception:  # a menu without the registry's list is still usable
            fetch.error = "unexpected error"
            log.exception("the registry of %s did not list its versions", environment)
        finally:
            fetch.at = self._services.clock.now()
            fetch.done.set()

    def _history(self, environment: str) -> list[str]:
        services = self._services
        found: set[str] = set()
        for deployment in services.deployments.list_recent(environment, limit=200):
            if deployment.kind is not ProcedureKind.MIGRATION and deployment.version:
                found.add(deployment.version)
        state = services.environments.get(environment)
        for version in (getattr(state, "live_version", None),
                        getattr(state, "previous_version", None)):
            if version:
                found.add(version)
        return sorted((v for v in found if _is_version(v)), key=semver_key, reverse=True)


def _is_version(tag: str) -> bool:
    """A tag the grammar takes as it is (``v1.2.3``): ``1.2.3`` would be deployed as the
    image ``:v1.2.3``, another tag."""
    try:
        return normalise_version(tag) == tag
    except UserError:
        return False


def semver_key(version: str) -> tuple[Any, ...]:
    """Semantic-versioning precedence: numbers, then a release above its pre-releases, whose
    dot-separated parts compare numerically when numeric (build metadata is ignored)."""
    core, _, pre = version.lstrip("v").split("+", 1)[0].partition("-")
    numbers = tuple(int(part) for part in core.split("."))
    if not pre:
        return (numbers, 1, ())
    parts = tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in pre.split("."))
    return (numbers, 0, parts)


def version_menu(catalog: VersionCatalog, policy: Policy, body: dict[str, Any]) -> dict[str, Any]:
    """The options for a ``block_suggestion`` of the version menu, for the environment the
    form shows now (else the one it opened with)."""
    view = body.get("view") or {}
    chosen = read_state(view).environment
    if chosen not in policy.environments:
        chosen = _opened_with(view, policy)
    query = str(body.get("value") or "")[:100]
    try:
        typed: str | None = normalise_version(query.strip()) if query.strip() else None
    except UserError:
        typed = None
    versions, note = catalog.versions(chosen)
    return version_options(versions, query, typed=typed, note=note)


def _opened_with(view: dict[str, Any], policy: Policy) -> str:
    try:
        metadata = json.loads(view.get("private_metadata") or "{}")
    except ValueError:
        metadata = {}
    name = metadata.get("environment") if isinstance(metadata, dict) else None
    return str(name) if name in policy.environments else policy.environment_name(None)
