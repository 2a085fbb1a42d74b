"""What one check found, in a form that can be stored, compared and shown on a card.

A :class:`Finding` is a check's verdict (:class:`CheckVerdict`) with one line of evidence and
the time it was taken. ``final_validation`` produces them for every check it runs (see
``procedures.playbooks.final_validation``); the bot's preflight stores them on the deployment so
approvers see them before they approve, and :class:`Evidence` is what a card renders.

Only ``ok`` passes. ``inconclusive`` (the check could not tell) is never a pass, ``skipped``
means the check did not apply (nothing live yet), ``failed`` is a verdict against the run.
``warning`` is a finding the policy's ``validation`` section makes a warning rather than a gate
(the seed's "consider postponing"): shown amber, it does not stop the run.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

__all__ = ["CheckVerdict", "Evidence", "Finding"]


class CheckVerdict(StrEnum):
    """The outcome of one check."""

    OK = "ok"
    FAILED = "failed"
    INCONCLUSIVE = "inconclusive"
    SKIPPED = "skipped"
    WARNING = "warning"


@dataclass(frozen=True)
class Finding:
    """One check's verdict: ``name`` is the check's stable name (``ci``), ``title`` its label
    (``CI status``), ``evidence`` one line of what it saw, ``at`` when it was taken."""

    name: str
    title: str
    verdict: CheckVerdict
    evidence: str
    at: datetime

    @property
    def passed(self) -> bool:
        return self.verdict is CheckVerdict.OK

    @property
    def warning(self) -> bool:
        """A warning: shown amber, never blocking."""
        return self.verdict is CheckVerdict.WARNING

    @property
    def problem(self) -> bool:
        """Failed or inconclusive: something an approver must look at."""
        return self.verdict in (CheckVerdict.FAILED, CheckVerdict.INCONCLUSIVE)

    def to_json(self) -> dict[str, str]:
        return {"name": self.name, "title": self.title, "verdict": self.verdict.value,
                "evidence": self.evidence, "at": self.at.isoformat()}

    @classmethod
    def from_json(cls, data: Any) -> Finding | None:
        """The finding ``to_json`` wrote, or None for anything else (never raises)."""
        if not isinstance(data, Mapping):
            return None
        try:
            return cls(str(data["name"]), str(data.get("title") or data["name"]),
                       CheckVerdict(data["verdict"]), str(data.get("evidence") or ""),
                       datetime.fromisoformat(str(data["at"])))
        except (KeyError, ValueError, TypeError):
            return None


@dataclass(frozen=True)
class Evidence:
    """The final-validation findings a card shows while a deployment waits.

    ``checked_at`` is None while the checks have not run for the current plan (``stale``: they
    ran for a plan that has changed since), and then ``findings`` is empty.
    """

    findings: tuple[Finding, ...] = ()
    checked_at: datetime | None = None
    stale: bool = False

    @property
    def pending(self) -> bool:
        return self.checked_at is None

    @property
    def problems(self) -> tuple[Finding, ...]:
        return tuple(finding for finding in self.findings if finding.problem)
