"""Small text helpers shared by the Slack replies: times in the policy zone, relative times."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from procedures.durations import format_duration
from procedures.mrkdwn import escape

__all__ = ["escape", "local_time", "relative"]
# ``escape`` is procedures.mrkdwn's, the one escaping function of user- and service-supplied
# text put into Slack mrkdwn; the message builders import it from here.


def local_time(moment: datetime, zone: ZoneInfo) -> str:
    """``Tue 2026-12-01 10:00 UTC`` in the policy's zone."""
    local = moment.astimezone(zone)
    return f"{local:%a %Y-%m-%d %H:%M} {local.tzname()}"


def relative(moment: datetime, now: datetime) -> str:
    """``in 2h 5m`` / ``3m ago``."""
    delta = moment - now
    if abs(delta.total_seconds()) < 60:
        return "now"
    if delta.total_seconds() > 0:
        return f"in {format_duration(delta)}"
    return f"{format_duration(-delta)} ago"
