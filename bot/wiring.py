"""The composition root: everything is built here, once, from one Settings object."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from slack_sdk import WebClient
from slack_sdk.webhook import WebhookClient

from bot.settings import Settings
from bot.worker import Worker, WorkerTask
from procedures.clock import Clock, SystemClock
from procedures.policy import Policy
from procedures.windows import WindowPolicy
from storage.audit import AuditLog
from storage.audit_group import GroupCommitAuditLog
from storage.db import Database
from storage.deployments import DeploymentRepository
from storage.environments import EnvironmentStateRepository
from storage.migrate import upgrade
from storage.outbox import Outbox

if TYPE_CHECKING:
    from bot.context import Request

log = logging.getLogger(__name__)


@dataclass
class Services:
    """Everything a listener, the worker and the CLI use, built once."""

    settings: Settings
    policy: Policy
    clock: Clock
    database: Database
    audit: GroupCommitAuditLog
    outbox: Outbox
    environments: EnvironmentStateRepository
    deployments: DeploymentRepository
    windows: WindowPolicy
    slack: WebClient
    bot_token: str
    worker: Worker | None = None
    closers: list[object] = field(default_factory=list)

    def start_worker(self) -> None:
        """Start the background worker (outbox delivery, queued runs)."""
        if self.worker is None:
            self.worker = Worker(self.worker_tasks())
        self.worker.start()

    def stop_worker(self) -> None:
        if self.worker is not None:
            self.worker.stop()

    def worker_tasks(self) -> list[WorkerTask]:
        """The worker's tasks, in the order they run each pass."""
        return []

    def worker_health(self) -> str:
        return "stopped" if self.worker is None else self.worker.health()

    def reply_ephemeral(self, request: Request, text: str) -> None:
        """Answer a button press privately through its response_url."""
        if not request.response_url:
            return
        response = WebhookClient(request.response_url, timeout=5).send(
            text=text, response_type="ephemeral", replace_original=False)
        if response.status_code != 200:
            log.warning("response_url answered %s", response.status_code)

    def close(self) -> None:
        self.database.dispose()


def build_services(settings: Settings, *, policy: Policy, clock: Clock | None = None,
                   bot_token: str | None = None, migrate: bool = True,
                   database: Database | None = None) -> Services:
    """Build storage, policy and the Slack client; upgrade the schema first when asked."""
    from bot.app import make_web_client

    clock = clock or SystemClock()
    settings.qlp_home.mkdir(parents=True, exist_ok=True)
    database = database or Database(settings.database_url)
    if migrate:
        upgrade(database)
    token = bot_token or settings.slack_bot_token or "xoxb-local"
    return Services(
        settings=settings,
        policy=policy,
        clock=clock,
        database=database,
        audit=GroupCommitAuditLog(AuditLog(database, clock), database, clock),
        outbox=Outbox(database, clock),
        environments=EnvironmentStateRepository(database, clock),
        deployments=DeploymentRepository(database, clock),
        windows=WindowPolicy(policy.windows, policy.zone),
        slack=make_web_client(token, settings.api_url),
        bot_token=token,
    )
