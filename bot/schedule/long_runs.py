"""``LongRuns``: the seed's alert "extended deployment times (> 60 minutes)".

A deployment still running (or rolling back) ``LONG_RUN`` after it started is broadcast in its
thread and the channel and pages the on-call route (``bot.paging``), once per deployment: the
thread reply and the page carry dedup keys naming the deployment, so however many ticks,
replicas or restarts see it, each goes out once. It says how long the run has taken and which
step it is on; nothing is stopped (a person decides).

An emergency has a shorter limit: the seed gives it a "15-30 minutes critical window", so one
still running after ``EMERGENCY_LONG_RUN`` (30 minutes) is alerted the same way.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Protocol

from bot import paging
from procedures.durations import format_duration
from procedures.model import HOLDING_STATES, ProcedureKind
from procedures.policy import Policy
from procedures.reporting import RunSnapshot
from storage.outbox import Outbox

LONG_RUN = timedelta(minutes=60)
"""The seed's threshold for an extended deployment."""
EMERGENCY_LONG_RUN = timedelta(minutes=30)
"""The end of the seed's 15-30 minute critical window of an emergency deployment."""


class _Deployments(Protocol):
    def list_in_states(self, states: Any, environment: str | None = None) -> Any: ...


class _Views(Protocol):
    def snapshot(self, deployment_id: int) -> RunSnapshot: ...


class _Reporter(Protocol):
    def event(self, run: RunSnapshot, text: str, *, broadcast: bool = False,
              dedup_key: str | None = None) -> None: ...


def dedup(deployment_id: int) -> str:
    """The outbox key of deployment ``deployment_id``'s long-run alert."""
    return f"long-run:{deployment_id}"


class LongRuns:
    """``DueWork``: alert on runs longer than :data:`LONG_RUN`."""

    name = "long-runs"

    def __init__(self, deployments: _Deployments, views: _Views, reporter: _Reporter,
                 outbox: Outbox, policy: Policy, *, threshold: timedelta = LONG_RUN) -> None:
        self._deployments = deployments
        self._views = views
        self._reporter = reporter
        self._outbox = outbox
        self._policy = policy
        self._threshold = threshold

    @classmethod
    def from_services(cls, services: Any) -> LongRuns:
        return cls(services.deployments, services.views, services.reporter, services.outbox,
                   services.policy)

    def run_due(self, now: datetime) -> int:
        told = 0
        for deployment in self._deployments.list_in_states(HOLDING_STATES):
            started = deployment.started_at
            limit = self._limit(deployment)
            if deployment.id is None or started is None or now - started < limit:
                continue
            key = dedup(deployment.id)
            if self._outbox.has(key):
                continue
            took = format_duration(now - started)
            step = f", on step {deployment.current_step}" if deployment.current_step else ""
            run = self._views.snapshot(deployment.id)
            self._reporter.event(
                run, f":hourglass_flowing_sand: #{deployment.id} ({deployment.version} to "
                     f"{deployment.environment}) has been running for {took}{step}, longer "
                     f"than the {format_duration(limit)} {_what(deployment)} should take. "
                     "On-call is paged; cancel it with the card's Cancel button if it is stuck.",
                broadcast=True, dedup_key=key)
            paging.trigger(
                self._outbox, self._policy, deployment_id=deployment.id, reason="long-run",
                summary=f"Deployment #{deployment.id} of {deployment.version} to "
                        f"{deployment.environment} has been running for {took}",
                severity="warning", component=deployment.environment,
                event_class="deployment/long-run",
                details={"started_at": started.isoformat(), "step": deployment.current_step})
            told += 1
        return told

    def upcoming(self, now: datetime, horizon: timedelta) -> list[datetime]:
        moments = [d.started_at + self._limit(d)
                   for d in self._deployments.list_in_states(HOLDING_STATES)
                   if d.started_at is not None and now < d.started_at + self._limit(d)
                   <= now + horizon]
        return sorted(moments)

    def _limit(self, deployment: Any) -> timedelta:
        if deployment.kind == ProcedureKind.EMERGENCY:
            return min(self._threshold, EMERGENCY_LONG_RUN)
        return self._threshold


def _what(deployment: Any) -> str:
    return "an emergency deployment" if deployment.kind == ProcedureKind.EMERGENCY \
        else "a deployment"
