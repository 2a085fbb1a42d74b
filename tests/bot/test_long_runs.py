"""The seed's alert for extended deployments: a run longer than 60 minutes is broadcast and
paged, once, however many ticks see it."""

from __future__ import annotations

from datetime import timedelta

from bot.schedule.long_runs import LongRuns
from procedures.clock import FixedClock
from procedures.model import DeploymentState as S
from procedures.model import ProcedureKind
from tests.fakes.bot_harness import BotHarness


def test_a_run_longer_than_an_hour_is_broadcast_and_paged_once(
        bot: BotHarness, clock: FixedClock) -> None:
    deployments = bot.services.deployments
    record = deployments.create(ProcedureKind.STANDARD, "v1.2.3", "production", "U0DEV",
                                state=S.QUEUED)
    assert deployments.transition(record.id, [S.QUEUED], S.RUNNING, worker_id="w1",
                                  current_step="monitor")
    work = LongRuns.from_services(bot.services)
    clock.advance(timedelta(minutes=59))
    assert work.run_due(clock.now()) == 0
    assert work.upcoming(clock.now(), timedelta(hours=1)) == [
        clock.now() + timedelta(minutes=1)]
    clock.advance(timedelta(minutes=2))
    assert work.run_due(clock.now()) == 1
    assert work.run_due(clock.now()) == 0  # once
    outbox = bot.services.outbox.undelivered(100)
    [alert] = [n for n in outbox if n.kind == "post" and n.thread_of == record.id
               and "has been running for 1h 1m" in str(n.payload.get("text"))]
    assert "on step monitor" in alert.payload["text"]
    [page] = [n for n in outbox if n.kind == "pagerduty"]
    assert page.payload["payload"]["class"] == "deployment/long-run"


def test_a_finished_run_raises_no_alert(bot: BotHarness, clock: FixedClock) -> None:
    deployments = bot.services.deployments
    record = deployments.create(ProcedureKind.STANDARD, "v1.2.3", "production", "U0DEV",
                                state=S.QUEUED)
    assert deployments.transition(record.id, [S.QUEUED], S.RUNNING)
    assert deployments.transition(record.id, [S.RUNNING], S.SUCCEEDED)
    clock.advance(timedelta(hours=2))
    assert LongRuns.from_services(bot.services).run_due(clock.now()) == 0


def test_an_emergency_past_its_30_minute_critical_window_is_alerted(
        bot: BotHarness, clock: FixedClock) -> None:
    deployments = bot.services.deployments
    record = deployments.create(ProcedureKind.EMERGENCY, "v1.2.5", "production", "U0DEV",
                                state=S.QUEUED, options={"category": "outage"})
    assert deployments.transition(record.id, [S.QUEUED], S.RUNNING, worker_id="w1",
                                  current_step="wait_healthy")
    work = LongRuns.from_services(bot.services)
    assert work.upcoming(clock.now(), timedelta(hours=1)) == [
        clock.now() + timedelta(minutes=30)]
    clock.advance(timedelta(minutes=29))
    assert work.run_due(clock.now()) == 0
    clock.advance(timedelta(minutes=2))
    assert work.run_due(clock.now()) == 1
    [alert] = [n for n in bot.services.outbox.undelivered(100)
               if n.kind == "post" and n.thread_of == record.id
               and "has been running for 31m" in str(n.payload.get("text"))]
    assert "longer than the 30m an emergency deployment should take" in alert.payload["text"]
