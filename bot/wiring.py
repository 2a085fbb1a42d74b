"""The composition root: everything is built here, once, from one Settings object."""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING

from slack_sdk import WebClient

from bot.audiences import AudienceReporter
from bot.chart_reporter import ChartReporter
from bot.clicks import ClickTask
from bot.doctor import DoctorTask
from bot.flows import DeploymentFlows, Gate, RequestWriter
from bot.home_publisher import HomePublisher
from bot.instance_marker import InstanceMarker
from bot.listeners import BUTTONS
from bot.membership import SlackGroups
from bot.metrics import Metrics
from bot.notification_sender import NotificationSender
from bot.orphaned_claims import OrphanedClaimsTask
from bot.outbox_sender import SlackOutboxSender
from bot.paging import PagingReporter
from bot.platforms import PlatformRegistry
from bot.preflight import PreflightTask, final_checks
from bot.runner import RecoveryTask, RunQueueTask
from bot.runs import CardReporter, RunViews
from bot.schedule.registry import build_due_works
from bot.schedule.scheduler import LeasedScheduler
from bot.settings import Settings
from bot.slack_client import make_web_client
from bot.slack_reporter import SlackReporter
from bot.undelivered import DeliveryPager
from bot.worker import Worker, WorkerTask
from procedures.checks.http import HttpChecker
from procedures.clock import Clock, SystemClock
from procedures.engine import Engine
from procedures.model import ProcedureKind
from procedures.notifiers.routes import notifiers_for
from procedures.playbook import Playbook
from procedures.playbooks.emergency import emergency_playbook
from procedures.playbooks.hotfix import hotfix_playbook
from procedures.playbooks.migration import migration_playbook
from procedures.playbooks.rollback import rollback_playbook
from procedures.playbooks.standard import standard_playbook
from procedures.policy import Policy
from procedures.windows import WindowPolicy
from storage.approvals import ApprovalRepository
from storage.audit import AuditLog
from storage.audit_group import GroupCommitAuditLog
from storage.audit_via import ViaAuditLog
from storage.baselines import BaselineRepository
from storage.db import Database
from storage.decisions import DecisionRecorder
from storage.deployments import DeploymentRepository
from storage.environments import EnvironmentStateRepository
from storage.markers import BotMarkers
from storage.migrate import upgrade
from storage.outbox import Outbox
from storage.requests import ProcessedRequests
from storage.status import CachedStatusReader

if TYPE_CHECKING:
    from collections.abc import Callable


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
    approvals: ApprovalRepository
    decisions: DecisionRecorder
    requests: ProcessedRequests
    windows: WindowPolicy
    slack: WebClient
    groups: SlackGroups
    platforms: PlatformRegistry
    playbooks: dict[ProcedureKind, Playbook]
    engine: Engine
    views: RunViews
    reporter: CardReporter
    bot_token: str
    worker_id: str
    sleep: Callable[[float], None]
    worker: Worker | None = None
    tasks: list[WorkerTask] = field(default_factory=list)
    scheduler: LeasedScheduler | None = None
    status_reader: CachedStatusReader | None = None
    metrics: Metrics = field(default_factory=Metrics)  # GET /metrics: this bot's own registry
    flows: DeploymentFlows = field(init=False)

    def __post_init__(self) -> None:
        self.metrics.bind(self)
        gate = Gate(policy=self.policy, windows=self.windows, environments=self.environments,
                    deployments=self.deployments, approvals=self.approvals,
                    groups=self.groups, clock=self.clock)
        self.flows = DeploymentFlows(
            gate=gate,
            requests=RequestWriter(database=self.database, deployments=self.deployments,
                                   audit=self.audit, views=self.views, reporter=self.reporter,
                                   environments=self.environments,
                                   windows_for=gate.windows_for, clock=self.clock,
                                   channel=self.policy.channel, wake_worker=self.wake_worker))
    mode: str | None = None  # serve, socket or shell: the heartbeat row says (storage.markers)

    def start_worker(self) -> None:
        """Start the background worker (outbox delivery, queued runs, recovery)."""
        if self.worker is None:
            self.worker = Worker(self.worker_tasks())
        self.worker.start()

    def stop_worker(self) -> None:
        if self.worker is not None:
            self.worker.stop()
        for task in self.tasks:
            shutdown = getattr(task, "shutdown", None)
            if shutdown is not None:
                shutdown()

    def start_scheduler(self) -> None:
        """Start the leased scheduler: it runs timed work while this process holds the lease."""
        if self.scheduler is not None:
            self.scheduler.start()

    def stop_scheduler(self) -> None:
        """Stop it and release the lease (a standby takes over at once, not after expiry)."""
        if self.scheduler is not None:
            self.scheduler.stop()

    def scheduler_health(self) -> str:
        """``leader``, ``standby`` or ``stopped`` (for ``/healthz``)."""
        return "stopped" if self.scheduler is None else self.scheduler.health()

    def wake_worker(self) -> None:
        if self.worker is not None:
            self.worker.wake()

    def worker_tasks(self) -> list[WorkerTask]:
        """The worker's tasks, in the order they run each pass."""
        if not self.tasks:
            sender = SlackOutboxSender(self.outbox, self.deployments, self.slack, self.clock,
                                       pager=DeliveryPager(self.outbox, self.policy))
            runs = RunQueueTask(self.engine, self.deployments, worker_id=self.worker_id,
                                gate=self.flows.gate.ready_to_start)
            recovery = RecoveryTask(self.engine, runs, stale_after=timedelta(
                seconds=self.settings.qlp_stale_after))
            # Preflights (bot.preflight) before the sender: their card updates go out this pass.
            preflight = PreflightTask(self)
            notifications = NotificationSender(self.outbox, notifiers_for(
                self.policy.notifications, smtp_password=self.settings.smtp_password,
                clock=self.clock), self.clock, audit=self.audit)
            # /qlp doctor's checks (network calls) run here, never on a listener thread; so are
            # button clicks decided (bot.clicks), after their ack.
            # The heartbeat row first: the sender stays the last task (tests deliver with it).
            self.tasks = [self.instance_marker(), recovery, runs, preflight, DoctorTask(self),
                          ClickTask(self, handlers=BUTTONS), notifications,
                          self.orphaned_claims(), sender]
            # The App Home (bot.home_publisher): queues and sends its republishes; just before
            # the sender, which stays last.
            self.tasks.insert(len(self.tasks) - 1, HomePublisher(self, self.slack))
        return self.tasks

    def instance_marker(self) -> InstanceMarker:
        """This process's heartbeat row (the shell refuses a database a served bot uses)."""
        mode = self.mode or ("socket" if self.settings.slack_app_token else "serve")
        # Beats on a thread of its own, a few times per QLP_STALE_AFTER: other replicas hand
        # on the outbox claims of a process that stops beating (bot.orphaned_claims).
        return InstanceMarker(BotMarkers(self.database, self.clock), id=self.worker_id,
                              mode=mode, thread=True,
                              every=timedelta(seconds=self.settings.qlp_stale_after / 3))

    def orphaned_claims(self) -> OrphanedClaimsTask:
        """Hands on the outbox claims of replicas that stopped beating, before their lease."""
        return OrphanedClaimsTask(self.outbox, BotMarkers(self.database, self.clock),
                                  own_id=self.worker_id,
                                  dead_after=timedelta(seconds=self.settings.qlp_stale_after))

    def worker_health(self) -> str:
        return "stopped" if self.worker is None else self.worker.health()

    def close(self) -> None:
        self.stop_scheduler()  # first: no tick runs while the worker and the database close
        self.stop_worker()
        self.platforms.close()
        self.audit.close()
        self.database.dispose()


def _interruptible_sleep() -> Callable[[float], None]:
    """A sleep on an Event nobody sets: like time.sleep, but not held up by signals."""
    event = threading.Event()

    def sleep(seconds: float) -> None:
        event.wait(seconds)

    return sleep


def _worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


def build_services(settings: Settings, *, policy: Policy, clock: Clock | None = None,
                   bot_token: str | None = None, migrate: bool = True,
                   database: Database | None = None,
                   sleep: Callable[[float], None] | None = None,
                   outbox: Outbox | None = None, audit_via: str | None = None) -> Services:
    """Build storage, policy, Slack client, platforms and the engine.

    ``outbox``: another outbox than the database's whole one (the shell on a shared database
    delivers only its own messages); ``audit_via``: every row of the bot's audit log says so
    in ``detail["via"]`` (the shell's ``"shell"``).
    """
    clock = clock or SystemClock()
    if sleep is None:
        sleep = _interruptible_sleep()
    settings.qlp_home.mkdir(parents=True, exist_ok=True)
    database = database or Database(settings.database_url)
    if migrate:
        upgrade(database)
    token = bot_token or settings.slack_bot_token or "xoxb-local"
    slack = make_web_client(token, settings.api_url)
    outbox = outbox if outbox is not None else Outbox(database, clock)
    environments = EnvironmentStateRepository(database, clock)
    deployments = DeploymentRepository(database, clock)
    approvals = ApprovalRepository(database, clock)
    audit = GroupCommitAuditLog(AuditLog(database, clock), database, clock) if audit_via is None \
        else ViaAuditLog(AuditLog(database, clock), database, clock, via=audit_via)
    platforms = PlatformRegistry(
        policy, settings.qlp_home / "platform", clock,
        extra_env={"QLP_SAMPLE_HEALTHY_FOR": str(settings.qlp_sample_healthy_for)})
    http = HttpChecker()
    playbooks = {
        ProcedureKind.STANDARD: standard_playbook(
            http=http, monitoring=policy.monitoring,
            checks=final_checks(settings)),
        ProcedureKind.HOTFIX: hotfix_playbook(http=http, monitoring=policy.monitoring),
        ProcedureKind.EMERGENCY: emergency_playbook(http=http, monitoring=policy.monitoring),
        ProcedureKind.ROLLBACK: rollback_playbook(http=http, monitoring=policy.monitoring),
        ProcedureKind.MIGRATION: migration_playbook(backups_dir=settings.qlp_home / "backups"),
    }
    reporter = CardReporter(SlackReporter(outbox, channel=policy.channel, zone=policy.zone,
                                          clock=clock))
    worker_id = _worker_id()
    if outbox.claimant is None:
        outbox.claimant = worker_id  # claims name this process (bot.orphaned_claims)
    baselines = BaselineRepository(database, clock)
    engine = Engine(
        deployments=deployments, environments=environments, audit=audit,
        # pages on rollbacks and resolves; tells the audiences of starts and ends
        reporter=ChartReporter(AudienceReporter(PagingReporter(reporter, outbox, policy),
                                                outbox, policy, environments),
                               outbox, deployments, baselines, policy),  # monitoring charts
        playbooks=playbooks, policy=policy, platform_for=platforms.platform_for,
        metrics_for=platforms.metrics_for, baselines=baselines,
        clock=clock, sleep=sleep, worker_id=worker_id,
        # Beat well inside the takeover threshold, whatever QLP_STALE_AFTER is.
        heartbeat_every=timedelta(seconds=min(5.0, settings.qlp_stale_after / 4)))
    views = RunViews(engine, approvals, deployments, policy)
    reporter.views = views
    services = Services(
        settings=settings, policy=policy, clock=clock, database=database, audit=audit,
        outbox=outbox, environments=environments, deployments=deployments,
        approvals=approvals, decisions=DecisionRecorder(database, clock),
        requests=ProcessedRequests(database, clock), windows=WindowPolicy(policy.windows,
                                                                          policy.zone),
        slack=slack, groups=SlackGroups(slack), platforms=platforms, playbooks=playbooks,
        engine=engine, views=views, reporter=reporter, bot_token=token, worker_id=worker_id,
        sleep=sleep)
    services.status_reader = CachedStatusReader(database)
    # Built now, started by the modes (start_scheduler): the works may use any service above.
    services.scheduler = LeasedScheduler(
        database=database, works=build_due_works(services), clock=clock, holder=worker_id,
        tick=timedelta(seconds=settings.qlp_scheduler_tick),
        lease=timedelta(seconds=settings.qlp_scheduler_lease))
    return services
