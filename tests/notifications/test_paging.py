"""Paging from run outcomes: the PagingReporter between the engine and the card reporter.

Snapshots as the engine reports them go in; the outbox rows (and, end to end, the events the
PagerDuty double receives) come out. One alert per deployment (dedup key
``qlp-deployment-<id>``), triggered on an automatic rollback or a run that needs attention,
resolved when the deployment is healthy again; a repeated report never pages twice.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from bot.paging import PagingReporter, incident_key
from procedures.engine import CANCELLED_BY
from procedures.model import DeploymentState as S
from procedures.model import ProcedureKind, StepState
from procedures.reporting import RunSnapshot, StepSnapshot
from storage.models import Notification
from tests.fakes.pagerduty_double import PagerDutyDouble
from tests.fakes.smtp_double import SmtpDouble
from tests.notifications.conftest import START, Rig, routes_policy


class RecordingReporter:
    """The inner reporter: records what it is given, as the card reporter would render it."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int, Any]] = []

    def run_changed(self, run: RunSnapshot) -> None:
        self.calls.append(("run_changed", run.deployment_id, run.state))

    def event(self, run: RunSnapshot, text: str, *, broadcast: bool = False,
              dedup_key: str | None = None) -> None:
        self.calls.append(("event", run.deployment_id, (text, broadcast, dedup_key)))


def _run(deployment_id: int, state: S, *, kind: ProcedureKind = ProcedureKind.STANDARD,
         error: str | None = None, steps: tuple[StepState, ...] = ()) -> RunSnapshot:
    return RunSnapshot(
        deployment_id=deployment_id, kind=kind, version="v1.2.3", environment="production",
        requester="U0DEV", state=state, created_at=START, error=error,
        steps=tuple(StepSnapshot(f"step{i}", f"Step {i}", s) for i, s in enumerate(steps)))


FAILED_AFTER_SWITCH = (StepState.SUCCEEDED, StepState.SUCCEEDED, StepState.FAILED)
UNDONE = (StepState.UNDONE, StepState.UNDONE, StepState.FAILED)
MONITORING = "Monitoring failed: error rate 12% over 5%"


def _pages(rig: Rig, deployment_id: int) -> list[Notification]:
    return [n for n in rig.outbox.undelivered(1000)
            if n.kind == "pagerduty" and n.deployment_id == deployment_id]


@pytest.fixture
def rig(rig_factory: Any, pagerduty: PagerDutyDouble) -> Rig:
    rig: Rig = rig_factory(routes_policy(pagerduty))
    return rig


def test_an_automatic_rollback_pages_and_its_end_resolves(rig: Rig,
                                                         pagerduty: PagerDutyDouble) -> None:
    inner = RecordingReporter()
    reporter = PagingReporter(inner, rig.outbox, rig.policy)
    deployment = rig.deployment()
    reporter.run_changed(_run(deployment, S.RUNNING, steps=(StepState.SUCCEEDED,)))
    assert _pages(rig, deployment) == []
    rolling = _run(deployment, S.ROLLING_BACK, error=MONITORING, steps=FAILED_AFTER_SWITCH)
    reporter.run_changed(rolling)
    reporter.run_changed(rolling)  # reported again for each undo: still one page
    [page] = _pages(rig, deployment)
    assert page.channel == "oncall" and page.ordering_key == f"pagerduty:oncall:{deployment}"
    event = page.payload
    assert event["event_action"] == "trigger" and "routing_key" not in event
    assert event["dedup_key"] == incident_key(deployment) == f"qlp-deployment-{deployment}"
    assert event["payload"]["summary"] == (
        f"Automatic rollback of #{deployment} (standard v1.2.3 to production): {MONITORING}")
    assert event["payload"]["severity"] == "error"
    assert event["payload"]["custom_details"]["failed_steps"] == ["Step 2"]

    reporter.run_changed(_run(deployment, S.ROLLED_BACK, error=MONITORING, steps=UNDONE))
    trigger, resolve = _pages(rig, deployment)
    assert trigger.id == page.id
    assert resolve.payload == {"event_action": "resolve", "dedup_key": incident_key(deployment)}
    # The inner reporter saw everything first, and events pass through untouched.
    reporter.event(rolling, "Rolling back.", broadcast=True, dedup_key="k")
    assert inner.calls[-1] == ("event", deployment, ("Rolling back.", True, "k"))
    assert [c[2] for c in inner.calls[:-1]] == [S.RUNNING, S.ROLLING_BACK, S.ROLLING_BACK,
                                                S.ROLLED_BACK]

    pagerduty.fail_next(502)
    rig.drain()
    assert [(e["event_action"], e["dedup_key"]) for e in pagerduty.events] == [
        ("trigger", incident_key(deployment)), ("resolve", incident_key(deployment))]


def test_needs_attention_pages_critical_and_stays_open(rig: Rig) -> None:
    reporter = PagingReporter(RecordingReporter(), rig.outbox, rig.policy)
    deployment = rig.deployment()
    reporter.run_changed(_run(deployment, S.ROLLING_BACK, error=MONITORING,
                              steps=FAILED_AFTER_SWITCH))
    error = "undo of Switch traffic failed: front door unreachable"
    reporter.run_changed(_run(deployment, S.NEEDS_ATTENTION, error=error,
                              steps=(StepState.UNDO_FAILED, StepState.SUCCEEDED,
                                     StepState.FAILED)))
    rollback, attention = _pages(rig, deployment)
    assert rollback.dedup_key == f"page:rollback:{deployment}"
    assert attention.dedup_key == f"page:needs-attention:{deployment}"
    assert attention.payload["dedup_key"] == incident_key(deployment)  # the same alert
    assert attention.payload["payload"]["severity"] == "critical"
    assert attention.payload["payload"]["summary"] == (
        f"#{deployment} needs attention (standard v1.2.3 to production): {error}. production "
        "stays locked.")


def test_a_cancel_or_a_failure_that_changed_nothing_pages_nobody(rig: Rig) -> None:
    reporter = PagingReporter(RecordingReporter(), rig.outbox, rig.policy)
    cancelled, early = rig.deployment(), rig.deployment()
    by = f"{CANCELLED_BY}<@U0LEAD1>"
    reporter.run_changed(_run(cancelled, S.ROLLING_BACK, error=by, steps=FAILED_AFTER_SWITCH))
    reporter.run_changed(_run(cancelled, S.ROLLED_BACK, error=by, steps=UNDONE))
    reporter.run_changed(_run(early, S.ROLLING_BACK, error="Pre-checks failed: CI red",
                              steps=(StepState.FAILED,)))
    reporter.run_changed(_run(early, S.FAILED, error="Pre-checks failed: CI red",
                              steps=(StepState.FAILED,)))
    # A standard deployment that succeeded was never paged: nothing to resolve either.
    reporter.run_changed(_run(early, S.SUCCEEDED, steps=(StepState.SUCCEEDED,)))
    assert rig.outbox.undelivered(1000) == []


def test_an_emergency_resolves_on_success_but_not_when_rolled_back(rig: Rig) -> None:
    reporter = PagingReporter(RecordingReporter(), rig.outbox, rig.policy)
    fixed, failed = rig.deployment(ProcedureKind.EMERGENCY), rig.deployment(
        ProcedureKind.EMERGENCY)
    reporter.run_changed(_run(fixed, S.SUCCEEDED, kind=ProcedureKind.EMERGENCY,
                              steps=(StepState.SUCCEEDED,)))
    [resolve] = _pages(rig, fixed)
    assert resolve.payload["event_action"] == "resolve"
    reporter.run_changed(_run(failed, S.ROLLED_BACK, kind=ProcedureKind.EMERGENCY,
                              error=MONITORING, steps=UNDONE))
    # The old version serving is what the emergency was to fix: the alert stays open.
    assert [p.payload["event_action"] for p in _pages(rig, failed)] == ["trigger"]


def test_a_rollback_seen_only_at_its_end_still_triggers_before_it_resolves(rig: Rig) -> None:
    reporter = PagingReporter(RecordingReporter(), rig.outbox, rig.policy)
    deployment = rig.deployment()
    ids = reporter.page(_run(deployment, S.ROLLED_BACK, error=MONITORING, steps=UNDONE))
    assert [rig.row(i).payload["event_action"] for i in ids] == ["trigger", "resolve"]
    assert ids == sorted(ids)
    assert reporter.page(_run(deployment, S.ROLLED_BACK, error=MONITORING,
                              steps=UNDONE)) == ids


def test_paging_trouble_never_stops_the_card(rig: Rig) -> None:
    inner = RecordingReporter()

    class BrokenOutbox:
        def enqueue(self, *args: Any, **kwargs: Any) -> int:
            raise RuntimeError("database away")

    reporter = PagingReporter(inner, BrokenOutbox(), rig.policy)
    reporter.run_changed(_run(1, S.NEEDS_ATTENTION, error="undo failed"))
    assert inner.calls == [("run_changed", 1, S.NEEDS_ATTENTION)]


def test_pages_are_mailed_to_the_incident_recipients(
        rig_factory: Any, pagerduty: PagerDutyDouble, smtp: SmtpDouble) -> None:
    rig = rig_factory(routes_policy(pagerduty, smtp))
    reporter = PagingReporter(RecordingReporter(), rig.outbox, rig.policy)
    deployment = rig.deployment()
    reporter.run_changed(_run(deployment, S.ROLLING_BACK, error=MONITORING,
                              steps=FAILED_AFTER_SWITCH))
    rig.clock.advance(timedelta(minutes=3))
    reporter.run_changed(_run(deployment, S.ROLLED_BACK, error=MONITORING, steps=UNDONE))
    smtp.fail_next(1)
    rig.drain()
    assert [m.subject for m in smtp.messages] == [
        f"[qlp] Automatic rollback of #{deployment} (standard v1.2.3 to production): "
        f"{MONITORING}",
        f"[qlp] Resolved: #{deployment} rolled back: the earlier version serves production "
        "again"]
    assert smtp.messages[0].rcpt_tos == ["oncall@example.com"]
    assert f"error: {MONITORING}" in smtp.messages[0].body
    assert [e["event_action"] for e in pagerduty.events] == ["trigger", "resolve"]


def test_a_failed_manual_rollback_pages_critical_and_stays_open(rig: Rig) -> None:
    reporter = PagingReporter(RecordingReporter(), rig.outbox, rig.policy)
    failed, undone, cancelled = rig.deployment(), rig.deployment(), rig.deployment()
    error = "Deploy v1.2.2 to the idle slot: image not found"
    reporter.run_changed(_run(failed, S.FAILED, kind=ProcedureKind.ROLLBACK, error=error,
                              steps=(StepState.FAILED,)))
    reporter.run_changed(_run(undone, S.ROLLING_BACK, kind=ProcedureKind.ROLLBACK, error=error,
                              steps=FAILED_AFTER_SWITCH))
    reporter.run_changed(_run(undone, S.ROLLED_BACK, kind=ProcedureKind.ROLLBACK, error=error,
                              steps=UNDONE))
    reporter.run_changed(_run(cancelled, S.ROLLED_BACK, kind=ProcedureKind.ROLLBACK,
                              error=f"{CANCELLED_BY}<@U0LEAD1>", steps=UNDONE))
    [first] = _pages(rig, failed)
    assert first.dedup_key == f"page:rollback-failed:{failed}"
    assert first.payload["payload"]["severity"] == "critical"
    assert first.payload["payload"]["summary"].startswith(f"Rollback #{failed} failed")
    pages = _pages(rig, undone)
    assert [p.payload["event_action"] for p in pages] == ["trigger", "trigger"]  # no resolve
    assert pages[-1].dedup_key == f"page:rollback-failed:{undone}"
    assert _pages(rig, cancelled) == []
