"""``/qlp stats [env] [days]``: the seed's dashboard figures (success rate, mean duration,
rollback frequency) and the four DORA keys over the last ``days`` (30 unless asked).

The figures are computed by :mod:`procedures.stats` from plain records built here; the
definitions live in its docstring.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta

from bot.context import HandlerContext
from bot.formatting import local_time
from bot.grammar import Command
from bot.lookup import environment_of
from procedures.durations import format_duration
from procedures.engine import CANCELLED_BY
from procedures.stats import DeploymentFacts, DeploymentStats, compute_stats
from procedures.store import DeploymentRecord

DEFAULT_DAYS = 30
# The newest this many deployments are read; a period that holds more says so.
READ_LIMIT = 5000


def stats_text(ctx: HandlerContext, command: Command) -> str:
    """The figures for one environment, or all of them, over the period."""
    services = ctx.services
    policy = services.policy
    env = environment_of(policy, command.environment) if command.environment else None
    days = command.number or DEFAULT_DAYS
    now = services.clock.now()
    rows = services.deployments.list_recent(env, limit=READ_LIMIT)
    stats = compute_stats(facts_of(rows), now=now, days=days,
                          frequency_environment=env or policy.environment_name(None))
    where = f" to {env}" if env else ""
    period = f"the last {days} day{'s' if days > 1 else ''}"
    if stats.empty:
        return f"No deployments{where} in {period}."
    truncated = (len(rows) == READ_LIMIT and rows[-1].created_at >= stats.since)
    return _render(ctx, stats, where, period, truncated)


def facts_of(rows: Iterable[DeploymentRecord]) -> list[DeploymentFacts]:
    """The records :func:`compute_stats` reads, from deployment rows."""
    return [DeploymentFacts(
        id=row.id or 0, kind=row.kind, environment=row.environment, state=row.state,
        requested_at=row.created_at, started_at=row.started_at, finished_at=row.finished_at,
        cancelled=bool(row.error and row.error.startswith(CANCELLED_BY)),
    ) for row in rows]


def _render(ctx: HandlerContext, s: DeploymentStats, where: str, period: str,
            truncated: bool) -> str:
    zone = ctx.services.policy.zone
    lines = [f"*Deployments{where}, {period}* (since {local_time(s.since, zone)})"]
    if truncated:
        lines.append(f"_Only the newest {READ_LIMIT} deployments were read; the figures cover "
                     "them alone._")
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


def _percent(ratio: float | None, part: int, whole: int) -> str:
    if ratio is None:
        return "n/a (nothing completed)"
    return f"{ratio:.0%} ({part} of {whole})"


def _duration(value: timedelta | None) -> str:
    return "n/a" if value is None else format_duration(value)


def _rate(value: float) -> str:
    return f"{value:.2f}".rstrip("0").rstrip(".") if value else "0"
