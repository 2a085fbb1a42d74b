"""The hotfix, emergency and manual rollback playbooks under the real Engine.

Same world as ``test_standard_failures``: real engine and repositories (SQLite and PostgreSQL),
the in-memory :class:`~tests.fakes.platform.FakePlatform` with ``1.0.0`` live on blue, a metrics
source that always reports 0 errors, and HTTP checks through an ``httpx.MockTransport`` that
answers like the fake platform would. Time passes only through the engine's sleep (the clock).

For each playbook: which steps it runs (and which it skips), its timeouts, the happy path, and a
failure at each step in turn with the exact undo sequence and the state it leaves behind.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from procedures.checks.http import HttpChecker
from procedures.clock import FixedClock
from procedures.engine import Engine
from procedures.errors import StepFailure
from procedures.model import DeploymentState, ProcedureKind, Slot, StepState
from procedures.platforms.base import SlotStatus
from procedures.playbook import Playbook, StepContext, StepResult
from procedures.playbooks.emergency import (
    EMERGENCY_CHECKLIST,
    checklist_items,
    emergency_playbook,
    is_fast_track,
)
from procedures.playbooks.hotfix import HOTFIX_SKIPPED, hotfix_monitoring, hotfix_playbook
from procedures.playbooks.rehearsal import REHEARSAL_STEPS
from procedures.playbooks.rollback import rollback_playbook
from procedures.playbooks.standard import standard_playbook
from procedures.policy import Monitoring
from storage.baselines import BaselineRepository
from storage.db import Database
from tests.conftest import _Factory
from tests.engine.conftest import ENV, REQUESTER, START, Harness
from tests.fakes.platform import FakePlatform
from tests.fakes.policies import make_policy
from tests.playbooks.test_standard_failures import Web, ZeroErrors, expected_step_states

S = DeploymentState
OLD = "1.0.0"  # live on blue before every run
NO_MIGRATIONS = str(Path(__file__).resolve().parent)  # holds no v<version>.sql

HOTFIX_ORDER = ("final_validation", "snapshot", "maintenance_on", "migrate_database",
                "deploy_idle_slot", "wait_healthy", "smoke_tests", "switch_traffic",
                "maintenance_off",
                "post_deploy_tests", "monitor", "stop_old_slot")
EMERGENCY_ORDER = ("snapshot", "deploy_idle_slot", "wait_healthy", "smoke_tests",
                   "switch_traffic", "verify", "stability", "follow_up")
ROLLBACK_ORDER = ("snapshot", "deploy_idle_slot", "wait_healthy", "smoke_tests",
                  "switch_traffic", "verify", "post_deploy_tests", "stop_old_slot")


# -- the world ----------------------------------------------------------------------------------


class TimedPlatform(FakePlatform):
    """A FakePlatform that also records the timeout each ``wait_ready`` was given."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.ready_timeouts: list[timedelta] = []

    def wait_ready(self, slot: Slot, timeout: timedelta) -> SlotStatus:
        self.ready_timeouts.append(timeout)
        return super().wait_ready(slot, timeout)


class FlakyWeb(Web):
    """``Web``, but the public URL answers 503 for the next ``public_failures`` requests made
    after the switch to green (-1: forever), after ``healthy_for`` normal answers."""

    def __init__(self, platform: FakePlatform) -> None:
        super().__init__(platform)
        self.public_failures = 0
        self.healthy_for = 0  # public requests answered normally after the switch first

    def __call__(self, request: httpx.Request) -> httpx.Response:
        public = request.url.host != "fake.invalid"
        if public and self.platform.live is Slot.GREEN and self.healthy_for > 0:
            self.healthy_for -= 1
            return super().__call__(request)
        if public and self.platform.live is Slot.GREEN and self.public_failures != 0:
            self.public_failures -= 1 if self.public_failures > 0 else 0
            return self._answer(request, httpx.Response(503, json={"status": "down"}))
        return super().__call__(request)


@dataclass
class World:
    h: Harness
    web: FlakyWeb
    http: HttpChecker

    @property
    def platform(self) -> TimedPlatform:
        platform = self.h.platform
        assert isinstance(platform, TimedPlatform)
        return platform

    def playbook(self, kind: ProcedureKind) -> Playbook:
        monitoring = self.h.policy.monitoring
        if kind is ProcedureKind.HOTFIX:
            return hotfix_playbook(http=self.http, monitoring=monitoring)
        if kind is ProcedureKind.EMERGENCY:
            return emergency_playbook(http=self.http)
        return rollback_playbook(http=self.http)

    def engine(self, playbook: Playbook) -> Engine:
        return self.h.engine(playbook, metrics_for=lambda _env: ZeroErrors())

    def start(self, engine: Engine, kind: ProcedureKind, version: str,
              options: Mapping[str, Any]) -> int:
        deployment = self.h.deployments.create(kind, version, ENV, REQUESTER, state=S.QUEUED,
                                               options=dict(options))
        claimed = self.h.deployments.claim_next(engine.worker_id)
        assert deployment.id is not None and claimed is not None
        assert claimed.id == deployment.id
        return deployment.id

    def run(self, kind: ProcedureKind, version: str, options: Mapping[str, Any],
            playbook: Playbook | None = None) -> tuple[int, DeploymentState, Engine]:
        engine = self.engine(playbook or self.playbook(kind))
        deployment_id = self.start(engine, kind, version, options)
        return deployment_id, engine.run(deployment_id), engine

    def step_states(self, engine: Engine, deployment_id: int) -> dict[str, StepState]:
        return {step.name: step.state for step in engine.snapshot(deployment_id).steps}

    def calls(self) -> list[str]:
        return [str(call) for call in self.platform.calls]

    def texts(self, deployment_id: int) -> str:
        return "\n".join(self.h.reporter.texts(deployment_id))

    def environment_state(self) -> tuple[Slot | None, str | None]:
        row = self.h.environments.get(ENV)
        assert row is not None
        return row.live_slot, row.live_version

    def assert_as_before(self) -> None:
        """Blue serves 1.0.0, green is stopped, no maintenance, nothing locked."""
        platform = self.platform
        assert platform.live is Slot.BLUE
        assert platform.slots[Slot.BLUE].running and platform.slots[Slot.BLUE].version == OLD
        assert not platform.slots[Slot.GREEN].running
        assert platform.in_maintenance is False
        assert self.environment_state() == (Slot.BLUE, OLD)
        assert self.h.lock() == (None, None, None, None)


def _world(database: Database, factory: _Factory, clock: FixedClock, **policy: Any) -> World:
    made = make_policy(**policy)
    # A migrations directory without the versions' files: migrate_database runs, finds none.
    env = made.environments[ENV].model_copy(update={"migrations_dir": NO_MIGRATIONS})
    made = made.model_copy(update={"environments": {**made.environments, ENV: env}})
    h = Harness(database=database, factory=factory, clock=clock, policy=made)
    h.platform = TimedPlatform(log=h.log)
    h.environments.record_switch(ENV, Slot.BLUE, OLD)
    web = FlakyWeb(h.platform)
    return World(h, web, HttpChecker(transport=httpx.MockTransport(web)))


@pytest.fixture
def world(database: Database, database_factory: _Factory) -> Iterator[World]:
    w = _world(database, database_factory, FixedClock(START))
    try:
        yield w
    finally:
        w.http.close()


def inject(playbook: Playbook, name: str, platform: FakePlatform, marks: list[int]) -> Playbook:
    """``playbook`` with step ``name`` failing (not retryable); notes the calls made so far."""

    def fail(ctx: StepContext) -> StepResult:
        marks.append(len(platform.calls))
        raise StepFailure("injected", retryable=False)

    steps = tuple(dataclasses.replace(step, run=fail) if step.name == name else step
                  for step in playbook.steps)
    return dataclasses.replace(playbook, steps=steps)


# -- the steps each playbook chooses ------------------------------------------------------------


def test_each_playbook_runs_the_steps_it_promises() -> None:
    with HttpChecker() as http:
        standard = [s.name for s in standard_playbook(http=http).steps
                    if s.name not in REHEARSAL_STEPS]  # a hotfix is not rehearsed
        hotfix = hotfix_playbook(http=http)
        emergency = emergency_playbook(http=http)
        rollback = rollback_playbook(http=http)
    assert [s.name for s in hotfix.steps] == list(HOTFIX_ORDER)
    assert hotfix.kind is ProcedureKind.HOTFIX
    # The hotfix is the standard playbook minus exactly the two comparison phases.
    assert [n for n in standard if n not in {"extended_health", "record_baseline"}] == \
        list(HOTFIX_ORDER)
    assert {name for name, _ in HOTFIX_SKIPPED} == {"extended_health", "record_baseline"}
    assert [s.name for s in emergency.steps] == list(EMERGENCY_ORDER)
    assert emergency.kind is ProcedureKind.EMERGENCY
    assert [s.name for s in rollback.steps] == list(ROLLBACK_ORDER)
    assert rollback.kind is ProcedureKind.ROLLBACK
    # No final validation, monitoring or baseline in an emergency or a rollback.
    for playbook in (emergency, rollback):
        names = {s.name for s in playbook.steps}
        assert not names & {"final_validation", "extended_health", "monitor", "record_baseline"}


def test_timeouts() -> None:
    with HttpChecker() as http:
        emergency = emergency_playbook(http=http)
        rollback = rollback_playbook(http=http)
        hotfix = hotfix_playbook(http=http, monitoring=Monitoring(duration=timedelta(minutes=30)))
    # The emergency's wait covers the 5-minute blue-green readiness; its own limit (60 s on the
    # fast track) is what the platform is given (see the tests below).
    assert emergency.step("wait_healthy").timeout > timedelta(minutes=5)
    assert timedelta(seconds=60) < emergency.step("verify").timeout <= timedelta(seconds=90)
    assert timedelta(minutes=2) < rollback.step("verify").timeout <= timedelta(minutes=3)
    # A hotfix's monitor is a quarter of 30 minutes (plus the grace the standard one has).
    assert hotfix.step("monitor").timeout == timedelta(minutes=7, seconds=30) + \
        timedelta(minutes=2)


@pytest.mark.parametrize(("duration", "interval", "expected"), [
    (1800, 30, 450),  # a quarter
    (40, 2, 10),  # a quarter
    (8, 2, 4),  # a quarter would be one interval: two intervals instead
    (3, 2, 3),  # two intervals would be longer than the standard duration: capped
])
def test_hotfix_monitoring_is_a_quarter_but_at_least_two_intervals(
        duration: int, interval: int, expected: int) -> None:
    monitoring = Monitoring(duration=timedelta(seconds=duration),
                            interval=timedelta(seconds=interval), error_threshold=3)
    short = hotfix_monitoring(monitoring)
    assert short.duration == timedelta(seconds=expected)
    assert short.interval == monitoring.interval
    assert short.error_threshold == 3  # the thresholds stay


def test_categories_and_checklist() -> None:
    assert is_fast_track("security") and is_fast_track("outage")
    assert not is_fast_track("critical-bug") and not is_fast_track("compliance")
    with pytest.raises(ValueError):
        is_fast_track("nope")
    items = checklist_items()
    assert len(items) == len(EMERGENCY_CHECKLIST) == 14
    assert all(item["done_by"] is None for item in items)
    assert items[0]["item"] == "Emergency approval obtained"
    assert items[-1] == {"section": "Post-Emergency", "item": "Documentation updated",
                         "done_by": None}


# -- hotfix -------------------------------------------------------------------------------------


def test_hotfix_happy_path_skips_the_comparison_phases_and_monitors_shorter(
        database: Database, database_factory: _Factory) -> None:
    world = _world(database, database_factory, FixedClock(START),
                   monitoring={"duration": "40s", "interval": "2s"})
    try:
        deployment_id, state, engine = world.run(ProcedureKind.HOTFIX, "1.0.1",
                                                 {"maintenance": False})
        assert state is S.SUCCEEDED, world.h.deployments.get(deployment_id)
        states = world.step_states(engine, deployment_id)
        assert states == {name: (StepState.SKIPPED if name.startswith("maintenance")
                                 else StepState.SUCCEEDED) for name in HOTFIX_ORDER}
        assert world.calls() == ["traffic()", "traffic()", "deploy(green, 1.0.1)",
                                 "wait_ready(green)", "slot_url(green)", "switch(green)",
                                 "traffic()", "stop(blue)"]
        # 10 s of monitoring (a quarter of 40 s) at 2 s: five checks, no baseline recorded.
        monitored = world.h.deployments.get_step(deployment_id, "monitor")
        assert monitored is not None and monitored.result is not None
        assert monitored.result["samples"] == 5
        assert monitored.result["watched_s"] == pytest.approx(10, abs=0.5)
        assert BaselineRepository(world.h.database, world.h.clock).latest(ENV) is None
        assert "Monitoring green (1.0.1) for 10s" in world.texts(deployment_id)
        assert world.environment_state() == (Slot.GREEN, "1.0.1")
        assert world.h.lock() == (None, None, None, None)
    finally:
        world.http.close()


def test_a_hotfix_that_starts_in_a_freeze_changes_nothing(
        database: Database, database_factory: _Factory) -> None:
    in_freeze = FixedClock(datetime(2026, 12, 22, 11, 0, tzinfo=UTC))
    world = _world(database, database_factory, in_freeze)
    try:
        deployment_id, state, _ = world.run(ProcedureKind.HOTFIX, "1.0.1", {})
        assert state is S.FAILED
        record = world.h.deployments.get(deployment_id)
        assert record is not None and "year-end freeze" in (record.error or "")
        assert world.calls() == []  # refused before asking the platform anything
        world.assert_as_before()
    finally:
        world.http.close()


# -- emergency ----------------------------------------------------------------------------------


def _emergency_options(category: str) -> dict[str, Any]:
    due = (START + timedelta(hours=24)).isoformat()
    return {"category": category, "fast_track": is_fast_track(category), "review_due": due,
            "checklist": checklist_items()}


@pytest.mark.parametrize("category", ["security", "outage"])
def test_emergency_fast_track(world: World, category: str) -> None:
    deployment_id, state, engine = world.run(ProcedureKind.EMERGENCY, "1.0.2",
                                             _emergency_options(category))
    assert state is S.SUCCEEDED, world.h.deployments.get(deployment_id)
    states = world.step_states(engine, deployment_id)
    # The fast track has no smoke tests and no stability monitor (seed fast-deploy.sh).
    assert states == {name: (StepState.SKIPPED if name in ("smoke_tests", "stability")
                             else StepState.SUCCEEDED)
                      for name in EMERGENCY_ORDER}
    # No validation, no smoke tests, no slot_url; the old slot keeps running.
    assert world.calls() == ["traffic()", "deploy(green, 1.0.2)", "wait_ready(green)",
                             "switch(green)"]
    assert world.platform.ready_timeouts == [timedelta(seconds=60)]
    assert world.platform.slots[Slot.BLUE].running
    assert world.environment_state() == (Slot.GREEN, "1.0.2")
    texts = world.texts(deployment_id)
    assert "Post-emergency review due by Wed 2026-11-25 10:00 UTC" in texts
    assert f"The emergency checklist (14 items) is attached: `/qlp checklist {deployment_id}`" \
        in texts
    assert "keeps running for a quick way back" in texts
    assert world.h.lock() == (None, None, None, None)


@pytest.mark.parametrize("category", ["critical-bug", "compliance"])
def test_emergency_blue_green(world: World, category: str) -> None:
    deployment_id, state, engine = world.run(ProcedureKind.EMERGENCY, "1.0.2",
                                             _emergency_options(category))
    assert state is S.SUCCEEDED, world.h.deployments.get(deployment_id)
    assert set(world.step_states(engine, deployment_id).values()) == {StepState.SUCCEEDED}
    assert world.calls() == ["traffic()", "deploy(green, 1.0.2)", "wait_ready(green)",
                             "slot_url(green)", "switch(green)"]
    assert world.platform.ready_timeouts == [timedelta(minutes=5)]
    # The seed's blue-green-deploy.sh watches the new version for 5 minutes after the switch
    # (monitoring.emergency_stability; the test policy makes it 2 s).
    assert Monitoring().emergency_stability == timedelta(minutes=5)
    stability = world.h.deployments.get_step(deployment_id, "stability")
    assert stability is not None and stability.result is not None
    assert stability.result["watched_s"] == 2
    assert "Monitoring green (1.0.2) for 2s" in world.texts(deployment_id)


def test_a_blue_green_emergency_failing_its_stability_monitor_switches_back(
        world: World) -> None:
    # Healthy for the minimal verification, then the public URL fails for good: the 5-minute
    # stability monitor's automatic trigger (health failures) switches back to blue.
    world.web.healthy_for = 1
    world.web.public_failures = -1
    deployment_id, state, engine = world.run(ProcedureKind.EMERGENCY, "1.0.2",
                                             _emergency_options("critical-bug"))
    assert state is S.ROLLED_BACK
    record = world.h.deployments.get(deployment_id)
    assert record is not None and "monitoring green (1.0.2)" in (record.error or "")
    states = world.step_states(engine, deployment_id)
    assert states["verify"] is StepState.SUCCEEDED
    assert states["stability"] is StepState.FAILED
    assert states["switch_traffic"] is StepState.UNDONE
    world.assert_as_before()


def test_emergency_verification_waits_for_health(world: World) -> None:
    world.web.public_failures = 2  # the public URL needs two more tries after the switch
    deployment_id, state, _ = world.run(ProcedureKind.EMERGENCY, "1.0.2",
                                        _emergency_options("outage"))
    assert state is S.SUCCEEDED
    verify = world.h.deployments.get_step(deployment_id, "verify")
    assert verify is not None and verify.result is not None
    assert verify.result["attempts"] == 3 and verify.result["waited_s"] == 10


def test_emergency_verification_gives_up_after_60_seconds_and_switches_back(
        world: World) -> None:
    world.web.public_failures = -1
    before = world.h.clock.now()
    deployment_id, state, engine = world.run(ProcedureKind.EMERGENCY, "1.0.2",
                                             _emergency_options("security"))
    assert state is S.ROLLED_BACK
    record = world.h.deployments.get(deployment_id)
    assert record is not None
    assert "was not healthy within 1m (13 attempts)" in (record.error or "")
    assert sum(world.h.sleeps) == pytest.approx(60)  # 12 waits of 5 s, then it gave up
    assert world.h.clock.now() - before == timedelta(seconds=60)
    assert world.step_states(engine, deployment_id)["switch_traffic"] is StepState.UNDONE
    world.assert_as_before()


def test_an_emergency_without_a_known_category_fails_at_the_wait(world: World) -> None:
    deployment_id, state, _ = world.run(ProcedureKind.EMERGENCY, "1.0.2", {"category": "nope"})
    assert state is S.ROLLED_BACK
    record = world.h.deployments.get(deployment_id)
    assert record is not None and "no known category" in (record.error or "")
    world.assert_as_before()


# -- rollback -----------------------------------------------------------------------------------


def test_rollback_happy_path(world: World) -> None:
    deployment_id, state, engine = world.run(
        ProcedureKind.ROLLBACK, "0.9.0", {"target_version": "0.9.0", "from_version": OLD})
    assert state is S.SUCCEEDED, world.h.deployments.get(deployment_id)
    assert set(world.step_states(engine, deployment_id).values()) == {StepState.SUCCEEDED}
    assert world.calls() == ["traffic()", "deploy(green, 0.9.0)", "wait_ready(green)",
                             "slot_url(green)", "switch(green)", "traffic()", "stop(blue)"]
    assert world.environment_state() == (Slot.GREEN, "0.9.0")
    assert not world.platform.slots[Slot.BLUE].running
    texts = world.texts(deployment_id)
    assert "Post-rollback verification: http://127.0.0.1:1 answered 2xx on /health" in texts
    # The public URL served 0.9.0 after the switch.
    public = [version for url, _, version in world.web.seen if "fake.invalid" not in url]
    assert public and set(public) == {"0.9.0"}


def test_rollback_verification_gives_up_after_two_minutes(world: World) -> None:
    world.web.public_failures = -1
    deployment_id, state, _ = world.run(ProcedureKind.ROLLBACK, "0.9.0",
                                        {"target_version": "0.9.0"})
    assert state is S.ROLLED_BACK
    record = world.h.deployments.get(deployment_id)
    assert record is not None and "was not healthy within 2m" in (record.error or "")
    assert sum(world.h.sleeps) == pytest.approx(120)
    world.assert_as_before()


# -- a failure at each step ---------------------------------------------------------------------

UNDO_CALLS = {
    "switch_traffic": ("traffic()", "switch(blue)"),  # reads the colour first
    "deploy_idle_slot": ("traffic()", "stop(green)"),
    "maintenance_on": ("set_maintenance(False)",),
}


@dataclass(frozen=True)
class Expect:
    """What a failure at ``failed`` of ``kind`` must leave behind."""

    kind: ProcedureKind
    failed: str
    state: DeploymentState
    undone: tuple[str, ...]  # in the order the engine undoes them

    @property
    def undo_calls(self) -> list[str]:
        calls = [call for step in self.undone for call in UNDO_CALLS[step]]
        if self.failed == "maintenance_off":  # still in maintenance: blue is verified directly
            calls.insert(calls.index("switch(blue)") + 1, "slot_url(blue)")
        return calls


def _expect(kind: ProcedureKind, table: list[tuple[str, DeploymentState, tuple[str, ...]]]
            ) -> list[Expect]:
    return [Expect(kind, failed, state, undone) for failed, state, undone in table]


HOTFIX = ProcedureKind.HOTFIX
EMERGENCY = ProcedureKind.EMERGENCY
ROLLBACK = ProcedureKind.ROLLBACK
_SWITCHED = ("switch_traffic", "deploy_idle_slot")
FAILURES = [
    *_expect(HOTFIX, [
        ("final_validation", S.FAILED, ()),
        ("snapshot", S.ROLLED_BACK, ()),
        ("maintenance_on", S.ROLLED_BACK, ()),
        ("migrate_database", S.ROLLED_BACK, ("maintenance_on",)),
        ("deploy_idle_slot", S.ROLLED_BACK, ("maintenance_on",)),
        ("wait_healthy", S.ROLLED_BACK, ("deploy_idle_slot", "maintenance_on")),
        ("smoke_tests", S.ROLLED_BACK, ("deploy_idle_slot", "maintenance_on")),
        ("switch_traffic", S.ROLLED_BACK, ("deploy_idle_slot", "maintenance_on")),
        ("maintenance_off", S.ROLLED_BACK, (*_SWITCHED, "maintenance_on")),
        ("post_deploy_tests", S.ROLLED_BACK, (*_SWITCHED, "maintenance_on")),
        ("monitor", S.ROLLED_BACK, (*_SWITCHED, "maintenance_on")),
        ("stop_old_slot", S.ROLLED_BACK, (*_SWITCHED, "maintenance_on")),
    ]),
    *_expect(EMERGENCY, [
        ("snapshot", S.FAILED, ()),
        ("deploy_idle_slot", S.ROLLED_BACK, ()),
        ("wait_healthy", S.ROLLED_BACK, ("deploy_idle_slot",)),
        ("smoke_tests", S.ROLLED_BACK, ("deploy_idle_slot",)),
        ("switch_traffic", S.ROLLED_BACK, ("deploy_idle_slot",)),
        ("verify", S.ROLLED_BACK, _SWITCHED),
        ("stability", S.ROLLED_BACK, _SWITCHED),
        ("follow_up", S.ROLLED_BACK, _SWITCHED),
    ]),
    *_expect(ROLLBACK, [
        ("snapshot", S.FAILED, ()),
        ("deploy_idle_slot", S.ROLLED_BACK, ()),
        ("wait_healthy", S.ROLLED_BACK, ("deploy_idle_slot",)),
        ("smoke_tests", S.ROLLED_BACK, ("deploy_idle_slot",)),
        ("switch_traffic", S.ROLLED_BACK, ("deploy_idle_slot",)),
        ("verify", S.ROLLED_BACK, _SWITCHED),
        ("post_deploy_tests", S.ROLLED_BACK, _SWITCHED),
        ("stop_old_slot", S.ROLLED_BACK, _SWITCHED),
    ]),
]
ORDERS = {HOTFIX: HOTFIX_ORDER, EMERGENCY: EMERGENCY_ORDER, ROLLBACK: ROLLBACK_ORDER}
# Every step runs: the hotfix with --maintenance, the emergency as a blue-green one.
OPTIONS: dict[ProcedureKind, dict[str, Any]] = {
    HOTFIX: {"maintenance": True},
    EMERGENCY: _emergency_options("critical-bug"),
    ROLLBACK: {"target_version": "0.9.0"},
}


def test_the_table_covers_every_step() -> None:
    for kind, order in ORDERS.items():
        assert [e.failed for e in FAILURES if e.kind is kind] == list(order)


@pytest.mark.parametrize("expect", FAILURES, ids=[f"{e.kind}-{e.failed}" for e in FAILURES])
@pytest.mark.slow  # 10 s of the fast lane, measured
def test_failure_at_each_step_is_compensated(world: World, expect: Expect) -> None:
    h, platform = world.h, world.platform
    marks: list[int] = []
    playbook = inject(world.playbook(expect.kind), expect.failed, platform, marks)
    deployment_id, state, engine = world.run(expect.kind, "2.0.0", OPTIONS[expect.kind],
                                             playbook)
    assert state is expect.state

    assert len(marks) == 1
    assert [str(call) for call in platform.calls[marks[0]:]] == expect.undo_calls
    assert [d["step"] for d in h.audit_details("step.undone")] == list(expect.undone)

    assert world.step_states(engine, deployment_id) == expected_step_states(
        ORDERS[expect.kind], expect.failed, expect.undone)

    record = h.deployments.get(deployment_id)
    assert record is not None
    assert record.error == f"{playbook.step(expect.failed).title} failed: injected"
    world.assert_as_before()
