"""The deploy dialog (issue 15, item 2): a global shortcut (and the Home tab's Deploy...
button) opens a modal that asks for a standard deployment, a hotfix or an emergency, and its
submission does exactly what the equivalent ``/qlp`` command does.

- **Opening.** :func:`open_deploy_dialog` calls ``views.open`` with the interaction's
  ``trigger_id``. A trigger lives 3 seconds and is good once, so the call is made straight
  after the ack, on a Bolt lazy listener thread (the shortcut's listener only acks), never
  through the outbox or the worker's queue: a modal opened late is useless, and nothing is
  read before it (no registry, no database). On the Slack stand-in ``views.open`` arrives a
  median 16 ms after the trigger's issue, p95 54 ms (``benchmarks/deploy_dialog.py``); Slack's
  own ``views.open`` takes about 100-300 ms, well inside the trigger's life. A failed open
  (``expired_trigger_id``...) is logged: the person sees no modal and can try again.
- **The version menu** (``block_suggestion``, answered within Slack's 3 s):
  ``bot.dialog_versions`` (the registry's tags newest first on Azure, the versions history
  knows elsewhere; any typed version offered).
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

import logging
import shlex
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
)
from bot.dialog_versions import VersionCatalog, version_menu
from bot.grammar import EMERGENCY_CATEGORIES, Command, normalise_version
from bot.metrics import note_ack
from bot.replies import error_text
from procedures.errors import (
    PolicyRefusal,
    QlpError,
    UserError,
)
from procedures.log_context import scope
from procedures.policy import Policy
from procedures.windows import WindowRule

if TYPE_CHECKING:
    from slack_bolt import Ack, App
    from slack_sdk import WebClient

    from bot.ports import HandlerServices

__all__ = ["CALLBACK_ID", "open_deploy_dialog", "register", "submit"]

log = logging.getLogger(__name__)

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
