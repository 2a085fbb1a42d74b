"""The monitoring chart: one picture of a monitoring window, drawn headless with matplotlib.

:func:`draw` turns a chart *spec* (plain JSON, as ``bot.chart_reporter`` stores it in the
outbox) into a matplotlib ``Figure``; :func:`render_png` gives its PNG bytes. The spec:

- ``title``: the chart's heading (plain text, drawn as text: nothing is interpreted);
- ``series``: the monitor step's checks, ``[[seconds since the start, response ms, ok], ...]``;
- ``baseline``: the previous version's ``{"version", "p50", "p95"}`` (ms), or None;
- ``thresholds``: ``response_time_ms`` (a slow response warning), ``response_time_ratio`` (the
  manual-rollback multiple of the baseline's p50), ``health_failures`` (the automatic rollback
  at that many failed checks), ``health_window_s`` (the window of the rolling percentiles);
- ``rollback_at_s``: seconds since the start when the rollback began, or None.

Top: the response time's p50 and p95 over the last ``health_window_s`` at each check, with the
baseline's p50/p95 (dotted) and the thresholds (dashed). Bottom: failed checks, one bar per
failed check and the running total against the automatic-rollback line. A rollback is a red
vertical line on both. Every reference line carries a ``gid`` (``baseline-p50``,
``baseline-p95``, ``threshold-manual``, ``threshold-slow``, ``threshold-health-failures``,
``rollback``) so tests read the figure's data, not its pixels.

The figure is a plain ``matplotlib.figure.Figure`` on an Agg canvas: no pyplot, no global
state, safe on the sender's worker thread. Its size is fixed: :data:`WIDTH` x :data:`HEIGHT`
pixels.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.figure import Figure

WIDTH, HEIGHT = 1000, 600
"""The PNG's size in pixels."""
DPI = 100
RESPONSE_FLOOR_MS = 50.0  # as procedures.checks.monitoring compares a fast baseline
MAX_POINTS = 1000
"""A longer series is thinned (every n-th check, and every failed one) before it is stored
and drawn: the chart is 1000 pixels wide."""


def draw(spec: Mapping[str, Any]) -> Figure:
    """The chart of ``spec`` (see the module docstring) as a figure."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    series = _points(spec.get("series"))
    thresholds = dict(spec.get("thresholds") or {})
    baseline = spec.get("baseline") or None
    window = float(thresholds.get("health_window_s") or 300.0)
    figure = Figure(figsize=(WIDTH / DPI, HEIGHT / DPI), dpi=DPI)
    FigureCanvasAgg(figure)
    top, bottom = figure.subplots(2, 1, sharex=True, height_ratios=[3, 2])
    figure.suptitle(str(spec.get("title") or "Monitoring"), fontsize=12)
    minutes = [t / 60 for t, _, _ in series]

    p50, p95 = rolling_percentiles(series, window)
    top.plot(minutes, p50, color="tab:blue", label="p50", gid="p50")
    top.plot(minutes, p95, color="tab:orange", label="p95", gid="p95")
    if isinstance(baseline, Mapping):
        name = str(baseline.get("version") or "previous")
        for key, color in (("p50", "tab:blue"), ("p95", "tab:orange")):
            value = _number(baseline.get(key))
            if value is not None:
                top.axhline(value, color=color, linestyle=":", linewidth=1,
                            label=f"baseline {key} ({name})", gid=f"baseline-{key}")
        ratio = _number(thresholds.get("response_time_ratio"))
        base_p50 = _number(baseline.get("p50"))
        if ratio is not None and base_p50 is not None:
            top.axhline(ratio * max(base_p50, RESPONSE_FLOOR_MS), color="tab:red",
                        linestyle="--", linewidth=1,
                        label=f"manual rollback ({ratio:g}x baseline p50)",
                        gid="threshold-manual")
    slow = _number(thresholds.get("response_time_ms"))
    if slow is not None:
        top.axhline(slow, color="tab:purple", linestyle="--", linewidth=1,
                    label=f"slow response warning ({slow:g} ms)", gid="threshold-slow")
    top.set_ylabel("response time (ms)")
    top.set_ylim(bottom=0)

    failed_each = [0 if ok else 1 for _, _, ok in series]
    running: list[int] = []
    total = 0
    for failed in failed_each:
        total += failed
        running.append(total)
    width = max(window / 60 / 10, 0.05)
    bottom.bar([m for m, f in zip(minutes, failed_each, strict=True) if f],
               [1] * sum(failed_each), width=width, color="tab:red", alpha=0.5,
               label="failed check", gid="failed")
    bottom.step(minutes, running, where="post", color="tab:red", label="failed in total",
                gid="failed-total")
    limit = _number(thresholds.get("health_failures"))
    if limit is not None:
        bottom.axhline(limit, color="tab:red", linestyle="--", linewidth=1,
                       label=f"automatic rollback ({limit:g} failed)",
                       gid="threshold-health-failures")
    bottom.set_ylabel("failed checks")
    bottom.set_xlabel("minutes since monitoring began")
    bottom.set_ylim(bottom=0, top=max(float(limit or 0), float(total), 1.0) * 1.15)

    rollback = _number(spec.get("rollback_at_s"))
    if rollback is not None:
        for axes in (top, bottom):
            axes.axvline(rollback / 60, color="red", linewidth=2,
                         label="rollback" if axes is top else None, gid="rollback")
    for axes in (top, bottom):
        axes.grid(True, alpha=0.3)
        axes.legend(loc="upper left", fontsize=7, framealpha=0.8)
    figure.subplots_adjust(left=0.08, right=0.98, top=0.92, bottom=0.09, hspace=0.12)
    return figure


def render_png(spec: Mapping[str, Any]) -> bytes:
    """The chart of ``spec`` as PNG bytes (:data:`WIDTH` x :data:`HEIGHT` pixels)."""
    figure = draw(spec)
    out = io.BytesIO()
    # No bbox_inches="tight": the size stays exactly WIDTH x HEIGHT. No software/date
    # metadata, so the same spec gives the same bytes (a retried upload is the same file).
    figure.savefig(out, format="png", dpi=DPI, metadata={"Software": None})
    return out.getvalue()


def png_size(data: bytes) -> tuple[int, int]:
    """``(width, height)`` from a PNG's IHDR chunk; ValueError if ``data`` is not a PNG."""
    if len(data) < 24 or data[:8] != b"\x89PNG\r\n\x1a\n" or data[12:16] != b"IHDR":
        raise ValueError("not a PNG")
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def rolling_percentiles(series: Sequence[tuple[float, float, bool]], window_s: float
                        ) -> tuple[list[float], list[float]]:
    """p50 and p95 of the response times within ``window_s`` up to each check."""
    p50: list[float] = []
    p95: list[float] = []
    start = 0
    for index, (at, _, _) in enumerate(series):
        while series[start][0] < at - window_s:
            start += 1
        values = sorted(ms for _, ms, _ in series[start:index + 1])
        p50.append(_percentile(values, 0.50))
        p95.append(_percentile(values, 0.95))
    return p50, p95


def _percentile(values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile of sorted ``values``."""
    rank = max(1, math.ceil(fraction * len(values)))
    return float(values[rank - 1])


def _points(raw: Any) -> list[tuple[float, float, bool]]:
    """The spec's series, cleaned (odd rows dropped) and thinned to :data:`MAX_POINTS`."""
    points: list[tuple[float, float, bool]] = []
    for row in raw or []:
        if not isinstance(row, Sequence) or len(row) < 3:
            continue
        at, ms = _number(row[0]), _number(row[1])
        if at is None or ms is None:
            continue
        points.append((at, ms, bool(row[2])))
    points.sort(key=lambda p: p[0])
    return thin(points)


def thin(rows: Sequence[Any], limit: int = MAX_POINTS) -> list[Any]:
    """At most about ``limit`` of the series' rows ``[t, ms, ok]``: every n-th, and every
    failed check (the failures are what the chart is about)."""
    if len(rows) <= limit:
        return list(rows)
    step = math.ceil(len(rows) / limit)
    return [row for i, row in enumerate(rows) if i % step == 0 or not row[2]]


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None
