"""The hotfix playbook: the standard steps minus the long comparison phases.

A hotfix is an urgent fix that may run outside the preferred window (never in a freeze, never
past a manual lock: ``bot.commands.hotfix`` refuses those, and ``final_validation`` checks the
freeze again when the run starts, in case one began while the request waited for approval).
It keeps every safety step of the standard playbook and drops what only compares the new
version with the old one over time::

    standard step          hotfix
    final_validation       kept (plus: no freeze now)
    rehearsal_* (staging)  SKIPPED (a hotfix goes straight to its environment)
    snapshot               kept
    maintenance_on/off     kept (--maintenance only)
    deploy_idle_slot       kept
    wait_healthy           kept
    smoke_tests            kept
    switch_traffic         kept
    extended_health        SKIPPED (post_deploy_tests checks the public URL right after)
    post_deploy_tests      kept
    monitor                SHORTER: a quarter of ``monitoring.duration``, at least two
                           intervals (same thresholds, same automatic rollback)
    record_baseline        SKIPPED (a hurried fix is not the yardstick for the next release)
    stop_old_slot          kept

The steps are :class:`~procedures.playbooks.standard.StandardSteps`' own; only ``monitor`` runs
with a context whose policy carries the shorter monitoring section (:class:`PolicyOverride`).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from procedures.checks.http import HttpChecker
from procedures.durations import format_duration
from procedures.errors import StepFailure
from procedures.model import ProcedureKind, Slot
from procedures.platforms.base import Platform
from procedures.playbook import (
    MetricsSource,
    Playbook,
    RetryPolicy,
    Step,
    StepContext,
    StepResult,
)
from procedures.playbooks.rehearsal import REHEARSAL_STEPS
from procedures.playbooks.standard import (
    MONITOR_GRACE,
    ProvidesBaseline,
    StandardSteps,
    standard_playbook,
)
from procedures.policy import Environment, Monitoring, Policy
from procedures.windows import WindowPolicy

__all__ = [
    "HOTFIX_MONITOR_SHARE",
    "HOTFIX_SKIPPED",
    "HotfixSteps",
    "PolicyOverride",
    "describe_hotfix_plan",
    "hotfix_monitoring",
    "hotfix_playbook",
]

HOTFIX_MONITOR_SHARE = 4  # a hotfix is watched for 1/4 of the standard monitoring duration
MIN_MONITOR_INTERVALS = 2

HOTFIX_SKIPPED: tuple[tuple[str, str], ...] = (
    ("extended_health", "the extended health check (the post-deployment tests still probe "
                        "the public URL)"),
    ("record_baseline", "recording a performance baseline"),
)
"""Standard steps a hotfix leaves out, with what to tell people (name, description)."""


def hotfix_monitoring(monitoring: Monitoring) -> Monitoring:
    """The monitoring section a hotfix runs with: same thresholds, a shorter duration.

    A quarter of ``duration``, but at least two intervals (one check cannot see a trend) and
    never longer than the standard duration.
    """
    shorter = max(monitoring.duration / HOTFIX_MONITOR_SHARE,
                  monitoring.interval * MIN_MONITOR_INTERVALS)
    return monitoring.model_copy(update={"duration": min(shorter, monitoring.duration)})


def describe_hotfix_plan(monitoring: Monitoring) -> str:
    """One sentence for the thread: what a hotfix skips and how long it is watched."""
    skipped = "; ".join(text for _, text in HOTFIX_SKIPPED)
    short = hotfix_monitoring(monitoring)
    return (f"Hotfix plan: the standard steps without {skipped}. Monitoring is shortened to "
            f"{format_duration(short.duration)} (standard: "
            f"{format_duration(monitoring.duration)}), with the same rollback thresholds.")


class PolicyOverride:
    """A :class:`~procedures.playbook.StepContext` that shows a step a changed policy.

    Everything else is the engine's context, unchanged (sleep, deadline, report...). Used to
    run the standard ``monitor`` step with the hotfix's shorter monitoring section.
    """

    def __init__(self, inner: StepContext, policy: Policy) -> None:
        self._inner = inner
        self._policy = policy

    @property
    def deployment_id(self) -> int:
        return self._inner.deployment_id

    @property
    def kind(self) -> ProcedureKind:
        return self._inner.kind

    @property
    def version(self) -> str | None:
        return self._inner.version

    @property
    def environment_name(self) -> str:
        return self._inner.environment_name

    @property
    def environment(self) -> Environment:
        return self._inner.environment

    @property
    def policy(self) -> Policy:
        return self._policy

    @property
    def options(self) -> Mapping[str, Any]:
        return self._inner.options

    @property
    def platform(self) -> Platform:
        return self._inner.platform

    @property
    def metrics(self) -> MetricsSource:
        return self._inner.metrics

    @property
    def deadline(self) -> datetime:
        return self._inner.deadline

    def now(self) -> datetime:
        return self._inner.now()

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)

    def result_of(self, step_name: str) -> Mapping[str, Any]:
        return self._inner.result_of(step_name)

    def report(self, text: str, *, broadcast: bool = False) -> None:
        self._inner.report(text, broadcast=broadcast)

    def record_switch(self, live: Slot, version: str) -> None:
        self._inner.record_switch(live, version)

    def record_baseline(self, metrics: Mapping[str, Any]) -> None:
        self._inner.record_baseline(metrics)

    def baseline(self) -> Mapping[str, Any] | None:
        """The inner context's baseline, if it offers one (see ``ProvidesBaseline``)."""
        if isinstance(self._inner, ProvidesBaseline):
            return self._inner.baseline()
        return None


class HotfixSteps:
    """The hotfix's own step functions: wrappers around :class:`StandardSteps`."""

    def __init__(self, standard: StandardSteps) -> None:
        self.standard = standard

    def final_validation(self, ctx: StepContext) -> StepResult:
        """No freeze has begun since the request; then the standard final validation."""
        freeze = WindowPolicy(ctx.policy.windows, ctx.policy.zone).in_freeze(ctx.now())
        if freeze is not None:
            raise StepFailure(
                f"a hotfix does not run during the {freeze.reason} ({freeze.start.isoformat()} "
                f"to {freeze.end.isoformat()}), which began after it was requested",
                hint="only an emergency deploys during a freeze (/qlp emergency)",
            )
        return self.standard.final_validation(ctx)

    def monitor(self, ctx: StepContext) -> StepResult:
        """The standard monitor, for the hotfix's shorter duration."""
        policy = ctx.policy
        shorter = policy.model_copy(update={"monitoring": hotfix_monitoring(policy.monitoring)})
        return self.standard.monitor(PolicyOverride(ctx, shorter))


def hotfix_playbook(*, http: HttpChecker, monitoring: Monitoring | None = None) -> Playbook:
    """The hotfix (``ProcedureKind.HOTFIX``); see the module docstring.

    ``monitoring`` (the policy's section) sizes the monitor step's timeout; the thresholds
    and the duration are read from ``ctx.policy`` when it runs.
    """
    hotfix = HotfixSteps(StandardSteps(http))
    watch = hotfix_monitoring(monitoring or Monitoring()).duration
    skipped = {name for name, _ in HOTFIX_SKIPPED}
    steps: list[Step] = []
    for step in standard_playbook(http=http, monitoring=monitoring).steps:
        name = step.name
        if name in skipped or name in REHEARSAL_STEPS:
            continue
        if name == "final_validation":
            step = Step(name, "Final validation (no freeze; live system healthy)",
                        hotfix.final_validation, timeout=step.timeout, retry=step.retry)
        elif name == "monitor":
            step = Step(name, "Monitor the hotfix (shortened)", hotfix.monitor,
                        timeout=watch + MONITOR_GRACE, retry=RetryPolicy(attempts=1))
        steps.append(step)
    return Playbook(kind=ProcedureKind.HOTFIX, title="Hotfix", steps=tuple(steps))
