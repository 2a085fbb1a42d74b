"""The deploy dialog (issue 15, item 2): a global shortcut (and the Home tab's Deploy...
button) opens a modal that asks for a standard deployment, a hotfix or an emergency, and its
submission does exactly what the equivalent ``/qlp`` command does.

- **Opening.** :func:`open_deploy_dialog` calls ``views.open`` with the interaction's
  ``trigger_id``. A trigger lives 3 seconds and is good once, so the call is made straight
  after the ack, on a Bolt lazy listener thread (the shortcut's listener only acks), never
  through the outbox or the worker's queue: a modal opened late is useless, and nothing is
  read before it (no registry, no database). On the Slack stand-in the open takes a few
  milliseconds after the ack (``tests/bot/test_deploy_dialog.py`` prints it); Slack's own
  ``views.open`` takes about 100-300 ms, well inside the trigger's life. A failed open
  (``expired_trigger_id``...) is logged: the person sees no modal and can try again.
- **The version menu** (``block_suggestion``, answered within Slack's 3 s): on a platform that
  lists versions (``SupportsVersionList``: Azure's registry tags, newest first) the list is
  read in the background, waited for at most :data:`REGISTRY_WAIT` and kept
  :data:`FRESH_FOR`, so typing never waits on the registry twice; elsewhere (the local
  platform) the versions the bot's history knows (deployed, live, previous), highest first.
  Only tags the grammar accepts as a version (ASCII semver with its ``v``) are offered; the
  typed text always is (``bot.deploy_dialog_view``).
- **Submission** (``view_submission``, answered before Slack's 3 s like a slash command): each
  field is checked as the grammar checks the command's words, then the command's own handler
  (``deploy_text``, ``hotfix_text``, ``emergency_text``) runs with the gate, the audit and the
  one request writer, so the dialog creates what the command would: one card. A refusal is
  shown on the field it concerns (``response_action: errors``; the window on the date, a bad
  version on the version, a missing reason on the reason, a lock on the environment) and
  nothing is created. A view submitted twice creates one request: the request key is the
  view's id (``RequestWriter`` returns the first one's deployment), and the answer a view got
  is kept in ``processed_requests`` and shown again.
"""

from __future__ import annotations

import json
import logging
import shlex
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from slack_sdk.errors import SlackApiError

from bot.commands.registry import HANDLERS
from bot.context import HandlerContext, Request
from bot.deploy_dialog_view import (
    CALLBACK_ID,
    CATEGORY,
    DRY_RUN,
    ENVIRONMENT,
    KIND,
    KINDS,
    MAINTENANCE,
    OPTIONS,
    REASON,
    VERSION,
    VERSION_ACTION,
    WHEN,
    DialogInput,
    dialog_view,
    local_minute,
    plain,
    read_state,
    result_view,
    version_options,
)
from bot.grammar import EMERGENCY_CATEGORIES, Command, normalise_version
from bot.metrics import note_ack
from bot.replies import error_text
from procedures.errors import (
    ExternalServiceError,
    PolicyRefusal,
    QlpError,
    UserError,
)
from procedures.log_context import scope
from procedures.model import ProcedureKind
from procedures.platforms.base import SupportsVersionList
from procedures.policy import Policy
from procedures.windows import WindowRule

if TYPE_CHECKING:
    from slack_bolt import Ack, App
    from slack_sdk import WebClient

    from bot.ports import HandlerServices

__all__ = ["CALLBACK_ID", "VersionCatalog", "open_deploy_dialog", "register", "submit"]

log = logging.getLogger(__name__)

REGISTRY_WAIT = 2.0
"""Seconds the version menu waits for the registry (Slack gives the answer 3 s)."""
FRESH_FOR = timedelta(seconds=60)
"""How long a registry's tag list is reused."""
MAX_TAGS = 200  # read from the registry; the menu shows at most 100
_COMMAND_OF = {"standard": "deploy", "hotfix": "hotfix", "emergency": "emergency"}
_WHEN_RULES = frozenset({*(rule.value for rule in WindowRule), "override-scheduled"})
_OPTIONS_RULES = frozenset({"not-implemented"})


# -- opening ------------------------------------------------------------------------------------


def open_deploy_dialog(client: WebClient, policy: Policy, *, trigger_id: str,
                       environment: str | None = None, origin: str = "shortcut") -> str | None:
    """Open the dialog with ``trigger_id`` (``environment`` chosen at first, else the
    policy's default); the view's id, or None when Slack refused (logged).

    Call it right after acking the interaction that carried the trigger (it lives 3 s and is
    good once), on the listener's own thread or a lazy listener: never through the outbox or
    the worker, whose queue may hold it past the trigger's life."""
    chosen = environment if environment in policy.environments else \
        policy.environment_name(None)
    view = dialog_view(policy, environment=chosen, origin=origin)
    try:
        response = client.views_open(trigger_id=trigger_id, view=view)
    except SlackApiError as error:
        log.warning("the deploy dialog did not open: views.open answered %s",
                    error.response.get("error"))
        return None
    opened = response.get("view") or {}
    return str(opened.get("id")) if opened.get("id") else None


# -- the version menu ---------------------------------------------------------------------------


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
            fetch.versions = [tag for tag in platform.available_versions(MAX_TAGS)
                              if _is_version(tag)]
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


# -- submission ---------------------------------------------------------------------------------


class _FieldErrors(Exception):
    """Messages by block id: the submission's ``response_action: errors``."""

    def __init__(self, errors: dict[str, str]) -> None:
        super().__init__(errors)
        self.errors = errors


def submit(services: HandlerServices, body: dict[str, Any]) -> dict[str, Any]:
    """Decide a ``view_submission``: the ack's fields (``response_action`` ``errors`` with
    messages by block id, or ``update`` with the command's answer)."""
    view = body.get("view") or {}
    user = body.get("user") or {}
    view_id = str(view.get("id") or "")
    seen_key = f"dialog:{view_id}"
    earlier = services.requests.outcome(seen_key) if view_id else None
    if earlier is not None:
        return _update(f"This dialog was already submitted. {earlier}")
    fields = read_state(view)
    try:
        command = _command(services.policy, fields)
    except _FieldErrors as problems:
        return {"response_action": "errors", "errors": problems.errors}
    text = equivalent_text(command, services.policy)
    request = Request(
        user_id=str(user.get("id") or ""), channel_id=services.policy.channel,
        team_id=(body.get("team") or {}).get("id") or user.get("team_id"),
        enterprise_id=(body.get("enterprise") or {}).get("id"),
        trigger_id=body.get("trigger_id"),
        request_key=f"view:{view_id}" if view_id else None)
    ctx = HandlerContext(request, services)
    with scope(slack_user=request.user_id, request_id=request.request_key):
        services.audit.append(request.user_id, f"command.{command.name}",
                              detail={"text": text[:500], "channel": request.channel_id,
                                      "via": "dialog", "origin": fields.origin})
        try:
            answer = HANDLERS[command.name](ctx, command)
        except Exception as error:  # the one place a dialog's refusal becomes a field's error
            return {"response_action": "errors",
                    "errors": {_field_for(error, command): plain(error_text(error))}}
    if view_id and not command.dry_run:
        services.requests.first_time(seen_key, outcome=answer[:2000])
    return _update(f"{answer}\n\n_As `/qlp {text}`._")


def _update(text: str) -> dict[str, Any]:
    return {"response_action": "update", "view": result_view(text)}


def _field_for(error: BaseException, command: Command) -> str:
    """The block a refusal concerns: the window (and the scheduled moment) on the date, a
    platform's missing capability on the options, the rest (a lock, a deployment under way,
    the approvers) on the environment."""
    if isinstance(error, PolicyRefusal):
        if error.rule in _WHEN_RULES:
            return WHEN
        if error.rule in _OPTIONS_RULES:
            return OPTIONS
        return ENVIRONMENT
    if isinstance(error, UserError) and command.at is not None:
        return WHEN
    return ENVIRONMENT


def _command(policy: Policy, fields: DialogInput) -> Command:
    """The command the fields say, checked field by field as the grammar checks its words;
    raises _FieldErrors naming every field that is wrong."""
    errors: dict[str, str] = {}
    environment = fields.environment or ""
    if environment not in policy.environments:
        errors[ENVIRONMENT] = (f"Choose one of: {', '.join(list(policy.environments)[:20])}.")
    kind = fields.kind or ""
    if kind not in KINDS:
        errors[KIND] = "Choose a standard deployment, a hotfix or an emergency."
    version = ""
    try:
        version = normalise_version((fields.version or "").strip()) if fields.version else ""
        if not version:
            errors[VERSION] = "Which version? Choose one, or type it (e.g. v1.2.3)."
    except UserError as error:
        errors[VERSION] = plain(error_text(error))
    category = fields.category
    if kind == "emergency" and category not in EMERGENCY_CATEGORIES:
        errors[CATEGORY] = (f"An emergency needs its category: "
                            f"{', '.join(EMERGENCY_CATEGORIES)}.")
    elif kind in ("standard", "hotfix") and category:
        errors[CATEGORY] = "A category is only for an emergency: clear it, or choose Emergency."
    reason = (fields.reason or "").strip()
    if kind in ("hotfix", "emergency"):
        if not reason:
            article = "An" if kind == "emergency" else "A"
            errors[REASON] = f"{article} {kind} needs a reason: say why it cannot wait."
        elif len(reason) < 3:
            errors[REASON] = "The reason is too short: say why."
        elif len(reason) > 500:
            errors[REASON] = "The reason is longer than 500 characters."
    elif reason:
        errors[REASON] = ("A standard deployment takes no reason: clear it, or choose a hotfix "
                          "or an emergency.")
    at = local_minute(fields.when, policy.zone) if fields.when is not None else None
    if at is not None and kind in ("hotfix", "emergency"):
        article = "an" if kind == "emergency" else "a"
        errors[WHEN] = (f"Only a standard deployment can be scheduled: {article} {kind} "
                        "starts once approved. Clear the date.")
    if MAINTENANCE in fields.flags and kind == "emergency":
        errors[OPTIONS] = "An emergency has no maintenance mode: untick it."
    unknown = fields.flags - {MAINTENANCE, DRY_RUN}
    if unknown:
        errors[OPTIONS] = "Unknown option."
    if errors:
        raise _FieldErrors(errors)
    name = _COMMAND_OF[kind]
    return Command(name, version=version, environment=environment,
                   at=at if name == "deploy" else None,
                   at_zone=policy.zone.key if at is not None else None,
                   reason=reason or None, category=category if name == "emergency" else None,
                   flags=frozenset(fields.flags))


def equivalent_text(command: Command, policy: Policy) -> str:
    """The ``/qlp`` text that asks for what ``command`` does (shown, and audited): the
    grammar parses it back to the same command."""
    words = [command.name]
    if command.name == "emergency" and command.category:
        words.append(command.category)
    words += [command.version or "", "to", command.environment or ""]
    if command.at is not None:
        words += ["at", f"{command.at:%Y-%m-%d %H:%M}", command.at_zone or policy.zone.key]
    if command.reason:
        words += ["--reason", shlex.quote(command.reason)]
    words += [f"--{flag}" for flag in sorted(command.flags)]
    return " ".join(words)


# -- the listeners ------------------------------------------------------------------------------


def register(app: App, services: HandlerServices) -> None:
    """The shortcut (acked, then the modal opened on a lazy listener), the version menu's
    options, and the submission."""
    catalog = VersionCatalog(services)
    policy = services.policy

    def ack_shortcut(ack: Ack) -> None:
        note_ack("shortcut", CALLBACK_ID)
        ack()

    def open_from_shortcut(body: dict[str, Any], client: WebClient) -> None:
        trigger = str(body.get("trigger_id") or "")
        user = str((body.get("user") or {}).get("id") or "")
        with scope(slack_user=user, request_id=trigger):
            open_deploy_dialog(client, policy, trigger_id=trigger, origin="shortcut")

    def on_options(ack: Ack, body: dict[str, Any]) -> None:
        note_ack("options", VERSION_ACTION)
        try:
            ack(**version_menu(catalog, policy, body))
        except QlpError as error:  # a menu that cannot list still lets the person type
            log.warning("the version menu could not list versions: %s", error)
            ack(options=[])

    def on_submission(ack: Ack, body: dict[str, Any]) -> None:
        note_ack("view", CALLBACK_ID)
        ack(**submit(services, body))

    app.shortcut(CALLBACK_ID)(ack=ack_shortcut, lazy=[open_from_shortcut])
    app.options(VERSION_ACTION)(on_options)
    app.view(CALLBACK_ID)(on_submission)
