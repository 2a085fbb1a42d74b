"""Checks the playbooks run against the outside world: HTTP probes and the monitoring verdict.

``http`` probes URLs (never raising on network errors); ``monitoring`` turns monitoring samples
into a keep / roll back / inconclusive verdict. Neither knows about Slack, the database or a
particular platform.
"""

from procedures.checks.http import HttpChecker, Probe
from procedures.checks.monitoring import (
    MonitoringThresholds,
    Sample,
    Summary,
    Verdict,
    evaluate,
    summarize,
)

__all__ = [
    "HttpChecker",
    "MonitoringThresholds",
    "Probe",
    "Sample",
    "Summary",
    "Verdict",
    "evaluate",
    "summarize",
]
