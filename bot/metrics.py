"""A few Prometheus figures for ``GET /metrics``, without a client library."""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Callable, Mapping

log = logging.getLogger(__name__)

_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 3.0, float("inf"))


class Metrics:
    """Request counts by status, a histogram of ack latency, and gauges read on demand."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: Counter[int] = Counter()
        self._buckets = [0] * len(_BUCKETS)
        self._sum = 0.0
        self._count = 0
        self._gauges: dict[str, Callable[[], float]] = {}
        self._labelled: dict[str, tuple[str, Callable[[], Mapping[str, float]]]] = {}

    def observe_request(self, status: int, seconds: float) -> None:
        with self._lock:
            self._requests[status] += 1
            self._sum += seconds
            self._count += 1
            for i, bound in enumerate(_BUCKETS):
                if seconds <= bound:
                    self._buckets[i] += 1

    def gauge(self, name: str, read: Callable[[], float]) -> None:
        """Register a gauge whose value is read at scrape time."""
        self._gauges[name] = read

    def labelled_gauge(self, name: str, label: str,
                       read: Callable[[], Mapping[str, float]]) -> None:
        """Register a gauge with one label, read at scrape time as ``{label value: value}``
        (no samples when the mapping is empty)."""
        self._labelled[name] = (label, read)

    def render(self) -> str:
        with self._lock:
            lines = ["# TYPE qlp_slack_requests_total counter"]
            lines += [f'qlp_slack_requests_total{{status="{s}"}} {n}'
                      for s, n in sorted(self._requests.items())]
            lines.append("# TYPE qlp_slack_ack_seconds histogram")
            for bound, count in zip(_BUCKETS, self._buckets, strict=True):
                label = "+Inf" if bound == float("inf") else f"{bound}"
                lines.append(f'qlp_slack_ack_seconds_bucket{{le="{label}"}} {count}')
            lines += [f"qlp_slack_ack_seconds_sum {self._sum:.6f}",
                      f"qlp_slack_ack_seconds_count {self._count}"]
        for name, read in sorted(self._gauges.items()):
            try:
                value = read()
            except Exception:  # a gauge that cannot be read is left out, not a 500
                log.debug("gauge %s could not be read", name, exc_info=True)
                continue
            lines += [f"# TYPE {name} gauge", f"{name} {value}"]
        for name, (label, read_all) in sorted(self._labelled.items()):
            try:
                values = dict(read_all())
            except Exception:
                log.debug("gauge %s could not be read", name, exc_info=True)
                continue
            lines.append(f"# TYPE {name} gauge")
            lines += [f'{name}{{{label}="{_label_value(key)}"}} {value}'
                      for key, value in sorted(values.items())]
        return "\n".join(lines) + "\n"


def _label_value(value: str) -> str:
    """A Prometheus label value, escaped (backslash, double quote, newline)."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
