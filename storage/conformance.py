"""Static proof that the repositories implement :mod:`procedures.store` (checked by mypy).

Nothing here runs; if a repository drifts from its protocol, ``mypy storage`` fails on this
file.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from procedures.clock import Clock
    from procedures.store import (
        ApprovalStore,
        AuditSink,
        BaselineStore,
        DeploymentStore,
        EnvironmentStore,
        NotificationQueue,
        RequestDeduplicator,
    )
    from storage.approvals import ApprovalRepository
    from storage.audit import AuditLog
    from storage.baselines import BaselineRepository
    from storage.db import Database
    from storage.deployments import DeploymentRepository
    from storage.environments import EnvironmentStateRepository
    from storage.outbox import Outbox
    from storage.requests import ProcessedRequests

    def _conforms(database: Database, clock: Clock) -> None:
        audit: AuditSink = AuditLog(database, clock)
        outbox: NotificationQueue = Outbox(database, clock)
        environments: EnvironmentStore = EnvironmentStateRepository(database, clock)
        deployments: DeploymentStore = DeploymentRepository(database, clock)
        approvals: ApprovalStore = ApprovalRepository(database, clock)
        baselines: BaselineStore = BaselineRepository(database, clock)
        requests: RequestDeduplicator = ProcessedRequests(database, clock)
        del audit, outbox, environments, deployments, approvals, baselines, requests
