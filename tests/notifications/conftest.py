"""Fixtures for the notification routes: the PagerDuty and SMTP doubles, and a sender rig."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from bot.notification_sender import NOTIFIER_KINDS, NotificationSender
from procedures.clock import FixedClock
from procedures.model import ProcedureKind
from procedures.notifiers.routes import notifiers_for
from procedures.policy import Policy
from storage.audit import AuditLog
from storage.db import Database
from storage.deployments import DeploymentRepository
from storage.models import Notification
from storage.outbox import Outbox
from tests.fakes.pagerduty_double import PagerDutyDouble
from tests.fakes.policies import make_policy
from tests.fakes.smtp_double import SmtpDouble

START = datetime(2026, 12, 1, 11, 0, tzinfo=UTC)


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(START)


@pytest.fixture
def pagerduty() -> Iterator[PagerDutyDouble]:
    double = PagerDutyDouble().start()
    yield double
    double.stop()


@pytest.fixture
def smtp() -> Iterator[SmtpDouble]:
    double = SmtpDouble().start()
    yield double
    double.stop()


def routes_policy(pagerduty: PagerDutyDouble | None = None, smtp: SmtpDouble | None = None,
                  **email: Any) -> Policy:
    """The test policy with PagerDuty and e-mail routed to the doubles (where given)."""
    notifications: dict[str, Any] = {
        "audiences": {"engineering": "C0ENGINEER", "leadership": "C0LEADERS"}}
    if pagerduty is not None:
        notifications["pagerduty"] = {"routing_key": pagerduty.routing_key,
                                      "events_url": pagerduty.url}
    if smtp is not None:
        notifications["email"] = {"host": smtp.host, "port": smtp.port,
                                  "from": "qlp-bot@example.com", "starttls": False,
                                  "to": ["oncall@example.com"],
                                  "audiences": {"leadership": ["cto@example.com"],
                                                "customer-success": ["cs@example.com"]},
                                  **email}
    return make_policy(notifications=notifications)


class Rig:
    """A NotificationSender over a real outbox, driven pass by pass on a fixed clock."""

    def __init__(self, database: Database, clock: FixedClock, policy: Policy,
                 **options: Any) -> None:
        self.clock = clock
        self.policy = policy
        self.outbox = Outbox(database, clock)
        self.deployments = DeploymentRepository(database, clock)
        self.audit = AuditLog(database, clock)
        self.sender = NotificationSender(
            self.outbox, notifiers_for(policy.notifications, smtp_password=None, clock=clock,
                                       timeout=2.0),
            clock, audit=self.audit, **options)

    def deployment(self, kind: ProcedureKind = ProcedureKind.STANDARD) -> int:
        created = self.deployments.create(kind, "v1.2.3", "production", "U0DEV")
        assert created.id is not None
        return created.id

    def run(self) -> int:
        """Passes until one does nothing; how many did something."""
        passes = 0
        while self.sender.run_once():
            passes += 1
        return passes

    def drain(self, limit: int = 50) -> None:
        """Run, then move the clock to the next retry, until no page or e-mail is pending."""
        for _ in range(limit):
            self.run()
            pending = [n for n in self.outbox.undelivered(1000)
                       if n.state == "pending" and n.kind in NOTIFIER_KINDS]
            if not pending:
                return
            due = min(n.next_attempt_at for n in pending)
            if due > self.clock.now():
                self.clock.advance(due - self.clock.now())
            else:
                self.clock.advance(timedelta(seconds=1))
        raise AssertionError(f"still pending: {self.outbox.undelivered()}")

    def row(self, id: int) -> Notification:
        found = self.outbox.get(id)
        assert found is not None
        return found

    def close(self) -> None:
        self.sender.shutdown()


@pytest.fixture
def rig_factory(database: Database, clock: FixedClock) -> Iterator[Any]:
    made: list[Rig] = []

    def make(policy: Policy, **options: Any) -> Rig:
        rig = Rig(database, clock, policy, **options)
        made.append(rig)
        return rig

    yield make
    for rig in made:
        rig.close()
