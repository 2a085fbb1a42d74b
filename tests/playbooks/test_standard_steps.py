"""The standard playbook's steps, run in order by hand on the real local platform.

There is no engine here: :class:`StepRunner` is a test-only :class:`StepContext` that runs a
step, keeps its result for later steps and records what the steps report, switch and baseline.
Slots and the router are real processes on free ports under ``tmp_path``; HTTP checks are real.
Waiting goes through a fake clock (``ctx.sleep`` advances it), so ten seconds of monitoring at a
one-second interval cost ten real HTTP samples and no wall time. ``LocalMetrics`` uses the same
fake clock, so its windows line up with the steps' ``since`` times.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from procedures.checks.http import HttpChecker
from procedures.clock import FixedClock
from procedures.errors import StepFailure
from procedures.model import ProcedureKind, Slot
from procedures.platforms.base import Platform, SlotStatus, SupportsMaintenance, TrafficState
from procedures.platforms.local import LocalPlatform
from procedures.platforms.local.metrics import LocalMetrics
from procedures.playbook import MetricsSource, Playbook, StepContext
from procedures.playbooks import standard_playbook
from procedures.playbooks.rehearsal import REHEARSAL_STEPS
from procedures.playbooks.standard import ProvidesBaseline
from procedures.policy import Environment, Policy
from tests.fakes.policies import BASE, free_port, make_policy

pytestmark = pytest.mark.slow
NO_DEADLINE = datetime.max.replace(tzinfo=UTC)

ENV = "production"
HEALTHY_FOR = 7  # wait_ready 1 + smoke 1 + extended health 3 + the first 2 monitoring checks
ORDER = ["final_validation", "snapshot", "maintenance_on", "migrate_database",
         "deploy_idle_slot", "wait_healthy",
         "smoke_tests", "switch_traffic", "maintenance_off", "extended_health",
         "post_deploy_tests", "monitor", "record_baseline", "stop_old_slot"]


def step_policy() -> Policy:
    env = {
        "platform": "local",
        "url": f"http://127.0.0.1:{free_port()}",
        "health": ["/health"],
        "smoke": ["/api/v1/status", "/"],
        "local": {"command": BASE["environments"]["production"]["local"]["command"],
                  "slots": {"blue": free_port(), "green": free_port()},
                  "ready_timeout": "3s"},
    }
    return make_policy(
        environments={ENV: env},
        monitoring={"duration": "10s", "interval": "1s", "health_failure_ratio": 0.5,
                    "response_time_ms": 2000, "error_threshold": 10},
    )


@dataclass
class StepRunner:
    """A minimal StepContext: one deployment's steps, run one at a time by the test."""

    platform: Platform
    metrics: MetricsSource
    policy: Policy
    clock: FixedClock
    version: str | None
    options: Mapping[str, Any] = field(default_factory=dict)
    deployment_id: int = 1
    kind: ProcedureKind = ProcedureKind.STANDARD
    environment_name: str = ENV
    deadline: datetime = NO_DEADLINE
    results: dict[str, Mapping[str, Any]] = field(default_factory=dict)
    reports: list[str] = field(default_factory=list)
    switches: list[tuple[Slot, str]] = field(default_factory=list)
    baselines: list[Mapping[str, Any]] = field(default_factory=list)
    known_baseline: Mapping[str, Any] | None = None
    slept: float = 0.0

    # -- the StepContext protocol ----------------------------------------------------------

    @property
    def environment(self) -> Environment:
        return self.policy.environments[self.environment_name]

    def now(self) -> datetime:
        return self.clock.now()

    def sleep(self, seconds: float) -> None:
        if self.now() + timedelta(seconds=seconds) > self.deadline:
            raise StepFailure("step deadline passed while sleeping")
        self.slept += seconds
        self.clock.advance(timedelta(seconds=seconds))

    def result_of(self, step_name: str) -> Mapping[str, Any]:
        return self.results.get(step_name, {})

    def report(self, text: str, *, broadcast: bool = False) -> None:
        self.reports.append(text)

    def record_switch(self, live: Slot, version: str) -> None:
        self.switches.append((live, version))

    def record_baseline(self, metrics: Mapping[str, Any]) -> None:
        self.baselines.append(dict(metrics))

    def baseline(self) -> Mapping[str, Any] | None:  # the optional ProvidesBaseline
        return self.known_baseline

    # -- driving ---------------------------------------------------------------------------

    def run(self, playbook: Playbook, name: str) -> Mapping[str, Any] | None:
        """Run one step as the engine would (skipping it when its condition says so);
        None when skipped. Results go through JSON, as they would through the database."""
        step = playbook.step(name)
        if step.when is not None and not step.when(self):
            return None
        self.deadline = self.now() + step.timeout
        try:
            result = json.loads(json.dumps(step.run(self) or {}))
        finally:
            self.deadline = NO_DEADLINE
        self.results[name] = result
        return result

    def run_all(self, playbook: Playbook, until: str | None = None) -> None:
        for step in playbook.steps:
            self.run(playbook, step.name)
            if step.name == until:
                return

    def undo(self, playbook: Playbook, name: str) -> None:
        undo = playbook.step(name).undo
        assert undo is not None, f"{name} has no undo"
        undo(self)


@dataclass
class World:
    policy: Policy
    platform: LocalPlatform
    metrics: LocalMetrics
    clock: FixedClock
    http: HttpChecker
    playbook: Playbook

    def context(self, version: str, **options: Any) -> StepRunner:
        return StepRunner(self.platform, self.metrics, self.policy, self.clock, version,
                          options=options)

    def public(self, path: str = "/api/v1/status") -> httpx.Response:
        return httpx.get(self.platform.router_url + path, timeout=5.0, trust_env=False)


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    policy = step_policy()
    clock = FixedClock(datetime(2026, 11, 24, 10, 0, tzinfo=UTC))
    platform = LocalPlatform(ENV, policy.environments[ENV], tmp_path / "state",
                             extra_env={"QLP_SAMPLE_HEALTHY_FOR": str(HEALTHY_FOR)},
                             stop_grace=3.0)
    http = HttpChecker(timeout=3.0, connect_timeout=1.0)
    try:
        yield World(policy, platform, LocalMetrics(platform, clock=clock), clock, http,
                    standard_playbook(http=http, monitoring=policy.monitoring))
    finally:
        platform.shutdown_all()
        platform.close()
        http.close()


def deployed(world: World, version: str) -> StepRunner:
    ctx = world.context(version)
    ctx.run_all(world.playbook)
    return ctx


# -- the playbook as data ----------------------------------------------------------------------


def test_steps_names_titles_and_undos() -> None:
    with HttpChecker() as http:
        playbook = standard_playbook(http=http)
    assert playbook.kind is ProcedureKind.STANDARD
    # The staging rehearsal's steps (skipped without promoted_from): test_rehearsal.py.
    assert [s.name for s in playbook.steps if s.name not in REHEARSAL_STEPS] == ORDER
    assert all(step.title for step in playbook.steps)
    undoable = {step.name for step in playbook.steps if step.undo is not None}
    assert undoable == {"maintenance_on", "deploy_idle_slot", "switch_traffic",
                        "rehearsal_deploy", "rehearsal_switch"}
    monitor = playbook.step("monitor")
    assert monitor.timeout == timedelta(minutes=32) and monitor.retry.attempts == 1


def test_the_runner_is_a_step_context(world: World) -> None:
    ctx: StepContext = world.context("v1.0.0")  # mypy checks the protocol here
    assert isinstance(ctx, ProvidesBaseline)
    assert isinstance(world.platform, SupportsMaintenance)


# -- happy path --------------------------------------------------------------------------------


def test_first_deployment_then_an_upgrade(world: World) -> None:
    first = deployed(world, "v1.0.0")
    assert first.results["final_validation"] == {"live": None, "live_version": None}
    assert first.results["snapshot"]["target_slot"] == "blue"
    assert "maintenance_on" not in first.results
    assert first.switches == [(Slot.BLUE, "v1.0.0")]
    assert first.results["stop_old_slot"] == {"stopped": None}
    assert world.public().json()["version"] == "v1.0.0"
    assert first.baselines[0]["samples"] == 10
    assert first.slept >= 10  # monitoring waited on the fake clock

    second = world.context("v1.1.0")
    second.known_baseline = first.baselines[0]
    second.run_all(world.playbook)
    print("\n" + "\n".join(second.reports))

    final = second.results["final_validation"]
    assert final == {"live": "blue", "live_version": "v1.0.0", "errors": 0}
    snapshot = second.results["snapshot"]
    assert (snapshot["live_slot"], snapshot["live_version"], snapshot["target_slot"]) == \
        ("blue", "v1.0.0", "green")
    assert "Live: v1.0.0 on blue; deploying v1.1.0 to green." in second.reports
    assert any(r.startswith("Traffic switched to green (v1.1.0)") for r in second.reports)
    assert second.switches == [(Slot.GREEN, "v1.1.0")]

    response = world.public()
    assert response.json()["version"] == "v1.1.0" and response.headers["X-QLP-Slot"] == "green"
    traffic = world.platform.traffic()
    assert traffic.live is Slot.GREEN and not traffic.slots[Slot.BLUE].running
    assert second.results["stop_old_slot"] == {"stopped": "blue", "version": "v1.0.0"}

    watched = second.results["monitor"]
    assert (watched["samples"], watched["failed"], watched["error_count"]) == (10, 0, 0)
    assert watched["request_count"] >= 10  # the monitoring checks went through the router
    assert any(re.fullmatch(r"Monitored 10s: 10 checks, 0 failed, p95 \d+ ms, 0 errors; "
                            r"0 warnings\.", r) for r in second.reports)
    assert watched["warnings"] == 0 and watched["manual_rollback"] is None
    assert watched["request_count"] >= 30  # every health and smoke path, every check
    progress = [r for r in second.reports if r.startswith("Monitoring green (v1.1.0): ")]
    assert 1 <= len(progress) <= 4
    baseline = second.baselines[0]
    assert set(baseline) >= {"response_ms_p50", "response_ms_p95", "error_count", "samples"}
    assert baseline["samples"] == 10 and baseline["error_count"] == 0

    router = world.platform.router_state()
    assert router is not None and router["stats"]["green"]["requests"] >= 10
    assert router["stats"]["green"]["errors"] == 0


def test_maintenance_mode_covers_the_switch(world: World) -> None:
    deployed(world, "v1.0.0")
    ctx = world.context("v1.1.0", maintenance=True)
    ctx.run_all(world.playbook, until="maintenance_on")
    during = world.public()
    assert during.status_code == 503 and during.json() == {"maintenance": True}
    assert world.platform.maintenance() is True
    state_file = world.platform.directory / "router.json"
    assert json.loads(state_file.read_text())["maintenance"] is True
    # The slot is still reachable directly, and the control plane still answers.
    assert httpx.get(world.platform.slot_url(Slot.BLUE) + "/health", trust_env=False).is_success
    assert world.platform.traffic().live is Slot.BLUE

    for name in ORDER[ORDER.index("maintenance_on") + 1:]:
        ctx.run(world.playbook, name)
    assert world.platform.maintenance() is False
    assert world.public().json()["version"] == "v1.1.0"
    assert ctx.results["maintenance_off"] == {"maintenance": False}


def test_maintenance_on_is_undone(world: World) -> None:
    deployed(world, "v1.0.0")
    ctx = world.context("v1.1.0", maintenance=True)
    ctx.run_all(world.playbook, until="maintenance_on")
    ctx.undo(world.playbook, "maintenance_on")
    ctx.undo(world.playbook, "maintenance_on")  # idempotent
    assert world.public().json()["version"] == "v1.0.0"


class PlainPlatform:
    """A Platform without the maintenance capability (delegates to the local one)."""

    def __init__(self, inner: LocalPlatform) -> None:
        self.inner = inner

    def traffic(self) -> TrafficState:
        return self.inner.traffic()

    def deploy(self, slot: Slot, version: str) -> SlotStatus:
        return self.inner.deploy(slot, version)

    def wait_ready(self, slot: Slot, timeout: timedelta) -> SlotStatus:
        return self.inner.wait_ready(slot, timeout)

    def switch(self, slot: Slot) -> None:
        self.inner.switch(slot)

    def stop(self, slot: Slot) -> None:
        self.inner.stop(slot)

    def slot_url(self, slot: Slot) -> str:
        return self.inner.slot_url(slot)


def test_maintenance_on_a_platform_without_it_fails(world: World) -> None:
    ctx = world.context("v1.0.0", maintenance=True)
    ctx.platform = PlainPlatform(world.platform)
    assert not isinstance(ctx.platform, SupportsMaintenance)
    ctx.run_all(world.playbook, until="snapshot")
    with pytest.raises(StepFailure, match="does not support it"):
        ctx.run(world.playbook, "maintenance_on")
    assert "Maintenance mode is not supported" in ctx.reports[-1]


# -- failures ----------------------------------------------------------------------------------


def test_unhealthy_version_is_rolled_back_by_monitoring(world: World) -> None:
    deployed(world, "v1.0.0")
    ctx = world.context("v1.1.0-unhealthy")
    ctx.run_all(world.playbook, until="post_deploy_tests")
    assert world.public().json()["version"] == "v1.1.0-unhealthy"  # it got live ...

    with pytest.raises(StepFailure) as failure:
        ctx.run(world.playbook, "monitor")  # ... and then failed its health checks
    print(f"\n{failure.value}")
    assert re.search(r"\d+ of \d+ health checks failed \(\d+% > 50%\)", failure.value.message)
    assert not failure.value.retryable
    assert "monitor" not in ctx.results

    ctx.undo(world.playbook, "switch_traffic")
    ctx.undo(world.playbook, "deploy_idle_slot")
    response = world.public()
    assert response.json()["version"] == "v1.0.0" and response.headers["X-QLP-Slot"] == "blue"
    assert ctx.switches == [(Slot.GREEN, "v1.1.0-unhealthy"), (Slot.BLUE, "v1.0.0")]
    assert "Traffic switched back to blue (v1.0.0)." in ctx.reports
    traffic = world.platform.traffic()
    assert traffic.live is Slot.BLUE and not traffic.slots[Slot.GREEN].running
    ctx.undo(world.playbook, "switch_traffic")  # undos are idempotent
    ctx.undo(world.playbook, "deploy_idle_slot")
    assert world.platform.traffic().live is Slot.BLUE


def test_broken_version_fails_wait_healthy(world: World) -> None:
    deployed(world, "v1.0.0")
    ctx = world.context("v1.1.0-broken")
    ctx.run_all(world.playbook, until="deploy_idle_slot")
    with pytest.raises(StepFailure, match="not ready within 3 s"):
        ctx.run(world.playbook, "wait_healthy")
    ctx.undo(world.playbook, "deploy_idle_slot")
    assert world.public().json()["version"] == "v1.0.0"
    assert not world.platform.traffic().slots[Slot.GREEN].running
    assert ctx.switches == []


class NoData:
    """A metrics source with nothing to say."""

    def error_count(self, slot: Slot, since: datetime) -> int | None:
        return None

    def request_count(self, slot: Slot, since: datetime) -> int | None:
        return None


class Erroring:
    """A metrics source that reports many errors on every slot."""

    def error_count(self, slot: Slot, since: datetime) -> int | None:
        return 50

    def request_count(self, slot: Slot, since: datetime) -> int | None:
        return 1000


def test_final_validation_warns_on_no_data_or_many_errors(world: World) -> None:
    deployed(world, "v1.0.0")
    ctx = world.context("v1.1.0")
    ctx.metrics = NoData()
    result = ctx.run(world.playbook, "final_validation")
    assert result is not None and "errors" not in result
    said = [r for r in ctx.reports if r.startswith(":large_orange_circle: Warning (Recent")]
    assert len(said) == 1 and "no data" in said[0] and " 0 errors" not in said[0], said
    ctx.metrics = Erroring()
    ctx.reports.clear()
    result = ctx.run(world.playbook, "final_validation")
    assert result is not None and result["errors"] == 50
    assert any("50 errors on the live blue slot (v1.0.0) in the last 1h, more than 10: "
               "consider postponing. Not blocking (validation.errors: warn)." in r
               for r in ctx.reports), ctx.reports


def test_final_validation_gates_on_them_when_the_policy_says_so(world: World) -> None:
    deployed(world, "v1.0.0")
    ctx = world.context("v1.1.0")
    ctx.policy = ctx.policy.model_copy(update={"validation": ctx.policy.validation.model_copy(
        update={"errors": "gate", "no_data": "gate"})})
    ctx.metrics = NoData()
    with pytest.raises(StepFailure, match=r"no data: no error figures .* over the last 1h") \
            as failure:
        ctx.run(world.playbook, "final_validation")
    assert failure.value.retryable
    ctx.metrics = Erroring()
    with pytest.raises(StepFailure, match=r"had 50 errors in the last 1h, more than the 10"):
        ctx.run(world.playbook, "final_validation")


def test_monitoring_without_error_data_warns(world: World) -> None:
    deployed(world, "v1.0.0")
    ctx = world.context("v1.1.0")
    ctx.run_all(world.playbook, until="post_deploy_tests")
    ctx.metrics = NoData()
    result = ctx.run(world.playbook, "monitor")
    assert result is not None and result["warning_kinds"] == {"no data": 1}
    assert any("Warning: no data: no error data from the platform" in r for r in ctx.reports)


def test_monitoring_counts_errors_as_warnings(world: World) -> None:
    deployed(world, "v1.0.0")
    ctx = world.context("v1.1.0")
    ctx.run_all(world.playbook, until="post_deploy_tests")
    ctx.metrics = Erroring()
    result = ctx.run(world.playbook, "monitor")  # 50 errors of 1000 requests, no baseline
    assert result is not None and result["warning_kinds"] == {"errors": 10}
    said = [r for r in ctx.reports if "Warning" in r]
    assert any("elevated errors: 50 errors in the last 5m (> 10)" in r for r in said), said
