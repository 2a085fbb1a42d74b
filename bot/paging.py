"""Paging the on-call route: PagerDuty events (and their e-mail copies) put in the outbox.

One PagerDuty alert per deployment: every event about deployment ``N`` carries the dedup key
``qlp-deployment-N`` (:func:`incident_key`), so PagerDuty folds an emergency request, its
automatic rollback and a failed undo into one alert, and one resolve closes it. Every event of
a deployment has the ordering key ``pagerduty:oncall:N`` (the trigger is delivered before the
resolve) and an outbox dedup key ``page:<reason>:N``, so asking twice never pages twice.

When the bot pages (``bot.notification_sender`` delivers; the routing key is added there):

- an emergency request (``bot.commands.emergency``): trigger, reason ``emergency``;
- an automatic rollback, i.e. a run that failed after changing something and is being undone
  (not a cancel): trigger, reason ``rollback``;
- a run that needs attention (an undo failed; the environment stays locked): trigger,
  reason ``needs-attention``, severity critical;
- a failed rollback (a ``/qlp rollback`` run that FAILED or was undone): trigger, reason
  ``rollback-failed``, severity critical, never resolved by the bot (the version it was to
  replace still serves);
- healthy again: resolve when an emergency deployment SUCCEEDED, or when an automatic rollback
  finished (ROLLED_BACK: the earlier version serves again). A rolled-back *emergency* stays
  open: the old version serving is what the emergency was meant to fix.

With ``notifications.email.to`` in the policy, each trigger and resolve is also e-mailed there
(outbox kind ``email``, ordering key ``email:incidents:N``).

:class:`PagingReporter` watches the engine's reports for these states; it wraps the reporter
the engine already has and forwards everything to it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from procedures.engine import CANCELLED_BY
from procedures.model import DeploymentState, ProcedureKind, StepState
from procedures.notifiers.pagerduty import SUMMARY_LIMIT
from procedures.policy import Policy
from procedures.reporting import Reporter, RunSnapshot
from procedures.store import NotificationQueue

log = logging.getLogger(__name__)

ONCALL_ROUTE = "oncall"
"""The outbox ``channel`` of pages (the policy's one PagerDuty route)."""
INCIDENTS_MAIL = "email:incidents"
"""The outbox ``channel`` of the e-mail copies of pages (``notifications.email.to``)."""
SOURCE = "qlp-chatops"

_CHANGED = frozenset({StepState.SUCCEEDED, StepState.UNDOING, StepState.UNDONE,
                      StepState.UNDO_FAILED})


def incident_key(deployment_id: int) -> str:
    """PagerDuty's dedup key of deployment ``deployment_id``'s alert."""
    return f"qlp-deployment-{deployment_id}"


def page_ordering_key(deployment_id: int) -> str:
    """Outbox ordering key of one deployment's pages (trigger before resolve)."""
    return f"pagerduty:{ONCALL_ROUTE}:{deployment_id}"


def page_dedup_key(reason: str, deployment_id: int) -> str:
    """Outbox dedup key of one page: one per reason and deployment."""
    return f"page:{reason}:{deployment_id}"


def trigger(outbox: NotificationQueue, policy: Policy, *, deployment_id: int, reason: str,
            summary: str, severity: str, component: str, event_class: str,
            details: Mapping[str, Any]) -> int:
    """Enqueue a trigger of the deployment's alert (and its e-mail copy); the page's id."""
    summary = summary[:SUMMARY_LIMIT]
    event = {
        "event_action": "trigger",
        "dedup_key": incident_key(deployment_id),
        "payload": {
            "summary": summary, "source": SOURCE, "severity": severity,
            "component": component, "group": "deployments", "class": event_class,
            "custom_details": {**details, "deployment_id": deployment_id,
                               "channel": policy.channel},
        },
    }
    page = outbox.enqueue(ONCALL_ROUTE, "pagerduty", event, deployment_id=deployment_id,
                          ordering_key=page_ordering_key(deployment_id),
                          dedup_key=page_dedup_key(reason, deployment_id))
    _mail_copy(outbox, policy, deployment_id, reason, f"[qlp] {summary}",
               [summary, "", *(f"{key}: {value}" for key, value in details.items())])
    return page


def resolve(outbox: NotificationQueue, policy: Policy, *, deployment_id: int,
            summary: str) -> int:
    """Enqueue the resolve of the deployment's alert (and its e-mail copy); the page's id."""
    event = {"event_action": "resolve", "dedup_key": incident_key(deployment_id)}
    page = outbox.enqueue(ONCALL_ROUTE, "pagerduty", event, deployment_id=deployment_id,
                          ordering_key=page_ordering_key(deployment_id),
                          dedup_key=page_dedup_key("resolve", deployment_id))
    _mail_copy(outbox, policy, deployment_id, "resolve", f"[qlp] Resolved: {summary}",
               [summary])
    return page


def _mail_copy(outbox: NotificationQueue, policy: Policy, deployment_id: int, reason: str,
               subject: str, lines: list[str]) -> None:
    email = policy.notifications.email
    if email is None or not email.to:
        return
    body = "\n".join([*lines, "", f"PagerDuty alert: {incident_key(deployment_id)}",
                      f"Slack channel: {policy.channel}"])
    outbox.enqueue(INCIDENTS_MAIL, "email",
                   {"to": list(email.to), "subject": subject, "body": body},
                   deployment_id=deployment_id,
                   ordering_key=f"{INCIDENTS_MAIL}:{deployment_id}",
                   dedup_key=f"page-mail:{reason}:{deployment_id}")


class PagingReporter:
    """A :class:`~procedures.reporting.Reporter` that pages on the run states above.

    Everything is forwarded to ``inner`` first (the card and thread come first); paging never
    makes the inner reporter fail, and a paging failure is logged, not raised (the engine's
    next report of the same state pages again: the dedup keys keep it to one page).
    """

    def __init__(self, inner: Reporter, outbox: NotificationQueue, policy: Policy) -> None:
        self._inner = inner
        self._outbox = outbox
        self._policy = policy

    def run_changed(self, run: RunSnapshot) -> None:
        self._inner.run_changed(run)
        try:
            self.page(run)
        except Exception:
            log.exception("paging: could not page for #%s (%s)", run.deployment_id, run.state)

    def event(self, run: RunSnapshot, text: str, *, broadcast: bool = False,
              **options: Any) -> None:
        self._inner.event(run, text, broadcast=broadcast, **options)

    def page(self, run: RunSnapshot) -> list[int]:
        """Enqueue what ``run``'s state calls for; the ids of the pages (none for most)."""
        state = run.state
        automatic = not (run.error or "").startswith(CANCELLED_BY)
        changed = any(step.state in _CHANGED for step in run.steps)
        if run.kind is ProcedureKind.ROLLBACK and automatic and state in (
                DeploymentState.FAILED, DeploymentState.ROLLED_BACK):
            # A manual rollback that failed: the version people wanted gone still serves.
            return [self._failed_rollback(run)]
        if state is DeploymentState.ROLLING_BACK and automatic and changed:
            return [self._rollback(run)]
        if state is DeploymentState.NEEDS_ATTENTION:
            return [self._needs_attention(run)]
        if state is DeploymentState.ROLLED_BACK and automatic:
            first = self._rollback(run)  # already there unless a crash hid ROLLING_BACK
            if run.kind is ProcedureKind.EMERGENCY:
                return [first]
            return [first, resolve(
                self._outbox, self._policy, deployment_id=run.deployment_id,
                summary=f"#{run.deployment_id} rolled back: the earlier version serves "
                        f"{run.environment} again")]
        if state is DeploymentState.SUCCEEDED and run.kind is ProcedureKind.EMERGENCY:
            return [resolve(
                self._outbox, self._policy, deployment_id=run.deployment_id,
                summary=f"Emergency deployment #{run.deployment_id} succeeded: "
                        f"{run.version} serves {run.environment}")]
        return []

    def _rollback(self, run: RunSnapshot) -> int:
        return trigger(
            self._outbox, self._policy, deployment_id=run.deployment_id, reason="rollback",
            summary=f"Automatic rollback of #{run.deployment_id} ({_what(run)}): "
                    f"{run.error or 'a step failed'}",
            severity="error", component=run.environment, event_class=f"rollback/{run.kind}",
            details=_details(run))

    def _failed_rollback(self, run: RunSnapshot) -> int:
        return trigger(
            self._outbox, self._policy, deployment_id=run.deployment_id,
            reason="rollback-failed",
            summary=f"Rollback #{run.deployment_id} failed ({_what(run)}): "
                    f"{run.error or 'a step failed'}. The version it was to replace still "
                    f"serves {run.environment}.",
            severity="critical", component=run.environment, event_class="rollback-failed",
            details=_details(run))

    def _needs_attention(self, run: RunSnapshot) -> int:
        return trigger(
            self._outbox, self._policy, deployment_id=run.deployment_id,
            reason="needs-attention",
            summary=f"#{run.deployment_id} needs attention ({_what(run)}): "
                    f"{run.error or 'an undo failed'}. {run.environment} stays locked.",
            severity="critical", component=run.environment,
            event_class=f"needs-attention/{run.kind}", details=_details(run))


def _what(run: RunSnapshot) -> str:
    version = f" {run.version}" if run.version else ""
    return f"{run.kind}{version} to {run.environment}"


def _details(run: RunSnapshot) -> dict[str, Any]:
    failed = [step.title for step in run.steps
              if step.state in (StepState.FAILED, StepState.UNDO_FAILED)]
    return {"kind": str(run.kind), "version": run.version, "environment": run.environment,
            "requester": run.requester, "state": str(run.state), "error": run.error,
            "failed_steps": failed}
