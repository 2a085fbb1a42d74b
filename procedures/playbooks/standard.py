"""The standard deployment playbook: the seed's Phases 2 to 4 as durable, undoable steps.

How the seed's scripts map to the steps (in order)::

    seed                                            step
    2.1 pre-deployment-final-check.sh  (health,     final_validation
        recent errors)
    2.2 deploy-staging.sh, staging-smoke-tests.sh,  rehearsal_deploy, rehearsal_smoke,
        compare-performance.sh --duration 300s      rehearsal_switch, rehearsal_compare
                                                    (promoted_from only; rehearsal.py)
    3.1 production-deployment.sh  1. snapshot       snapshot
                                  2. maintenance    maintenance_on        (--maintenance only)
                                  4. migrations     migrate_database      (<version>.sql only)
    3.2 blue-green-deploy.sh  az container create   deploy_idle_slot
                              wait for Running +    wait_healthy
                              /health
                              smoke-tests.sh        smoke_tests
                              front-door update     switch_traffic
    3.1                           6. maintenance    maintenance_off       (--maintenance only)
                                  5. health-check-  extended_health
                                     extended.sh
                                  7. post-deploy-   post_deploy_tests
                                     ment-tests.sh
    3.2 monitor-deployment.sh + 4.1 post-deploy-    monitor
        ment-monitoring.sh (+ automatic-rollback.sh)
    4.2 update-performance-baseline.sh              record_baseline
    3.2 az container delete (old slot)              stop_old_slot

What the steps do differently from the seed, on purpose:

- The old slot keeps running until monitoring has passed. The seed deletes it after five minutes
  and then monitors for thirty more, so its "automatic rollback" has to redeploy; here a rollback
  is one switch back (the engine undoes ``switch_traffic``), and ``stop_old_slot`` runs last.
- Monitoring follows the seed's decision matrix (``procedures.checks.monitoring``): automatic
  rollback on health failures (> 50 % in 5 minutes, or 10 in total), an error rate over 10x the
  previous version's baseline, failing database or smoke paths; warnings (slow responses,
  > 5 errors in 5 minutes, slow database queries, no data) are counted and summed up; a
  performance degradation over 2x the baseline asks the rollback approvers. The final
  validation's checks gate or warn as the policy's ``validation`` section says.
- Maintenance mode ends right after the switch, before the extended health check: that check
  goes through the public URL, which answers 503 while maintenance is on.
- The live colour and version come from the platform (``traffic()``) and are recorded with
  ``ctx.record_switch``, not in ``/tmp/current-slot``; the baseline becomes a row
  (``ctx.record_baseline``), not a git commit.
- CI status and database slow queries (2.1 items 3-4) are optional parts of
  ``final_validation``, run when the environment configures ``ci:`` or ``slow_query_ms``
  (:class:`FinalChecks` says how each gates); on Azure it also reports the live container
  group's CPU and memory as evidence. The checks live in
  ``procedures.playbooks.final_validation`` (:class:`FinalValidation`), so the bot can run
  them before approval too (its preflight) with the same code.
- The staging rehearsal (2.2) runs when the environment names ``promoted_from``: the version is
  deployed, smoke-tested and switched on that environment and compared with the live one, in
  the same run, before the snapshot (``procedures.playbooks.rehearsal``); a failure there
  stops the run before this environment is touched.

The playbook works on any :class:`~procedures.platforms.base.Platform`: it uses only that
protocol, the optional :class:`~procedures.platforms.base.SupportsMaintenance`, the context's
:class:`~procedures.playbook.MetricsSource` (and, when it has it, the optional
:class:`~procedures.playbook.ProvidesLatency`), an :class:`~procedures.checks.http.HttpChecker` and
the environment and policy data. It imports no SDK.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol, runtime_checkable

from procedures.checks.http import HttpChecker, Probe
from procedures.checks.monitoring import (
    MIN_LATENCY_REQUESTS,
    MonitoringThresholds,
    Sample,
    Summary,
    evaluate,
    summarize,
)
from procedures.durations import format_duration
from procedures.errors import MetricsUnavailable, QlpError, StepFailure
from procedures.log_context import notify
from procedures.model import ProcedureKind, Slot
from procedures.platforms.base import (
    SlotStatus,
    SupportsBackup,
    SupportsMaintenance,
    SupportsWatchedDeploy,
    SupportsWatchedStop,
    SupportsWatchedSwitch,
)
from procedures.playbook import (
    KeepsProgress,
    Playbook,
    ProvidesLatency,
    RetryPolicy,
    Step,
    StepContext,
    StepResult,
)
from procedures.playbooks.deploy_migration import DeployMigration
from procedures.playbooks.final_validation import (
    PRE_DEPLOY_ERROR_WINDOW,
    FinalChecks,
    FinalValidation,
    report_probes,
)
from procedures.playbooks.monitor_progress import MonitorProgress
from procedures.playbooks.rehearsal import SlotActions, rehearsal_steps
from procedures.policy import Environment, Monitoring

__all__ = [
    "BACKUP_TIMEOUT",
    "DEFAULT_READY_TIMEOUT",
    "EXTENDED_HEALTH_EVERY",
    "EXTENDED_HEALTH_STREAK",
    "MIN_LATENCY_REQUESTS",
    "NO_DATABASE",
    "PRE_DEPLOY_ERROR_WINDOW",
    "FinalChecks",
    "FinalValidation",
    "ProvidesBaseline",
    "ProvidesDatabaseTime",
    "StandardSteps",
    "database_backup",
    "standard_playbook",
]

DEFAULT_READY_TIMEOUT = timedelta(minutes=5)  # platforms without a ready_timeout setting
EXTENDED_HEALTH_STREAK = 3
EXTENDED_HEALTH_EVERY = timedelta(seconds=1)
MONITOR_GRACE = timedelta(minutes=2)
# The switch step waits for the platform to confirm the switch: Front Door takes minutes to
# reach every edge (Azure's switch_confirm_timeout defaults to 30 minutes), plus the change.
SWITCH_TIMEOUT = timedelta(minutes=35)
# The pre-deployment snapshot takes a database backup: a pg_dump, or an Azure on-demand
# backup that takes minutes.
BACKUP_TIMEOUT = timedelta(minutes=30)
NO_DATABASE = "no database configured: nothing to back up"
WARNING_MARK = ":large_orange_circle:"  # amber: a warning, never a rollback on its own
NO_DATA = "no data"
# A watched platform ends its own wait this long before the step's deadline (its last status
# read, its own error) instead of being cut off by the step's sleep.
WATCH_MARGIN = timedelta(seconds=30)
ROLLBACK_VERIFY_EVERY = timedelta(seconds=5)  # automatic-rollback.sh: until curl ...; sleep 5


@runtime_checkable
class ProvidesBaseline(Protocol):
    """A step context that can hand out the environment's latest performance baseline.

    Optional: ``monitor`` compares against a baseline (``response_time_ratio``,
    ``error_rate_ratio``) only when its context has one.
    """

    def baseline(self) -> Mapping[str, Any] | None: ...


@runtime_checkable
class ProvidesDatabaseTime(Protocol):
    """Optional on a :class:`~procedures.playbook.MetricsSource`: the average database query
    time (milliseconds) the new version saw since ``since``; None means no data. ``monitor``
    warns above ``monitoring.db_query_ms`` (the seed's "Slow database queries" warning) when
    the source has it, and says at the start that it is not measured otherwise."""

    def db_query_ms(self, slot: Slot, since: datetime) -> float | None: ...


@dataclass(frozen=True)
class _Plan:
    """What ``snapshot`` found: the colour live before the run and the colour to deploy to."""

    live: Slot | None
    live_version: str | None
    target: Slot

    @classmethod
    def of(cls, ctx: StepContext) -> _Plan:
        result = ctx.result_of("snapshot")
        if not result or not result.get("target_slot"):
            raise StepFailure("the snapshot step has not run: no target slot is known")
        live = result.get("live_slot")
        return cls(Slot(live) if live else None, result.get("live_version"),
                   Slot(result["target_slot"]))

    @property
    def previous(self) -> str:
        """``v1.2.2 on blue`` (or ``nothing``)."""
        if self.live is None:
            return "nothing"
        return f"{self.live_version or 'an unknown version'} on {self.live}"


class StandardSteps:
    """The step functions of the standard playbook, sharing one :class:`HttpChecker`.

    ``checks`` configures ``final_validation``'s optional CI, slow-query and platform-usage
    checks (:class:`FinalChecks`); they run only for environments that configure them. The
    checks themselves are :class:`FinalValidation`'s (``validation``), which the bot's
    preflight runs too.
    """

    def __init__(self, http: HttpChecker, checks: FinalChecks | None = None) -> None:
        self.http = http
        self.checks = checks or FinalChecks()
        self.validation = FinalValidation(http, self.checks)

    # -- Phase 2: final validation -----------------------------------------------------------

    def final_validation(self, ctx: StepContext) -> StepResult:
        """The live URL is healthy, the live slot had few errors lately, and the optional
        checks pass (:class:`FinalChecks`); the checks are :class:`FinalValidation`'s."""
        traffic = ctx.platform.traffic()
        if traffic.live is None:
            ctx.report(f"Nothing is live on {ctx.environment_name} ({ctx.environment.url}) "
                       "yet: first deployment, nothing to validate.")
        validation = self.validation.run(ctx, traffic.live, traffic.live_version)
        if validation.failure is not None:
            raise validation.failure
        live = traffic.live.value if traffic.live is not None else None
        return {"live": live, "live_version": traffic.live_version if live else None,
                **validation.result}

    # -- Phase 3: deployment -----------------------------------------------------------------

    def snapshot(self, ctx: StepContext) -> StepResult:
        """Record which colour and version serve now, and pick the idle colour."""
        version = _version(ctx)
        traffic = ctx.platform.traffic()
        live = traffic.live
        target = live.other if live is not None else Slot.BLUE
        if live is None:
            ctx.report(f"Live: nothing yet; deploying {version} to {target}.")
        else:
            ctx.report(f"Live: {traffic.live_version or 'unknown version'} on {live}; "
                       f"deploying {version} to {target}.")
            if traffic.live_version == version:
                ctx.report(f"Note: {version} is already live; it is deployed again.")
        idle = traffic.slots.get(target)
        if idle is not None and idle.running:
            ctx.report(f"{target} currently runs {idle.version or 'an unknown version'} "
                       f"({idle.detail}); it will be replaced.")
        return {
            "live_slot": live.value if live is not None else None,
            "live_version": traffic.live_version,
            "target_slot": target.value,
            "slots": {
                slot.value: {"running": status.running, "version": status.version,
                             "url": status.url, "detail": status.detail}
                for slot, status in traffic.slots.items()
            },
        }

    def pre_deployment_snapshot(self, ctx: StepContext) -> StepResult:
        """The seed's ``create-snapshot.sh pre-deploy-$DEPLOYMENT_ID``: the live colour and
        version (:meth:`snapshot`), then a backup of the environment's database where it has
        one (:func:`database_backup`), before anything is deployed or switched."""
        result = dict(self.snapshot(ctx) or {})
        stamp = ctx.now().astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
        result["database_backup"] = database_backup(
            ctx, f"pre-deploy-{ctx.deployment_id}-{stamp}")
        return result

    def maintenance_on(self, ctx: StepContext) -> StepResult:
        """Put the public URL into maintenance mode (asked for with --maintenance)."""
        platform = ctx.platform
        if not isinstance(platform, SupportsMaintenance):
            ctx.report(f"Maintenance mode is not supported by the platform of "
                       f"{ctx.environment_name}.")
            raise StepFailure(
                f"maintenance mode was asked for, but the platform of {ctx.environment_name} "
                f"({type(platform).__name__}) does not support it",
                hint="deploy without --maintenance",
            )
        platform.set_maintenance(True)
        ctx.report(f"Maintenance mode on: {ctx.environment.url} answers 503 until the switch.",
                   broadcast=True)
        return {"maintenance": True}

    def undo_maintenance_on(self, ctx: StepContext) -> None:
        platform = ctx.platform
        if isinstance(platform, SupportsMaintenance):
            platform.set_maintenance(False)
            ctx.report(f"Maintenance mode off: {ctx.environment.url} serves traffic again.")

    def deploy_idle_slot(self, ctx: StepContext) -> StepResult:
        """Start the new version in the idle colour (the live one is untouched)."""
        plan, version = _Plan.of(ctx), _version(ctx)
        status = deploy_platform(ctx, plan.target, version)
        ctx.report(f"Deploying {version} into {plan.target}: {status.detail or 'started'}.")
        return {"slot": plan.target.value, "version": version, "url": status.url,
                "detail": status.detail}

    def undo_deploy_idle_slot(self, ctx: StepContext) -> None:
        plan = _Plan.of(ctx)
        if ctx.platform.traffic().live == plan.target:
            ctx.report(f"{plan.target} serves traffic and nothing ran before it, so it is "
                       "left running.", broadcast=True)
            return
        stop_platform(ctx, plan.target)
        ctx.report(f"Stopped the {plan.target} slot ({ctx.version}).")

    def wait_healthy(self, ctx: StepContext) -> StepResult:
        """Wait until the new slot runs and answers its health check."""
        plan = _Plan.of(ctx)
        timeout = ready_timeout(ctx.environment)
        remaining = ctx.deadline - ctx.now()
        if remaining < timeout:  # never outlive the step's own deadline
            timeout = max(remaining, timedelta(seconds=1))
        status = wait_ready_platform(ctx, plan.target, timeout)
        ctx.report(f"{plan.target} is ready: {status.version or ctx.version} "
                   f"({status.detail}).")
        return {"slot": plan.target.value, "version": status.version, "detail": status.detail}

    def smoke_tests(self, ctx: StepContext) -> StepResult:
        """Every health and smoke path answers 2xx on the new slot, before any traffic."""
        plan, env = _Plan.of(ctx), ctx.environment
        base = ctx.platform.slot_url(plan.target)
        probes = self.http.check_paths(base, _unique([*env.health, *env.smoke]))
        report_probes(ctx, f"Smoke tests on {plan.target} ({base})", probes)
        _fail_unless_ok(probes, f"smoke tests failed on the {plan.target} slot",
                        hint="the live slot is untouched; the new slot will be stopped",
                        retryable=True)
        return {"slot": plan.target.value, "url": base, "checks": _probe_rows(probes)}

    def switch_traffic(self, ctx: StepContext) -> StepResult:
        """Route the public URL to the new slot; the old one keeps running."""
        plan, version = _Plan.of(ctx), _version(ctx)
        switch_platform(ctx, plan.target)
        switched_at = ctx.now()
        ctx.record_switch(plan.target, version)
        # Ask once now, so that a metrics source that counts from the first question (the
        # local router's counters) counts exactly from the switch.
        _metric(ctx.metrics.error_count, plan.target, switched_at)
        kept = (f"; {plan.previous} stays up for a rollback" if plan.live is not None else "")
        ctx.report(f"Traffic switched to {plan.target} ({version}){kept}.", broadcast=True)
        return {"live": plan.target.value, "version": version,
                "previous_slot": plan.live.value if plan.live else None,
                "previous_version": plan.live_version, "switched_at": switched_at.isoformat()}

    def undo_switch_traffic(self, ctx: StepContext) -> None:
        """The seed's ``automatic-rollback.sh``: switch back to the colour live before, or,
        when it is gone, redeploy its version there (blue-green); then verify the public URL
        (:func:`restore_previous`)."""
        plan = _Plan.of(ctx)
        if plan.live is None:
            ctx.report(f"Nothing was live before this deployment, so there is nothing to switch "
                       f"back to: {plan.target} keeps serving.", broadcast=True)
            return
        restore_previous(ctx, self.http, plan.live, plan.live_version)

    def maintenance_off(self, ctx: StepContext) -> StepResult:
        """End maintenance mode: the public URL now serves the new version."""
        platform = ctx.platform
        if not isinstance(platform, SupportsMaintenance):
            ctx.report("Maintenance mode is not supported here; nothing to turn off.")
            return {"maintenance": False}
        platform.set_maintenance(False)
        ctx.report(f"Maintenance mode off: {ctx.environment.url} serves {ctx.version}.",
                   broadcast=True)
        return {"maintenance": False}

    def extended_health(self, ctx: StepContext) -> StepResult:
        """The seed's ``health-check-extended.sh --timeout 300``: the public URL's health paths
        answer 2xx :data:`EXTENDED_HEALTH_STREAK` times in a row, tried every
        :data:`EXTENDED_HEALTH_EVERY` for at most ``monitoring.extended_health`` (the seed's
        ``HEALTH_CHECK_TIMEOUT``, 300 s). A failing round is said in the thread the first time
        and then once a minute, not every round."""
        env = ctx.environment
        limit = ctx.policy.monitoring.extended_health
        started = ctx.now()
        streak = 0
        times: list[float] = []
        last_failure = ""
        said_at: datetime | None = None
        round_no = 0
        while True:
            round_no += 1
            probes = self.http.check_paths(env.url, env.health)
            failed = [probe for probe in probes if not probe.ok]
            if failed:
                streak = 0
                last_failure = "; ".join(probe.describe() for probe in failed)
                if said_at is None or ctx.now() - said_at >= timedelta(minutes=1):
                    said_at = ctx.now()
                    elapsed = ctx.now() - started
                    so_far = format_duration(elapsed) if elapsed >= timedelta(seconds=1) \
                        else "0s"
                    ctx.report(f"Health round {round_no} ({so_far} of "
                               f"{format_duration(limit)}): {last_failure}")
            else:
                streak += 1
                times.extend(probe.elapsed_ms for probe in probes)
                if streak == EXTENDED_HEALTH_STREAK:
                    ctx.report(f"{env.url} answered 2xx on {', '.join(env.health)} "
                               f"{EXTENDED_HEALTH_STREAK} times in a row (round {round_no}, "
                               f"{format_duration(ctx.now() - started)}, slowest "
                               f"{max(times):.0f} ms).")
                    return {"rounds": round_no, "streak": streak, "slowest_ms": max(times),
                            "waited_s": round((ctx.now() - started).total_seconds(), 1)}
            if ctx.now() - started + EXTENDED_HEALTH_EVERY > limit:
                break
            ctx.sleep(EXTENDED_HEALTH_EVERY.total_seconds())
        raise StepFailure(
            f"{env.url} did not answer 2xx {EXTENDED_HEALTH_STREAK} times in a row within "
            f"{format_duration(limit)} ({round_no} rounds); last failure: {last_failure}",
            hint="traffic goes back to the previous slot",
        )

    def post_deploy_tests(self, ctx: StepContext) -> StepResult:
        """The smoke paths answer 2xx on the public URL."""
        env = ctx.environment
        paths = env.smoke
        if not paths:
            paths = env.health
            ctx.report("No smoke paths are configured; checking the health paths instead.")
        probes = self.http.check_paths(env.url, paths)
        report_probes(ctx, f"Post-deployment tests on {env.url}", probes)
        _fail_unless_ok(probes, f"post-deployment tests failed on {env.url}",
                        hint="traffic goes back to the previous slot", retryable=True)
        return {"url": env.url, "checks": _probe_rows(probes)}

    # -- Phase 4: monitoring, baseline, cleanup ----------------------------------------------

    def monitor(self, ctx: StepContext) -> StepResult:
        """Watch the new version for ``monitoring.duration``; raise to roll back
        (:meth:`monitor_for`)."""
        return self.monitor_for(ctx, None)

    def monitor_for(self, ctx: StepContext, duration: timedelta | None) -> StepResult:
        """Watch the new version for ``duration`` (``monitoring.duration`` when None); raise
        to roll back.

        Each check probes every health, smoke and ``monitoring.database_health`` path of the
        public URL and reads the platform's error and request counts since the switch (and,
        when ``ctx.metrics`` :class:`~procedures.playbook.ProvidesLatency`, its p95 request
        duration; when it :class:`ProvidesDatabaseTime`, the average database query time).
        :func:`~procedures.checks.monitoring.evaluate` applies the seed's decision matrix: an
        automatic trigger raises (the engine switches back); warnings are tallied and summed up
        at the end; a performance degradation over ``response_time_ratio`` times the baseline
        is the seed's manual scenario: the thread says so once, names the rollback approvers
        and points at the card's Roll back button, and monitoring goes on.
        """
        plan, version, env = _Plan.of(ctx), _version(ctx), ctx.environment
        monitoring = ctx.policy.monitoring
        thresholds = MonitoringThresholds.from_policy(monitoring)
        if duration is not None:
            thresholds = replace(thresholds, duration=duration,
                                 interval=min(thresholds.interval, duration))
        baseline = ctx.baseline() if isinstance(ctx, ProvidesBaseline) else None
        latency = _PlatformLatency.of(ctx)
        database_time = ctx.metrics if isinstance(ctx.metrics, ProvidesDatabaseTime) else None
        switched_at = _parse_time(ctx.result_of("switch_traffic").get("switched_at"))
        since = switched_at or ctx.now()
        health, smoke = _unique(env.health), [p for p in _unique(env.smoke)
                                                if p not in env.health]
        database = [p for p in _unique(monitoring.database_health)
                    if p not in health and p not in smoke]
        paths = [*health, *smoke, *database]
        duration, interval = thresholds.duration, thresholds.interval
        total = max(1, math.ceil(duration / interval))
        keeps = ctx if isinstance(ctx, KeepsProgress) else None
        progress = MonitorProgress.from_json(keeps.kept() if keeps else None, total=total,
                                             interval_s=interval.total_seconds())
        first = 1
        if progress is None:
            ctx.report(_monitor_plan(ctx, plan.target, version, paths, total, thresholds,
                                     baseline, latency, database_time is not None))
            progress = MonitorProgress(started=ctx.now(), total=total,
                                       interval_s=interval.total_seconds())
            if keeps is not None:  # the window's start, before its first check
                keeps.keep(progress.to_json())
        else:
            # Taken over mid-window: the window goes on from where it was; the next check is
            # the one due now (the ones missed while nobody watched are not made up).
            due = math.floor((ctx.now() - progress.started) / interval)
            first = min(max(len(progress.samples) + 1, due), total + 1)
            ctx.report(f"Monitoring {plan.target} ({version}) continues its window: "
                       f"{format_duration(min(ctx.now() - progress.started, duration))} of "
                       f"{format_duration(duration)} gone, {len(progress.samples)} "
                       f"check{'s' if len(progress.samples) != 1 else ''} kept; next check "
                       f"{min(first, total)}/{total}.")
        started = progress.started
        samples, tally, said_kinds = progress.samples, progress.tally, progress.said_kinds
        manual, next_progress = progress.manual, progress.next_progress
        said_inconclusive = progress.said_inconclusive
        if latency is not None:
            latency.readings, latency.said_missing = (progress.latency_readings,
                                                      progress.latency_said_missing)
        for number in range(first, total + 1):
            wait = (started + interval * number - ctx.now()).total_seconds()
            if wait > 0:
                ctx.sleep(wait)
            probes = dict(zip(paths, self.http.check_paths(env.url, paths), strict=True))
            why: list[str] = []
            errors = _metric(ctx.metrics.error_count, plan.target, since, why)
            requests = _metric(ctx.metrics.request_count, plan.target, since, why)
            p95 = latency.read_now(plan.target, since) if latency is not None else None
            db_ms = (_float_metric(database_time.db_query_ms, plan.target, since)
                     if database_time is not None else None)
            samples.append(Sample(
                at=ctx.now(),
                health_ok=all(probes[p].ok for p in health),
                response_ms=max((probes[p].elapsed_ms for p in [*health, *smoke]),
                                default=0.0),
                errors=errors, requests=requests, unavailable=why[0] if why else None,
                smoke_failed=tuple(p for p in smoke if not probes[p].ok),
                database_failed=tuple(p for p in database if not probes[p].ok),
                p95_ms=p95, db_query_ms=db_ms,
            ))
            failed = [probe for probe in probes.values() if not probe.ok]
            notify("monitoring_check", environment=ctx.environment_name,
                   result="failed" if failed else "ok")
            if failed:
                ctx.report(f"Check {number}/{total}: "
                           + "; ".join(probe.describe() for probe in failed))
            verdict = evaluate(samples, thresholds, baseline)
            elapsed = format_duration(ctx.now() - started)
            if verdict.rollback:
                ctx.report(f"Rolling back {version} after {elapsed} of monitoring (automatic "
                           f"rollback trigger): {verdict.reason}.")
                raise StepFailure(
                    f"monitoring {plan.target} ({version}): {verdict.reason}",
                    hint=f"traffic goes back to {plan.previous}, which is still running",
                    # The figures so far too: /qlp stats counts the errors and requests of
                    # every monitored run, rolled back or not (storage.stats_impact).
                    result={**_summary_result(summarize(samples), plan.target, version,
                                              ctx.now() - started),
                            **_series(samples, started)},
                )
            for kind, text in verdict.warnings:
                tally[kind] = tally.get(kind, 0) + 1
                notify("monitoring_warning", environment=ctx.environment_name, reason=kind)
                if kind not in said_kinds:
                    said_kinds.add(kind)
                    ctx.report(f"{WARNING_MARK} Warning (check {number}/{total}): {text}. "
                               "Counted, not a rollback.")
            if verdict.manual and manual is None:
                manual = verdict.manual
                ctx.report(_manual_rollback_text(ctx, plan, version, manual), broadcast=True)
            if verdict.inconclusive and not said_inconclusive:
                said_inconclusive = True
                ctx.report(f"Check {number}/{total}: {verdict.reason}.")
            if latency is not None and latency.readings[-1] is None and not latency.said_missing:
                latency.said_missing = True
                ctx.report(f"Check {number}/{total}: no p95 from {latency.source} yet: no data "
                           "for that figure (health and errors still decide).")
            if number / total >= next_progress and number < total:
                while next_progress <= number / total:
                    next_progress += 0.25
                ctx.report(f"Monitoring {plan.target} ({version}): {elapsed} of "
                           f"{format_duration(duration)}, {summarize(samples).describe()}"
                           f"{latency.describe() if latency else ''}, "
                           f"{_warning_count(tally)}.")
            if keeps is not None:  # after each check: what a take-over continues from
                progress.manual, progress.next_progress = manual, next_progress
                progress.said_inconclusive = said_inconclusive
                progress.latency_said_missing = bool(latency and latency.said_missing)
                keeps.keep(progress.to_json())
        summary = summarize(samples)
        final = evaluate(samples, thresholds, baseline)
        if final.inconclusive:
            if monitoring.no_data == "rollback":
                raise StepFailure(
                    f"monitoring {plan.target} ({version}) was inconclusive: {final.reason}",
                    hint="monitoring.no_data is rollback: a version never passes on missing "
                         "data; check the platform's metrics",
                )
            tally[NO_DATA] = 1
            notify("monitoring_warning", environment=ctx.environment_name, reason="no_data")
            ctx.report(f"{WARNING_MARK} Warning: no data: {final.reason}; the error-rate "
                       "rule could not be applied (monitoring.no_data: warn).")
        warnings = sum(tally.values())
        ctx.report(f"Monitored {format_duration(duration)}: {summary.describe()}"
                   f"{latency.describe() if latency else ''}; {_warning_count(tally)}.")
        if summary.failed or warnings > thresholds.warnings_investigate:
            excess = (f"> {thresholds.warnings_investigate} warnings"
                      if warnings > thresholds.warnings_investigate
                      else _plural(summary.failed, "failed health check"))
            ctx.report(f"{WARNING_MARK} {excess}: investigate before the next deployment "
                       f"(summary: {summary.failed} failed health checks, "
                       f"{_warning_count(tally)}).", broadcast=True)
        result = _summary_result(summary, plan.target, version, ctx.now() - started)
        result.update({"warnings": warnings, "warning_kinds": dict(tally),
                       "investigate": bool(summary.failed)
                       or warnings > thresholds.warnings_investigate,
                       "manual_rollback": manual})
        if latency is not None:
            result.update(latency.result())
        result.update(_series(samples, started))
        return result

    def record_baseline(self, ctx: StepContext) -> StepResult:
        """Store the monitoring figures as the environment's new performance baseline."""
        watched = ctx.result_of("monitor")
        if not watched:
            ctx.report("No monitoring figures: no baseline recorded.")
            return {"recorded": False}
        metrics = {key: watched.get(key) for key in (
            "response_ms_p50", "response_ms_p95", "error_count", "request_count", "error_rate",
            "samples", "platform_p95_ms")}
        usage = _baseline_usage(ctx, _Plan.of(ctx).target,
                                float(watched.get("watched_s") or 0))
        metrics.update(usage)
        ctx.record_baseline(metrics)
        p50, p95 = metrics["response_ms_p50"], metrics["response_ms_p95"]
        memory = (f", memory {usage['memory_avg_bytes'] / 2**20:.0f} MiB avg"
                  if usage.get("memory_avg_bytes") is not None else "")
        ctx.report(f"Performance baseline for {ctx.version}: p50 {_ms(p50)}, p95 {_ms(p95)}"
                   f"{memory}, {metrics['error_count']} errors over {metrics['samples']} "
                   "checks.")
        return {"recorded": True, **metrics}

    def stop_old_slot(self, ctx: StepContext) -> StepResult:
        """Stop the previously live slot, now that the new version has passed monitoring."""
        plan = _Plan.of(ctx)
        if plan.live is None:
            ctx.report("Nothing ran before this deployment: no old slot to stop.")
            return {"stopped": None}
        if ctx.platform.traffic().live == plan.live:
            ctx.report(f"{plan.live} serves traffic again (switched back meanwhile?), so it is "
                       "not stopped.", broadcast=True)
            return {"stopped": None}
        stop_platform(ctx, plan.live)
        ctx.report(f"Stopped the old {plan.live} slot ({plan.live_version}); {plan.target} "
                   f"({ctx.version}) serves {ctx.environment.url}.")
        return {"stopped": plan.live.value, "version": plan.live_version}


def standard_playbook(*, http: HttpChecker, monitoring: Monitoring | None = None,
                      checks: FinalChecks | None = None,
                      migration: DeployMigration | None = None) -> Playbook:
    """The standard deployment (``ProcedureKind.STANDARD``); see the module docstring.

    ``monitoring`` (the policy's section) only sizes the monitor step's timeout (its duration
    plus two minutes); the thresholds themselves are read from ``ctx.policy`` when it runs.
    ``checks`` configures final_validation's optional checks (:class:`FinalChecks`).
    ``migration`` runs the version's database migration, if any (seed 3.1 step 4,
    :mod:`procedures.playbooks.deploy_migration`).
    """
    migrate = migration or DeployMigration()
    steps = StandardSteps(http, checks)
    watch = (monitoring or Monitoring()).duration
    extended = (monitoring or Monitoring()).extended_health
    maintenance = _maintenance_requested
    return Playbook(
        kind=ProcedureKind.STANDARD,
        title="Standard deployment",
        steps=(
            Step("final_validation", "Final validation of the live system",
                 steps.final_validation, timeout=timedelta(minutes=2),
                 retry=RetryPolicy(attempts=3, backoff=timedelta(seconds=10))),
            *rehearsal_steps(http, SlotActions(deploy_platform, wait_ready_platform,
                                               switch_platform, stop_platform, ready_timeout)),
            Step("snapshot", "Pre-deployment snapshot: database backup, live slot and "
                 "version", steps.pre_deployment_snapshot, timeout=BACKUP_TIMEOUT,
                 retry=RetryPolicy(attempts=3)),
            Step("maintenance_on", "Maintenance mode on", steps.maintenance_on,
                 undo=steps.undo_maintenance_on, timeout=timedelta(minutes=1),
                 retry=RetryPolicy(attempts=3), when=maintenance),
            Step("migrate_database", "Database migration of this version (if any)", migrate.run,
                 timeout=migrate.steps.timeouts.longest_apply + timedelta(minutes=10),
                 retry=RetryPolicy(attempts=3, backoff=timedelta(seconds=5)), when=migrate.when),
            Step("deploy_idle_slot", "Deploy the new version to the idle slot",
                 steps.deploy_idle_slot, undo=steps.undo_deploy_idle_slot,
                 timeout=timedelta(minutes=10),
                 retry=RetryPolicy(attempts=2, backoff=timedelta(seconds=5))),
            Step("wait_healthy", "Wait until the new slot is healthy", steps.wait_healthy,
                 timeout=timedelta(minutes=15)),
            Step("smoke_tests", "Smoke tests on the new slot", steps.smoke_tests,
                 timeout=timedelta(minutes=3),
                 retry=RetryPolicy(attempts=3, backoff=timedelta(seconds=5))),
            Step("switch_traffic", "Switch traffic to the new slot", steps.switch_traffic,
                 undo=steps.undo_switch_traffic, timeout=SWITCH_TIMEOUT,
                 retry=RetryPolicy(attempts=3, backoff=timedelta(seconds=2))),
            Step("maintenance_off", "Maintenance mode off", steps.maintenance_off,
                 timeout=timedelta(minutes=1), retry=RetryPolicy(attempts=3), when=maintenance),
            Step("extended_health", "Extended health check on the public URL",
                 steps.extended_health, timeout=extended + MONITOR_GRACE),
            Step("post_deploy_tests", "Post-deployment tests on the public URL",
                 steps.post_deploy_tests, timeout=timedelta(minutes=3),
                 retry=RetryPolicy(attempts=2, backoff=timedelta(seconds=5))),
            Step("monitor", "Monitor the new version", steps.monitor,
                 timeout=watch + MONITOR_GRACE, retry=RetryPolicy(attempts=1)),
            Step("record_baseline", "Record the performance baseline", steps.record_baseline,
                 timeout=timedelta(minutes=1), retry=RetryPolicy(attempts=3)),
            Step("stop_old_slot", "Stop the old slot", steps.stop_old_slot,
                 timeout=timedelta(minutes=2), retry=RetryPolicy(attempts=2)),
        ),
    )


def switch_platform(ctx: StepContext, slot: Slot) -> None:
    """Switch the platform to ``slot``; a platform whose switch is watched (Azure: Front Door
    propagating) reports its wait in the thread and sleeps through the step, so the wait ends
    at the step's time limit or on cancel."""
    platform = ctx.platform
    if isinstance(platform, SupportsWatchedSwitch):
        platform.switch_watched(slot, report=ctx.report, sleep=ctx.sleep)
    else:
        platform.switch(slot)


def deploy_platform(ctx: StepContext, slot: Slot, version: str) -> SlotStatus:
    """Deploy ``version`` into ``slot``; a platform whose deployment is watched (Azure: a
    container group provisioning for minutes) reports progress in the thread, sleeps through
    the step (its deadline or a cancel stops the wait) and gives up waiting a margin before
    the deadline with a retryable failure, so the step's retry follows the same deployment."""
    platform = ctx.platform
    if isinstance(platform, SupportsWatchedDeploy):
        return platform.deploy_watched(slot, version, report=ctx.report, sleep=ctx.sleep,
                                       within=_before_deadline(ctx))
    return platform.deploy(slot, version)


def wait_ready_platform(ctx: StepContext, slot: Slot, timeout: timedelta) -> SlotStatus:
    """Wait until ``slot`` is ready; a watched platform reports in the thread and sleeps
    through the step, and ends its own wait a margin before the step's deadline, so the
    failure names what it waited for rather than only "timed out"."""
    platform = ctx.platform
    if isinstance(platform, SupportsWatchedDeploy):
        return platform.wait_ready_watched(slot, min(timeout, _before_deadline(ctx)),
                                           report=ctx.report, sleep=ctx.sleep)
    return platform.wait_ready(slot, timeout)


def stop_platform(ctx: StepContext, slot: Slot) -> None:
    """Stop ``slot``; a watched platform (Azure: deleting a container group) waits through
    the step's sleep, so the wait ends at the step's time limit or on cancel."""
    platform = ctx.platform
    if isinstance(platform, SupportsWatchedStop):
        platform.stop_watched(slot, sleep=ctx.sleep)
    else:
        platform.stop(slot)


def restore_previous(ctx: StepContext, http: HttpChecker, slot: Slot,
                     version: str | None) -> dict[str, Any]:
    """Put ``version`` back on the public URL from ``slot`` and verify it: the seed's
    ``automatic-rollback.sh``.

    1. ``slot`` still runs ``version``: switch back to it. It is gone (its process or
       container was stopped or removed, or runs something else): redeploy ``version`` into it
       (blue-green: the public URL keeps its current colour meanwhile), wait until it is ready
       (the platform's readiness, the seed's 300 s), then switch.
    2. The public URL's health paths answer 2xx within ``monitoring.rollback_verify`` (the
       seed's 120 s), tried every 5 s on the step's (injected) clock.

    When the redeploy or the verification fails, the thread gets the exact ``/qlp emergency``
    command for the last known good version (the seed's emergency deployment of
    "last-known-good") and a non-retryable StepFailure is raised: the run needs attention and
    on-call is paged. A retryable failure of a plain switch back is raised as it is, so the
    engine tries the undo again.
    """
    traffic = ctx.platform.traffic()
    gone = _gone(traffic.slots.get(slot), version)
    redeployed = False
    if gone is None:
        try:
            switch_platform(ctx, slot)
        except QlpError as exc:
            if getattr(exc, "retryable", False):
                raise  # the engine tries the undo again
            gone = _gone(ctx.platform.traffic().slots.get(slot), version)
            if gone is None:
                _offer_emergency(ctx, version,
                                 f"The switch back to {slot} failed: {exc.message}")
                raise
    try:
        if gone is not None:
            _redeploy_previous(ctx, slot, version, gone)
            redeployed = True
        ctx.record_switch(slot, version or "unknown")
        ctx.report(f"Traffic switched back to {slot} ({version or 'an unknown version'})"
                   + (", redeployed" if redeployed else "") + ".", broadcast=True)
        if _in_maintenance(ctx):
            base = ctx.platform.slot_url(slot)
            ctx.report(f"Maintenance mode is still on ({ctx.environment.url} answers 503 until "
                       f"it is turned off next): verifying {slot} directly at {base}.")
            verified = verify_rollback(ctx, http, base=base)
        else:
            verified = verify_rollback(ctx, http)
    except QlpError as exc:
        how = " (redeploying it)" if gone is not None else ""
        _offer_emergency(ctx, version, f"The rollback to {version or 'the previous version'} "
                                       f"on {slot}{how} failed: {exc.message}")
        raise StepFailure(
            f"rollback to {version or 'the previous version'} on {slot} failed: {exc.message}",
            hint="deploy the last known good version as an emergency: "
                 + _emergency_command(ctx, version),
        ) from exc
    return {"slot": slot.value, "version": version, "redeployed": redeployed,
            "verification": verified}


def verify_rollback(ctx: StepContext, http: HttpChecker, *, what: str = "Rollback verification",
                    base: str | None = None, hint: str | None = None) -> dict[str, Any]:
    """The public URL's (or ``base``'s) health paths answer 2xx within
    ``monitoring.rollback_verify``, tried every 5 s (the seed's ``timeout 120 bash -c 'until
    curl -f $PRODUCTION_URL/health; do sleep 5; done'``), never past the step's own deadline;
    StepFailure (with ``hint``) otherwise. Waits only through ``ctx.sleep``."""
    env = ctx.environment
    within = min(ctx.policy.monitoring.rollback_verify,
                 max(ctx.deadline - ctx.now() - timedelta(seconds=5), timedelta(seconds=1)))
    return wait_until_healthy(ctx, http, base or env.url, env.health, within=within,
                              every=ROLLBACK_VERIFY_EVERY, what=what, hint=hint)


def wait_until_healthy(ctx: StepContext, http: HttpChecker, url: str, paths: Sequence[str], *,
                       within: timedelta, every: timedelta, what: str,
                       hint: str | None) -> dict[str, Any]:
    """``url``'s ``paths`` answer 2xx within ``within``, tried every ``every`` (the seed's
    ``until curl -f $URL/health; do sleep 5; done``); each outcome is reported, and
    StepFailure (with ``hint``) when the time is up. Waits only through ``ctx.sleep``."""
    started = ctx.now()
    attempt = 0
    while True:
        attempt += 1
        probes = http.check_paths(url, paths)
        failed = [probe for probe in probes if not probe.ok]
        waited = ctx.now() - started
        if not failed:
            slowest = max((probe.elapsed_ms for probe in probes), default=0.0)
            after = (f"after {format_duration(waited)}, attempt {attempt}" if attempt > 1
                     else "at the first attempt")
            ctx.report(f"{what}: {url} answered 2xx on {', '.join(paths)} {after} "
                       f"(slowest {slowest:.0f} ms).")
            return {"url": url, "attempts": attempt,
                    "waited_s": round(waited.total_seconds(), 1), "slowest_ms": slowest}
        details = "; ".join(probe.describe() for probe in failed)
        if waited >= within:
            ctx.report(f"{what}: still failing after {format_duration(waited)}: {details}")
            raise StepFailure(f"{url} was not healthy within {format_duration(within)} "
                              f"({attempt} attempts); last: {details}", hint=hint)
        if attempt == 1:
            ctx.report(f"{what}: {details}; trying every {format_duration(every)} for up to "
                       f"{format_duration(within)}.")
        ctx.sleep(min(every, within - waited).total_seconds())


def _in_maintenance(ctx: StepContext) -> bool:
    """Whether this run left maintenance mode on (its ``maintenance_on`` ran and its
    ``maintenance_off`` did not): the public URL answers 503 until the undo of
    ``maintenance_on``, which comes after the switch back."""
    return (bool(ctx.result_of("maintenance_on").get("maintenance"))
            and ctx.result_of("maintenance_off").get("maintenance") is not False)


def _gone(status: SlotStatus | None, version: str | None) -> str | None:
    """Why ``status`` cannot be switched back to as it is (None: it can)."""
    if status is None:
        return "it is not there"
    if not status.running:
        return f"it does not run ({status.detail or 'stopped'})"
    if version and status.version and status.version != version:
        return f"it runs {status.version} now"
    return None


def _redeploy_previous(ctx: StepContext, slot: Slot, version: str | None, why: str) -> None:
    if not version:
        raise StepFailure(f"the {slot} slot is gone ({why}) and the version that ran there is "
                          "not known, so it cannot be redeployed")
    timeout = ready_timeout(ctx.environment)
    ctx.report(f"The previous {slot} slot is gone ({why}): redeploying {version} into it "
               f"(blue-green: up to {format_duration(timeout)} to get ready), then switching.",
               broadcast=True)
    status = deploy_platform(ctx, slot, version)
    ctx.report(f"Redeploying {version} into {slot}: {status.detail or 'started'}.")
    remaining = ctx.deadline - ctx.now()
    status = wait_ready_platform(ctx, slot, max(min(timeout, remaining), timedelta(seconds=1)))
    ctx.report(f"{slot} is ready again: {status.version or version} ({status.detail}).")
    switch_platform(ctx, slot)


def _emergency_command(ctx: StepContext, version: str | None) -> str:
    shown = version or "<last known good version>"
    return (f'/qlp emergency outage {shown} to {ctx.environment_name} --reason '
            f'"rollback of #{ctx.deployment_id} failed"')


def _offer_emergency(ctx: StepContext, version: str | None, what: str) -> None:
    ctx.report(f":rotating_light: {what.rstrip('.')}. On-call is paged. To deploy the last "
               f"known good version ({version or 'unknown'}) as an emergency: "
               f"`{_emergency_command(ctx, version)}`", broadcast=True)


def _before_deadline(ctx: StepContext) -> timedelta:
    """What is left of the step, less a margin for the platform's last reads (30 s, less on
    a short step); at least a second."""
    remaining = ctx.deadline - ctx.now()
    return max(remaining - min(WATCH_MARGIN, remaining / 4), timedelta(seconds=1))


def ready_timeout(env: Environment) -> timedelta:
    """How long a new slot may take to get ready: the platform's setting, else 5 minutes."""
    if env.local is not None:
        return env.local.ready_timeout
    if env.platform == "azure" and env.azure is not None:
        # The settings model only (pydantic); the SDK stays behind procedures.platforms.azure.
        from procedures.platforms.azure.settings import parse_azure_settings

        return parse_azure_settings(env.azure).ready_timeout
    return DEFAULT_READY_TIMEOUT


# -- helpers ----------------------------------------------------------------------------------


def _maintenance_requested(ctx: StepContext) -> bool:
    return bool(ctx.options.get("maintenance"))


def _version(ctx: StepContext) -> str:
    if not ctx.version:
        raise StepFailure("a standard deployment needs a version")
    return ctx.version


def _unique(paths: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(paths))


@dataclass
class _PlatformLatency:
    """The monitor step's platform p95 figure, when ``ctx.metrics`` provides one."""

    read: Callable[[Slot, datetime], float | None]
    source: str
    readings: list[float | None] = field(default_factory=list)
    said_missing: bool = False

    @classmethod
    def of(cls, ctx: StepContext) -> _PlatformLatency | None:
        metrics = ctx.metrics
        if not isinstance(metrics, ProvidesLatency):
            return None
        source = getattr(metrics, "latency_source", None)
        return cls(metrics.duration_p95_ms,
                   source if isinstance(source, str) and source else "the platform's monitoring")

    def read_now(self, slot: Slot, since: datetime) -> float | None:
        """Read the p95 now (a failing source counts as no data) and keep it as evidence."""
        self.readings.append(_float_metric(self.read, slot, since))
        return self.readings[-1]

    @property
    def latest(self) -> float | None:
        return next((value for value in reversed(self.readings) if value is not None), None)

    def describe(self) -> str:
        latest = self.latest
        if latest is None:
            return f", no p95 from {self.source} (no data)"
        return f", p95 {latest:.0f} ms from {self.source}"

    def result(self) -> dict[str, Any]:
        return {"platform_p95_ms": self.latest, "platform_p95_source": self.source,
                "platform_p95_readings": list(self.readings)}


def _float_metric(read: Callable[[Slot, datetime], float | None], slot: Slot,
                  since: datetime) -> float | None:
    """A figure in milliseconds; a failing source, or anything not a number, is no data."""
    try:
        value = read(slot, since)
    except QlpError:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
        return None
    return float(value)


def _monitor_plan(ctx: StepContext, slot: Slot, version: str, paths: Sequence[str], total: int,
                  t: MonitoringThresholds, baseline: Mapping[str, Any] | None,
                  latency: _PlatformLatency | None, database_time: bool) -> str:
    """The opening report: what is probed, and the seed's decision matrix with its numbers."""
    monitoring = ctx.policy.monitoring
    of = (f"the baseline of {baseline['version']}" if baseline and baseline.get("version")
          else "the baseline")
    automatic = [
        f"more than {t.health_failure_ratio:.0%} of health checks fail within "
        f"{format_duration(t.health_window)}",
        f"{t.health_failures} health checks fail in total",
    ]
    if t.error_rate_ratio:
        automatic.append(f"the error rate exceeds {t.error_rate_ratio:g}x {of}"
                         if baseline else f"the error rate exceeds {t.error_rate_ratio:g}x "
                         "the baseline (no baseline yet to compare with)")
    if monitoring.database_health:
        automatic.append(f"a database path ({', '.join(monitoring.database_health)}) fails "
                         f"{t.critical_failures} checks in a row")
    if ctx.environment.smoke:
        automatic.append(f"a smoke path fails {t.critical_failures} checks in a row")
    warn = [f"a response over {t.response_time_ms} ms"
            + (f" (probe or p95 from {latency.source})" if latency else ""),
            f"more than {t.error_threshold} errors in {format_duration(t.error_window)}"]
    warn.append(f"database queries over {t.db_query_ms:g} ms" if database_time
                else "database query time: not measured on this platform")
    manual = (f"; a person decides on responses over {t.response_time_ratio:g}x "
              f"{of if baseline else 'the baseline (no baseline yet)'}"
              if t.response_time_ratio else "")
    return (f"Monitoring {slot} ({version}) for {format_duration(t.duration)}: "
            f"{', '.join(paths) or 'no paths'} on {ctx.environment.url} every "
            f"{format_duration(t.interval)} ({total} checks). Automatic rollback if "
            f"{'; or '.join(automatic)}. Warnings (counted, never a rollback): "
            f"{'; '.join(warn)}{manual}.")


def _manual_rollback_text(ctx: StepContext, plan: _Plan, version: str, reason: str) -> str:
    """The seed's manual scenario: say it, name the rollback approvers, point at the button."""
    rule = ctx.policy.approval_rule("rollback")
    who = " ".join([*(f"<@{user}>" for user in rule.users),
                    *(f"<!subteam^{group}>" for group in rule.groups)])
    back = plan.previous
    return (f"{WARNING_MARK} Manual rollback decision needed for {version} on "
            f"{ctx.environment_name}: {reason}. The playbook lists performance degradation as "
            f"a manual rollback scenario, so the bot does not roll back on its own. Rollback "
            f"approvers ({who}): decide whether to roll back to {back}. Cancel now switches "
            "back at once; after monitoring, the card's *Roll back* button (or /qlp rollback) "
            "does it. Monitoring goes on.")


def _warning_count(tally: Mapping[str, int]) -> str:
    total = sum(tally.values())
    if not total:
        return "0 warnings"
    parts = ", ".join(f"{count} {kind}" for kind, count in tally.items())
    return f"{_plural(total, 'warning')} ({parts})"


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _fail_unless_ok(probes: Sequence[Probe], message: str, *, hint: str,
                    retryable: bool) -> None:
    failed = [probe for probe in probes if not probe.ok]
    if failed:
        details = "; ".join(probe.describe() for probe in failed)
        raise StepFailure(f"{message}: {details}", hint=hint, retryable=retryable)


def _probe_rows(probes: Sequence[Probe]) -> list[dict[str, Any]]:
    return [{"url": probe.url, "status": probe.status, "ms": probe.elapsed_ms}
            for probe in probes]


def _metric(read: Callable[[Slot, datetime], int | None], slot: Slot,
            since: datetime, why: list[str] | None = None) -> int | None:
    """A metrics reading; a failing metrics source counts as no data (never as a pass). Why
    the platform's monitoring could not be read (Azure's code and message) goes into ``why``
    so the thread says it rather than "no data"."""
    try:
        return read(slot, since)
    except MetricsUnavailable as error:
        if why is not None:
            why.append(error.reason)
        return None
    except QlpError:
        return None


def _parse_time(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            return None
    return None


def _summary_result(summary: Summary, slot: Slot, version: str,
                    watched: timedelta) -> dict[str, Any]:
    return {
        "slot": slot.value, "version": version, "samples": summary.checks,
        "failed": summary.failed, "response_ms_p50": summary.response_ms_p50,
        "response_ms_p95": summary.response_ms_p95, "error_count": summary.errors,
        "request_count": summary.requests, "error_rate": summary.error_rate,
        "watched_s": round(watched.total_seconds(), 1),
    }


def database_backup(ctx: StepContext, name: str) -> dict[str, Any]:
    """Back up the environment's database as ``name`` through the platform's
    :class:`~procedures.platforms.base.SupportsBackup` and say in the thread what was taken
    (name, where, size, duration) or why nothing was. A failing backup raises (the step fails
    before anything is deployed or switched); a database that cannot take one by design (an
    Azure tier) is said plainly, and the checklist item stays unticked with that reason."""
    platform = ctx.platform
    if not isinstance(platform, SupportsBackup):
        reason = (f"the platform of {ctx.environment_name} ({type(platform).__name__}) cannot "
                  "take a database backup")
        ctx.report(f"Database backup: none taken: {reason}.")
        return {"taken": False, "reason": reason}
    target = platform.backup_target()
    if target is None:
        ctx.report(f"Database backup: {NO_DATABASE}.")
        return {"taken": False, "reason": NO_DATABASE}
    ctx.report(f"Database backup {name} of {target}: started.")
    taken = platform.take_backup(name, report=ctx.report, sleep=ctx.sleep)
    duration = round(taken.duration.total_seconds(), 3)
    if not taken.taken:
        ctx.report(f"Database backup NOT taken: {taken.reason}.", broadcast=True)
        return {"taken": False, "name": taken.name, "location": taken.location,
                "reason": taken.reason, "duration_s": duration}
    size = (_size_text(taken.size_bytes) if taken.size_bytes is not None
            else "size not reported by the platform")
    restore = f" Restore: {taken.restore_hint}." if taken.restore_hint else ""
    ctx.report(f"Database backup {taken.name} completed: {taken.location} ({size}, took "
               f"{format_duration(taken.duration)}).{restore}")
    return {"taken": True, "name": taken.name, "location": taken.location,
            "size_bytes": taken.size_bytes, "duration_s": duration}


def _baseline_usage(ctx: StepContext, slot: Slot, watched_s: float) -> dict[str, Any]:
    """The seed's baseline also holds memory (and CPU): the new colour's container usage over
    the monitoring period, where the platform can read it (Azure Monitor's ``MemoryUsage`` and
    ``CpuUsage`` of the container group); nothing elsewhere. Never fails the step."""
    # The reader lives with the Azure platform (it needs the SDK); imported only here.
    from procedures.platforms.azure.platform_metrics import live_usage

    window = timedelta(seconds=max(60.0, watched_s))
    try:
        usage = live_usage(ctx.platform, slot, ctx.now(), window)
    except QlpError as exc:
        ctx.report(f"Baseline: container CPU/memory not read ({exc.message}).")
        return {}
    if usage is None or usage.inconclusive:
        return {}
    return {"memory_avg_bytes": usage.memory_avg, "memory_max_bytes": usage.memory_max,
            "cpu_avg_millicores": usage.cpu_avg}


def _size_text(count: int) -> str:
    if count < 1024:
        return f"{count} bytes"
    value, units = float(count), ["KiB", "MiB", "GiB"]
    while True:
        value /= 1024
        unit = units.pop(0)
        if value < 1024 or not units:
            return f"{value:.1f} {unit}"


def _series(samples: Sequence[Sample], started: datetime) -> dict[str, Any]:
    """The checks as recorded for the monitoring chart (``bot.chart_reporter``): seconds since
    ``series_started_at``, the slowest probe's ms, and whether the health paths answered."""
    return {"series_started_at": started.isoformat(), "series": [
        [round((s.at - started).total_seconds(), 1), round(s.response_ms, 1), int(s.health_ok)]
        for s in samples]}


def _ms(value: Any) -> str:
    return f"{value:.0f} ms" if isinstance(value, int | float) else "n/a"
