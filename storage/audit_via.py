"""An audit log that says which way each of its rows came in (``detail["via"]``).

The local shell audits through it with ``via="shell"``: its ``--user`` is whoever the person
at the terminal says, so every row it writes through the bot's audit log carries
``"via": "shell"`` in its detail (hashed with the rest of the row).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from procedures.clock import Clock
from storage.audit import AuditLog
from storage.audit_group import GroupCommitAuditLog
from storage.db import Database
from storage.models import AuditEvent


class ViaAuditLog(GroupCommitAuditLog):
    """A :class:`GroupCommitAuditLog` that adds ``via`` to every row's detail."""

    def __init__(self, audit: AuditLog, database: Database, clock: Clock, *, via: str) -> None:
        super().__init__(audit, database, clock)
        self.via = via

    def _with_via(self, detail: Mapping[str, Any] | None) -> dict[str, Any]:
        return {**(detail or {}), "via": self.via}

    def record(self, actor: str, action: str, *, deployment_id: int | None = None,
               environment: str | None = None, detail: Mapping[str, Any] | None = None) -> None:
        super().record(actor, action, deployment_id=deployment_id, environment=environment,
                       detail=self._with_via(detail))

    def append(self, actor: str, action: str, *, deployment_id: int | None = None,
               environment: str | None = None, detail: Mapping[str, Any] | None = None,
               session: Any = None) -> AuditEvent:
        return super().append(actor, action, deployment_id=deployment_id,
                              environment=environment, detail=self._with_via(detail),
                              session=session)
