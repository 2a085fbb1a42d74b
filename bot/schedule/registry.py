"""Which ``DueWork`` a bot process's scheduler ticks, built from its services."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bot.ports import ScheduleServices
    from bot.schedule.work import DueWork


def build_due_works(services: ScheduleServices) -> list[DueWork]:
    """Every kind of timed work, in the order a tick runs them."""
    from bot.schedule.scheduled_deployments import ScheduledDeployments

    works: list[DueWork] = [ScheduledDeployments(services)]
    from bot.schedule.pending_requests import PendingRequests

    works.append(PendingRequests(services))
    from bot.schedule.review_reminders import ReviewReminders
    from bot.schedule.window_reminders import WindowReminders

    works.append(WindowReminders.from_services(services))
    works.append(ReviewReminders.from_services(services))
    from bot.schedule.lock_reminders import LockReminders

    works.append(LockReminders(services.environments, services.outbox, services.policy))
    from bot.schedule.audit_anchor import AuditAnchors

    works.append(AuditAnchors.from_services(services))
    from bot.schedule.retention import RetentionWork

    works.append(RetentionWork.from_services(services))
    from bot.schedule.long_runs import LongRuns

    works.append(LongRuns.from_services(services))
    return works
