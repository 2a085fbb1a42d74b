"""The plan an approval is bound to: kind, version, environment, options and the evidence the
request was judged on. If any of it changes before the run starts, the hash changes and
earlier approvals stop counting."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any


def plan_hash(kind: str, version: str | None, environment: str, options: Mapping[str, Any],
              evidence: Mapping[str, Any]) -> str:
    """A stable digest of everything an approver approved."""
    document = {"kind": kind, "version": version, "environment": environment,
                "options": {k: v for k, v in options.items() if k in PLAN_OPTIONS},
                "evidence": dict(evidence)}
    text = json.dumps(document, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:32]


# Options that change what the run does (notes and bookkeeping do not change the plan).
PLAN_OPTIONS = ("maintenance", "category", "target_version")


def describe_change(old: Mapping[str, Any], new: Mapping[str, Any]) -> str:
    """``live version v1.2.2 → v1.2.4`` for the card's note."""
    changes = [f"{key.replace('_', ' ')} {old.get(key) or 'none'} → {new.get(key) or 'none'}"
               for key in sorted(set(old) | set(new)) if old.get(key) != new.get(key)]
    return ", ".join(changes) or "the plan changed"


def reset_plan(kind: str, version: str | None, environment: str, options: Mapping[str, Any],
               evidence: Mapping[str, Any], note: str) -> tuple[dict[str, Any], str]:
    """The options of a plan judged on new ``evidence`` (with ``note`` kept for the card, the
    last five), and their hash: approvals given to the old hash stop counting."""
    changed = dict(options)
    changed["evidence"] = dict(evidence)
    changed["notes"] = [*changed.get("notes", []), note][-5:]
    return changed, plan_hash(kind, version, environment, changed, evidence)
