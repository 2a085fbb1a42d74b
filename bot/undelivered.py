"""``/qlp status``'s lines about notifications that are not getting through.

Listed: messages that failed at least once and wait for their next try, and messages given up
in the last :data:`DEAD_WINDOW` (a dead message stays in the outbox; after a week it is old
news). A message still waiting for its first try is on its way and not listed, so a healthy
bot shows nothing at all.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from bot.formatting import escape, relative
from storage.db import Database
from storage.models import Notification
from storage.undelivered import Undelivered, read_undelivered

DEAD_WINDOW = timedelta(days=7)
SHOWN = 5
ERROR_LIMIT = 200


def undelivered_lines(database: Database, now: datetime, *, shown: int = SHOWN) -> list[str]:
    """A heading and the oldest ``shown`` stuck messages; no lines when all is delivered."""
    return report_lines(read_undelivered(database, dead_since=now - DEAD_WINDOW, limit=shown),
                        now)


def report_lines(report: Undelivered, now: datetime) -> list[str]:
    """:func:`undelivered_lines` of a report already read (status reads it with the rest)."""
    if not report.retrying and not report.dead:
        return []
    counts = []
    if report.retrying:
        counts.append(f"{report.retrying} waiting to be retried")
    if report.dead:
        counts.append(f"{report.dead} given up in the last {DEAD_WINDOW.days} days")
    lines = [f":warning: *Undelivered notifications*: {', '.join(counts)}"]
    lines.extend(_line(n, now) for n in report.oldest)
    more = report.retrying + report.dead - len(report.oldest)
    if more > 0:
        lines.append(f"… and {more} more")
    return lines


def _line(n: Notification, now: datetime) -> str:
    about = f" (deployment #{n.deployment_id})" if n.deployment_id is not None else ""
    tries = f"{n.attempts} attempt{'s' if n.attempts != 1 else ''}"
    error = escape(" ".join((n.last_error or "no error recorded").split())[:ERROR_LIMIT])
    head = f"• #{n.id} {n.kind} to {_target(n)}{about}"
    if n.state == "dead":
        return f"{head}: given up after {tries}: {error}"
    return f"{head}: {tries}, next try {relative(n.next_attempt_at, now)}; last error: {error}"


def _target(n: Notification) -> str:
    if n.kind == "pagerduty":
        return f"PagerDuty ({escape(n.channel)})"
    if n.kind == "email":
        to = n.payload.get("to")
        addresses = [str(a) for a in to] if isinstance(to, list) else [str(to)]
        shown = ", ".join(addresses[:3]) + (f" +{len(addresses) - 3}" if len(addresses) > 3
                                           else "")
        return escape(shown)
    return f"<#{n.channel}>"
