"""``/qlp stats [env] [days]``: the seed's dashboard figures (success rate, mean duration,
rollback frequency) and the four DORA keys over the last ``days`` (30 unless asked).

The database computes the period's totals in SQL (:mod:`storage.stats_queries`, exact over any
number of deployments) and :mod:`procedures.stats` turns them into the figures; the definitions
live in its docstring.
"""

from __future__ import annotations

from datetime import timedelta

from bot.context import HandlerContext
from bot.formatting import local_time
from bot.grammar import Command
from bot.lookup import environment_of
from procedures.durations import format_duration
from procedures.policy import Policy
from procedures.stats import DeploymentStats, period_start, stats_from_totals
from storage.stats_impact import DeploymentImpact, ImpactQueries
from storage.stats_queries import StatsQueries

DEFAULT_DAYS = 30


def stats_text(ctx: HandlerContext, command: Command) -> str:
    """The figures for one environment, or all of them, over the period."""
    services = ctx.services
    policy = services.policy
    env = environment_of(policy, command.environment) if command.environment else None
    days = command.number or DEFAULT_DAYS
    now = services.clock.now()
    frequency_environment = env or policy.environment_name(None)
    # One read in one snapshot for every figure (storage.db.Database.report).
    with services.database.report() as connection:
        totals = StatsQueries(services.database).totals(
            since=period_start(now, days), until=now, environment=env,
            frequency_environment=frequency_environment, connection=connection)
        stats = stats_from_totals(totals, now=now, days=days,
                                  frequency_environment=frequency_environment)
        where = f" to {env}" if env else ""
        period = f"the last {days} day{'s' if days > 1 else ''}"
        if stats.empty:
            return f"No deployments{where} in {period}."
        impact = ImpactQueries(services.database).impact(
            since=period_start(now, days), until=now, environment=env, connection=connection)
    return _render(ctx, stats, where, period, _impact(impact, days, services.policy))


def _render(ctx: HandlerContext, s: DeploymentStats, where: str, period: str,
            impact: list[str]) -> str:
    zone = ctx.services.policy.zone
    lines = [f"*Deployments{where}, {period}* (since {local_time(s.since, zone)})"]
    lines.append(
        f"Requests: {s.requests}: {s.completed} completed ({s.succeeded} succeeded, "
        f"{s.failed} failed or rolled back), {s.cancelled} cancelled, {s.not_run} rejected or "
        f"expired, {s.in_progress} in progress"
        + (f"; plus {s.deployments - s.requests} rollback procedure"
           f"{'s' if s.deployments - s.requests > 1 else ''}"
           if s.deployments > s.requests else ""))
    lines.append(f"Success rate: {_percent(s.success_rate, s.succeeded, s.completed)}")
    lines.append(f"Mean duration: {_duration(s.mean_duration)}")
    lines.append(f"Rollbacks: {s.rollbacks} ({s.automatic_rollbacks} automatic, "
                 f"{s.manual_rollbacks} manual), {_rate(s.rollbacks_per_week)} a week")
    lines.extend(impact)
    lines.append("*DORA*")
    lines.append(f"• Deployment frequency: {s.production_successes} successful "
                 f"deployment{'s' if s.production_successes != 1 else ''} to "
                 f"{s.frequency_environment}, {_rate(s.deployments_per_day)} a day "
                 f"({_rate(s.deployments_per_week)} a week)")
    lines.append(f"• Lead time (request to success, median): {_duration(s.lead_time_median)}")
    lines.append("• Change failure rate: "
                 + _percent(s.change_failure_rate, s.failed, s.completed))
    restore = _duration(s.restore_median)
    if s.restored_incidents:
        restore += (f" over {s.restored_incidents} incident"
                    f"{'s' if s.restored_incidents > 1 else ''}")
    if s.open_incidents:
        restore += f"; {s.open_incidents} not restored yet"
    lines.append(f"• Time to restore (median): {restore}")
    return "\n".join(lines)


def _impact(impact: DeploymentImpact, days: int, policy: Policy) -> list[str]:
    """The seed's dashboard figures "error rate during deployments" and "performance impact
    post-deployment" (storage.stats_impact)."""
    if impact.error_rate is None:
        errors = "n/a (no monitored deployment with request counts)"
    else:
        errors = (f"{impact.error_rate:.2%} ({impact.errors} failed of {impact.requests} "
                  f"requests over {impact.monitored} monitored deployment"
                  f"{'s' if impact.monitored != 1 else ''})")
    kept = policy.retention.step_results
    if kept is not None and timedelta(days=days) > kept:
        errors += f"; step results are kept {format_duration(kept)}, older ones not counted"
    if impact.mean_p95_ratio is None:
        performance = "n/a (no version compared with the one before it yet)"
    else:
        change = impact.mean_p95_ratio - 1
        performance = (f"p95 {change:+.0%} on average against the previous version "
                       f"({impact.compared} comparison{'s' if impact.compared != 1 else ''})")
    return [f"Error rate during deployments: {errors}",
            f"Performance impact post-deployment: {performance}"]


def _percent(ratio: float | None, part: int, whole: int) -> str:
    if ratio is None:
        return "n/a (nothing completed)"
    return f"{ratio:.0%} ({part} of {whole})"


def _duration(value: timedelta | None) -> str:
    return "n/a" if value is None else format_duration(value)


def _rate(value: float) -> str:
    return f"{value:.2f}".rstrip("0").rstrip(".") if value else "0"
