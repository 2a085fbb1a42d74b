"""The deploy dialog's Block Kit: the modal, what a submission's ``state`` says, the version
menu's options, the answer shown after a submission. No decisions here (``bot.deploy_dialog``).

The modal is one static form: environment, kind, emergency category, version, reason, an
optional date and time, and the ``--maintenance`` / ``--dry-run`` checkboxes. Which fields a
kind needs is checked on submission, on the field concerned (Slack shows the message under
it), the way the grammar checks the same command typed.

The version is an ``external_select`` (``min_query_length`` 0): its options are asked of the
bot when the menu opens and as the person types (``block_suggestion``), so the registry is read
only when someone looks, never before ``views.open``, whose ``trigger_id`` lives 3 seconds. The
typed text is always one of the options, so any version can be chosen, also one the registry
or history does not know yet; a typed text that is not a version is offered as such and
refused on submission with the grammar's reason.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from bot.grammar import EMERGENCY_CATEGORIES
from procedures.policy import Policy

__all__ = [
    "BLOCKS",
    "CALLBACK_ID",
    "KINDS",
    "VERSION_ACTION",
    "DialogInput",
    "dialog_view",
    "plain",
    "read_state",
    "result_view",
    "version_options",
]

CALLBACK_ID = "qlp_deploy_dialog"
"""The global shortcut's ``callback_id`` (manifest.yml) and the modal's."""
VERSION_ACTION = "qlp_dialog_version"
"""The version menu's ``action_id``: its options come from the bot (``block_suggestion``)."""

ENVIRONMENT, KIND, CATEGORY, VERSION, REASON, WHEN, OPTIONS = (
    "environment", "kind", "category", "version", "reason", "when", "options")
BLOCKS = (ENVIRONMENT, KIND, CATEGORY, VERSION, REASON, WHEN, OPTIONS)
"""The input blocks' ids, in order: ``response_action: errors`` names them."""

KINDS = {"standard": "Standard deployment", "hotfix": "Hotfix",
         "emergency": "Emergency"}
"""The kinds the dialog requests, as the command names them (``/qlp deploy|hotfix|...``)."""

MAINTENANCE, DRY_RUN = "maintenance", "dry-run"
MAX_OPTIONS = 100  # Block Kit: options (and option groups) per menu
_OPTION_TEXT = 75  # Block Kit: an option's text
_OPTION_VALUE = 150  # Block Kit: an option's value
_REASON_MAX = 500  # the grammar's limit on --reason
_METADATA_MAX = 3000  # Block Kit: a view's private_metadata
_SECTION_TEXT = 3000


def _text(text: str) -> dict[str, Any]:
    return {"type": "plain_text", "text": text, "emoji": True}


def _option(text: str, value: str) -> dict[str, Any]:
    shown = text if len(text) <= _OPTION_TEXT else text[:_OPTION_TEXT - 1] + "…"
    return {"text": _text(shown), "value": value[:_OPTION_VALUE]}


def _input(block_id: str, label: str, element: dict[str, Any], *, optional: bool = False,
           hint: str | None = None) -> dict[str, Any]:
    block: dict[str, Any] = {"type": "input", "block_id": block_id, "label": _text(label),
                             "element": element, "optional": optional}
    if hint:
        block["hint"] = _text(hint)
    return block


def dialog_view(policy: Policy, *, environment: str, origin: str) -> dict[str, Any]:
    """The modal ``views.open`` shows, ``environment`` chosen at first. ``origin`` (where it
    was opened: ``shortcut``, ``home``) travels in ``private_metadata`` to the audit row."""
    environments = [_option(name, name) for name in list(policy.environments)[:MAX_OPTIONS]]
    chosen = next((o for o in environments if o["value"] == environment), environments[0])
    kinds = [_option(text, value) for value, text in KINDS.items()]
    categories = [_option(name, name) for name in EMERGENCY_CATEGORIES]
    zone = policy.zone.key
    blocks = [
        {"type": "context", "elements": [{"type": "mrkdwn", "text": (
            "Asks for exactly what `/qlp deploy`, `/qlp hotfix` or `/qlp emergency` would: the "
            "same window, lock and approval rules; the card appears in the deployment channel.")}]},
        _input(ENVIRONMENT, "Environment", {
            "type": "static_select", "action_id": ENVIRONMENT, "options": environments,
            "initial_option": chosen}),
        _input(KIND, "Kind", {
            "type": "static_select", "action_id": KIND, "options": kinds,
            "initial_option": kinds[0]},
            hint="A hotfix may go outside the preferred window, never in a freeze; an "
                 "emergency goes 24/7 with a second person's approval."),
        _input(CATEGORY, "Emergency category", {
            "type": "static_select", "action_id": CATEGORY, "options": categories,
            "placeholder": _text("Only for an emergency")}, optional=True),
        _input(VERSION, "Version", {
            "type": "external_select", "action_id": VERSION_ACTION, "min_query_length": 0,
            "placeholder": _text("Newest first; type any version, e.g. v1.2.3")},
            hint="The versions that exist, newest first; type to filter or to name another."),
        _input(REASON, "Reason", {
            "type": "plain_text_input", "action_id": REASON, "multiline": True,
            "max_length": _REASON_MAX,
            "placeholder": _text("Why now (needed for a hotfix or an emergency)")},
            optional=True),
        _input(WHEN, "Scheduled for", {"type": "datetimepicker", "action_id": WHEN},
               optional=True,
               hint=f"Empty: now. A standard deployment only; judged on the window at that "
                    f"moment ({zone})."),
        _input(OPTIONS, "Options", {
            "type": "checkboxes", "action_id": OPTIONS, "options": [
                _option("Maintenance mode (--maintenance)", MAINTENANCE),
                _option("Dry run: show the plan, change nothing (--dry-run)", DRY_RUN)]},
            optional=True),
    ]
    metadata = json.dumps({"origin": origin[:40], "environment": chosen["value"]})
    return {"type": "modal", "callback_id": CALLBACK_ID, "title": _text("Deploy QLP"),
            "submit": _text("Request"), "close": _text("Cancel"),
            "private_metadata": metadata[:_METADATA_MAX], "blocks": blocks}


def result_view(text: str) -> dict[str, Any]:
    """What the modal becomes after a submission (``response_action: update``): the reply the
    command would have given, in sections of at most 3,000 characters."""
    chunks = [text[i:i + _SECTION_TEXT] for i in range(0, len(text), _SECTION_TEXT)][:20]
    return {"type": "modal", "title": _text("Deploy QLP"), "close": _text("Done"),
            "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": chunk}}
                       for chunk in chunks or ["Done."]]}


def version_options(versions: Sequence[str], query: str, *, typed: str | None,
                    note: str | None = None) -> dict[str, Any]:
    """The answer to the version menu's ``block_suggestion``: ``versions`` that contain
    ``query`` (newest first), with the typed version first when it is not among them
    (``typed``: the version the query normalises to, None when it is not a version; such a
    query is offered as it is when nothing matches it). ``note`` (the registry did
    not answer...) becomes the label of an option group, the only text a menu shows."""
    query = query.strip()
    shown = [v for v in versions if query.lower() in v.lower()]
    options: list[dict[str, Any]] = []
    if typed is not None and typed not in shown:
        options.append(_option(f"{typed} (typed)", typed))
    elif typed is None and query and not shown:
        # Chosen, it is refused on submission with the grammar's reason.
        options.append(_option(f"{query} (not a version)", query))
    options += [_option(v, v) for v in shown]
    options = options[:MAX_OPTIONS]
    if note is None:
        return {"options": options}
    label = note if len(note) <= _OPTION_TEXT else note[:_OPTION_TEXT - 1] + "…"
    return {"option_groups": [{"label": _text(label), "options": options}]} if options else \
        {"options": []}


@dataclass(frozen=True)
class DialogInput:
    """A submission's fields as Slack sent them (nothing validated yet)."""

    environment: str | None
    kind: str | None
    category: str | None
    version: str | None
    reason: str | None
    when: int | None  # the datetimepicker's UNIX timestamp
    flags: frozenset[str]
    origin: str


def read_state(view: dict[str, Any]) -> DialogInput:
    """The fields of a ``view_submission``'s ``view.state.values``."""
    values = (view.get("state") or {}).get("values") or {}

    def element(block: str) -> dict[str, Any]:
        found = values.get(block) or {}
        first: Any = next(iter(found.values()), {}) if isinstance(found, dict) else {}
        return first if isinstance(first, dict) else {}

    def selected(block: str) -> str | None:
        option = element(block).get("selected_option") or {}
        value = option.get("value") if isinstance(option, dict) else None
        return str(value) if value else None

    reason = element(REASON).get("value")
    when = element(WHEN).get("selected_date_time")
    flags = frozenset(str(o.get("value")) for o in element(OPTIONS).get("selected_options") or []
                      if isinstance(o, dict))
    try:
        metadata = json.loads(view.get("private_metadata") or "{}")
    except ValueError:
        metadata = {}
    return DialogInput(
        environment=selected(ENVIRONMENT), kind=selected(KIND), category=selected(CATEGORY),
        version=selected(VERSION), reason=str(reason) if reason else None,
        when=when if isinstance(when, int) and not isinstance(when, bool) else None,
        flags=flags, origin=str(metadata.get("origin") or "shortcut")
        if isinstance(metadata, dict) else "shortcut")


def local_minute(timestamp: int, zone: ZoneInfo) -> datetime:
    """The datetimepicker's moment as a naive wall-clock time in ``zone`` (the grammar's
    ``at YYYY-MM-DD HH:MM`` in the policy's zone)."""
    return datetime.fromtimestamp(timestamp, zone).replace(tzinfo=None, second=0,
                                                          microsecond=0)


_MRKDWN_LINK = re.compile(r"<[#@!]?[^<>|]*\|([^<>]*)>|<([#@!][^<>]*)>")


def plain(text: str, limit: int = 500) -> str:
    """A reply's mrkdwn as the plain text of a field's error (``response_action: errors``
    shows text as it is): no emoji codes, backticks or underscores for italics, links as
    their labels, entities decoded."""
    text = re.sub(r"^:[a-z_]+: ", "", text.strip())
    text = _MRKDWN_LINK.sub(lambda m: m.group(1) or m.group(2), text)
    text = text.replace("`", "").replace("_(rule:", "(rule:").replace(")_", ")")
    text = text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit - 1] + "…"
