"""The automatic rollback's undo of ``switch_traffic``, verified as the seed's
``automatic-rollback.sh`` does: switch back (or, when the previous colour is gone, redeploy its
version there blue-green), then the public URL healthy within ``monitoring.rollback_verify``
(120 s, every 5 s), and when that fails the exact ``/qlp emergency`` command in the thread.

The platform is the in-memory :class:`FakePlatform`; HTTP is a scripted checker; time is a
FixedClock that ``ctx.sleep`` advances (no wall time).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from procedures.checks.http import Probe
from procedures.clock import FixedClock
from procedures.errors import ConfigError, StepFailure
from procedures.model import ProcedureKind, Slot
from procedures.platforms.base import SlotStatus
from procedures.playbooks import standard_playbook
from procedures.playbooks.rollback import rollback_playbook
from procedures.playbooks.standard import SWITCH_TIMEOUT
from procedures.policy import Policy
from tests.fakes.platform import FakePlatform
from tests.fakes.policies import make_policy
from tests.playbooks.test_standard_steps import StepRunner

START = datetime(2026, 12, 2, 10, 0, tzinfo=UTC)
EMERGENCY = '`/qlp emergency outage v1.0.0 to production --reason "rollback of #1 failed"`'


class ScriptedHttp:
    """An HttpChecker whose public URL answers 500 until ``healthy_after`` (clock time),
    then 200; every probe is recorded with the clock's time."""

    def __init__(self, clock: FixedClock, healthy_after: timedelta | None = timedelta(0)):
        self.clock = clock
        self.healthy_from = None if healthy_after is None else clock.now() + healthy_after
        self.probes: list[tuple[datetime, str]] = []

    def check_paths(self, base_url: str, paths: Iterable[str]) -> list[Probe]:
        now = self.clock.now()
        ok = self.healthy_from is not None and now >= self.healthy_from
        found = []
        for path in paths:
            url = base_url.rstrip("/") + path
            self.probes.append((now, url))
            found.append(Probe(ok, 200 if ok else 500, 3.0,
                               None if ok else "HTTP 500", url))
        return found


class NoMetrics:
    def error_count(self, slot: Slot, since: datetime) -> int | None:
        return 0

    def request_count(self, slot: Slot, since: datetime) -> int | None:
        return 0


def _policy(**monitoring: Any) -> Policy:
    return make_policy(monitoring={"duration": "10s", "interval": "1s", **monitoring})


def _after_switch(platform: FakePlatform, clock: FixedClock, policy: Policy) -> StepRunner:
    """A run of v2.0.0 that switched blue (v1.0.0) -> green, as the snapshot recorded it."""
    platform.deploy(Slot.GREEN, "v2.0.0")
    platform.switch(Slot.GREEN)
    ctx = StepRunner(platform, NoMetrics(), policy, clock, "v2.0.0")
    ctx.results["snapshot"] = {"live_slot": "blue", "live_version": "v1.0.0",
                               "target_slot": "green"}
    ctx.deadline = clock.now() + SWITCH_TIMEOUT
    platform.calls.clear()
    return ctx


def _undo(ctx: StepRunner, http: ScriptedHttp) -> None:
    playbook = standard_playbook(http=http)  # type: ignore[arg-type]
    ctx.undo(playbook, "switch_traffic")


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(START)


def test_the_previous_colour_is_switched_back_to_and_verified(clock: FixedClock) -> None:
    platform = FakePlatform(live_version="v1.0.0")
    ctx = _after_switch(platform, clock, _policy())
    http = ScriptedHttp(clock)

    _undo(ctx, http)

    assert [str(c) for c in platform.calls if c.operation != "traffic"] == ["switch(blue)"]
    assert platform.live is Slot.BLUE
    assert ctx.switches == [(Slot.BLUE, "v1.0.0")]
    assert [url for _, url in http.probes] == [f"{ctx.environment.url}/health"]
    text = "\n".join(ctx.reports)
    assert "Traffic switched back to blue (v1.0.0)." in text
    assert "Rollback verification" in text and "at the first attempt" in text
    assert "redeploying" not in text and "/qlp emergency" not in text


def test_a_slow_recovery_is_polled_every_5_s_within_120_s(clock: FixedClock) -> None:
    platform = FakePlatform(live_version="v1.0.0")
    ctx = _after_switch(platform, clock, _policy())
    http = ScriptedHttp(clock, healthy_after=timedelta(seconds=42))

    _undo(ctx, http)

    times = [(at - START).total_seconds() for at, _ in http.probes]
    assert times == [float(5 * n) for n in range(10)]  # 0, 5, ... 45: healthy at 45 s
    assert "after 45s, attempt 10" in "\n".join(ctx.reports)


def test_a_gone_colour_is_redeployed_blue_green_then_switched_and_verified(
        clock: FixedClock) -> None:
    platform = FakePlatform(live_version="v1.0.0")
    ctx = _after_switch(platform, clock, _policy())
    platform.slots[Slot.BLUE] = SlotStatus(Slot.BLUE, running=False, detail="no process")
    http = ScriptedHttp(clock)

    _undo(ctx, http)

    assert [str(c) for c in platform.calls if c.operation != "traffic"] == [
        "deploy(blue, v1.0.0)", "wait_ready(blue)", "switch(blue)"]
    assert platform.live is Slot.BLUE
    assert platform.slots[Slot.BLUE].version == "v1.0.0"
    assert ctx.switches == [(Slot.BLUE, "v1.0.0")]
    text = "\n".join(ctx.reports)
    assert "The previous blue slot is gone (it does not run (no process)): redeploying " \
           "v1.0.0 into it" in text
    assert "Traffic switched back to blue (v1.0.0), redeployed." in text
    assert "Rollback verification" in text and "/qlp emergency" not in text


def test_a_colour_running_another_version_counts_as_gone(clock: FixedClock) -> None:
    platform = FakePlatform(live_version="v1.0.0")
    ctx = _after_switch(platform, clock, _policy())
    platform.slots[Slot.BLUE] = SlotStatus(Slot.BLUE, running=True, version="v0.9.0")

    _undo(ctx, ScriptedHttp(clock))

    assert [c.args for c in platform.called("deploy")] == [(Slot.BLUE, "v1.0.0")]
    assert "it runs v0.9.0 now" in "\n".join(ctx.reports)


def test_a_failed_verification_offers_the_emergency_deployment(clock: FixedClock) -> None:
    platform = FakePlatform(live_version="v1.0.0")
    ctx = _after_switch(platform, clock, _policy())
    http = ScriptedHttp(clock, healthy_after=None)  # never healthy

    with pytest.raises(StepFailure) as failed:
        _undo(ctx, http)

    assert not failed.value.retryable  # the engine must not try it again: needs attention
    assert "was not healthy within 2m" in str(failed.value)
    assert "/qlp emergency outage v1.0.0" in (failed.value.hint or "")
    times = [(at - START).total_seconds() for at, _ in http.probes]
    assert times[-1] == 120.0 and times[1] - times[0] == 5.0
    text = "\n".join(ctx.reports)
    assert "On-call is paged" in text and EMERGENCY in text


def test_a_failed_redeploy_offers_the_emergency_deployment(clock: FixedClock) -> None:
    platform = FakePlatform(live_version="v1.0.0")
    ctx = _after_switch(platform, clock, _policy())
    platform.stop(Slot.BLUE)
    platform.fail("wait_ready", message="blue did not get ready within 5 min")
    http = ScriptedHttp(clock)

    with pytest.raises(StepFailure, match="did not get ready") as failed:
        _undo(ctx, http)

    assert not failed.value.retryable
    assert platform.live is Slot.GREEN  # never switched to a colour that is not ready
    assert http.probes == []
    assert EMERGENCY in "\n".join(ctx.reports)


def test_a_retryable_switch_failure_is_left_to_the_engines_retry(clock: FixedClock) -> None:
    platform = FakePlatform(live_version="v1.0.0")
    ctx = _after_switch(platform, clock, _policy())
    platform.fail("switch", retryable=True, message="the router did not take it")

    with pytest.raises(StepFailure) as failed:
        _undo(ctx, ScriptedHttp(clock))

    assert failed.value.retryable
    assert "/qlp emergency" not in "\n".join(ctx.reports)
    _undo(ctx, ScriptedHttp(clock))  # the engine's next attempt
    assert platform.live is Slot.BLUE


def test_the_policy_key_sets_the_verification_time(clock: FixedClock) -> None:
    platform = FakePlatform(live_version="v1.0.0")
    ctx = _after_switch(platform, clock, _policy(rollback_verify="30s"))
    http = ScriptedHttp(clock, healthy_after=None)

    with pytest.raises(StepFailure, match="within 30s"):
        _undo(ctx, http)

    assert (http.probes[-1][0] - START) == timedelta(seconds=30)


def test_the_policy_key_is_bounded() -> None:
    with pytest.raises(ConfigError, match="rollback_verify"):
        _policy(rollback_verify="2s")
    assert _policy().monitoring.rollback_verify == timedelta(minutes=2)


def test_a_first_deployment_has_nothing_to_switch_back_to(clock: FixedClock) -> None:
    platform = FakePlatform(live=None)
    ctx = _after_switch(platform, clock, _policy())
    ctx.results["snapshot"] = {"live_slot": None, "live_version": None, "target_slot": "green"}
    http = ScriptedHttp(clock)

    _undo(ctx, http)

    assert http.probes == [] and platform.live is Slot.GREEN
    assert "nothing to switch back to" in "\n".join(ctx.reports)


def test_the_manual_rollback_verifies_with_the_policy_key(clock: FixedClock) -> None:
    policy = _policy(rollback_verify="1m")
    playbook = rollback_playbook(http=ScriptedHttp(clock),  # type: ignore[arg-type]
                                 monitoring=policy.monitoring)
    assert playbook.step("verify").timeout == timedelta(seconds=90)
    http = ScriptedHttp(clock, healthy_after=None)
    ctx = StepRunner(FakePlatform(live_version="v1.0.0"), NoMetrics(), policy, clock, "v0.9.0",
                     kind=ProcedureKind.ROLLBACK)
    playbook = rollback_playbook(http=http, monitoring=policy.monitoring)  # type: ignore[arg-type]

    with pytest.raises(StepFailure, match="within 1m"):
        ctx.run(playbook, "verify")

    times = [(at - START).total_seconds() for at, _ in http.probes]
    assert times[-1] == 60.0 and times[1] == 5.0
    assert "Post-rollback verification" in "\n".join(ctx.reports)
