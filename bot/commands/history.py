"""``/qlp history [env] [n]``: the last n deployments (10 unless asked, at most 100), newest
first, one line each."""

from __future__ import annotations

import re
from datetime import datetime

from bot.cards import STATE_EMOJI
from bot.context import HandlerContext
from bot.formatting import escape, local_time
from bot.grammar import Command
from bot.lookup import environment_of
from procedures.durations import format_duration
from storage.stats_queries import HistoryEntry, StatsQueries

DEFAULT_COUNT = 10
ERROR_LIMIT = 80
# Slack truncates a message's text past 40,000 characters; a long history stops well before,
# saying how many lines it left out.
TEXT_BUDGET = 12000
# The engine's own "cancelled by <@U…>" is the one error whose mention is shown as one; any
# other mention in an error (a service's words) stays text (issue 13, finding 4).
_CANCELLED_BY = re.compile(r"cancelled by &lt;@([UW][A-Z0-9]{2,20})&gt;")


def history_text(ctx: HandlerContext, command: Command) -> str:
    """One line per deployment: number, kind, version, environment, state, people, times."""
    services = ctx.services
    env = environment_of(services.policy, command.environment) if command.environment else None
    count = command.number or DEFAULT_COUNT
    # The deployments and their approvers in one read (not one query per line).
    deployments = StatsQueries(services.database).history(env, count)
    where = f" to {env}" if env else ""
    if not deployments:
        return f"No deployments{where} yet."
    header = (f"*The last {len(deployments)} deployment{'s' if len(deployments) > 1 else ''}"
              f"{where}*, newest first:")
    lines = [header]
    used = len(header)
    for shown, deployment in enumerate(deployments):
        line = _line(ctx, deployment)
        if used + len(line) + 1 > TEXT_BUDGET:
            lines.append(f"… and {len(deployments) - shown} more not shown; ask for fewer, "
                         f"e.g. `/qlp history {env + ' ' if env else ''}20`.")
            break
        lines.append(line)
        used += len(line) + 1
    return "\n".join(lines)


def _line(ctx: HandlerContext, entry: HistoryEntry) -> str:
    services = ctx.services
    zone = services.policy.zone
    deployment, approvers = entry.deployment, entry.approvers
    state = deployment.state
    parts = [
        f"#{deployment.id} {deployment.kind.value} {deployment.version or '-'} → "
        f"{deployment.environment}",
        f"{STATE_EMOJI[state]} {state.value.replace('_', ' ')}",
        f"by <@{deployment.requester}>",
        "approved by " + ", ".join(f"<@{a}>" for a in approvers) if approvers
        else "no approvals",
    ]
    if deployment.started_at is not None:
        parts.append(f"started {local_time(deployment.started_at, zone)}")
        parts.append(_duration(deployment.started_at, deployment.finished_at,
                               services.clock.now()))
    else:
        parts.append(f"requested {local_time(deployment.created_at, zone)}, not started")
    if deployment.error:
        parts.append(f"error: {_short(deployment.error)}")
    return " · ".join(parts)


def _duration(started: datetime, finished: datetime | None, now: datetime) -> str:
    if finished is None:
        return f"running for {format_duration(now - started)}"
    return f"took {format_duration(finished - started)}"


def _short(error: str) -> str:
    """First line, clipped; escaped so it cannot format or ping, user mentions kept."""
    first = error.strip().splitlines()[0] if error.strip() else ""
    if len(first) > ERROR_LIMIT:
        first = first[: ERROR_LIMIT - 1] + "…"
    shown = escape(first).replace("`", "'")
    return _CANCELLED_BY.sub(r"cancelled by <@\1>", shown) if _CANCELLED_BY.fullmatch(shown) \
        else shown
