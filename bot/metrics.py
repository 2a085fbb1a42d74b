"""``GET /metrics``: the bot's figures through prometheus-client, one registry per
:class:`~bot.wiring.Services` (tests build many bots in one process; the global default
registry would mix them).

Counted as things happen:

* ``qlp_slack_requests_total{status}`` and ``qlp_slack_ack_seconds{interaction, name}``: each
  request to ``/slack/events`` and how long its answer (the ack) took, by command
  (``interaction="command"``, ``name`` the sub-command: ``deploy``...) or button
  (``interaction="button"``, ``name`` the action id); a refused or unknown request is
  ``interaction="none"``.
* ``qlp_deployments_total{kind, environment, outcome}``: runs that reached a terminal state.
* ``qlp_step_duration_seconds{kind, step, outcome}``: each step's time (a histogram).
* ``qlp_rollbacks_total{trigger}``: ``monitoring``, ``step_failed``, ``cancelled`` (a run began
  rolling back) or ``command`` (a ``/qlp rollback`` run started).
* ``qlp_monitoring_checks_total{environment, result}`` and
  ``qlp_monitoring_warnings_total{environment, reason}``.
* ``qlp_slack_api_calls_total{method, result}``: Web API calls; ``result`` is ``ok``,
  ``ratelimited`` (429), ``error`` (Slack said ``ok: false``), ``server_error`` or
  ``network_error``.
* ``qlp_azure_calls_total{service, operation, result}`` and ``qlp_azure_call_seconds``.
* ``qlp_worker_claimed_runs_total{kind}``: runs this process's worker claimed.

Read at scrape time: ``qlp_outbox_pending{kind}``, ``qlp_outbox_dead{kind}``,
``qlp_outbox_oldest_pending_seconds``, ``qlp_deployments_active{environment}`` and
``qlp_deployment_active_seconds{environment}`` (the oldest running or rolling-back one),
``qlp_scheduler_leader`` (1 while this process holds the scheduler lease),
``qlp_worker_runs_in_progress``, ``qlp_slack_delivery_blocked{reason}``, and whatever
:meth:`Metrics.gauge` and :meth:`Metrics.labelled_gauge` registered.

Label values are the code's own words or the policy's environment names, never a person's text.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, Protocol

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.web import SlackResponse

if TYPE_CHECKING:
    from procedures.clock import Clock
    from procedures.engine import Engine
    from procedures.policy import Policy
    from storage.db import Database

log = logging.getLogger(__name__)

CONTENT_TYPE = CONTENT_TYPE_LATEST

_ACK_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 3.0, float("inf"))
_STEP_BUCKETS = (0.1, 0.5, 1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, float("inf"))
_CALL_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, float("inf"))

_ACK: ContextVar[tuple[str, str] | None] = ContextVar("qlp_ack_labels", default=None)


def note_ack(interaction: str, name: str) -> None:
    """Say what the request being answered on this thread is (a listener calls it), for the
    ``qlp_slack_ack_seconds`` labels of :meth:`Metrics.observe_request`."""
    _ACK.set((interaction, name))


def _label(value: str) -> str:
    """A label value from the code's own words: lower case, spaces as underscores."""
    return "_".join(str(value).lower().split())[:64] or "none"


class MetricsServices(Protocol):
    """What :meth:`Metrics.bind` counts and reads (the composition root's services)."""

    @property
    def engine(self) -> Engine: ...
    @property
    def slack(self) -> WebClient: ...
    @property
    def database(self) -> Database: ...
    @property
    def clock(self) -> Clock: ...
    @property
    def policy(self) -> Policy: ...
    @property
    def tasks(self) -> list[Any]: ...

    def scheduler_health(self) -> str: ...


class Metrics:
    """The bot's metrics in a registry of its own. Implements the run observer of
    :mod:`procedures.log_context` (the engine, the monitoring loop and the Azure platform
    report through it) and counts the Slack client's calls (:class:`ObservedWebClient`)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.requests = Counter("qlp_slack_requests", "Requests to /slack/events by HTTP status",
                                ["status"], registry=r)
        self.ack = Histogram("qlp_slack_ack_seconds",
                             "Seconds to answer (ack) a Slack request, by command and button",
                             ["interaction", "name"], buckets=_ACK_BUCKETS, registry=r)
        self.deployments = Counter("qlp_deployments",
                                   "Runs that ended, by kind, environment and outcome",
                                   ["kind", "environment", "outcome"], registry=r)
        self.steps = Histogram("qlp_step_duration_seconds", "Seconds a step took, by step",
                               ["kind", "step", "outcome"], buckets=_STEP_BUCKETS, registry=r)
        self.rollbacks = Counter("qlp_rollbacks", "Rollbacks begun, by what triggered them",
                                 ["trigger"], registry=r)
        self.monitoring_checks = Counter("qlp_monitoring_checks",
                                         "Monitoring checks of a new version, by result",
                                         ["environment", "result"], registry=r)
        self.monitoring_warnings = Counter("qlp_monitoring_warnings",
                                           "Monitoring warnings, by reason",
                                           ["environment", "reason"], registry=r)
        self.slack_calls = Counter("qlp_slack_api_calls", "Slack Web API calls by method and "
                                   "result (ok, ratelimited, error, server_error, "
                                   "network_error)", ["method", "result"], registry=r)
        self.azure_calls = Counter("qlp_azure_calls", "Azure SDK calls by operation and result",
                                   ["service", "operation", "result"], registry=r)
        self.azure_seconds = Histogram("qlp_azure_call_seconds", "Seconds an Azure call took",
                                       ["service", "operation"], buckets=_CALL_BUCKETS,
                                       registry=r)
        self.claimed_runs = Counter("qlp_worker_claimed_runs",
                                    "Runs this process's worker claimed, by kind", ["kind"],
                                    registry=r)
        self._gauges: dict[str, Callable[[], float]] = {}
        self._labelled: dict[str, tuple[str, Callable[[], Mapping[str, float]]]] = {}
        self._services: MetricsServices | None = None
        self._lock = threading.Lock()
        r.register(_ScrapeTime(self))

    # -- wiring ---------------------------------------------------------------------------------

    def bind(self, services: MetricsServices) -> None:
        """Count what ``services`` do: the engine's runs, the Slack client's calls, and the
        database's figures at scrape time."""
        self._services = services
        services.engine.observer = self
        if isinstance(services.slack, ObservedWebClient):
            services.slack.observer = self.slack_call

    # -- HTTP -----------------------------------------------------------------------------------

    def observe_request(self, status: int, seconds: float) -> None:
        """One request to ``/slack/events`` answered with ``status`` after ``seconds``."""
        interaction, name = _ACK.get() or ("none", "none")
        _ACK.set(None)  # the thread's next request says its own
        self.requests.labels(status=str(status)).inc()
        self.ack.labels(interaction=interaction, name=name).observe(seconds)

    # -- the run observer (procedures.log_context.Observer) -------------------------------------

    def run_finished(self, *, kind: str, environment: str, outcome: str) -> None:
        self.deployments.labels(kind=_label(kind), environment=environment,
                                outcome=_label(outcome)).inc()

    def step_finished(self, *, kind: str, step: str, outcome: str, seconds: float) -> None:
        self.steps.labels(kind=_label(kind), step=_label(step),
                          outcome=_label(outcome)).observe(max(seconds, 0.0))

    def rollback_started(self, *, kind: str, environment: str, trigger: str) -> None:
        self.rollbacks.labels(trigger=_label(trigger)).inc()

    def monitoring_check(self, *, environment: str, result: str) -> None:
        self.monitoring_checks.labels(environment=environment, result=_label(result)).inc()

    def monitoring_warning(self, *, environment: str, reason: str) -> None:
        self.monitoring_warnings.labels(environment=environment, reason=_label(reason)).inc()

    def azure_call(self, *, service: str, operation: str, result: str,
                   seconds: float) -> None:
        service, operation = _label(service), _label(operation)
        self.azure_calls.labels(service=service, operation=operation,
                                result=_label(result)).inc()
        self.azure_seconds.labels(service=service, operation=operation).observe(seconds)

    def run_claimed(self, *, kind: str, environment: str) -> None:
        self.claimed_runs.labels(kind=_label(kind)).inc()

    def slack_call(self, method: str, result: str) -> None:
        self.slack_calls.labels(method=method, result=result).inc()

    # -- scrape-time gauges ---------------------------------------------------------------------

    def gauge(self, name: str, read: Callable[[], float]) -> None:
        """Register a gauge whose value is read at scrape time."""
        with self._lock:
            self._gauges[name] = read

    def labelled_gauge(self, name: str, label: str,
                       read: Callable[[], Mapping[str, float]]) -> None:
        """Register a gauge with one label, read at scrape time as ``{label value: value}``
        (no samples when the mapping is empty)."""
        with self._lock:
            self._labelled[name] = (label, read)

    def render(self) -> str:
        """The text exposition format of every metric of this registry."""
        return generate_latest(self.registry).decode("utf-8")

    def _collect(self) -> Iterable[Metric]:
        with self._lock:
            gauges, labelled = dict(self._gauges), dict(self._labelled)
        for name, read in sorted(gauges.items()):
            try:
                value = float(read())
            except Exception:  # a gauge that cannot be read is left out, not a 500
                log.debug("gauge %s could not be read", name, exc_info=True)
                continue
            family = GaugeMetricFamily(name, name.replace("_", " "))
            family.add_metric([], value)
            yield family
        for name, (label, read_all) in sorted(labelled.items()):
            try:
                values = dict(read_all())
            except Exception:
                log.debug("gauge %s could not be read", name, exc_info=True)
                continue
            family = GaugeMetricFamily(name, name.replace("_", " "), labels=[label])
            for key, value in sorted(values.items()):
                family.add_metric([str(key)], float(value))
            yield family
        if self._services is not None:
            try:
                yield from _service_gauges(self._services)
            except Exception:  # the database is down: its figures are left out, not a 500
                log.warning("the database's figures could not be read for /metrics",
                            exc_info=True)


class _ScrapeTime(Collector):
    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterable[Metric]:
        return list(self._metrics._collect())


def _service_gauges(services: MetricsServices) -> Iterable[Metric]:
    from sqlalchemy import func
    from sqlmodel import col, select

    from bot.undelivered import blocked_gauges
    from procedures.model import HOLDING_STATES
    from storage.models import NOTIFICATION_KINDS, Deployment, Notification

    now = services.clock.now()
    pending = GaugeMetricFamily("qlp_outbox_pending", "Outbox rows waiting to be delivered",
                                labels=["kind"])
    dead = GaugeMetricFamily("qlp_outbox_dead", "Outbox rows given up (dead), by kind",
                             labels=["kind"])
    oldest = GaugeMetricFamily("qlp_outbox_oldest_pending_seconds",
                               "Age of the oldest outbox row still waiting (0 when none)")
    active = GaugeMetricFamily("qlp_deployments_active",
                               "Deployments running or rolling back, by environment",
                               labels=["environment"])
    active_age = GaugeMetricFamily("qlp_deployment_active_seconds",
                                   "Seconds since the oldest running or rolling-back "
                                   "deployment started, by environment",
                                   labels=["environment"])
    counts: dict[tuple[str, str], int] = {}
    first: Any = None
    with services.database.session(read_only=True) as s:
        rows = s.exec(
            select(Notification.kind, Notification.state, func.count(),
                   func.min(Notification.created_at))
            .where(col(Notification.state).in_(("pending", "dead")))
            .group_by(Notification.kind, Notification.state)).all()
        for kind, state, count, created in rows:
            counts[(str(kind), str(state))] = int(count)
            if state == "pending" and created is not None and (first is None or created < first):
                first = created
        running = s.exec(
            select(Deployment.environment, func.count(), func.min(Deployment.started_at))
            .where(col(Deployment.state).in_(list(HOLDING_STATES)))
            .group_by(Deployment.environment)).all()
    for kind in sorted({*NOTIFICATION_KINDS, *(k for k, _ in counts)}):
        pending.add_metric([kind], counts.get((kind, "pending"), 0))
        dead.add_metric([kind], counts.get((kind, "dead"), 0))
    oldest.add_metric([], _age(now, first))
    for environment in sorted(services.policy.environments):
        active.add_metric([environment], 0)
    ages: dict[str, float] = {}
    for environment, count, started in running:
        active.add_metric([str(environment)], int(count))
        ages[str(environment)] = _age(now, started)
    for environment, age in sorted(ages.items()):
        active_age.add_metric([environment], age)
    leader = GaugeMetricFamily("qlp_scheduler_leader",
                               "1 while this process holds the scheduler lease")
    leader.add_metric([], 1.0 if services.scheduler_health() == "leader" else 0.0)
    runs = GaugeMetricFamily("qlp_worker_runs_in_progress",
                             "Runs this process's worker is running now")
    runs.add_metric([], float(sum(getattr(task, "in_progress", lambda: 0)()
                                  for task in services.tasks)))
    blocked = GaugeMetricFamily("qlp_slack_delivery_blocked",
                                "Slack messages held back by a blocking error, by reason",
                                labels=["reason"])
    for reason, value in sorted(blocked_gauges(services.database).items()):
        blocked.add_metric([reason], float(value))
    return [pending, dead, oldest, active, active_age, leader, runs, blocked]


def _age(now: Any, then: Any) -> float:
    if then is None:
        return 0.0
    if then.tzinfo is None and now.tzinfo is not None:
        then = then.replace(tzinfo=now.tzinfo)
    return max((now - then).total_seconds(), 0.0)


class ObservedWebClient(WebClient):
    """slack_sdk's Web API client, counting each call by method and result."""

    observer: Callable[[str, str], None] | None = None

    def api_call(self, api_method: str, *args: Any, **kwargs: Any) -> SlackResponse:
        result = "network_error"
        try:
            response = super().api_call(api_method, *args, **kwargs)
            result = "ok"
            return response
        except SlackApiError as error:
            status = getattr(error.response, "status_code", 200)
            result = ("ratelimited" if status == 429 else
                      "server_error" if status >= 500 else "error")
            raise
        finally:
            observer = self.observer
            if observer is not None:
                try:
                    observer(api_method, result)
                except Exception:  # a metric never breaks a call
                    log.debug("counting %s failed", api_method, exc_info=True)

