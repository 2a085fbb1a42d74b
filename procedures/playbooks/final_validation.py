"""The checks of the standard playbook's ``final_validation`` step, runnable outside a run too.

:class:`FinalValidation` runs, for one environment, the health of the live URL, the live slot's
recent errors, and the optional CI status, slow queries, container CPU/memory and database
backup age (each when the environment configures it; :class:`FinalChecks` says how each one
gates). Every check gives a :class:`~procedures.checks.findings.Finding`; one that must stop a
deployment also gives the :class:`~procedures.errors.StepFailure` the step raises.

Two callers, one code path:

- the ``final_validation`` step (``procedures.playbooks.standard``) stops at the first check
  that fails and raises its failure, exactly as the step always did;
- the bot's preflight (``bot.preflight``) runs every check (``collect_all=True``), turns a
  check that raises into an inconclusive finding, and stores the findings on the deployment so
  approvers see them on the card. It never changes anything: every check only reads.

The checks need only a :class:`CheckContext` (a :class:`~procedures.playbook.StepContext`
is one), and are given the live colour and version rather than asking the platform, so the
preflight can pass what the bot recorded without touching the platform.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

import httpx

from procedures.checks.ci_status import GitHubActionsStatus
from procedures.checks.findings import CheckVerdict, Finding
from procedures.checks.http import HttpChecker, Probe
from procedures.checks.slow_queries import DEFAULT_LIMIT, SlowQueryCheck
from procedures.durations import format_duration
from procedures.errors import ExternalServiceError, MetricsUnavailable, QlpError, StepFailure
from procedures.model import Slot
from procedures.platforms.base import Platform, SupportsBackupAge
from procedures.playbook import MetricsSource
from procedures.policy import CiSettings, Environment, Policy

__all__ = [
    "PRE_DEPLOY_ERROR_WINDOW",
    "CheckContext",
    "Checked",
    "FinalChecks",
    "FinalValidation",
    "Validation",
    "report_probes",
]

PRE_DEPLOY_ERROR_WINDOW = timedelta(hours=1)  # seed 2.1: requests/failed over PT1H
WARNING_MARK = ":large_orange_circle:"  # amber, as on the card
EVIDENCE_CHARS = 300  # one line of evidence on a card, not a log


class CheckContext(Protocol):
    """What the checks use: a subset of :class:`~procedures.playbook.StepContext`."""

    @property
    def environment_name(self) -> str: ...
    @property
    def environment(self) -> Environment: ...
    @property
    def policy(self) -> Policy: ...
    @property
    def platform(self) -> Platform: ...
    @property
    def metrics(self) -> MetricsSource: ...

    def now(self) -> datetime: ...

    def report(self, text: str, *, broadcast: bool = False) -> None: ...


@dataclass(frozen=True)
class FinalChecks:
    """What ``final_validation``'s optional checks need from outside the policy file.

    ``tokens`` maps a CI section's ``token_env`` (``GITHUB_TOKEN``) to the token the bot's
    settings hold (the policy names the token, never holds it); ``ci_transport`` replaces the
    network of the CI check in tests; ``slow_query_relation`` is the view the slow-query check
    reads (tests point it at a stand-in, see ``procedures.checks.slow_queries``).

    How each check acts is the policy's ``validation`` section (``gate`` stops the step,
    ``warn`` gives an amber :attr:`CheckVerdict.WARNING` finding, says it in the thread and goes
    on); the defaults are the seed's (``exit 1`` gates, "consider postponing" warns):

    - **Health** (gate): every health path of the live URL answers 2xx.
    - **Recent errors** (warn): more than ``errors_per_hour`` failed requests on the live slot
      over the last hour (seed 2.1: "> 10 errors/hour, consider postponing"). No error data, or
      monitoring that cannot be read, is ``no_data`` (warn): the finding says "no data" (and
      why), never "0".
    - **CI status** (environment ``ci:``; gate): the newest run of the workflow on the branch
      must have completed successfully. A failed, cancelled or still running run, or no run at
      all, is a failure with the run as evidence; a CI check that cannot answer (network error,
      no permission, rate limit, unknown workflow) is **inconclusive** and acts the same way
      (retryable when GitHub said so).
    - **Slow queries** (environment ``slow_query_ms`` and ``database_url``; warn): more than
      ``slow_queries_max`` statements whose mean time exceeds ``slow_query_ms`` (seed 2.1:
      "> 5 slow queries"), listed as evidence. When the database cannot answer
      (``pg_stat_statements`` not installed or not preloaded, no permission, unreachable) the
      reason is reported ("...: slow queries not checked") and the step goes on.
    - **Container CPU/memory** (Azure environments): evidence only, never a gate; no data or an
      Azure Monitor error is reported as inconclusive (see
      ``procedures.platforms.azure.platform_metrics``).
    - **Database backup** (every platform that can read its database's backups,
      :class:`~procedures.platforms.base.SupportsBackupAge`: Azure when ``azure:`` names
      ``postgres_server``; gate): the newest completed backup must be at most
      ``backup_max_age`` old (seed 1.3: ``verify-backups.sh --age-limit 6h``); a stale backup
      or none at all is a failure with the figures, a platform error is inconclusive (retryable
      when the platform said so). Checked on a first deployment too.
    """

    tokens: Mapping[str, str] = field(default_factory=dict)
    ci_transport: httpx.BaseTransport | None = None
    slow_query_relation: str = "pg_stat_statements"


@dataclass(frozen=True)
class Checked:
    """One check's outcome: its finding (None for a check with nothing to show), the part of
    the step's result it contributes, and the failure that stops the step (None: it does not)."""

    finding: Finding | None
    result: Mapping[str, Any] = field(default_factory=dict)
    failure: StepFailure | None = None
    rule: str | None = None  # the validation key that decides it (None: the check's name)


@dataclass(frozen=True)
class Validation:
    """Every check's finding in order, the step's result, and the first gating failure."""

    findings: tuple[Finding, ...]
    result: Mapping[str, Any]
    failure: StepFailure | None


_Check = tuple[str, str, Callable[[], "Checked | None"]]


class FinalValidation:
    """Runs the final-validation checks with one :class:`HttpChecker` and :class:`FinalChecks`."""

    def __init__(self, http: HttpChecker, checks: FinalChecks | None = None) -> None:
        self.http = http
        self.checks = checks or FinalChecks()

    def run(self, ctx: CheckContext, live: Slot | None, live_version: str | None, *,
            collect_all: bool = False) -> Validation:
        """Run the checks for ``live`` (None: nothing is live yet).

        By default the first gating failure stops the checks (the step raises it). With
        ``collect_all`` every check runs and one that raises becomes an inconclusive finding.
        """
        findings: list[Finding] = []
        result: dict[str, Any] = {}
        failure: StepFailure | None = None
        for name, title, check in self._checks(ctx, live, live_version):
            checked = _tolerantly(ctx, name, title, check) if collect_all else check()
            if checked is None:
                continue
            checked = _as_policy_says(ctx, name, checked)
            if checked.finding is not None:
                findings.append(checked.finding)
            result.update(checked.result)
            if checked.failure is not None and failure is None:
                failure = checked.failure
                if not collect_all:
                    break
        return Validation(tuple(findings), result, failure)

    def _checks(self, ctx: CheckContext, live: Slot | None,
                live_version: str | None) -> Iterator[_Check]:
        env = ctx.environment
        if live is None:
            yield "health", "Health", lambda: _nothing_live(ctx, "health", "Health")
            yield "errors", "Recent errors", lambda: _nothing_live(ctx, "errors",
                                                                   "Recent errors")
        else:
            yield "health", "Health", lambda: self._health(ctx, live, live_version)
            yield "errors", "Recent errors", lambda: _errors(ctx, live, live_version)
        ci = env.ci
        if ci is not None:
            yield "ci", "CI status", lambda: self._ci_status(ctx, ci)
        database_url, threshold = env.database_url, env.slow_query_ms
        if threshold is not None and database_url:
            yield "slow_queries", "Slow queries", lambda: self._slow_queries(
                ctx, database_url, threshold)
        if env.platform == "azure" and live is not None:
            yield "usage", "Container CPU/memory", lambda: _platform_usage(ctx, live)
        yield "backup", "Database backup", lambda: _backup_age(ctx)

    # -- the checks ---------------------------------------------------------------------------

    def _health(self, ctx: CheckContext, live: Slot, live_version: str | None) -> Checked:
        env = ctx.environment
        probes = self.http.check_paths(env.url, env.health)
        report_probes(ctx, f"Health of {env.url} ({live_version} on {live})", probes)
        failed = [probe for probe in probes if not probe.ok]
        if failed:
            details = "; ".join(probe.describe() for probe in failed)
            return Checked(_finding(ctx, "health", "Health", CheckVerdict.FAILED, details),
                           failure=StepFailure(
                f"{ctx.environment_name} is not healthy before the deployment: {details}",
                hint="fix or roll back the live version first: deploying on top of an "
                     "unhealthy system hides what broke", retryable=True))
        if not probes:
            return Checked(_finding(ctx, "health", "Health", CheckVerdict.SKIPPED,
                                    f"no health paths configured for {env.url}"))
        return Checked(_finding(ctx, "health", "Health", CheckVerdict.OK,
                                f"{live_version or 'unknown version'} on {live}: "
                                + "; ".join(probe.describe() for probe in probes)))

    def _ci_status(self, ctx: CheckContext, ci: CiSettings) -> Checked:
        token = self.checks.tokens.get(ci.token_env) or None
        where = f"{ci.repository} {ci.workflow} on {ci.branch}"
        try:
            with GitHubActionsStatus(ci.api_url, token, self.checks.ci_transport) as github:
                run = github.latest(ci.repository, ci.workflow, ci.branch)
        except (ExternalServiceError, ValueError) as exc:
            reason = exc.message if isinstance(exc, ExternalServiceError) else str(exc)
            ctx.report(f"CI status of {where}: inconclusive ({reason}).")
            failure = StepFailure(
                f"the CI status of {where} is inconclusive: {reason}",
                retryable=isinstance(exc, ExternalServiceError) and exc.retryable,
                hint=f"check the workflow and the bot's {ci.token_env}, then ask again; a "
                     "deployment never starts on an unknown CI state",
            )
            failure.__cause__ = exc
            return Checked(_finding(ctx, "ci", "CI status", CheckVerdict.INCONCLUSIVE,
                                    f"CI {where}: inconclusive ({reason})"), failure=failure)
        ctx.report(run.describe())
        evidence = {"conclusion": run.conclusion, "status": run.status,
                    "run_url": run.run_url, "head_sha": run.head_sha}
        if run.green:
            return Checked(_finding(ctx, "ci", "CI status", CheckVerdict.OK, run.describe()),
                           {"ci": evidence})
        state = ("no run" if run.status == "none" else
                 run.conclusion if run.finished and run.conclusion else run.status)
        running = not run.finished and run.status != "none"
        # A run still going has no verdict yet: inconclusive, not failed (it gates either way).
        verdict = CheckVerdict.INCONCLUSIVE if running else CheckVerdict.FAILED
        return Checked(_finding(ctx, "ci", "CI status", verdict, run.describe()), {"ci": evidence},
                       StepFailure(f"CI is not green: {run.describe()}", retryable=running,
                                   hint=f"deploy once the newest {ci.workflow} run on "
                                        f"{ci.branch} succeeded (it is {state})"))

    def _slow_queries(self, ctx: CheckContext, database_url: str,
                      threshold_ms: float) -> Checked:
        most = ctx.policy.validation.slow_queries_max
        check = SlowQueryCheck(database_url, relation=self.checks.slow_query_relation)
        found = check.check(threshold_ms, limit=max(DEFAULT_LIMIT, most + 1))
        ctx.report(found.describe())
        if not found.available:
            return Checked(_finding(ctx, "slow_queries", "Slow queries",
                                    CheckVerdict.INCONCLUSIVE, found.describe()),
                           {"slow_queries": {"checked": False, "reason": found.reason}})
        count = len(found.queries)
        listed = "; ".join(query.describe() for query in found.queries)
        if count > most:
            message = (f"more than {most} database queries average more than "
                       f"{threshold_ms:g} ms: {listed}")
            return Checked(_finding(ctx, "slow_queries", "Slow queries", CheckVerdict.FAILED,
                                    message),
                           {"slow_queries": {"checked": True, "slow": count}},
                           failure=StepFailure(message, hint=(
                               "fix or index the slow queries first (or raise slow_query_ms or "
                               "validation.slow_queries_max in the policy if they are "
                               "expected)")))
        said = (f"{count} quer{'y' if count == 1 else 'ies'} over {threshold_ms:g} ms "
                f"(at most {most} before a warning)" + (f": {listed}" if listed else ""))
        return Checked(_finding(ctx, "slow_queries", "Slow queries", CheckVerdict.OK, said),
                       {"slow_queries": {"checked": True, "slow": count}})


def report_probes(ctx: CheckContext, heading: str, probes: Sequence[Probe]) -> None:
    """One report: ``heading`` and a bullet per probe."""
    lines = "\n".join(f"• {probe.describe()}" for probe in probes)
    ctx.report(f"{heading}:\n{lines}" if lines else f"{heading}: no paths to check.")


def _finding(ctx: CheckContext, check: str, title: str, verdict: CheckVerdict,
             evidence: str) -> Finding:
    line = " ".join(evidence.split())
    if len(line) > EVIDENCE_CHARS:
        line = line[:EVIDENCE_CHARS - 1] + "…"
    return Finding(check, title, verdict, line, ctx.now())


def _tolerantly(ctx: CheckContext, name: str, title: str,
                check: Callable[[], Checked | None]) -> Checked | None:
    """Run ``check``; an error becomes an inconclusive finding (the preflight must list every
    check, and an error is never a pass)."""
    try:
        return check()
    except Exception as exc:  # one broken check must not hide the others' findings
        reason = exc.message if isinstance(exc, QlpError) else f"{type(exc).__name__}: {exc}"
        return Checked(_finding(ctx, name, title, CheckVerdict.INCONCLUSIVE,
                                f"could not check: {reason}"))


def _nothing_live(ctx: CheckContext, name: str, title: str) -> Checked:
    return Checked(_finding(ctx, name, title, CheckVerdict.SKIPPED,
                            f"nothing is live on {ctx.environment_name} yet (first deployment)"))


def _errors(ctx: CheckContext, live: Slot, live_version: str | None) -> Checked:
    """The live slot's failed requests over the last hour against ``errors_per_hour``.

    No data (``None``: said as "no data") and monitoring that cannot be read
    (``MetricsUnavailable``: a 403, a query error, a partial result...: said as "could not be
    read" with Azure's code and message and what fixes it) both fall under the ``no_data``
    rule (warn or gate). Never "0"."""
    threshold = ctx.policy.validation.errors_per_hour
    window = format_duration(PRE_DEPLOY_ERROR_WINDOW)
    try:
        errors = ctx.metrics.error_count(live, ctx.now() - PRE_DEPLOY_ERROR_WINDOW)
    except MetricsUnavailable as exc:
        # Not "no data": the monitoring could not be read (a refused query, a missing role),
        # which is another fault with another fix; the reason (Azure's code and message, and
        # the fix) is what the approver needs to see. The policy's no_data rule still decides.
        said = (f"{exc.service} could not be read for the live {live} slot over the "
                f"last {window}: {exc.reason}")
        ctx.report(f"Recent errors: {said}.")
        failure = StepFailure(
            f"the errors of the live {live} slot of {ctx.environment_name} are unknown "
            f"({said}); validation.no_data is gate",
            retryable=exc.retryable,
            hint=exc.fix or "check the platform's monitoring, then ask again")
        failure.__cause__ = exc
        return Checked(_finding(ctx, "errors", "Recent errors", CheckVerdict.INCONCLUSIVE, said),
                       failure=failure, rule="no_data")
    if errors is None:
        said = f"no data: no error figures for the live {live} slot over the last {window}"
        ctx.report(f"Recent errors: {said}.")
        return Checked(
            _finding(ctx, "errors", "Recent errors", CheckVerdict.INCONCLUSIVE, said),
            failure=StepFailure(
                f"{said} on {ctx.environment_name}; validation.no_data is gate",
                retryable=True, hint="check the platform's monitoring, then ask again"),
            rule="no_data")
    if errors > threshold:
        said = (f"{errors} errors on the live {live} slot ({live_version}) in the last "
                f"{window}, more than {threshold}: consider postponing")
        return Checked(
            _finding(ctx, "errors", "Recent errors", CheckVerdict.FAILED, said),
            {"errors": errors},
            failure=StepFailure(
                f"the live {live} slot ({live_version}) had {errors} errors in the last "
                f"{window}, more than the {threshold} allowed (validation.errors is gate)",
                hint="investigate the errors before deploying; a new version would be blamed "
                     "for them"))
    ctx.report(f"Live {live} ({live_version}): {errors} errors in the last {window} "
               f"(warning above {threshold}).")
    return Checked(_finding(ctx, "errors", "Recent errors", CheckVerdict.OK,
                            f"{errors} errors on the live {live} slot in the last {window} "
                            f"(threshold {threshold})"), {"errors": errors})


def _platform_usage(ctx: CheckContext, live: Slot) -> Checked:
    """The live colour's container CPU/memory on Azure, reported as evidence (never a gate)."""
    # The reader lives with the Azure platform (it needs the SDK); imported only here.
    from procedures.platforms.azure.platform_metrics import live_usage

    title = "Container CPU/memory"
    try:
        usage = live_usage(ctx.platform, live, ctx.now())
    except QlpError as exc:
        ctx.report(f"Container CPU/memory of the live {live} slot: inconclusive "
                   f"({exc.message}).")
        return Checked(_finding(ctx, "usage", title, CheckVerdict.INCONCLUSIVE,
                                f"live {live} slot: inconclusive ({exc.message})"),
                       {"usage": {"inconclusive": True}})
    if usage is None:
        return Checked(None, {"usage": {}})
    ctx.report(usage.describe())
    verdict = CheckVerdict.INCONCLUSIVE if usage.inconclusive else CheckVerdict.OK
    return Checked(_finding(ctx, "usage", title, verdict, usage.describe()),
                   {"usage": {"inconclusive": usage.inconclusive,
                              "cpu_millicores_avg": usage.cpu_avg,
                              "memory_bytes_avg": usage.memory_avg,
                              "near_limit": usage.near_limit}})


def _backup_age(ctx: CheckContext) -> Checked | None:
    """The newest backup of the environment's database, on a platform that can read it
    (``SupportsBackupAge``): at most ``validation.backup_max_age`` old, or a failure (see
    :class:`FinalChecks`); None when the platform cannot read backups or names no database."""
    platform = ctx.platform
    if not isinstance(platform, SupportsBackupAge):
        return None
    title = "Database backup"
    limit = ctx.policy.validation.backup_max_age
    try:
        found = platform.newest_backup(ctx.now())
    except ExternalServiceError as exc:
        ctx.report(f"Database backups: inconclusive ({exc.message}).")
        failure = StepFailure(
            f"the latest database backup of {ctx.environment_name} is unknown: {exc.message}",
            retryable=exc.retryable,
            hint="give the bot's identity read access to the database's backups (on Azure "
                 "Microsoft.DBforPostgreSQL/flexibleServers/backups/read, or fix "
                 "postgres_server), then ask again; a deployment never starts without a known "
                 "recent backup (validation.backup: gate)",
        )
        failure.__cause__ = exc
        return Checked(_finding(ctx, "backup", title, CheckVerdict.INCONCLUSIVE,
                                f"inconclusive ({exc.message})"), failure=failure)
    if found is None:
        return None
    age = getattr(found, "age", None)
    latest = getattr(found, "latest", None)
    where = getattr(found, "server", None) or ctx.environment_name
    allowed = format_duration(limit)
    if latest is None or not isinstance(age, timedelta):
        said = f"{where}: no completed backup (at most {allowed} old is required)"
        ctx.report(f"Database backup: {said}.")
        return Checked(_finding(ctx, "backup", title, CheckVerdict.FAILED, said),
                       failure=StepFailure(
            f"the database of {ctx.environment_name} ({where}) has no completed backup; at "
            f"most {allowed} old is required (validation.backup_max_age)",
            hint="check the database's backup settings (or take an on-demand backup), then "
                 "deploy"))
    when = latest.describe() if hasattr(latest, "describe") else str(latest)
    said = f"{where}: newest backup {when}, {format_duration(age)} old"
    if age > limit:
        said += f", older than the {allowed} allowed"
        ctx.report(f"Database backup: {said}.")
        return Checked(_finding(ctx, "backup", title, CheckVerdict.FAILED, said),
                       failure=StepFailure(
            f"the newest backup of the database of {ctx.environment_name} ({where}) is "
            f"{format_duration(age)} old: older than the {allowed} allowed "
            "(validation.backup_max_age)",
            hint="find out why the automatic backup is late, or take an on-demand backup "
                 "(az postgres flexible-server backup create), then deploy"))
    ctx.report(f"Database backup: {said} (at most {allowed}).")
    completed = getattr(latest, "completed", None)
    return Checked(_finding(ctx, "backup", title, CheckVerdict.OK, said),
                   {"backup": {"server": where,
                               "latest": completed.isoformat() if isinstance(
                                   completed, datetime) else None,
                               "type": getattr(latest, "backup_type", None),
                               "name": getattr(latest, "name", None),
                               "age_s": round(age.total_seconds()),
                               "max_age_s": round(limit.total_seconds())}})


def _as_policy_says(ctx: CheckContext, name: str, checked: Checked) -> Checked:
    """Apply the policy's ``validation`` rule of a check that would stop the step: ``gate``
    keeps the failure, ``warn`` turns it into an amber warning finding said in the thread."""
    if checked.failure is None or checked.finding is None:
        return checked
    rule = checked.rule or name
    action = getattr(ctx.policy.validation, rule, "gate")
    if action != "warn":
        return checked
    finding = dataclasses.replace(checked.finding, verdict=CheckVerdict.WARNING)
    ctx.report(f"{WARNING_MARK} Warning ({finding.title}): {finding.evidence}. Not blocking "
               f"(validation.{rule}: warn).")
    return Checked(finding, checked.result, None, checked.rule)
