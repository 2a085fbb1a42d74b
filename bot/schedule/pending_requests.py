"""``PendingRequests``: a request nobody approved expires when its window closes (seed gap 52).

An unscheduled request waiting for approval counts as under way: it holds the environment
against other standard deployments and hotfixes (``bot.flows.gate``). Left alone it would hold
it for ever, and once its window had closed nobody could approve it anyway. So, on each tick
(under the scheduler lease), every unscheduled ``PENDING_APPROVAL`` request is judged as an
approval would be judged now (``Gate.judge_deployment`` at ``Moment.APPROVAL``), and it
expires, with a notice in its thread and to the requester, when

- the window's rules refuse it now (an avoided day, a holiday week, a freeze, or hours outside
  the preferred ones where ``windows.outside_preferred`` refuses): the tier it was asked in is
  over. A request that asked for a break-glass override is left to that override (its grant
  lifts these rules; an unused one is rejected or cancelled by a person), and a refusal a
  person can clear (a lock, a run under way) does not expire it; or
- it has waited longer than ``pending_max_age`` (default 24 h) whatever the window says:
  an approval a day later is an approval of a plan nobody looked at again.

Scheduled requests (``at``) expire at their own window's close in
``bot.schedule.scheduled_deployments``; both use :func:`expire_request`.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from bot.flows import Moment
from bot.formatting import escape
from procedures.durations import format_duration
from procedures.model import DeploymentState
from procedures.windows import WindowRule

if TYPE_CHECKING:
    from bot.ports import ScheduledDeploymentServices
    from procedures.store import DeploymentRecord

_S = DeploymentState

WINDOW_RULES = frozenset(rule.value for rule in WindowRule if rule is not WindowRule.PREFERRED)
"""The verdict rules that say the window itself refuses (not a lock or a run under way)."""


def dedup(deployment_id: int, phase: str) -> str:
    """The outbox dedup key of one message about a pending request."""
    return f"pending:{deployment_id}:{phase}"


def expire_request(services: ScheduledDeploymentServices, deployment: DeploymentRecord,
                   why: str, again: str, *, states: list[DeploymentState],
                   keys: tuple[str, str], action: str = "request.expired",
                   what: str = "request") -> int:
    """Move ``deployment`` from one of ``states`` to EXPIRED (conditionally: once, whoever
    else moves it), audit it as ``action``, say it in its thread (``again``: how to ask again)
    and to its requester (``what``: how the DM names it). ``keys`` are the outbox dedup keys
    of the thread reply and the DM."""
    assert deployment.id is not None
    if not services.deployments.transition(
            deployment.id, states, _S.EXPIRED,
            expected_revision=deployment.revision, error=f"expired: {why}"):
        return 0
    services.audit.append("bot", action, deployment_id=deployment.id,
                          environment=deployment.environment, detail={"why": why})
    run = services.views.snapshot(deployment.id)
    services.reporter.run_changed(run)
    services.reporter.event(run, f"Expired: {escape(why)}. Nothing was deployed. {again}",
                            dedup_key=keys[0])
    services.outbox.enqueue(deployment.requester, "post",
                            {"text": f"Your {what} #{deployment.id} "
                                     f"({escape(deployment.version or '')} to "
                                     f"{deployment.environment}) expired: {escape(why)}."},
                            dedup_key=keys[1])
    return 1


class PendingRequests:
    """Expire unscheduled requests whose window closed or that waited too long (a
    ``DueWork``)."""

    name = "pending-requests"

    def __init__(self, services: ScheduledDeploymentServices) -> None:
        self._services = services

    def run_due(self, now: datetime) -> int:
        done = 0
        for deployment in self._waiting():
            why = self._why_expired(deployment, now)
            if why is not None:
                done += self._expire(deployment, why)
        return done

    def upcoming(self, now: datetime, horizon: timedelta) -> list[datetime]:
        # The age limit is a known moment; a window's close is found by the regular ticks.
        limit = self._services.policy.pending_max_age
        moments = [d.created_at + limit for d in self._waiting() if d.created_at is not None]
        return sorted(m for m in moments if now < m <= now + horizon)

    def _waiting(self) -> list[DeploymentRecord]:
        return [d for d in self._services.deployments.list_in_states([_S.PENDING_APPROVAL])
                if d.scheduled_at is None]

    def _why_expired(self, deployment: DeploymentRecord, now: datetime) -> str | None:
        services = self._services
        limit = services.policy.pending_max_age
        if deployment.created_at is not None and now - _aware(deployment.created_at, now) \
                >= limit:
            return (f"nobody approved it within {format_duration(limit)} "
                    "(pending_max_age)")
        gate = services.flows.gate
        override = gate.override_of(deployment)
        if override is not None:
            return None  # a break-glass request: its override decides, a person ends it
        verdict = gate.judge_deployment(deployment, Moment.APPROVAL)
        if verdict.allowed or verdict.rule not in WINDOW_RULES:
            return None
        return f"its window closed before it was approved ({verdict.reason})"

    def _expire(self, deployment: DeploymentRecord, why: str) -> int:
        assert deployment.id is not None
        again = (f"Ask again with `/qlp {_command(deployment)}` (or schedule it with "
                 "`at YYYY-MM-DD HH:MM`).")
        return expire_request(self._services, deployment, why, again,
                              states=[_S.PENDING_APPROVAL], what=f"{deployment.kind} request",
                              keys=(dedup(deployment.id, "expired"),
                                    dedup(deployment.id, "expired-dm")))


_VERBS = {"standard": "deploy", "migration": "migrate"}


def _command(deployment: DeploymentRecord) -> str:
    kind = str(deployment.kind)
    version = escape(deployment.version or "")
    return f"{_VERBS.get(kind, kind)} {version} to {deployment.environment}"


def _aware(moment: datetime, now: datetime) -> datetime:
    """Stored times from SQLite come back naive (UTC)."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=now.tzinfo)
