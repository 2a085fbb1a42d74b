"""The extended health check after the switch: the seed's ``health-check-extended.sh --timeout
300`` (``HEALTH_CHECK_TIMEOUT``): it keeps trying for up to ``monitoring.extended_health``
until the public URL answers 2xx three times in a row. The public URL is an
``httpx.MockTransport``; waiting goes through a fake clock (no wall time)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from procedures.checks.http import HttpChecker
from procedures.clock import FixedClock
from procedures.errors import StepFailure
from procedures.playbooks.standard import StandardSteps, standard_playbook
from procedures.policy import Environment, Monitoring, Policy
from tests.fakes.policies import make_policy

START = datetime(2026, 12, 2, 11, 0, tzinfo=UTC)


@dataclass
class Ctx:
    """What the extended health step reads of its StepContext."""

    policy: Policy
    clock: FixedClock
    reports: list[str] = field(default_factory=list)
    environment_name: str = "production"

    @property
    def environment(self) -> Environment:
        return self.policy.environments[self.environment_name]

    def now(self) -> datetime:
        return self.clock.now()

    def sleep(self, seconds: float) -> None:
        self.clock.advance(timedelta(seconds=seconds))

    def report(self, text: str, *, broadcast: bool = False) -> None:
        self.reports.append(text)


def _run(unhealthy_for: timedelta | None, **monitoring: Any) -> tuple[Ctx, Any]:
    """The public /health answers 503 for ``unhealthy_for`` after START (None: for ever)."""
    clock = FixedClock(START)

    def answer(request: httpx.Request) -> httpx.Response:
        sick = unhealthy_for is None or clock.now() - START < unhealthy_for
        return httpx.Response(503 if sick else 200, json={"status": "ok"})

    ctx = Ctx(make_policy(monitoring={"duration": "2s", "interval": "1s", **monitoring}), clock)
    with HttpChecker(transport=httpx.MockTransport(answer)) as http:
        try:
            return ctx, StandardSteps(http).extended_health(ctx)  # type: ignore[arg-type]
        except StepFailure as failure:
            return ctx, failure


def test_the_seed_default_is_300_seconds() -> None:
    assert Monitoring().extended_health == timedelta(seconds=300)
    # The step's own limit leaves room for the whole 300 s.
    with HttpChecker() as http:
        [step] = [s for s in standard_playbook(http=http).steps if s.name == "extended_health"]
    assert step.timeout > timedelta(seconds=300)


def test_a_url_unhealthy_for_two_minutes_passes_within_the_300_seconds() -> None:
    ctx, result = _run(timedelta(minutes=2))
    assert isinstance(result, dict), result
    assert result["streak"] == 3 and result["waited_s"] == 122  # 120 s sick, then 3 in a row
    # Said the first time and once a minute, not every second.
    failures = [r for r in ctx.reports if r.startswith("Health round")]
    assert len(failures) == 2, failures  # at 0 s and at 1 min
    assert failures[0].startswith("Health round 1 (0s of 5m): ")
    assert "3 times in a row (round 123, 2m 2s" in ctx.reports[-1]


def test_a_url_that_never_recovers_fails_after_300_seconds() -> None:
    ctx, failure = _run(None)
    assert isinstance(failure, StepFailure)
    assert ctx.clock.now() - START == timedelta(seconds=300)
    assert "did not answer 2xx 3 times in a row within 5m (301 rounds)" in failure.message
    assert failure.hint == "traffic goes back to the previous slot"


@pytest.mark.parametrize("limit", ["10s", "2m"])
def test_the_limit_is_the_policys(limit: str) -> None:
    ctx, failure = _run(None, extended_health=limit)
    assert isinstance(failure, StepFailure)
    expected = Monitoring(extended_health=limit).extended_health  # type: ignore[arg-type]
    assert ctx.clock.now() - START == expected


def test_a_limit_outside_3s_and_30m_is_refused_with_the_seed_value() -> None:
    with pytest.raises(ValueError, match="between 3s and 30m"):
        Monitoring(extended_health="2s")  # type: ignore[arg-type]
