"""The seed's deployment checklists: items, which steps tick them, and who ticked the rest.

The seed has two lists ("Standard Deployment Checklist", "Emergency Deployment Checklist").
Every item has a stable key (a slug of its text). An item with ``auto_steps`` is ticked by the
procedure itself when one of those steps SUCCEEDED; every other item is ticked by a person
(``/qlp checklist <id>``). Emergencies get the emergency list, every other kind the standard one.

Ticks are kept in the deployment's ``options["checklist"]``. Two formats are read and written
back in the format found, so ``/qlp emergency``'s list (``procedures.playbooks.emergency``)
keeps its length and order:

* a mapping ``{item_key: {"done_by": user, "at": iso}}`` (standard and any new deployment);
* a list ``[{"section", "item", "done_by", "at"?}]`` (what ``/qlp emergency`` attaches).

Pure: no storage, no Slack.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from procedures.model import ProcedureKind, StepState
from procedures.playbooks.emergency import EMERGENCY_CHECKLIST

__all__ = [
    "BOT",
    "EMERGENCY_ITEMS",
    "STANDARD_ITEMS",
    "ChecklistItem",
    "ItemState",
    "StepFact",
    "Tick",
    "apply_selection",
    "auto_ticks",
    "groups",
    "item_key",
    "items_for",
    "manual_ticks",
    "states",
    "store_ticks",
]

BOT = "qlp"
"""``done_by`` of what the procedure ticked itself."""


def item_key(text: str) -> str:
    """The stable key of an item: its text, lower case, words joined by ``-``."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


@dataclass(frozen=True)
class ChecklistItem:
    """One line of a checklist; ``auto_steps`` tick it when one of them SUCCEEDED.

    ``evidence`` names, per step, the key of that step's result that must say ``taken``: the
    deployment's ``snapshot`` succeeds without a backup when there is no database, so it
    ticks "Pre-deployment backup created" only when its ``database_backup`` was taken (and
    leaves the item unticked with the result's ``reason`` otherwise).
    """

    group: str
    text: str
    auto_steps: tuple[str, ...] = ()
    evidence: tuple[tuple[str, str], ...] = ()

    @property
    def key(self) -> str:
        return item_key(self.text)

    @property
    def manual(self) -> bool:
        return not self.auto_steps


@dataclass(frozen=True)
class Tick:
    """Who ticked an item and when; ``step`` is set when the procedure ticked it."""

    done_by: str
    at: datetime | None = None
    step: str | None = None


@dataclass(frozen=True)
class StepFact:
    """What the checklist needs of a step run."""

    name: str
    state: StepState
    finished_at: datetime | None = None
    result: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class ItemState:
    """An item and its tick (``None``: not done)."""

    item: ChecklistItem
    tick: Tick | None
    reason: str | None = None  # why the procedure left an auto item unticked, when it says


_PRE, _DURING, _POST = "Pre-Deployment", "During Deployment", "Post-Deployment"

STANDARD_ITEMS: tuple[ChecklistItem, ...] = (
    ChecklistItem(_PRE, "Code reviewed and approved"),
    ChecklistItem(_PRE, "Tests passing (unit, integration, security)"),
    ChecklistItem(_PRE, "Staging deployment tested"),
    # The migration's rehearsal on the promoted-from environment's database ticks it: /qlp
    # migrate's staging_first, or a deployment's migrate_database when it rehearsed.
    ChecklistItem(_PRE, "Database migration tested (if applicable)",
                  ("staging_first", "migrate_database"), (("migrate_database", "rehearsal"),)),
    ChecklistItem(_PRE, "Performance impact assessed"),
    ChecklistItem(_PRE, "Rollback plan prepared"),
    ChecklistItem(_PRE, "Team notification sent"),
    ChecklistItem(_PRE, "Change request approved"),
    # A real backup ticks it: the migration's pg_dump step, or the deployment's ``snapshot``
    # when its ``database_backup`` was taken (a pg_dump, an Azure on-demand backup).
    ChecklistItem(_DURING, "Pre-deployment backup created", ("backup", "snapshot"),
                  (("snapshot", "database_backup"),)),
    ChecklistItem(_DURING, "Infrastructure validation passed", ("final_validation",)),
    ChecklistItem(_DURING, "Application deployed successfully", ("switch_traffic",)),
    # /qlp migrate's apply (undone, it ticks nothing), or a deployment's migrate_database
    # when the version had a migration (applied now or before).
    ChecklistItem(_DURING, "Database migrations completed (if applicable)",
                  ("apply", "migrate_database"), (("migrate_database", "migration"),)),
    ChecklistItem(_DURING, "Health checks passing", ("wait_healthy", "extended_health")),
    ChecklistItem(_DURING, "Smoke tests completed", ("smoke_tests",)),
    ChecklistItem(_DURING, "Performance monitoring active", ("monitor",)),
    ChecklistItem(_POST, "Extended monitoring completed (30 minutes)", ("monitor",)),
    ChecklistItem(_POST, "Performance baseline updated", ("record_baseline",)),
    ChecklistItem(_POST, "Customer communication sent (if needed)"),
    ChecklistItem(_POST, "Documentation updated"),
    ChecklistItem(_POST, "Deployment retrospective scheduled"),
    ChecklistItem(_POST, "Success metrics recorded"),
)
"""The seed's "Standard Deployment Checklist", in its order."""

# "Emergency backup created" is ticked by the emergency's first step when it took a database
# backup (its ``database_backup``); without a database it stays unticked, with the reason.
_EMERGENCY_AUTO: Mapping[str, tuple[str, ...]] = {
    "Emergency backup created": ("snapshot",),
    "Fast-track deployment executed": ("switch_traffic",),
    "Critical functionality verified": ("verify",),
}
_EMERGENCY_EVIDENCE: Mapping[str, tuple[tuple[str, str], ...]] = {
    "Emergency backup created": (("snapshot", "database_backup"),),
}

EMERGENCY_ITEMS: tuple[ChecklistItem, ...] = tuple(
    ChecklistItem(section, text, _EMERGENCY_AUTO.get(text, ()),
                  _EMERGENCY_EVIDENCE.get(text, ()))
    for section, text in EMERGENCY_CHECKLIST
)
"""The seed's "Emergency Deployment Checklist" (the emergency playbook's list)."""


def items_for(kind: ProcedureKind | str) -> tuple[ChecklistItem, ...]:
    """The checklist of a deployment of ``kind``."""
    return EMERGENCY_ITEMS if ProcedureKind(kind) is ProcedureKind.EMERGENCY else STANDARD_ITEMS


def groups(items: Iterable[ChecklistItem]) -> list[tuple[str, list[ChecklistItem]]]:
    """The items by group, groups and items in checklist order."""
    by_group: dict[str, list[ChecklistItem]] = {}
    for item in items:
        by_group.setdefault(item.group, []).append(item)
    return list(by_group.items())


def _evidence(item: ChecklistItem, step: StepFact) -> tuple[bool, str | None]:
    """Whether ``step`` (SUCCEEDED) ticks ``item``, and why not when its result says."""
    key = dict(item.evidence).get(step.name)
    if key is None:
        return True, None
    found = (step.result or {}).get(key)
    if isinstance(found, Mapping) and found.get("taken"):
        return True, None
    reason = found.get("reason") if isinstance(found, Mapping) else None
    return False, str(reason) if reason else None


def _auto(items: Iterable[ChecklistItem],
          steps: Iterable[StepFact]) -> tuple[dict[str, Tick], dict[str, str]]:
    succeeded = {step.name: step for step in steps if step.state is StepState.SUCCEEDED}
    ticks: dict[str, Tick] = {}
    reasons: dict[str, str] = {}
    for item in items:
        for name in item.auto_steps:
            step = succeeded.get(name)
            if step is None:
                continue
            ticked, reason = _evidence(item, step)
            if ticked:
                ticks[item.key] = Tick(BOT, step.finished_at, name)
                reasons.pop(item.key, None)
                break
            if reason:
                reasons[item.key] = reason
    return ticks, reasons


def auto_ticks(items: Iterable[ChecklistItem], steps: Iterable[StepFact]) -> dict[str, Tick]:
    """The items the procedure ticked: the first of its ``auto_steps`` that SUCCEEDED (and,
    for a step the item names ``evidence`` of, whose result says that evidence was taken)."""
    return _auto(items, steps)[0]


def _parse_time(value: object) -> datetime | None:
    if isinstance(value, datetime):
        return value
    if isinstance(value, str) and value:
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            return None
    return None


def manual_ticks(stored: object, items: Iterable[ChecklistItem]) -> dict[str, Tick]:
    """The person ticks in ``options["checklist"]`` (either format), by item key."""
    known = {item.key for item in items if item.manual}
    entries: list[tuple[str, Mapping[str, Any]]] = []
    if isinstance(stored, Mapping):
        entries = [(str(key), value) for key, value in stored.items()
                   if isinstance(value, Mapping)]
    elif isinstance(stored, list):
        entries = [(item_key(str(entry.get("item") or "")), entry) for entry in stored
                   if isinstance(entry, Mapping)]
    ticks: dict[str, Tick] = {}
    for key, value in entries:
        done_by = value.get("done_by")
        if key in known and done_by:
            ticks[key] = Tick(str(done_by), _parse_time(value.get("at")))
    return ticks


def store_ticks(stored: object, items: Iterable[ChecklistItem],
                ticks: Mapping[str, Tick]) -> object:
    """``options["checklist"]`` with ``ticks`` as the person ticks, in the format found."""
    if isinstance(stored, list):
        updated: list[Any] = []
        for entry in stored:
            if not isinstance(entry, Mapping):
                updated.append(entry)
                continue
            new = dict(entry)
            tick = ticks.get(item_key(str(entry.get("item") or "")))
            new["done_by"] = tick.done_by if tick else None
            new.pop("at", None)
            if tick and tick.at:
                new["at"] = tick.at.isoformat()
            updated.append(new)
        return updated
    stored_ticks: dict[str, Any] = {}
    for item in items:
        tick = ticks.get(item.key)
        if tick is not None:
            stored_ticks[item.key] = {"done_by": tick.done_by,
                                      "at": tick.at.isoformat() if tick.at else None}
    return stored_ticks


def apply_selection(items: Iterable[ChecklistItem], offered: Collection[str],
                    selected: Collection[str], ticks: Mapping[str, Tick], *, user: str,
                    now: datetime) -> tuple[dict[str, Tick], list[str], list[str]]:
    """Diff a checkboxes element's ``selected`` keys against ``ticks``.

    Only the manual items ``offered`` in that element change. Returns the new ticks and the
    keys newly ticked and unticked, in checklist order.
    """
    new = dict(ticks)
    ticked: list[str] = []
    unticked: list[str] = []
    for item in items:
        if not item.manual or item.key not in offered:
            continue
        if item.key in selected and item.key not in new:
            new[item.key] = Tick(user, now)
            ticked.append(item.key)
        elif item.key not in selected and item.key in new:
            del new[item.key]
            unticked.append(item.key)
    return new, ticked, unticked


def states(items: Iterable[ChecklistItem], stored: object,
           steps: Iterable[StepFact]) -> list[ItemState]:
    """Every item with its tick: the procedure's for auto items, a person's for the rest."""
    items = tuple(items)
    auto, reasons = _auto(items, steps)
    ticks = {**manual_ticks(stored, items), **auto}
    return [ItemState(item, ticks.get(item.key), reasons.get(item.key)) for item in items]
