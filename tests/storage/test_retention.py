"""Retention: old processed requests, sent outbox rows and step results go in batches; newer
rows, pending and dead outbox rows, waiting clicks and the audit log stay; the scheduled job
runs only in the process holding the scheduler lease."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import yaml
from sqlalchemy import func, select

from bot.schedule.retention import RetentionWork
from bot.schedule.scheduler import LEASE_NAME, LeasedScheduler
from procedures.clock import FixedClock
from procedures.errors import ConfigError
from procedures.model import DeploymentState as S
from procedures.model import ProcedureKind as K
from procedures.model import StepState
from procedures.policy import Policy, parse_policy
from storage.audit import AuditLog
from storage.db import Database
from storage.deployments import DeploymentRepository
from storage.leases import LeaseRepository
from storage.models import AuditEvent, Notification, ProcessedRequest, StepRun
from storage.outbox import Outbox
from storage.requests import ClickQueue, ProcessedRequests
from storage.retention import Periods, Retention

DAY = timedelta(days=1)
START = datetime(2026, 12, 1, 11, 0, tzinfo=UTC)
PERIODS = Periods(processed_requests=30 * DAY, sent_notifications=90 * DAY,
                  step_results=365 * DAY)


def _count(database: Database, model: type, *where: object) -> int:
    with database.session(read_only=True) as s:
        return int(s.exec(select(func.count()).select_from(model).where(*where)).one()[0])


def _policy(retention: object | None = None) -> Policy:
    with open("qlp.example.yml", encoding="utf-8") as f:
        data = yaml.safe_load(f)
    if retention is not None:
        data["retention"] = retention
    return parse_policy(data)


def _populate(database: Database, clock: FixedClock) -> dict[str, int]:
    """Rows at 400 days old, then at 100, 40, 10 and 0 days old, of every kind."""
    requests = ProcessedRequests(database, clock)
    clicks = ClickQueue(database, clock)
    outbox = Outbox(database, clock)
    deployments = DeploymentRepository(database, clock)
    audit = AuditLog(database, clock)
    start = clock.now()
    ids: dict[str, int] = {}
    for age in (400, 100, 40, 10, 0):
        clock.set(start - age * DAY)
        for n in range(3):
            assert requests.first_time(f"req-{age}-{n}")
        assert clicks.queue(f"click-{age}", {"action": "approve"})
        sent = outbox.enqueue("C0DEPLOY", "post", {"text": f"sent {age}"})
        assert outbox.mark_sent(sent, "1.1")
        outbox.enqueue("C0DEPLOY", "post", {"text": f"pending {age}"},
                       ordering_key=f"pending-{age}")
        dead = outbox.enqueue("C0DEPLOY", "post", {"text": f"dead {age}"},
                              ordering_key=f"dead-{age}")
        assert outbox.mark_dead(dead, "channel_not_found")
        done = deployments.create(K.STANDARD, "v1.0.0", "production", "U0DEV")
        assert done.id is not None
        for position, name in enumerate(("deploy", "switch")):
            deployments.upsert_step(done.id, name, position, StepState.SUCCEEDED)
        assert deployments.transition(done.id, [S.PENDING_APPROVAL], S.QUEUED)
        assert deployments.transition(done.id, [S.QUEUED], S.RUNNING, worker_id="w")
        assert deployments.transition(done.id, [S.RUNNING], S.SUCCEEDED)
        ids[f"done-{age}"] = done.id
        audit.append("U0DEV", "deployment.requested", deployment_id=done.id,
                     environment="production")
    # A run that started 400 days ago and is somehow still running keeps its steps.
    clock.set(start - 400 * DAY)
    running = deployments.create(K.STANDARD, "v0.1.0", "staging", "U0DEV")
    assert running.id is not None
    deployments.upsert_step(running.id, "deploy", 0, StepState.RUNNING)
    assert deployments.transition(running.id, [S.PENDING_APPROVAL], S.QUEUED)
    assert deployments.transition(running.id, [S.QUEUED], S.RUNNING, worker_id="w")
    ids["running"] = running.id
    clock.set(start)
    return ids


def test_old_rows_go_newer_and_unfinished_ones_stay(database: Database) -> None:
    clock = FixedClock(START)
    ids = _populate(database, clock)
    audit_before = _count(database, AuditEvent)
    retention = Retention(database, batch=2, step_batch=1)
    purged = retention.purge(PERIODS, clock.now())
    # Requests: 3 of each of 400, 100, 40 days (older than 30); the waiting clicks stay.
    assert purged.processed_requests == 9
    assert _count(database, ProcessedRequest) == 3 * 2 + 5
    assert _count(database, ProcessedRequest,
                  ProcessedRequest.key.startswith("click-")) == 5  # type: ignore[attr-defined]
    # Sent outbox rows older than 90 days: 400 and 100; pending and dead rows all stay.
    assert purged.sent_notifications == 2
    assert _count(database, Notification, Notification.state == "sent") == 3
    assert _count(database, Notification, Notification.state == "pending") == 5
    assert _count(database, Notification, Notification.state == "dead") == 5
    # Steps of deployments that ended more than 365 days ago: the 400-day one; the running
    # one keeps its step, and every deployment row stays.
    assert purged.step_results == 2 and not purged.more
    assert _count(database, StepRun, StepRun.deployment_id == ids["done-400"]) == 0
    assert _count(database, StepRun, StepRun.deployment_id == ids["done-100"]) == 2
    assert _count(database, StepRun, StepRun.deployment_id == ids["running"]) == 1
    # The audit log is never purged.
    assert _count(database, AuditEvent) == audit_before
    assert AuditLog(database, clock).verify().ok
    # Nothing left: a second run deletes nothing.
    assert retention.purge(PERIODS, clock.now()).total == 0


def test_a_run_stops_after_its_batches_and_the_next_carries_on(database: Database) -> None:
    clock = FixedClock(START)
    _populate(database, clock)
    pauses: list[int] = []
    retention = Retention(database, batch=2, step_batch=1, max_batches=2,
                          pause=lambda: pauses.append(1))
    first = retention.purge(PERIODS, clock.now())
    assert first.processed_requests == 4 and first.more and pauses
    second = retention.purge(PERIODS, clock.now())
    third = retention.purge(PERIODS, clock.now())
    assert first.processed_requests + second.processed_requests + \
        third.processed_requests == 9
    assert not third.more


def test_forever_keeps_everything(database: Database) -> None:
    clock = FixedClock(START)
    _populate(database, clock)
    never = Periods(processed_requests=None, sent_notifications=None, step_results=None)
    assert Retention(database).purge(never, clock.now()).total == 0


def test_the_policy_keys_and_their_errors() -> None:
    assert _policy().retention.processed_requests == 30 * DAY
    with open("qlp.example.yml", encoding="utf-8") as f:
        data = yaml.safe_load(f)
    default = parse_policy({k: v for k, v in data.items() if k != "retention"})
    assert (default.retention.processed_requests, default.retention.sent_notifications,
            default.retention.step_results) == (30 * DAY, 90 * DAY, 365 * DAY)
    assert _policy({"step_results": "forever"}).retention.step_results is None
    assert _policy({"sent_notifications": "2d"}).retention.sent_notifications == 2 * DAY
    for retention, message in (
        ({"processed_requests": "2h"}, "retention.processed_requests: '2h' is too short"),
        ({"step_results": "soon"}, "retention.step_results: 'soon' is not a duration"),
        ({"sent_notification": "3d"}, "unknown key (did you mean sent_notifications?)"),
        ({"audit_events": "30d"}, "the audit log is never purged"),
    ):
        with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")
                           .replace("?", r"\?")):
            _policy(retention)


def test_the_job_runs_hourly_and_only_on_the_lease_holder(database: Database) -> None:
    clock = FixedClock(START)
    _populate(database, clock)
    policy = _policy()
    work = RetentionWork(database, policy)
    lease = timedelta(seconds=30)
    leases = LeaseRepository(database, clock)
    standby = LeasedScheduler(database=database, works=[work], clock=clock, holder="b",
                              tick=timedelta(minutes=1), lease=lease)
    leader = LeasedScheduler(database=database, works=[work], clock=clock, holder="a",
                             tick=timedelta(minutes=1), lease=lease)
    assert leases.try_acquire(LEASE_NAME, "a", lease)
    assert standby.tick() == 0  # not the holder: nothing purged
    assert _count(database, Notification, Notification.state == "sent") == 5
    assert leader.tick() == 9 + 2 + 2
    assert _count(database, Notification, Notification.state == "sent") == 3
    # Within the hour nothing runs again, even with new old rows; after it, it does.
    ProcessedRequests(database, FixedClock(clock.now() - 60 * DAY)).first_time("late")
    clock.advance(timedelta(minutes=30))
    assert leases.try_acquire(LEASE_NAME, "a", lease)
    assert leader.tick() == 0
    clock.advance(timedelta(minutes=31))
    assert leases.try_acquire(LEASE_NAME, "a", lease)
    assert leader.tick() == 1
