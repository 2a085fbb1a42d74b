"""What ``/qlp status`` shows, read in one short read-only transaction.

Status is the command people type most, often during a deployment; reading the environments
and the active deployments in one session halves its database round trips.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from sqlmodel import select

from procedures.model import DeploymentState
from storage.db import Database
from storage.models import Deployment, EnvironmentStateRow


@dataclass(frozen=True)
class StatusSnapshot:
    """Every environment's state row and the deployments in the given states."""

    environments: dict[str, EnvironmentStateRow]
    deployments: list[Deployment]


class StatusReader:
    """Reads a :class:`StatusSnapshot`."""

    def __init__(self, database: Database) -> None:
        self._db = database

    def snapshot(self, states: Collection[DeploymentState]) -> StatusSnapshot:
        # Core rows, not ORM objects: status only reads attributes, and skipping the identity
        # map halves its CPU (it is typed often, and Slack's 3 s ack shares the CPU).
        environments = EnvironmentStateRow.__table__  # type: ignore[attr-defined]
        deployments = Deployment.__table__  # type: ignore[attr-defined]
        with self._db.session(read_only=True) as s:
            connection = s.connection()
            rows = connection.execute(select(environments)).all()
            active = connection.execute(
                select(deployments).where(deployments.c.state.in_(list(states)))
                .order_by(deployments.c.id)).all()
            return StatusSnapshot({row.environment: row for row in rows},  # type: ignore[misc]
                                  list(active))  # type: ignore[arg-type]
