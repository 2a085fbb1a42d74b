"""What each part of the bot is given: small Protocols, one per kind of consumer.

The composition root (``bot.wiring.Services``) satisfies every one of them structurally; no
module below the root imports it (``tests/test_architecture.py`` checks that, and that bot/,
procedures/ and storage/ have no import cycle). A listener, a worker task or a piece of timed
work is typed with the protocol that names what it uses, so a reader sees its dependencies in
one place and a test can hand it a smaller object.

Members are read-only properties: a consumer reads a collaborator, it never replaces one.
This module imports no other bot module that uses it (only leaf modules: flows, membership,
platforms, settings, worker), so it opens no cycle.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from slack_sdk import WebClient

    from bot.flows import DeploymentFlows
    from bot.membership import SlackGroups
    from bot.platforms import PlatformRegistry
    from bot.settings import Settings
    from bot.worker import WorkerTask
    from procedures.clock import Clock
    from procedures.engine import Engine
    from procedures.model import ProcedureKind
    from procedures.playbook import Playbook
    from procedures.policy import Policy
    from procedures.reporting import RunSnapshot
    from procedures.windows import WindowPolicy
    from storage.approvals import ApprovalRepository
    from storage.audit_group import GroupCommitAuditLog
    from storage.db import Database
    from storage.decisions import DecisionRecorder
    from storage.deployments import DeploymentRepository
    from storage.environments import EnvironmentStateRepository
    from storage.outbox import Outbox
    from storage.requests import ProcessedRequests
    from storage.status import CachedStatusReader

__all__ = [
    "AnchorServices",
    "AppServices",
    "CardReporting",
    "DoctorServices",
    "HandlerServices",
    "HasWorkerTasks",
    "PreflightServices",
    "ReminderServices",
    "RetentionServices",
    "RunViewer",
    "ScheduleServices",
    "ScheduledDeploymentServices",
    "WindowReminderServices",
]


# -- collaborators ------------------------------------------------------------------------------


class RunViewer(Protocol):
    """The card's view of a run (``bot.runs.RunViews``)."""

    def snapshot(self, deployment_id: int) -> RunSnapshot: ...

    def enrich(self, run: RunSnapshot) -> RunSnapshot: ...


class CardReporting(Protocol):
    """Re-renders a card and posts to its thread (``bot.runs.CardReporter``)."""

    def run_changed(self, run: RunSnapshot) -> None: ...

    def event(self, run: RunSnapshot, text: str, *, broadcast: bool = False,
              dedup_key: str | None = None) -> None: ...


class HasWorkerTasks(Protocol):
    """Finds one of the worker's tasks (the click task, the doctor task)."""

    def worker_tasks(self) -> list[WorkerTask]: ...


# -- listeners ----------------------------------------------------------------------------------


class HandlerServices(HasWorkerTasks, Protocol):
    """What a slash command or a button handler (``bot.context.HandlerContext``) may use,
    and so what ``bot.clicks.ClickTask`` hands the handlers it runs."""

    @property
    def policy(self) -> Policy: ...
    @property
    def clock(self) -> Clock: ...
    @property
    def database(self) -> Database: ...
    @property
    def audit(self) -> GroupCommitAuditLog: ...
    @property
    def outbox(self) -> Outbox: ...
    @property
    def environments(self) -> EnvironmentStateRepository: ...
    @property
    def deployments(self) -> DeploymentRepository: ...
    @property
    def approvals(self) -> ApprovalRepository: ...
    @property
    def decisions(self) -> DecisionRecorder: ...
    @property
    def windows(self) -> WindowPolicy: ...
    @property
    def groups(self) -> SlackGroups: ...
    @property
    def playbooks(self) -> dict[ProcedureKind, Playbook]: ...
    @property
    def engine(self) -> Engine: ...
    @property
    def views(self) -> RunViewer: ...
    @property
    def reporter(self) -> CardReporting: ...
    @property
    def flows(self) -> DeploymentFlows: ...
    @property
    def status_reader(self) -> CachedStatusReader | None: ...
    @property
    def platforms(self) -> PlatformRegistry: ...  # the deploy dialog's version list
    @property
    def requests(self) -> ProcessedRequests: ...  # the deploy dialog's answered views

    def wake_worker(self) -> None: ...


class AppServices(HandlerServices, Protocol):
    """What ``bot.app.create_app`` needs beyond the handlers' services: the bot token and the
    worker's Web API client (whose address and retries the listeners' client copies)."""

    @property
    def bot_token(self) -> str: ...
    @property
    def slack(self) -> WebClient: ...


# -- worker tasks -------------------------------------------------------------------------------


class PreflightServices(Protocol):
    """What ``bot.preflight`` (the task and ``run_preflight``) uses."""

    @property
    def settings(self) -> Settings: ...
    @property
    def policy(self) -> Policy: ...
    @property
    def clock(self) -> Clock: ...
    @property
    def deployments(self) -> DeploymentRepository: ...
    @property
    def environments(self) -> EnvironmentStateRepository: ...
    @property
    def platforms(self) -> PlatformRegistry: ...
    @property
    def views(self) -> RunViewer: ...
    @property
    def reporter(self) -> CardReporting: ...
    @property
    def worker_id(self) -> str: ...


class DoctorServices(Protocol):
    """What ``/qlp doctor``'s task (``bot.doctor.DoctorTask``) uses: the running bot's database,
    Slack client and platforms, and the outbox its answer goes through."""

    @property
    def settings(self) -> Settings: ...
    @property
    def policy(self) -> Policy: ...
    @property
    def clock(self) -> Clock: ...
    @property
    def database(self) -> Database: ...
    @property
    def outbox(self) -> Outbox: ...
    @property
    def slack(self) -> WebClient: ...
    @property
    def platforms(self) -> PlatformRegistry: ...

    def wake_worker(self) -> None: ...


# -- timed work (bot.schedule) ------------------------------------------------------------------


class ReminderServices(Protocol):
    """``bot.schedule.review_reminders``."""

    @property
    def policy(self) -> Policy: ...
    @property
    def deployments(self) -> DeploymentRepository: ...
    @property
    def outbox(self) -> Outbox: ...


class WindowReminderServices(ReminderServices, Protocol):
    """``bot.schedule.window_reminders``."""

    @property
    def environments(self) -> EnvironmentStateRepository: ...
    @property
    def windows(self) -> WindowPolicy: ...


class AnchorServices(Protocol):
    """``bot.schedule.audit_anchor``."""

    @property
    def settings(self) -> Settings: ...
    @property
    def clock(self) -> Clock: ...
    @property
    def database(self) -> Database: ...
    @property
    def outbox(self) -> Outbox: ...


class RetentionServices(Protocol):
    """``bot.schedule.retention``."""

    @property
    def policy(self) -> Policy: ...
    @property
    def database(self) -> Database: ...


class ScheduledDeploymentServices(PreflightServices, Protocol):
    """``bot.schedule.scheduled_deployments``: the flows, the T-2h preflight, the outbox."""

    @property
    def audit(self) -> GroupCommitAuditLog: ...
    @property
    def outbox(self) -> Outbox: ...
    @property
    def windows(self) -> WindowPolicy: ...
    @property
    def flows(self) -> DeploymentFlows: ...

    def wake_worker(self) -> None: ...


class ScheduleServices(ScheduledDeploymentServices, WindowReminderServices, AnchorServices,
                       RetentionServices, Protocol):
    """Every kind of timed work together (``bot.schedule.registry.build_due_works``)."""
