"""The ``monitor`` step taken over mid-window continues the window (``KeepsProgress``): the
replica that resumes it keeps the first one's checks, warnings said and the manual question
asked, and watches only what is left of the window, not a whole window again.

Driven as ``test_seed_decision_matrix`` drives the step (``StepRunner``, the public URL a mock
transport); the hand-over is a context whose ``sleep`` stops the first attempt after some
checks, as the engine's graceful stop does.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, cast

import httpx
import pytest

from procedures.checks.http import HttpChecker
from procedures.clock import FixedClock
from procedures.platforms.base import Platform
from procedures.playbook import KeepsProgress
from procedures.playbooks import standard_playbook
from tests.fakes.platform import FakePlatform
from tests.fakes.policies import BASE, make_policy
from tests.playbooks.test_seed_decision_matrix import (
    BASELINE,
    SMOKE,
    SWITCHED,
    RouterCounts,
    Row,
    Web,
)
from tests.playbooks.test_standard_steps import StepRunner


class HandedOver(BaseException):
    """What the engine's hand-over raises in the first attempt's sleep."""


@dataclass
class KeepingRunner(StepRunner):
    """A StepRunner that keeps progress as the engine does (through JSON, as in the
    database), and is handed over after ``stop_after`` sleeps."""

    progress: Mapping[str, Any] | None = None
    stop_after: int | None = None
    sleeps: int = 0

    def keep(self, progress: Mapping[str, Any]) -> None:
        import json
        self.progress = json.loads(json.dumps(progress))

    def kept(self) -> Mapping[str, Any] | None:
        return self.progress

    def sleep(self, seconds: float) -> None:
        self.sleeps += 1
        if self.stop_after is not None and self.sleeps > self.stop_after:
            raise HandedOver()
        super().sleep(seconds)


def _runner(row: Row, clock: FixedClock) -> KeepingRunner:
    production = dict(BASE["environments"]["production"], smoke=[SMOKE])
    policy = make_policy(environments={"production": production},
                         monitoring={"duration": "40s", "interval": "1s"})
    ctx = KeepingRunner(cast(Platform, FakePlatform()), RouterCounts(row), policy, clock,
                        "2.0.0")
    ctx.known_baseline = row.baseline
    ctx.results["snapshot"] = {"live_slot": "blue", "live_version": "1.0.0",
                               "target_slot": "green"}
    ctx.results["switch_traffic"] = {"switched_at": SWITCHED.isoformat()}
    return ctx


def _monitor(ctx: KeepingRunner, web: Web) -> Mapping[str, Any] | None:
    http = HttpChecker(transport=httpx.MockTransport(web), timer=web.timer)
    try:
        return ctx.run(standard_playbook(http=http, monitoring=ctx.policy.monitoring),
                       "monitor")
    finally:
        http.close()


@pytest.mark.parametrize("gap", [0, 5])
def test_a_window_taken_over_goes_on_from_its_checks(gap: int) -> None:
    row = Row("warning", "", errors=8, baseline=dict(BASELINE))  # a warning from check 1
    clock, web = FixedClock(SWITCHED), Web(row)
    first = _runner(row, clock)
    first.stop_after = 15  # 15 checks in, the replica stops
    with pytest.raises(HandedOver):
        _monitor(first, web)
    assert first.progress is not None and len(first.progress["samples"]) == 15
    assert sum(r.startswith(":large_orange_circle: Warning") for r in first.reports) == 1

    clock.advance(timedelta(seconds=gap))  # the hand-over took this long
    second = _runner(row, clock)
    second.progress = first.progress
    result = _monitor(second, web)
    assert result is not None
    reports = "\n".join(second.reports)
    # No second plan; the thread says how far the window had come.
    assert (f"Monitoring green (2.0.0) continues its window: {15 + gap}s of 40s gone, 15 "
            f"checks kept; next check {max(16, 15 + gap)}/40.") in reports, reports
    assert first.reports[0] not in second.reports  # the plan, said once
    # The warning already said is not said again; it is still counted.
    assert not any(r.startswith(":large_orange_circle: Warning") for r in second.reports)
    assert result["warning_kinds"]["errors"] >= 1
    # The window ends 40 s after it started, not 40 s after the take-over; the checks the
    # gap skipped (those due before the one due now) are not made up.
    assert clock.now() - SWITCHED == timedelta(seconds=40)
    assert result["samples"] == 40 - max(0, gap - 1)
    assert "Monitored 40s" in reports


def test_a_kept_window_of_another_shape_starts_afresh() -> None:
    row = Row("warning", "", errors=0)
    clock, web = FixedClock(SWITCHED), Web(row)
    ctx = _runner(row, clock)
    ctx.progress = {"started": SWITCHED.isoformat(), "total": 99, "interval_s": 1.0,
                    "samples": []}  # a window of 99 checks: the policy changed since
    result = _monitor(ctx, web)
    assert result is not None and result["samples"] == 40
    assert isinstance(ctx, KeepsProgress)
