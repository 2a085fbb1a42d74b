"""What ``/qlp status`` shows, read in one short read-only transaction.

Status is the command people type most, often during a deployment; reading the environments
and the active deployments in one session halves its database round trips.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from sqlmodel import col, select

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
        with self._db.session(read_only=True) as s:
            rows = s.exec(select(EnvironmentStateRow)).all()
            active = s.exec(select(Deployment)
                            .where(col(Deployment.state).in_(list(states)))
                            .order_by(col(Deployment.id))).all()
            return StatusSnapshot({row.environment: row for row in rows}, list(active))
