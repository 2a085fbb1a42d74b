"""Posting the monitoring chart into a deployment's thread when its monitoring ends.

:class:`ChartReporter` wraps the engine's reporter (like ``bot.paging.PagingReporter``) and
forwards everything to it first. When a run's ``monitor`` step has ended, successfully (the
version passed) or not (an automatic rollback starts), it enqueues one chart for that
deployment (outbox dedup key ``chart:monitoring:<id>``): the step's recorded checks
(``series``, written by ``procedures.playbooks.standard``'s monitor, on success in its result
and on a rollback in the failed step's result), the previous version's baseline
(``storage.baselines``: the newest recorded before monitoring began), the policy's thresholds
(``procedures.policy.Monitoring``) and, on a rollback, its moment (the step's end).

The outbox row is a ``post`` with a ``file`` payload (``bot.outbox_sender`` uploads it with
``files.getUploadURLExternal`` / ``files.completeUploadExternal`` into the card's thread; its
file name, one per deployment, is what a retry after a lost answer looks for). The
row carries the chart's *data*, a few KB for the default 60 checks, not its PNG: the sender
renders it when it delivers (``bot.charts``), so rows stay small, any replica can deliver it
(no file on one host's disk), a Slack outage only delays it, and the engine's thread never
waits for matplotlib. A step without a recorded series (cancelled, timed out) gets no chart.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from bot.charts import thin
from procedures.model import StepState
from procedures.mrkdwn import escape
from procedures.policy import Policy
from procedures.reporting import Reporter, RunSnapshot
from procedures.store import NotificationQueue
from storage.baselines import BaselineRepository
from storage.deployments import DeploymentRepository

log = logging.getLogger(__name__)

MONITOR_STEP = "monitor"
_ENDED = frozenset({StepState.SUCCEEDED, StepState.FAILED})


def chart_dedup_key(deployment_id: int) -> str:
    """Outbox dedup key of a deployment's monitoring chart (one per deployment)."""
    return f"chart:monitoring:{deployment_id}"


def chart_filename(deployment_id: int) -> str:
    return f"qlp-monitoring-{deployment_id}.png"


class ChartReporter:
    """A :class:`~procedures.reporting.Reporter` that enqueues the monitoring chart.

    A failure here is logged, never raised: the card and the thread come first.
    """

    def __init__(self, inner: Reporter, outbox: NotificationQueue,
                 deployments: DeploymentRepository, baselines: BaselineRepository,
                 policy: Policy) -> None:
        self._inner = inner
        self._outbox = outbox
        self._deployments = deployments
        self._baselines = baselines
        self._policy = policy
        self._done: set[int] = set()  # charted (or nothing to chart) in this process

    def run_changed(self, run: RunSnapshot) -> None:
        self._inner.run_changed(run)
        try:
            self.chart(run)
        except Exception:
            log.exception("chart: could not enqueue the monitoring chart of #%s",
                          run.deployment_id)

    def event(self, run: RunSnapshot, text: str, *, broadcast: bool = False,
              **options: Any) -> None:
        self._inner.event(run, text, broadcast=broadcast, **options)

    def chart(self, run: RunSnapshot) -> int | None:
        """Enqueue ``run``'s chart if its monitoring has ended; the outbox id, or None."""
        if run.deployment_id in self._done:
            return None
        step = next((s for s in run.steps if s.name == MONITOR_STEP), None)
        if step is None or step.state not in _ENDED:
            return None
        self._done.add(run.deployment_id)
        record = self._deployments.get_step(run.deployment_id, MONITOR_STEP)
        result: Mapping[str, Any] = (record.result or {}) if record is not None else {}
        spec = self.spec(run, result, record.finished_at if record is not None else None,
                         failed=step.state is StepState.FAILED)
        if spec is None:
            log.info("chart: #%s's monitoring recorded no checks; no chart", run.deployment_id)
            return None
        outcome = "rolled back" if step.state is StepState.FAILED else "passed"
        text = (f":chart_with_upwards_trend: Monitoring of {escape(run.version or '?')} on "
                f"{escape(run.environment)} ({outcome})")
        return self._outbox.enqueue(
            self._policy.channel, "post",
            {"text": text, "file": {"filename": chart_filename(run.deployment_id),
                                    "title": spec["title"], "chart": spec}},
            thread_of=run.deployment_id, ordering_key=f"chart:{run.deployment_id}",
            dedup_key=chart_dedup_key(run.deployment_id))

    def spec(self, run: RunSnapshot, result: Mapping[str, Any], finished_at: datetime | None,
             *, failed: bool) -> dict[str, Any] | None:
        """The chart's data (``bot.charts``) from the monitor step's ``result``."""
        series = result.get("series")
        started = _time(result.get("series_started_at"))
        if not isinstance(series, list) or not series or started is None:
            return None
        monitoring = self._policy.monitoring
        rollback_at = None
        if failed:
            end = finished_at or started
            rollback_at = max(round((end - started).total_seconds(), 1),
                              float(series[-1][0]) if isinstance(series[-1], list) else 0.0)
        slot = result.get("slot")
        title = (f"#{run.deployment_id} {run.version or '?'} on {run.environment}"
                 f"{f' ({slot})' if isinstance(slot, str) else ''}: response time and "
                 "failed checks")
        return {
            "title": title,
            "series": thin(series),  # a day of 10 s checks stays a few tens of KB
            "baseline": self._baseline(run.environment, run.version, started),
            "thresholds": {
                "response_time_ms": monitoring.response_time_ms,
                "response_time_ratio": monitoring.response_time_ratio,
                "health_failures": monitoring.health_failures,
                "health_window_s": monitoring.health_window.total_seconds(),
            },
            "rollback_at_s": rollback_at,
        }

    def _baseline(self, environment: str, version: str | None,
                  before: datetime) -> dict[str, Any] | None:
        """The previous version's baseline: the newest recorded before monitoring began."""
        for row in self._baselines.history(environment, limit=5):
            if row.recorded_at <= before and row.version != version:
                metrics = row.metrics or {}
                return {"version": row.version, "p50": metrics.get("response_ms_p50"),
                        "p95": metrics.get("response_ms_p95")}
        return None


def _time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None
