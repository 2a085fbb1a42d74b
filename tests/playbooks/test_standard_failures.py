"""The standard playbook under the real Engine: what a failure at each step leaves behind.

Real engine, real repositories (SQLite and PostgreSQL through the ``database`` fixture), the
real standard playbook with ``maintenance=True`` so every step runs, and a previous version
(``1.0.0``) already live on blue so there is something to switch back to. The platform is the
in-memory :class:`~tests.fakes.platform.FakePlatform` (it records every call), the metrics
source always reports 0 errors, and the HTTP checks go through an ``httpx.MockTransport`` that
answers like the fake platform would: 200 with the version JSON of the slot asked (the public
URL serves the live slot, or 503 while maintenance is on).

Each failure case replaces one step's ``run`` with one that raises a non-retryable
``StepFailure("injected")`` and notes how many platform calls had been made, so the calls after
that mark are exactly the ones the undos made. :data:`FAILURES` is the contract, written out by
hand (not computed from the playbook): for a failure at each step, the final state, which steps
are undone (in the order they are undone), the platform calls those undos make, whether the
switch to green had happened (and so was switched back) and whether a baseline was recorded.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import httpx
import pytest

from procedures.checks.http import HttpChecker
from procedures.clock import FixedClock
from procedures.engine import Engine
from procedures.errors import StepFailure
from procedures.model import DeploymentState, ProcedureKind, Slot, StepState
from procedures.platforms.base import SupportsMaintenance
from procedures.playbook import Playbook, StepContext, StepResult
from procedures.playbooks import standard_playbook
from procedures.playbooks.rehearsal import REHEARSAL_STEPS
from storage.baselines import BaselineRepository
from storage.db import Database
from tests.conftest import _Factory
from tests.engine.conftest import ENV, REQUESTER, START, Harness
from tests.fakes.platform import FakePlatform
from tests.fakes.policies import make_policy

S = DeploymentState
OLD, NEW = "1.0.0", "2.0.0"  # live on blue before the run / deployed by the run

ORDER = (
    "final_validation", "snapshot", "maintenance_on", "migrate_database", "deploy_idle_slot",
    "wait_healthy",
    "smoke_tests", "switch_traffic", "maintenance_off", "extended_health",
    "post_deploy_tests", "monitor", "record_baseline", "stop_old_slot",
)


@dataclass(frozen=True)
class Expect:
    """What a failure at ``failed`` must leave behind."""

    failed: str
    state: DeploymentState
    undone: tuple[str, ...]  # in the order the engine undoes them
    undo_calls: tuple[str, ...]  # the platform calls made by those undos, in order
    switched: bool  # traffic had gone to green (and was switched back to blue)
    baseline: bool = False  # record_baseline had succeeded (it has no undo)


FAILURES = [
    # Nothing succeeded: FAILED, nothing to undo.
    Expect("final_validation", S.FAILED, (), (), switched=False),
    # Only steps without undo succeeded: ROLLED_BACK, still nothing to undo.
    Expect("snapshot", S.ROLLED_BACK, (), (), switched=False),
    Expect("maintenance_on", S.ROLLED_BACK, (), (), switched=False),
    # No migration for the version (tests/migrations/test_deploy_migration.py has the rest).
    Expect("migrate_database", S.ROLLED_BACK, ("maintenance_on",),
           ("set_maintenance(False)",), switched=False),
    # Maintenance was on: turned off.
    Expect("deploy_idle_slot", S.ROLLED_BACK, ("maintenance_on",),
           ("set_maintenance(False)",), switched=False),
    # Green was started: stopped (after checking it is not live), then maintenance off.
    Expect("wait_healthy", S.ROLLED_BACK, ("deploy_idle_slot", "maintenance_on"),
           ("traffic()", "stop(green)", "set_maintenance(False)"), switched=False),
    Expect("smoke_tests", S.ROLLED_BACK, ("deploy_idle_slot", "maintenance_on"),
           ("traffic()", "stop(green)", "set_maintenance(False)"), switched=False),
    Expect("switch_traffic", S.ROLLED_BACK, ("deploy_idle_slot", "maintenance_on"),
           ("traffic()", "stop(green)", "set_maintenance(False)"), switched=False),
    # Traffic was on green: back to blue first, then stop green, then maintenance off.
    Expect("maintenance_off", S.ROLLED_BACK,
           ("switch_traffic", "deploy_idle_slot", "maintenance_on"),
           # still in maintenance: the switch back is verified on blue directly
           ("traffic()", "switch(blue)", "slot_url(blue)", "traffic()", "stop(green)",
            "set_maintenance(False)"),
           switched=True),
    Expect("extended_health", S.ROLLED_BACK,
           ("switch_traffic", "deploy_idle_slot", "maintenance_on"),
           ("traffic()", "switch(blue)", "traffic()", "stop(green)", "set_maintenance(False)"),
           switched=True),
    Expect("post_deploy_tests", S.ROLLED_BACK,
           ("switch_traffic", "deploy_idle_slot", "maintenance_on"),
           ("traffic()", "switch(blue)", "traffic()", "stop(green)", "set_maintenance(False)"),
           switched=True),
    Expect("monitor", S.ROLLED_BACK,
           ("switch_traffic", "deploy_idle_slot", "maintenance_on"),
           ("traffic()", "switch(blue)", "traffic()", "stop(green)", "set_maintenance(False)"),
           switched=True),
    Expect("record_baseline", S.ROLLED_BACK,
           ("switch_traffic", "deploy_idle_slot", "maintenance_on"),
           ("traffic()", "switch(blue)", "traffic()", "stop(green)", "set_maintenance(False)"),
           switched=True),
    # Even after monitoring passed, a failing last step switches back; the baseline of the
    # version that is no longer live stays recorded (record_baseline has no undo).
    Expect("stop_old_slot", S.ROLLED_BACK,
           ("switch_traffic", "deploy_idle_slot", "maintenance_on"),
           ("traffic()", "switch(blue)", "traffic()", "stop(green)", "set_maintenance(False)"),
           switched=True, baseline=True),
]

# Every platform call of a successful run, in order.
HAPPY_CALLS = [
    "traffic()",  # final_validation
    "traffic()",  # snapshot
    "set_maintenance(True)",  # maintenance_on
    "deploy(green, 2.0.0)",  # deploy_idle_slot
    "wait_ready(green)",  # wait_healthy
    "slot_url(green)",  # smoke_tests
    "switch(green)",  # switch_traffic
    "set_maintenance(False)",  # maintenance_off
    "traffic()", "stop(blue)",  # stop_old_slot
]


def expected_step_states(order: Sequence[str], failed: str,
                         undone: Collection[str]) -> dict[str, StepState]:
    """Each step's final state after an injected failure at ``failed``: earlier steps UNDONE
    (those with an undo) or SUCCEEDED, the failed one FAILED, the later ones never ran."""
    failed_at = order.index(failed)
    return {name: (StepState.UNDONE if name in undone else StepState.SUCCEEDED)
            if index < failed_at else StepState.FAILED if index == failed_at
            else StepState.PENDING for index, name in enumerate(order)}


def test_the_table_covers_every_step() -> None:
    assert [expect.failed for expect in FAILURES] == list(ORDER)
    with HttpChecker() as http:
        steps = standard_playbook(http=http).steps
        # The staging rehearsal's steps have their own table (test_rehearsal.py).
        assert [s.name for s in steps if s.name not in REHEARSAL_STEPS] == list(ORDER)


# -- doubles ------------------------------------------------------------------------------------


class ZeroErrors:
    """A metrics source that always has data and never an error."""

    def error_count(self, slot: Slot, since: datetime) -> int | None:
        return 0

    def request_count(self, slot: Slot, since: datetime) -> int | None:
        return 0


class Web:
    """The HTTP side of the fake platform, as an ``httpx.MockTransport`` handler.

    ``http://fake.invalid/<colour>/...`` reaches that slot directly; any other host is the
    public URL, which serves the live slot, or 503 while maintenance is on. A running slot
    answers 200 with its version; a stopped one gives 502. Every answer is kept in ``seen``.
    """

    def __init__(self, platform: FakePlatform) -> None:
        self.platform = platform
        self.seen: list[tuple[str, int, str | None]] = []  # (url, status, version)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        platform = self.platform
        if request.url.host == "fake.invalid":
            slot: Slot | None = Slot(request.url.path.strip("/").split("/")[0])
        elif platform.in_maintenance:
            return self._answer(request, httpx.Response(503, json={"maintenance": True}))
        else:
            slot = platform.live
        status = platform.slots[slot] if slot is not None else None
        if status is None or not status.running:
            return self._answer(request, httpx.Response(502, json={"error": "slot down"}))
        assert slot is not None
        return self._answer(request, httpx.Response(
            200, json={"status": "ok", "version": status.version, "slot": slot.value}))

    def _answer(self, request: httpx.Request, response: httpx.Response) -> httpx.Response:
        version = response.json().get("version")
        self.seen.append((str(request.url), response.status_code, version))
        return response


@dataclass
class World:
    h: Harness
    web: Web
    http: HttpChecker

    @property
    def platform(self) -> FakePlatform:
        return self.h.platform

    def playbook(self) -> Playbook:
        playbook = standard_playbook(http=self.http, monitoring=self.h.policy.monitoring)
        return dataclasses.replace(playbook, steps=tuple(  # rehearsal: test_rehearsal.py
            step for step in playbook.steps if step.name not in REHEARSAL_STEPS))

    def engine(self, playbook: Playbook) -> Engine:
        return self.h.engine(playbook, metrics_for=lambda _env: ZeroErrors())

    def start(self, engine: Engine) -> int:
        deployment = self.h.deployments.create(
            ProcedureKind.STANDARD, NEW, ENV, REQUESTER, state=S.QUEUED,
            options={"maintenance": True},
        )
        claimed = self.h.deployments.claim_next(engine.worker_id)
        assert deployment.id is not None and claimed is not None
        assert claimed.id == deployment.id
        return deployment.id

    def step_states(self, engine: Engine, deployment_id: int) -> dict[str, StepState]:
        return {step.name: step.state for step in engine.snapshot(deployment_id).steps}

    def environment_state(self) -> tuple[Slot | None, str | None, Slot | None, str | None]:
        row = self.h.environments.get(ENV)
        assert row is not None
        return (row.live_slot, row.live_version, row.previous_slot, row.previous_version)


@pytest.fixture
def world(database: Database, database_factory: _Factory, tmp_path: Path) -> Iterator[World]:
    policy = make_policy()  # with an (empty) migrations directory: migrate_database runs
    env = policy.environments[ENV].model_copy(update={"migrations_dir": str(tmp_path)})
    policy = policy.model_copy(update={"environments": {**policy.environments, ENV: env}})
    h = Harness(database=database, factory=database_factory, clock=FixedClock(START),
                policy=policy)
    assert isinstance(h.platform, SupportsMaintenance)  # so maintenance_on/off really act
    # The previous deployment: 1.0.0 live on blue (the FakePlatform's default), and recorded.
    assert h.platform.live is Slot.BLUE and h.platform.slots[Slot.BLUE].version == OLD
    h.environments.record_switch(ENV, Slot.BLUE, OLD)
    web = Web(h.platform)
    http = HttpChecker(transport=httpx.MockTransport(web))
    try:
        yield World(h, web, http)
    finally:
        http.close()


def inject(playbook: Playbook, name: str, platform: FakePlatform,
           marks: list[int]) -> Playbook:
    """``playbook`` with step ``name`` failing (not retryable); notes the calls made so far."""

    def fail(ctx: StepContext) -> StepResult:
        marks.append(len(platform.calls))
        raise StepFailure("injected", retryable=False)

    steps = tuple(dataclasses.replace(step, run=fail) if step.name == name else step
                  for step in playbook.steps)
    return dataclasses.replace(playbook, steps=steps)


# -- the contract -------------------------------------------------------------------------------


@pytest.mark.parametrize("expect", FAILURES, ids=[e.failed for e in FAILURES])
@pytest.mark.slow  # 5 s of the fast lane, measured
def test_failure_at_each_step_is_compensated(world: World, expect: Expect) -> None:
    h, platform = world.h, world.platform
    marks: list[int] = []
    playbook = inject(world.playbook(), expect.failed, platform, marks)
    engine = world.engine(playbook)
    deployment_id = world.start(engine)

    assert engine.run(deployment_id) is expect.state

    # The injected step ran exactly once; after it, only the undos touched the platform.
    assert len(marks) == 1
    undo_calls = [str(call) for call in platform.calls[marks[0]:]]
    assert undo_calls == list(expect.undo_calls)
    assert [d["step"] for d in h.audit_details("step.undone")] == list(expect.undone)

    # Every step's final state: before the failure UNDONE (with an undo) or SUCCEEDED
    # (without one), the failed step FAILED, the rest never ran.
    assert world.step_states(engine, deployment_id) == expected_step_states(
        ORDER, expect.failed, expect.undone)

    record = h.deployments.get(deployment_id)
    assert record is not None
    assert record.error == f"{playbook.step(expect.failed).title} failed: injected"
    assert record.current_step is None
    assert h.lock() == (None, None, None, None)  # the environment is unlocked

    # The bot's record: blue/1.0.0 live again; green/2.0.0 is "previous" only if it was live.
    previous = (Slot.GREEN, NEW) if expect.switched else (None, None)
    assert world.environment_state() == (Slot.BLUE, OLD, *previous)
    assert (platform.called("switch") != []) is expect.switched

    # The platform is as before the run: blue live with 1.0.0, green stopped, no maintenance.
    assert platform.live is Slot.BLUE
    assert platform.slots[Slot.BLUE].running and platform.slots[Slot.BLUE].version == OLD
    assert not platform.slots[Slot.GREEN].running
    assert platform.in_maintenance is False

    latest = BaselineRepository(h.database, h.clock).latest(ENV)
    assert (latest is not None) is expect.baseline
    if latest is not None:
        assert latest.version == NEW


def test_happy_path(world: World) -> None:
    h, platform = world.h, world.platform
    engine = world.engine(world.playbook())
    deployment_id = world.start(engine)

    assert engine.run(deployment_id) is S.SUCCEEDED

    assert [str(call) for call in platform.calls] == HAPPY_CALLS
    assert world.step_states(engine, deployment_id) == dict.fromkeys(ORDER, StepState.SUCCEEDED)
    assert h.audit_details("step.undone") == []
    record = h.deployments.get(deployment_id)
    assert record is not None and record.error is None and record.current_step is None

    # Green (2.0.0) is live, blue is stopped, maintenance is off.
    assert platform.live is Slot.GREEN
    assert platform.slots[Slot.GREEN].running and platform.slots[Slot.GREEN].version == NEW
    assert not platform.slots[Slot.BLUE].running
    assert platform.in_maintenance is False
    assert world.environment_state() == (Slot.GREEN, NEW, Slot.BLUE, OLD)

    # Every HTTP check was answered 200: the live blue before the switch, green directly for
    # the smoke tests, and the public URL serving green after it (never during maintenance).
    assert world.web.seen and all(status == 200 for _, status, _ in world.web.seen)
    assert [version for url, _, version in world.web.seen if "fake.invalid" in url] == [NEW]
    public = [version for url, _, version in world.web.seen if "fake.invalid" not in url]
    assert public[0] == OLD and set(public[1:]) == {NEW}

    # The baseline of 2.0.0, from the monitoring samples (policy: 2 s every 1 s).
    latest = BaselineRepository(h.database, h.clock).latest(ENV)
    assert latest is not None and latest.version == NEW
    assert latest.metrics["samples"] == 2 and latest.metrics["error_count"] == 0

    assert h.lock() == (None, None, None, None)
