"""A monitoring window's progress, kept with the ``monitor`` step while it runs
(:class:`procedures.playbook.KeepsProgress`), so that the replica that takes a run over (a
graceful hand-over on SIGTERM, a take-over after a stale heartbeat) continues the window: its
start, the checks seen (the decision matrix looks back over them), the warnings already said,
and whether the manual-rollback question was asked. Without it the window started again and a
15-minute watch became up to 30.

The checks the window missed while no replica watched are not made up: the next check is the
one due now, and the thread says how far the window had come.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from procedures.checks.monitoring import Sample


@dataclass
class MonitorProgress:
    """The state of one monitoring window (``total`` checks of ``interval_s`` seconds from
    ``started``)."""

    started: datetime
    total: int
    interval_s: float
    samples: list[Sample] = field(default_factory=list)
    tally: dict[str, int] = field(default_factory=dict)
    said_kinds: set[str] = field(default_factory=set)
    manual: str | None = None
    next_progress: float = 0.25
    said_inconclusive: bool = False
    latency_readings: list[float | None] = field(default_factory=list)
    latency_said_missing: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "started": self.started.isoformat(), "total": self.total,
            "interval_s": self.interval_s,
            "samples": [_sample_json(s) for s in self.samples], "tally": dict(self.tally),
            "said_kinds": sorted(self.said_kinds), "manual": self.manual,
            "next_progress": self.next_progress, "said_inconclusive": self.said_inconclusive,
            "latency_readings": list(self.latency_readings),
            "latency_said_missing": self.latency_said_missing,
        }

    @classmethod
    def from_json(cls, kept: Mapping[str, Any] | None, *, total: int,
                  interval_s: float) -> MonitorProgress | None:
        """The kept progress of a window of the same shape, or None (nothing kept, another
        window: a policy changed in between, or anything unreadable: start afresh)."""
        if not kept or kept.get("total") != total or kept.get("interval_s") != interval_s:
            return None
        try:
            return cls(
                started=datetime.fromisoformat(kept["started"]), total=total,
                interval_s=interval_s,
                samples=[_sample_of(s) for s in kept["samples"]],
                tally={str(k): int(v) for k, v in kept["tally"].items()},
                said_kinds=set(kept["said_kinds"]), manual=kept["manual"],
                next_progress=float(kept["next_progress"]),
                said_inconclusive=bool(kept["said_inconclusive"]),
                latency_readings=list(kept["latency_readings"]),
                latency_said_missing=bool(kept["latency_said_missing"]))
        except (KeyError, TypeError, ValueError, AttributeError):
            return None


def _sample_json(sample: Sample) -> dict[str, Any]:
    return {"at": sample.at.isoformat(), "health_ok": sample.health_ok,
            "response_ms": sample.response_ms, "errors": sample.errors,
            "requests": sample.requests, "unavailable": sample.unavailable,
            "smoke_failed": list(sample.smoke_failed),
            "database_failed": list(sample.database_failed), "p95_ms": sample.p95_ms,
            "db_query_ms": sample.db_query_ms}


def _sample_of(doc: Mapping[str, Any]) -> Sample:
    return Sample(at=datetime.fromisoformat(doc["at"]), health_ok=bool(doc["health_ok"]),
                  response_ms=float(doc["response_ms"]), errors=doc["errors"],
                  requests=doc["requests"], unavailable=doc["unavailable"],
                  smoke_failed=tuple(doc["smoke_failed"]),
                  database_failed=tuple(doc["database_failed"]), p95_ms=doc["p95_ms"],
                  db_query_ms=doc["db_query_ms"])
