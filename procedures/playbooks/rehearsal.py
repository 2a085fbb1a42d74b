"""The staging rehearsal of a standard deployment (seed 2.2), as steps of the standard playbook.

When the target environment names ``promoted_from`` (production from staging), the standard
deployment first does there what the seed's scripts do, in the same card and thread::

    seed 2.2                                        step
    deploy-staging.sh v1.2.3                        rehearsal_deploy    (the idle slot)
    staging-smoke-tests.sh                          rehearsal_smoke     (ready, every health
                                                                         and smoke path)
      (deploy-staging.sh: staging serves it)        rehearsal_switch    (staging's traffic)
    compare-performance.sh --baseline-env           rehearsal_compare   (p95 of both, for
        production --test-env staging                                    rehearsal.compare_for)
        --duration 300s

They run after ``final_validation`` and before the production snapshot: a failing rehearsal
stops the run before production is touched (no backup taken, nothing deployed or switched
there), with the evidence in the thread (the path that failed and how, or both p95 figures).

Decisions:

- **The lock.** The rehearsal takes the staging environment's lock the way the engine takes a
  run's own (``procedures.engine_loans``): a staging run under way makes it wait (up to
  ``LOCK_WAIT``, saying which deployment holds staging); a person's lock, or one kept after a
  run that needs attention, stops it at once with who holds it. While the rehearsal holds it,
  a staging run waits in line behind this deployment. It is let go when the comparison passes,
  or when the run ends.
- **Already there.** If staging already serves the version (someone deployed it there first),
  it is not deployed again: the smoke tests and the comparison run on it. After a restart, a
  re-run finds the idle slot already running the version and does not deploy it twice.
- **Comparison.** Every ``COMPARE_EVERY`` (at most a tenth of ``compare_for``), every health
  and smoke path of each public URL is requested; the p95 of the answers' times on staging is
  compared with production's over the same period. It fails when staging's p95 exceeds
  ``max_slowdown`` times production's, a production p95 faster than ``RESPONSE_FLOOR_MS``
  (50 ms) counting as 50 ms (one request on a loopback takes 1-3 ms: 2 ms against 4 ms is
  noise, not a slowdown; the monitor's baseline rule uses the same floor). A staging path that
  fails ``monitoring.critical_failures`` checks in a row stops it at once.
- **On failure** staging is put back as it was: the undo of ``rehearsal_switch`` switches its
  traffic back to the colour that served before (recorded in its state), the undo of
  ``rehearsal_deploy`` stops the new slot. A failed version is not left serving staging, where
  other work is tested; the thread keeps the evidence. If staging's previous colour is gone,
  the new one keeps serving staging and the thread says how to redeploy the old version.
- **After a passed rehearsal** staging keeps the version, even if production fails later (as
  the migration rehearsal keeps staging's schema): the undos then leave staging alone, and
  staging's old colour is stopped, as a standard deployment's last step does.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from procedures.checks.http import HttpChecker, Probe
from procedures.checks.monitoring import RESPONSE_FLOOR_MS, MonitoringThresholds, percentile
from procedures.durations import format_duration
from procedures.engine_loans import LoanedEnvironment, ReachesOtherEnvironments
from procedures.errors import QlpError, StepFailure
from procedures.model import ProcedureKind, Slot
from procedures.platforms.base import Platform, SlotStatus
from procedures.playbook import MetricsSource, RetryPolicy, Step, StepContext, StepResult
from procedures.policy import Environment, Policy

__all__ = ["COMPARE_EVERY", "COMPARE_LONGEST", "LOCK_WAIT", "REHEARSAL_STEPS", "RehearsalSteps",
           "SlotActions", "rehearsal_steps", "rehearses"]

LOCK_WAIT = timedelta(minutes=10)  # a staging run under way: wait this long for it
LOCK_POLL = timedelta(seconds=10)
COMPARE_EVERY = timedelta(seconds=5)  # 60 rounds over the seed's 300 s
DEPLOY_TIMEOUT = LOCK_WAIT + timedelta(minutes=15)  # the wait, then a watched deployment
READY_TIMEOUT = timedelta(minutes=15)
# The comparison step's time limit is fixed when the playbook is built, before any policy is
# read: a ``compare_for`` up to an hour fits; a longer one is refused when the step starts.
COMPARE_LONGEST = timedelta(hours=1)
COMPARE_GRACE = timedelta(minutes=3)
REHEARSAL_STEPS = ("rehearsal_deploy", "rehearsal_smoke", "rehearsal_switch",
                   "rehearsal_compare")


@dataclass(frozen=True)
class SlotActions:
    """How a step acts on a platform's slots: ``procedures.playbooks.standard``'s helpers
    (watched where the platform watches, through the step's sleep and deadline). Handed in by
    the standard playbook, which owns them, so this module does not import it."""

    deploy: Callable[[StepContext, Slot, str], SlotStatus]
    wait_ready: Callable[[StepContext, Slot, timedelta], SlotStatus]
    switch: Callable[[StepContext, Slot], None]
    stop: Callable[[StepContext, Slot], None]
    ready_timeout: Callable[[Environment], timedelta]


def rehearses(ctx: StepContext) -> bool:
    """Whether this run rehearses on another environment first (``promoted_from``)."""
    return ctx.policy.promoted_from(ctx.environment_name) is not None


class _On:
    """``ctx`` acting on the rehearsal environment: its name, settings, platform, metrics and
    state record; the run's thread, clock, sleep, deadline and results stay ``ctx``'s."""

    def __init__(self, ctx: StepContext, loan: LoanedEnvironment) -> None:
        self._ctx = ctx
        self._loan = loan

    @property
    def deployment_id(self) -> int:
        return self._ctx.deployment_id

    @property
    def kind(self) -> ProcedureKind:
        return self._ctx.kind

    @property
    def version(self) -> str | None:
        return self._ctx.version

    @property
    def environment_name(self) -> str:
        return self._loan.name

    @property
    def environment(self) -> Environment:
        return self._loan.environment

    @property
    def policy(self) -> Policy:
        return self._ctx.policy

    @property
    def options(self) -> Mapping[str, Any]:
        return self._ctx.options

    @property
    def platform(self) -> Platform:
        return self._loan.platform

    @property
    def metrics(self) -> MetricsSource:
        return self._loan.metrics

    @property
    def deadline(self) -> datetime:
        return self._ctx.deadline

    def now(self) -> datetime:
        return self._ctx.now()

    def sleep(self, seconds: float) -> None:
        self._ctx.sleep(seconds)

    def result_of(self, step_name: str) -> Mapping[str, Any]:
        return self._ctx.result_of(step_name)

    def report(self, text: str, *, broadcast: bool = False) -> None:
        self._ctx.report(text, broadcast=broadcast)

    def record_switch(self, live: Slot, version: str) -> None:
        self._loan.record_switch(live, version)

    def record_baseline(self, metrics: Mapping[str, Any]) -> None:
        raise StepFailure("a rehearsal records no baseline")


@dataclass(frozen=True)
class _Plan:
    """What ``rehearsal_deploy`` found and did on the rehearsal environment."""

    environment: str
    live: Slot | None
    live_version: str | None
    target: Slot
    deployed: bool  # False: the version already served there

    @classmethod
    def of(cls, ctx: StepContext) -> _Plan:
        result = ctx.result_of("rehearsal_deploy")
        if not result or not result.get("target_slot"):
            raise StepFailure("the rehearsal's deploy step has not run: no target slot")
        live = result.get("live_slot")
        return cls(str(result["environment"]), Slot(live) if live else None,
                   result.get("live_version"), Slot(result["target_slot"]),
                   bool(result.get("deployed")))

    @property
    def previous(self) -> str:
        if self.live is None:
            return "nothing"
        return f"{self.live_version or 'an unknown version'} on {self.live}"


class RehearsalSteps:
    """The rehearsal's step functions; see the module docstring."""

    def __init__(self, http: HttpChecker, actions: SlotActions) -> None:
        self.http = http
        self.actions = actions

    # -- rehearsal_deploy ---------------------------------------------------------------------

    def deploy(self, ctx: StepContext) -> StepResult:
        """Take the rehearsal environment's lock and start the version in its idle slot."""
        version = _version(ctx)
        loan = _loan(ctx)
        _take_lock(ctx, loan)
        on = _On(ctx, loan)
        traffic = loan.platform.traffic()
        live = traffic.live
        result: dict[str, Any] = {"environment": loan.name,
                                  "live_slot": live.value if live else None,
                                  "live_version": traffic.live_version}
        if live is not None and traffic.live_version == version:
            ctx.report(f"Rehearsal on {loan.name}: it already serves {version} on {live}; not "
                       "deployed again. The smoke tests and the comparison run on it.")
            return {**result, "target_slot": live.value, "deployed": False,
                    "url": loan.platform.slot_url(live)}
        target = live.other if live is not None else Slot.BLUE
        now = (f"{traffic.live_version or 'an unknown version'} on {live}" if live
               else "nothing yet")
        idle = traffic.slots.get(target)
        if idle is not None and idle.running and idle.version == version:
            # A re-run after a restart: the deployment it started is there; not twice.
            ctx.report(f"Rehearsal on {loan.name} (live: {now}): {target} already runs "
                       f"{version} ({idle.detail or 'running'}); not deployed again.")
            status = idle
        else:
            ctx.report(f"Rehearsal on {loan.name} (live: {now}): deploying {version} to "
                       f"{target}.")
            status = self.actions.deploy(on, target, version)
            ctx.report(f"Deploying {version} into {loan.name}'s {target}: "
                       f"{status.detail or 'started'}.")
        return {**result, "target_slot": target.value, "deployed": True, "url": status.url}

    def undo_deploy(self, ctx: StepContext) -> None:
        """Stop the rehearsal's new slot, unless the rehearsal passed (staging keeps it) or
        the slot serves staging (its previous colour was gone)."""
        plan = _Plan.of(ctx)
        if not plan.deployed or _passed(ctx):
            return
        loan = _loan(ctx, plan.environment)
        if not _retake_lock(ctx, loan, f"{plan.target} slot with {ctx.version}"):
            return
        if loan.platform.traffic().live == plan.target:
            ctx.report(f"{loan.name}'s {plan.target} serves its traffic, so it is left "
                       f"running ({ctx.version}).")
            return
        self.actions.stop(_On(ctx, loan), plan.target)
        ctx.report(f"Stopped {loan.name}'s {plan.target} slot ({ctx.version}).")

    # -- rehearsal_smoke ----------------------------------------------------------------------

    def smoke(self, ctx: StepContext) -> StepResult:
        """Wait until the rehearsal slot is ready, then every health and smoke path of the
        rehearsal environment answers 2xx on it (the seed's ``staging-smoke-tests.sh``)."""
        plan = _Plan.of(ctx)
        loan = _loan(ctx, plan.environment)
        on = _On(ctx, loan)
        env = loan.environment
        if plan.deployed:
            timeout = self.actions.ready_timeout(env)
            remaining = ctx.deadline - ctx.now()
            timeout = max(min(timeout, remaining), timedelta(seconds=1))
            status = self.actions.wait_ready(on, plan.target, timeout)
            ctx.report(f"{loan.name}'s {plan.target} is ready: {status.version or ctx.version} "
                       f"({status.detail}).")
        base = loan.platform.slot_url(plan.target)
        paths = _unique([*env.health, *env.smoke])
        probes = self.http.check_paths(base, paths)
        failed = [probe for probe in probes if not probe.ok]
        lines = "; ".join(probe.describe() for probe in probes)
        if failed:
            ctx.report(f"Smoke tests on {loan.name}'s {plan.target} ({base}): {lines}")
            details = "; ".join(probe.describe() for probe in failed)
            raise StepFailure(
                f"smoke tests failed on {loan.name} ({ctx.version}): {details}",
                hint=f"{ctx.environment_name} is untouched; {loan.name} is put back",
                retryable=True, result={"checks": _rows(probes)})
        ctx.report(f"Smoke tests on {loan.name}'s {plan.target} ({base}): {lines}")
        return {"slot": plan.target.value, "url": base, "checks": _rows(probes)}

    # -- rehearsal_switch ---------------------------------------------------------------------

    def switch(self, ctx: StepContext) -> StepResult:
        """Route the rehearsal environment's public URL to the new slot and record it (the
        seed's ``deploy-staging.sh``: staging then serves the version)."""
        plan, version = _Plan.of(ctx), _version(ctx)
        loan = _loan(ctx, plan.environment)
        if not plan.deployed:
            ctx.report(f"{loan.name} already serves {version} on {plan.target}: no switch.")
            return {"switched": False, "live": plan.target.value}
        self.actions.switch(_On(ctx, loan), plan.target)
        loan.record_switch(plan.target, version)
        kept = f"; {plan.previous} stays up until the rehearsal passes" if plan.live else ""
        ctx.report(f"{loan.name} serves {version} on {plan.target} "
                   f"({loan.environment.url}){kept}.")
        return {"switched": True, "live": plan.target.value, "previous_slot":
                plan.live.value if plan.live else None, "previous_version": plan.live_version}

    def undo_switch(self, ctx: StepContext) -> None:
        """Switch the rehearsal environment back to the colour that served before, unless the
        rehearsal passed. A previous colour that is gone is said, not redeployed: staging is
        not production, and a person can redeploy it with one command."""
        plan = _Plan.of(ctx)
        if not plan.deployed:
            return
        if _passed(ctx):
            ctx.report(f"{plan.environment} keeps {ctx.version}: its rehearsal had passed.")
            return
        loan = _loan(ctx, plan.environment)
        if plan.live is None:
            ctx.report(f"Nothing served {loan.name} before the rehearsal: {plan.target} keeps "
                       f"serving {ctx.version}.")
            return
        if not _retake_lock(ctx, loan, f"traffic on {plan.target}"):
            return
        traffic = loan.platform.traffic()
        status = traffic.slots.get(plan.live)
        if traffic.live == plan.live:
            loan.record_switch(plan.live, plan.live_version or "unknown")
            return
        if status is None or not status.running or (
                plan.live_version and status.version and status.version != plan.live_version):
            ctx.report(f"{loan.name}'s previous {plan.live} slot ({plan.previous}) is gone: "
                       f"{plan.target} keeps serving {ctx.version}. To put the old version "
                       f"back: `/qlp deploy {plan.live_version or '<version>'} to "
                       f"{loan.name}`.", broadcast=True)
            return
        self.actions.switch(_On(ctx, loan), plan.live)
        loan.record_switch(plan.live, plan.live_version or "unknown")
        ctx.report(f"{loan.name} switched back to {plan.live} ({plan.previous}).")

    # -- rehearsal_compare --------------------------------------------------------------------

    def compare(self, ctx: StepContext) -> StepResult:
        """The seed's ``compare-performance.sh --baseline-env production --test-env staging
        --duration 300s``: both public URLs sampled over the same period; stop when the
        rehearsal's p95 exceeds ``max_slowdown`` times the live version's."""
        plan, version = _Plan.of(ctx), _version(ctx)
        loan = _loan(ctx, plan.environment)
        rehearsal = ctx.policy.rehearsal_of(ctx.environment_name)
        duration, limit = rehearsal.compare_for, rehearsal.max_slowdown
        if duration > COMPARE_LONGEST:
            raise StepFailure(
                f"rehearsal.compare_for of {ctx.environment_name} is "
                f"{format_duration(duration)}; the comparison runs at most "
                f"{format_duration(COMPARE_LONGEST)}",
                hint=f"set environments.{ctx.environment_name}.rehearsal.compare_for to 1h "
                     "or less (the seed's is 300s)")
        in_a_row = MonitoringThresholds.from_policy(ctx.policy.monitoring).critical_failures
        interval = min(COMPARE_EVERY, duration / 10)
        total = max(1, math.ceil(duration / interval))
        test, live = loan.environment, ctx.environment
        test_paths, live_paths = (_unique([*test.health, *test.smoke]),
                                  _unique([*live.health, *live.smoke]))
        validated = ctx.result_of("final_validation")
        live_version = validated.get("live_version")
        if validated and validated.get("live") is None:
            # A first deployment: there is no live version to be slower than.
            self._finish(ctx, loan, plan)
            ctx.report(f"Rehearsal passed: nothing is live on {ctx.environment_name} yet, so "
                       f"there is no performance to compare {loan.name} with. {loan.name} "
                       f"keeps {version}; deploying to {ctx.environment_name} now.")
            return {"passed": True, "compared": False, "environment": loan.name}
        ctx.report(f"Comparing {loan.name} ({version}) with {ctx.environment_name} "
                   f"({live_version or 'its live version'}) for {format_duration(duration)}: "
                   f"{', '.join(test_paths)} on {test.url} and {', '.join(live_paths)} on "
                   f"{live.url} every {format_duration(interval)} ({total} rounds); it stops "
                   f"if {loan.name}'s p95 is over {limit:g}x {ctx.environment_name}'s.")
        samples = _Samples()
        started, next_progress = ctx.now(), 0.25
        for number in range(1, total + 1):
            wait = (started + interval * number - ctx.now()).total_seconds()
            if wait > 0:
                ctx.sleep(wait)
            failing = samples.add(self.http.check_paths(test.url, test_paths),
                                  self.http.check_paths(live.url, live_paths))
            if failing and samples.failing_in_a_row >= in_a_row:
                details = "; ".join(probe.describe() for probe in failing)
                ctx.report(f"Round {number}/{total}: {details}")
                raise StepFailure(
                    f"{loan.name} failed {samples.failing_in_a_row} checks in a row while "
                    f"compared ({version}): {details}",
                    hint=f"{ctx.environment_name} is untouched; {loan.name} is put back",
                    result={**samples.result(limit), "passed": False})
            if failing:
                ctx.report(f"Round {number}/{total}: "
                           + "; ".join(probe.describe() for probe in failing))
            if number / total >= next_progress and number < total:
                while next_progress <= number / total:
                    next_progress += 0.25
                ctx.report(f"Comparing: {format_duration(ctx.now() - started)} of "
                           f"{format_duration(duration)}, {samples.describe(loan.name, ctx)}.")
        figures = samples.result(limit)
        staging_p95, live_p95 = figures["staging_p95_ms"], figures["live_p95_ms"]
        if staging_p95 is None or live_p95 is None:
            which = loan.name if staging_p95 is None else ctx.environment_name
            raise StepFailure(
                f"no answer from {which} during the comparison: the two versions cannot be "
                f"compared ({samples.describe(loan.name, ctx)})",
                hint=f"{ctx.environment_name} is untouched", result={**figures,
                                                                     "passed": False})
        reference = max(live_p95, RESPONSE_FLOOR_MS)
        ratio = staging_p95 / reference
        said = (f"p95 {staging_p95:.0f} ms on {loan.name} ({version}) against "
                f"{live_p95:.0f} ms on {ctx.environment_name} ({live_version or 'live'}) over "
                f"{format_duration(ctx.now() - started)} ({samples.rounds} rounds), "
                f"{ratio:.2f}x" + (f" of the {RESPONSE_FLOOR_MS:.0f} ms floor (a faster p95 "
                                   f"compares as {RESPONSE_FLOOR_MS:.0f} ms)"
                                   if live_p95 < RESPONSE_FLOOR_MS else ""))
        if staging_p95 > limit * reference:
            ctx.report(f"{loan.name} is slower than allowed: {said} > {limit:g}x.")
            raise StepFailure(
                f"{loan.name} is too slow: {said}, over the {limit:g}x allowed "
                f"(rehearsal.max_slowdown)",
                hint=f"{ctx.environment_name} is untouched; {loan.name} is put back",
                result={**figures, "ratio": round(ratio, 3), "passed": False})
        self._finish(ctx, loan, plan)
        ctx.report(f"Rehearsal passed: {said} (≤ {limit:g}x). {loan.name} keeps {version}; "
                   f"deploying to {ctx.environment_name} now.")
        return {**figures, "ratio": round(ratio, 3), "passed": True, "compared": True,
                "environment": loan.name}

    def _finish(self, ctx: StepContext, loan: LoanedEnvironment, plan: _Plan) -> None:
        """Passed: stop the rehearsal environment's old colour (as a standard deployment's
        last step does) and let go of its lock."""
        if plan.deployed and plan.live is not None and plan.live != plan.target:
            try:
                if loan.platform.traffic().live == plan.target:
                    self.actions.stop(_On(ctx, loan), plan.live)
                    ctx.report(f"Stopped {loan.name}'s old {plan.live} slot "
                               f"({plan.live_version or 'unknown version'}).")
            except QlpError as exc:  # tidying up; the rehearsal itself passed
                ctx.report(f"Could not stop {loan.name}'s old {plan.live} slot: "
                           f"{exc.message}; it keeps running.")
        loan.unlock()


class _Samples:
    """The comparison's answers: times of the 2xx ones per side, failures, the streak."""

    def __init__(self) -> None:
        self.staging: list[float] = []
        self.live: list[float] = []
        self.staging_failed = 0
        self.live_failed = 0
        self.rounds = 0
        self.failing_in_a_row = 0

    def add(self, staging: Sequence[Probe], live: Sequence[Probe]) -> list[Probe]:
        """Keep one round; the rehearsal side's failing probes."""
        self.rounds += 1
        self.staging.extend(p.elapsed_ms for p in staging if p.ok)
        self.live.extend(p.elapsed_ms for p in live if p.ok)
        failing = [p for p in staging if not p.ok]
        self.staging_failed += len(failing)
        self.live_failed += sum(1 for p in live if not p.ok)
        self.failing_in_a_row = self.failing_in_a_row + 1 if failing else 0
        return failing

    def describe(self, name: str, ctx: StepContext) -> str:
        def p95(times: list[float]) -> str:
            value = percentile(times, 95)
            return "no answers" if value is None else f"p95 {value:.0f} ms"
        return (f"{name} {p95(self.staging)} ({self.staging_failed} failed), "
                f"{ctx.environment_name} {p95(self.live)} ({self.live_failed} failed), "
                f"{self.rounds} rounds")

    def result(self, limit: float) -> dict[str, Any]:
        return {"staging_p95_ms": percentile(self.staging, 95),
                "live_p95_ms": percentile(self.live, 95),
                "staging_answers": len(self.staging), "live_answers": len(self.live),
                "staging_failed": self.staging_failed, "live_failed": self.live_failed,
                "rounds": self.rounds, "max_slowdown": limit}


# -- the steps ------------------------------------------------------------------------------------


def rehearsal_steps(http: HttpChecker, actions: SlotActions) -> tuple[Step, ...]:
    """The four rehearsal steps, each skipped unless the run's environment has
    ``promoted_from``; the comparison's duration and limit are read from the policy when it
    runs (``Policy.rehearsal_of``)."""
    steps = RehearsalSteps(http, actions)
    return (
        Step("rehearsal_deploy", "Staging rehearsal: deploy to the idle slot", steps.deploy,
             undo=steps.undo_deploy, timeout=DEPLOY_TIMEOUT, when=rehearses,
             retry=RetryPolicy(attempts=2, backoff=timedelta(seconds=5))),
        Step("rehearsal_smoke", "Staging rehearsal: ready and smoke tests", steps.smoke,
             timeout=READY_TIMEOUT, when=rehearses,
             retry=RetryPolicy(attempts=2, backoff=timedelta(seconds=5))),
        Step("rehearsal_switch", "Staging rehearsal: switch staging's traffic", steps.switch,
             undo=steps.undo_switch, timeout=timedelta(minutes=35), when=rehearses,
             retry=RetryPolicy(attempts=3, backoff=timedelta(seconds=2))),
        Step("rehearsal_compare", "Staging rehearsal: performance against the live version",
             steps.compare, timeout=COMPARE_LONGEST + COMPARE_GRACE, when=rehearses),
    )


# -- helpers ---------------------------------------------------------------------------------------


def _version(ctx: StepContext) -> str:
    if not ctx.version:
        raise StepFailure("a rehearsal needs a version")
    return ctx.version


def _loan(ctx: StepContext, name: str | None = None) -> LoanedEnvironment:
    source = name or ctx.policy.promoted_from(ctx.environment_name)
    if source is None:
        raise StepFailure(f"{ctx.environment_name} is promoted from no environment")
    if not isinstance(ctx, ReachesOtherEnvironments):
        raise StepFailure(f"this run cannot act on {source}: its step context reaches no "
                          "other environment")
    return ctx.other_environment(source)


def _take_lock(ctx: StepContext, loan: LoanedEnvironment) -> None:
    """Take the rehearsal environment's lock: wait for a run under way there (through the
    step's sleep, up to ``LOCK_WAIT``), refuse at once for a person's lock or a parked one."""
    busy = loan.lock()
    if busy is None:
        return
    waited = timedelta(0)
    if busy.run_under_way:
        ctx.report(f"{busy.describe()}: the rehearsal waits for it (up to "
                   f"{format_duration(LOCK_WAIT)}).")
    while busy is not None and busy.run_under_way and waited < LOCK_WAIT:
        ctx.sleep(LOCK_POLL.total_seconds())
        waited += LOCK_POLL
        busy = loan.lock()
    if busy is None:
        ctx.report(f"{loan.name} is free after {format_duration(waited)}: rehearsing now.")
        return
    after = f" after waiting {format_duration(waited)}" if waited else ""
    raise StepFailure(
        f"the rehearsal on {loan.name} cannot start{after}: {busy.describe()}",
        hint=(f"try again once that run has ended; {ctx.environment_name} is untouched"
              if busy.run_under_way else
              f"whoever holds it runs `/qlp unlock {loan.name}`; {ctx.environment_name} is "
              "untouched"))


def _retake_lock(ctx: StepContext, loan: LoanedEnvironment, what: str) -> bool:
    """For an undo: take the lock again; when someone else holds it now, leave staging as it
    is (their run may have replaced what the rehearsal left) and say so."""
    busy = loan.lock()
    if busy is None:
        return True
    ctx.report(f"{busy.describe()}: the rehearsal leaves {loan.name}'s {what} as it is.")
    return False


def _passed(ctx: StepContext) -> bool:
    """The comparison passed: staging keeps the version, whatever happens to production."""
    return ctx.result_of("rehearsal_compare").get("passed") is True


def _unique(paths: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(paths))


def _rows(probes: Sequence[Probe]) -> list[dict[str, Any]]:
    return [{"url": probe.url, "status": probe.status, "ms": probe.elapsed_ms}
            for probe in probes]
