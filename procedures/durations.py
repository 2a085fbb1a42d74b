"""Durations as people write them in the policy file: ``45s``, ``5m``, ``1h``, ``1h30m``."""

from __future__ import annotations

import re
from datetime import timedelta

_PART = re.compile(r"(\d+)(ms|s|m|h|d)")
_WHOLE = re.compile(r"^(?:\d+(?:ms|s|m|h|d))+$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> timedelta:
    """Parse ``45s``/``5m``/``1h30m``; raise ``ValueError`` naming what is accepted."""
    cleaned = str(text).strip().lower().replace(" ", "")
    if not cleaned or not _WHOLE.match(cleaned):
        raise ValueError(
            f"{text!r} is not a duration; write a number and a unit: 45s, 5m, 1h, 1h30m, 2d"
        )
    seconds = sum(int(n) * _UNIT_SECONDS[u] for n, u in _PART.findall(cleaned))
    return timedelta(seconds=seconds)


def format_duration(delta: timedelta) -> str:
    """Render a duration the way people read it: ``1h 5m``, ``42s``, ``850ms``."""
    total = delta.total_seconds()
    if total < 1:
        return f"{round(total * 1000)}ms"
    seconds = round(total)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    units = ((days, "d"), (hours, "h"), (minutes, "m"), (secs, "s"))
    # The largest unit and the one right after it ("1h 5m"); never "9h 22s" for 9h 0m 22s.
    first = next((i for i, (v, _) in enumerate(units) if v), len(units) - 1)
    parts = [f"{v}{u}" for v, u in units[first:first + 2] if v] or ["0s"]
    return " ".join(parts[:1] if len(parts) == 2 and not units[first + 1][0] else parts)
