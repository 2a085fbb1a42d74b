"""``ScheduledDeployments``: the seed's T-24h / T-2h / T-0 / T+30 phases of a scheduled deployment.

For each standard deployment requested with ``at`` (``bot.commands.schedule_request``):

- **T-24h** (or at once, if it was scheduled less than a day ahead): the seed's notice
  (version, environment, window, planned duration, approval state) to the audiences
  ``engineering`` and ``customer-success``, and ``leadership`` for a major version (its major
  number differs from the live version's, or it is ``X.0.0``), through the policy's routes.
- **T-2h**: the final validation's read-only checks run (``bot.preflight``) and their results
  are posted in the card's thread; a red check warns the requester (DM) and the approvers
  (mentioned in the thread).
- **T-0**: approved (SCHEDULED) -> QUEUED, the worker starts it, unless the window is closed
  at that moment (a freeze declared since) or the plan changed since the approval (the live
  version moved, a lock appeared): then approvals reset and it waits like an unapproved one.
  Unapproved (PENDING_APPROVAL): one reminder to the approvers; it still starts as soon as
  the approval completes inside the window.
- **Window close**: still unapproved -> EXPIRED, with a message in the thread and to the
  requester.
- **T+30 min** (after the run started): the monitoring summary in the thread.

Every message has an outbox ``dedup_key`` naming the deployment and the phase, and every
state change is a conditional transition, so a tick repeated (a restart, a lease taken over)
does each thing once. A phase whose moment passed while no bot ran is still done if it still
makes sense (the T-2h validation before T-0, the T+30 summary within :data:`SUMMARY_GRACE`);
the T-24h notice is not sent after T-0.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from bot.audiences import AUDIENCES, MAJOR_AUDIENCE, is_major
from bot.commands.schedule_request import schedule_of
from bot.flows import Moment
from bot.formatting import escape, local_time
from bot.membership import describe_rule
from bot.plan import describe_change, reset_plan
from bot.schedule.pending_requests import expire_request
from procedures.durations import format_duration
from procedures.model import DeploymentState, ProcedureKind

if TYPE_CHECKING:
    from bot.ports import ScheduledDeploymentServices
    from procedures.store import DeploymentRecord

log = logging.getLogger(__name__)

NOTICE_LEAD = timedelta(hours=24)
VALIDATION_LEAD = timedelta(hours=2)
SUMMARY_AFTER = timedelta(minutes=30)
SUMMARY_GRACE = timedelta(hours=2)
"""A T+30 summary more than this late (the bot was down) is no longer posted."""

_S = DeploymentState
_WAITING = (_S.PENDING_APPROVAL, _S.SCHEDULED)


def dedup(deployment_id: int, phase: str) -> str:
    """The outbox dedup key of one phase's message of one scheduled deployment."""
    return f"scheduled:{deployment_id}:{phase}"


class ScheduledDeployments:
    """The timed phases of scheduled standard deployments (a ``DueWork``)."""

    name = "scheduled-deployments"

    def __init__(self, services: ScheduledDeploymentServices) -> None:
        self._services = services

    def run_due(self, now: datetime) -> int:
        done = 0
        for deployment in self._services.deployments.with_schedule(now - SUMMARY_GRACE):
            done += self._one(deployment, now)
        return done

    def upcoming(self, now: datetime, horizon: timedelta) -> list[datetime]:
        moments: list[datetime] = []
        for deployment in self._services.deployments.with_schedule(now - SUMMARY_GRACE):
            moments.extend(self._moments(deployment))
        return sorted({m for m in moments if now < m <= now + horizon})

    # -- one deployment ---------------------------------------------------------------------

    def _moments(self, deployment: DeploymentRecord) -> list[datetime]:
        at = deployment.scheduled_at
        assert at is not None
        moments = [at - NOTICE_LEAD, at - VALIDATION_LEAD, at, _closes_at(deployment)]
        if deployment.started_at is not None:
            moments.append(deployment.started_at + SUMMARY_AFTER)
        return moments

    def _one(self, deployment: DeploymentRecord, now: datetime) -> int:
        at = deployment.scheduled_at
        assert at is not None and deployment.id is not None
        closes = _closes_at(deployment)
        phases: list[tuple[str, Callable[[], int]]] = []
        if deployment.state in _WAITING:
            if at - NOTICE_LEAD <= now < at:
                phases.append(("notice", lambda: self._notice(deployment)))
            if at - VALIDATION_LEAD <= now < closes:
                phases.append(("validation", lambda: self._validation(deployment)))
            if now >= at:
                phases.append(("start", lambda: self._start_or_wait(deployment, now, closes)))
        if deployment.started_at is not None and \
                deployment.started_at + SUMMARY_AFTER <= now < \
                deployment.started_at + SUMMARY_AFTER + SUMMARY_GRACE:
            phases.append(("summary", lambda: self._summary(deployment, now)))
        done = 0
        for phase, run in phases:
            # Each phase on its own: a validation that cannot run must not hold back T-0.
            try:
                done += run()
            except Exception:
                log.exception("scheduled deployment #%s: phase %s failed (tried again at the "
                              "next tick)", deployment.id, phase)
        return done

    def _notice(self, deployment: DeploymentRecord) -> int:
        from bot.notify import notify_audiences

        services = self._services
        assert deployment.id is not None and deployment.scheduled_at is not None
        key = dedup(deployment.id, "notice")
        if services.outbox.has(key):
            return 0
        state = services.environments.get(deployment.environment)
        live = state.live_version if state else None
        major = is_major(deployment.version, live)
        audiences = [*AUDIENCES, *([MAJOR_AUDIENCE] if major else [])]
        zone = services.policy.zone
        approval = ("approved" if deployment.state is _S.SCHEDULED else
                    "waiting for approval")
        text = "\n".join([
            f":calendar: *Scheduled deployment #{deployment.id}: {deployment.version} to "
            f"{deployment.environment}*" + (" (major version)" if major else ""),
            f"When: {local_time(deployment.scheduled_at, zone)}, in the window that closes "
            f"{local_time(_closes_at(deployment), zone)}",
            f"Planned duration: about {format_duration(self._planned_duration())} "
            f"(monitoring included)",
            f"Live now: {live or 'nothing yet'}; requested by <@{deployment.requester}>; "
            f"{approval}",
        ])
        subject = (f"Scheduled deployment of {deployment.version} to {deployment.environment}"
                   f" at {local_time(deployment.scheduled_at, zone)}")
        notify_audiences(services.outbox, services.policy, audiences, text, subject=subject,
                         dedup_key=key, deployment_id=deployment.id)
        # The marker: the thread says who was told (and makes ``has(key)`` true).
        run = services.views.snapshot(deployment.id)
        services.reporter.event(run, f"T-24h notice sent to {', '.join(audiences)}.",
                                dedup_key=key)
        services.audit.append("bot", "schedule.notice", deployment_id=deployment.id,
                              environment=deployment.environment,
                              detail={"audiences": audiences, "major": major})
        return 1

    def _planned_duration(self) -> timedelta:
        """The seed's planned duration: monitoring plus the steps around it (about 15 min)."""
        return self._services.policy.monitoring.duration + timedelta(minutes=15)

    def _validation(self, deployment: DeploymentRecord) -> int:
        from bot.preflight import run_preflight

        services = self._services
        assert deployment.id is not None
        key = dedup(deployment.id, "validation")
        if services.outbox.has(key):
            return 0
        result = run_preflight(services, deployment.id, force=True)
        red = [f for f in result.findings if f.verdict in ("failed", "inconclusive")]
        lines = [f"{_ICON.get(f.verdict, ':grey_question:')} *{escape(f.title)}*: "
                 f"{escape(f.evidence)}"
                 for f in result.findings] or ["No checks are configured for this "
                                               "environment."]
        rule = services.policy.approval_rule(ProcedureKind.STANDARD,
                                             deployment.environment)
        head = ("T-2h final validation: *all checks passed*." if not red else
                f":warning: T-2h final validation: {len(red)} check"
                f"{'s' if len(red) > 1 else ''} not green. <@{deployment.requester}>, "
                f"approvers ({_mentions(rule)}): the run checks again at start and will not "
                "start on a red check.")
        run = services.views.snapshot(deployment.id)
        services.reporter.event(run, "\n".join([head, *lines]), broadcast=bool(red),
                                dedup_key=key)
        if red:
            services.outbox.enqueue(
                deployment.requester, "post",
                {"text": f":warning: Your scheduled deployment #{deployment.id} "
                         f"({deployment.version} to {deployment.environment}): "
                         f"{len(red)} check(s) not green at T-2h. See the card's thread."},
                dedup_key=dedup(deployment.id, "validation-dm"))
        services.audit.append("bot", "schedule.validated", deployment_id=deployment.id,
                              environment=deployment.environment,
                              detail={"red": [f.name for f in red],
                                      "checks": [f.name for f in result.findings]})
        return 1

    def _start_or_wait(self, deployment: DeploymentRecord, now: datetime,
                       closes: datetime) -> int:
        services = self._services
        assert deployment.id is not None
        # Read again: an earlier phase of this tick (the validation) may have written to it.
        deployment = services.deployments.get(deployment.id) or deployment
        assert deployment.id is not None
        if deployment.state not in _WAITING:
            return 0
        if now >= closes:
            return self._expire(deployment, now, None)
        # The window and the freeze now, by the one gate (an "allowed" time that is not the
        # preferred one still goes, as the policy says).
        window = services.flows.gate.judge(deployment.kind, deployment.requester,
                                           deployment.environment, Moment.SCHEDULE, at=now,
                                           deployment_id=deployment.id)
        if not window.allowed:
            return self._expire(deployment, now, window.reason)
        if deployment.state is _S.SCHEDULED:
            if self._plan_changed(deployment):
                return 1  # approvals reset: it waits for a new approval like any request
            # The one gate, at its run start: a person's lock or a run under way now holds it
            # (until the window closes); the run queue asks the gate again when it claims it.
            gate = services.flows.gate.ready_to_start(deployment)
            if not gate.allowed:
                return self._held(deployment, gate.reason, gate.what_would_allow, closes)
            if not services.deployments.transition(
                    deployment.id, [_S.SCHEDULED], _S.QUEUED,
                    expected_revision=deployment.revision):
                return 0
            services.audit.append("bot", "schedule.started", deployment_id=deployment.id,
                                  environment=deployment.environment, detail={})
            run = services.views.snapshot(deployment.id)
            services.reporter.run_changed(run)
            services.reporter.event(run, "Starting as scheduled.",
                                    dedup_key=dedup(deployment.id, "start"))
            services.wake_worker()
            return 1
        key = dedup(deployment.id, "unapproved")
        if services.outbox.has(key):
            return 0
        rule = services.policy.approval_rule(ProcedureKind.STANDARD,
                                             deployment.environment)
        zone = services.policy.zone
        run = services.views.snapshot(deployment.id)
        services.reporter.event(
            run, f":alarm_clock: It is time for #{deployment.id}, but it is not approved. "
                 f"Approvers ({_mentions(rule)}): approve on the card and it starts at once; "
                 f"unapproved at {local_time(closes, zone)} it expires.", dedup_key=key)
        return 1

    def _held(self, deployment: DeploymentRecord, reason: str, remedy: str,
              closes: datetime) -> int:
        """Said once per reason in the thread: it is time, but the gate holds it."""
        services = self._services
        assert deployment.id is not None
        key = dedup(deployment.id, f"held:{reason}")
        if services.outbox.has(key):
            return 0
        zone = services.policy.zone
        run = services.views.snapshot(deployment.id)
        services.reporter.event(
            run, f":hourglass: It is time for #{deployment.id}, but it cannot start: "
                 f"{reason}. {remedy} It starts when that clears; at "
                 f"{local_time(closes, zone)} (the window's close) it expires.",
            dedup_key=key)
        return 1

    def _plan_changed(self, deployment: DeploymentRecord) -> bool:
        """At T-0, re-judge the plan: if what was approved changed, approvals reset."""
        services = self._services
        assert deployment.id is not None
        old = dict(deployment.options.get("evidence") or {})
        # Judged now, its moment (the caller checked that the window is open).
        new = services.flows.requests.evidence(deployment.environment)
        if old == new:
            return False
        note = f"Approvals reset at the scheduled time: {describe_change(old, new)}."
        options, digest = reset_plan(deployment.kind, deployment.version,
                                     deployment.environment, deployment.options, new, note)
        if not services.deployments.transition(
                deployment.id, [_S.SCHEDULED], _S.PENDING_APPROVAL,
                expected_revision=deployment.revision, options=options, plan_hash=digest):
            return True  # someone else moved it; the next tick looks again
        services.audit.append("bot", "plan.changed", deployment_id=deployment.id,
                              environment=deployment.environment,
                              detail={"old": old, "new": new, "plan_hash": digest})
        rule = services.policy.approval_rule(ProcedureKind.STANDARD,
                                             deployment.environment)
        run = services.views.snapshot(deployment.id)
        services.reporter.run_changed(run)
        services.reporter.event(run, f":warning: {note} Approvers ({_mentions(rule)}): "
                                     "approve again to start it.", broadcast=True,
                                dedup_key=dedup(deployment.id, f"replan:{digest}"))
        return True

    def _expire(self, deployment: DeploymentRecord, now: datetime, closed: str | None) -> int:
        assert deployment.id is not None
        why = (f"the window is closed ({closed})" if closed else
               "it was not approved before the window closed" if deployment.state is
               _S.PENDING_APPROVAL else "the window closed before it could start")
        del now
        return expire_request(
            self._services, deployment, why,
            f"Schedule it again with `/qlp deploy {escape(deployment.version or '')} at "
            "YYYY-MM-DD HH:MM`.", states=list(_WAITING),
            keys=(dedup(deployment.id, "expired"), dedup(deployment.id, "expired-dm")),
            action="schedule.expired", what="scheduled deployment")

    def _summary(self, deployment: DeploymentRecord, now: datetime) -> int:
        services = self._services
        assert deployment.id is not None
        key = dedup(deployment.id, "summary")
        if services.outbox.has(key):
            return 0
        current = services.deployments.get(deployment.id) or deployment
        monitor = next((step for step in services.deployments.steps(deployment.id)
                        if step.name == "monitor"), None)
        lines = [f"T+30 summary of #{deployment.id} ({deployment.version} to "
                 f"{deployment.environment}): *{current.state.value.replace('_', ' ')}*."]
        if monitor is None:
            lines.append("Monitoring has not started.")
        elif monitor.result:
            r = monitor.result
            lines.append(
                f"Monitoring ({monitor.state.value}): {r.get('samples', '?')} checks, "
                f"{r.get('failed', '?')} failed; response p50 {_ms(r.get('response_ms_p50'))}"
                f", p95 {_ms(r.get('response_ms_p95'))}; {r.get('error_count', 'n/a')} errors "
                f"in {r.get('request_count', 'n/a')} requests.")
        else:
            lines.append(f"Monitoring is {monitor.state.value.replace('_', ' ')}"
                         + (f": {escape(monitor.error)}" if monitor.error else "") + ".")
        if current.error:
            lines.append(f"Error: {escape(current.error)}")
        run = services.views.snapshot(deployment.id)
        services.reporter.event(run, "\n".join(lines), dedup_key=key)
        services.audit.append("bot", "schedule.summary", deployment_id=deployment.id,
                              environment=deployment.environment,
                              detail={"state": current.state.value})
        del now
        return 1


_ICON = {"ok": ":white_check_mark:", "failed": ":x:", "inconclusive": ":grey_question:",
         "skipped": ":white_circle:"}


def _closes_at(deployment: DeploymentRecord) -> datetime:
    assert deployment.scheduled_at is not None
    raw = schedule_of(dict(deployment.options)).get("closes_at")
    try:
        return datetime.fromisoformat(raw) if isinstance(raw, str) else deployment.scheduled_at
    except ValueError:
        return deployment.scheduled_at


def _mentions(rule: Any) -> str:
    people = [f"<@{user}>" for user in rule.users] + \
             [f"<!subteam^{group}>" for group in rule.groups]
    return ", ".join(people) or describe_rule(rule)


def _ms(value: Any) -> str:
    return f"{value:.0f} ms" if isinstance(value, int | float) else "n/a"
