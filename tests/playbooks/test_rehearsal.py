"""The staging rehearsal of a standard deployment (seed 2.2) under the real Engine.

Real engine and repositories (SQLite and PostgreSQL), the real standard playbook, and one
in-memory :class:`~tests.fakes.platform.FakePlatform` per environment: production
(``http://prod.invalid/<colour>`` directly, public URL ``http://127.0.0.1:1``) and staging
(``http://staging.invalid/<colour>``, public ``http://127.0.0.1:4``), each with 1.0.0 live on
blue. Production names ``promoted_from: staging``. The HTTP checks go through an
``httpx.MockTransport`` (:class:`Web`) that answers like the platforms would: 200 with the
version of the slot asked (the public URL serves the live slot), a chosen status for a chosen
(environment, version, path), and each environment's answers "take" a chosen time on the
checker's injected timer. Time passes only through the engine's injected sleep.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import httpx
import pytest
import yaml

from bot.runner import RunQueueTask
from procedures.checks.http import HttpChecker
from procedures.clock import FixedClock
from procedures.engine import Engine
from procedures.model import DeploymentState, ProcedureKind, Slot, StepState
from procedures.platforms.base import SlotStatus
from procedures.playbook import Playbook
from procedures.playbooks import standard_playbook
from procedures.playbooks.rehearsal import REHEARSAL_STEPS
from procedures.policy import Rehearsal, parse_policy
from storage.db import Database
from tests.conftest import _Factory
from tests.engine.conftest import REQUESTER, START, Harness
from tests.fakes.platform import FakePlatform
from tests.fakes.policies import BASE, make_policy

S = DeploymentState
OLD, NEW = "1.0.0", "2.0.0"
PROD, STAGING = "production", "staging"
HOSTS = {"prod.invalid": PROD, "staging.invalid": STAGING}
PUBLIC = {"127.0.0.1:1": PROD, "127.0.0.1:4": STAGING}


def rehearsing_policy(compare_for: str = "30s", max_slowdown: float = 1.5) -> object:
    environments = copy.deepcopy(BASE["environments"])
    for env in environments.values():
        env["health"] = ["/health"]
        env["smoke"] = ["/api/v1/status"]
    environments[PROD]["promoted_from"] = STAGING
    environments[PROD]["rehearsal"] = {"compare_for": compare_for, "max_slowdown": max_slowdown}
    return make_policy(environments=environments,
                       monitoring={"duration": "2s", "interval": "1s"})


class ZeroErrors:
    """Metrics that always have data and never an error."""

    def error_count(self, slot: Slot, since: datetime) -> int | None:
        return 0

    def request_count(self, slot: Slot, since: datetime) -> int | None:
        return 0


class Web:
    """Both environments' HTTP side (see the module docstring); ``seconds`` is the checker's
    timer, moved by each answer's latency."""

    def __init__(self, platforms: dict[str, FakePlatform]) -> None:
        self.platforms = platforms
        self.failing: dict[tuple[str, str, str], int] = {}  # (env, version, path) -> status
        self.latency_ms: dict[str, float] = {PROD: 100.0, STAGING: 110.0}
        self.seconds = 0.0
        self.seen: list[tuple[str, str, int]] = []  # (env, url, status)

    def timer(self) -> float:
        return self.seconds

    def __call__(self, request: httpx.Request) -> httpx.Response:
        host = request.url.host if request.url.port is None else \
            f"{request.url.host}:{request.url.port}"
        path = request.url.path
        if host in HOSTS:
            env = HOSTS[host]
            colour, _, rest = path.strip("/").partition("/")
            slot: Slot | None = Slot(colour)
            path = "/" + rest
        else:
            env = PUBLIC[host]
            slot = self.platforms[env].live
        self.seconds += self.latency_ms[env] / 1000
        status = self.platforms[env].slots.get(slot) if slot is not None else None
        if status is None or not status.running:
            return self._answer(env, request, 502, {"error": "slot down"})
        code = self.failing.get((env, status.version or "", path), 200)
        return self._answer(env, request, code, {"version": status.version})

    def _answer(self, env: str, request: httpx.Request, code: int,
                body: dict[str, object]) -> httpx.Response:
        self.seen.append((env, str(request.url), code))
        return httpx.Response(code, json=body)


class CrashAfterDeploy(FakePlatform):
    """Staging that takes the worker down right after it started a deployment, once."""

    crash = True

    def deploy(self, slot: Slot, version: str) -> SlotStatus:
        status = super().deploy(slot, version)
        if self.crash:
            self.crash = False
            raise Crash("the worker died")
        return status


class Crash(BaseException):
    """A killed worker: not caught by the engine (the run stays as it was)."""


@dataclass
class World:
    h: Harness
    web: Web
    http: HttpChecker
    platforms: dict[str, FakePlatform]
    log: list[str] = field(default_factory=list)

    @property
    def prod(self) -> FakePlatform:
        return self.platforms[PROD]

    @property
    def staging(self) -> FakePlatform:
        return self.platforms[STAGING]

    def playbook(self) -> Playbook:
        return standard_playbook(http=self.http, monitoring=self.h.policy.monitoring)

    def engine(self, *, worker_id: str = "w1", restarted: bool = False,
               sleep: Callable[[float], None] | None = None) -> Engine:
        kwargs: dict[str, object] = {
            "platform_for": lambda env: self.platforms[env],
            "metrics_for": lambda _env: ZeroErrors()}
        if sleep is not None:
            kwargs["sleep"] = sleep
        if restarted:
            return self.h.restarted(self.playbook(), worker_id=worker_id, **kwargs)
        return self.h.engine(self.playbook(), worker_id=worker_id, **kwargs)

    def start(self, engine: Engine, environment: str = PROD, version: str = NEW) -> int:
        deployment = self.h.deployments.create(ProcedureKind.STANDARD, version, environment,
                                               REQUESTER, state=S.QUEUED)
        claimed = self.h.deployments.claim_next(engine.worker_id)
        assert deployment.id is not None and claimed is not None
        assert claimed.id == deployment.id
        return deployment.id

    def states(self, engine: Engine, deployment_id: int) -> dict[str, StepState]:
        return {s.name: s.state for s in engine.snapshot(deployment_id).steps}

    def calls(self, environment: str) -> list[str]:
        return [str(call) for call in self.platforms[environment].calls]

    def recorded(self, environment: str) -> tuple[Slot | None, str | None]:
        row = self.h.environments.get(environment)
        assert row is not None
        return row.live_slot, row.live_version

    def lock(self, environment: str) -> tuple[str | None, int | None, str | None]:
        row = self.h.environments.get(environment)
        assert row is not None
        return row.lock_holder, row.lock_deployment_id, row.lock_owner

    def thread(self, deployment_id: int) -> str:
        return "\n".join(self.h.reporter.texts(deployment_id))


def make_world(database: Database, factory: _Factory, staging: FakePlatform | None = None,
               **policy: object) -> World:
    h = Harness(database=database, factory=factory, clock=FixedClock(START),
                policy=rehearsing_policy(**policy))  # type: ignore[arg-type]
    platforms = {PROD: FakePlatform(base_url="http://prod.invalid"),
                 STAGING: staging or FakePlatform(base_url="http://staging.invalid")}
    for name in (PROD, STAGING):
        h.environments.record_switch(name, Slot.BLUE, OLD)
    web = Web(platforms)
    http = HttpChecker(transport=httpx.MockTransport(web), timer=web.timer)
    return World(h, web, http, platforms)


@pytest.fixture
def world(database: Database, database_factory: _Factory) -> Iterator[World]:
    made = make_world(database, database_factory)
    try:
        yield made
    finally:
        made.http.close()


def assert_production_untouched(world: World) -> None:
    assert world.calls(PROD) == ["traffic()"]  # final_validation's read, nothing else
    assert world.prod.live is Slot.BLUE and world.prod.slots[Slot.BLUE].version == OLD
    assert not world.prod.slots[Slot.GREEN].running
    assert world.recorded(PROD) == (Slot.BLUE, OLD)


def assert_staging_put_back(world: World) -> None:
    assert world.staging.live is Slot.BLUE and world.staging.slots[Slot.BLUE].version == OLD
    assert not world.staging.slots[Slot.GREEN].running
    assert world.recorded(STAGING) == (Slot.BLUE, OLD)
    assert world.lock(STAGING) == (None, None, None)


# -- the happy path ---------------------------------------------------------------------------


@pytest.mark.parametrize(("live_ms", "staging_ms"), [(100.0, 140.0), (2.0, 4.0)],
                         ids=["within-1.5x", "under-the-50ms-floor"])
def test_a_production_deployment_is_rehearsed_on_staging_first(
        database: Database, database_factory: _Factory, live_ms: float,
        staging_ms: float) -> None:
    world = make_world(database, database_factory)
    world.web.latency_ms = {PROD: live_ms, STAGING: staging_ms}
    engine = world.engine()
    deployment_id = world.start(engine)

    assert engine.run(deployment_id) is S.SUCCEEDED, world.h.deployments.get(deployment_id)

    # Staging: deployed into its idle green, smoke-tested there, switched, old blue stopped.
    assert world.calls(STAGING) == ["traffic()", "deploy(green, 2.0.0)", "wait_ready(green)",
                                    "slot_url(green)", "switch(green)", "traffic()",
                                    "stop(blue)"]
    assert world.staging.live is Slot.GREEN and world.staging.slots[Slot.GREEN].version == NEW
    assert world.recorded(STAGING) == (Slot.GREEN, NEW)  # /qlp status staging shows it
    assert world.lock(STAGING) == (None, None, None)
    # Then production, as before.
    assert world.prod.live is Slot.GREEN and world.recorded(PROD) == (Slot.GREEN, NEW)
    states = world.states(engine, deployment_id)
    assert all(states[name] is StepState.SUCCEEDED for name in REHEARSAL_STEPS)
    names = [step.name for step in world.playbook().steps]
    assert names.index("rehearsal_compare") < names.index("snapshot")
    assert names[1:5] == list(REHEARSAL_STEPS)

    # Every staging check before production's first request to its idle slot.
    first_prod_slot = next(i for i, (env, url, _) in enumerate(world.web.seen)
                           if env == PROD and "prod.invalid" in url)
    assert all(env == PROD or i < first_prod_slot for i, (env, _, _) in enumerate(world.web.seen))
    smoke = [url for env, url, _ in world.web.seen if "staging.invalid" in url]
    assert smoke == ["http://staging.invalid/green/health",
                     "http://staging.invalid/green/api/v1/status"]

    # The thread: the staging steps, the two p95 figures, then production's steps.
    thread = world.thread(deployment_id)
    for phrase in ("✓ Staging rehearsal: deploy to the idle slot",
                   "Rehearsal on staging (live: 1.0.0 on blue): deploying 2.0.0 to green",
                   "✓ Staging rehearsal: ready and smoke tests",
                   "staging serves 2.0.0 on green (http://127.0.0.1:4)",
                   f"p95 {staging_ms:.0f} ms on staging (2.0.0) against {live_ms:.0f} ms on "
                   "production (1.0.0)",
                   "Rehearsal passed", "Stopped staging's old blue slot (1.0.0)"):
        assert phrase in thread, (phrase, thread)
    assert thread.index("Rehearsal passed") < thread.index("✓ Pre-deployment snapshot")
    compared = engine.snapshot(deployment_id)
    assert compared.state is S.SUCCEEDED
    row = {r.name: r for r in world.h.deployments.steps(deployment_id)}["rehearsal_compare"]
    assert row.result is not None
    assert (row.result["staging_p95_ms"], row.result["live_p95_ms"]) == (staging_ms, live_ms)
    assert row.result["rounds"] == 10 and row.result["passed"] is True
    # Staging's lock was the run's while it rehearsed, audited on staging.
    acquired = [e for e in world.h.audit.recent(200) if e.action == "lock.acquired"
                and e.environment == STAGING]
    assert [e.detail["reason"] for e in acquired] == [f"rehearsal of #{deployment_id} for "
                                                      "production"]
    world.http.close()


def test_a_first_deployment_is_rehearsed_without_a_comparison(world: World) -> None:
    """Nothing is live on production yet: the rehearsal deploys, smoke-tests and switches
    staging, and says there is nothing to compare with (no time spent sampling)."""
    world.platforms[PROD] = FakePlatform(live=None, base_url="http://prod.invalid")
    engine = world.engine()
    deployment_id = world.start(engine)
    assert engine.run(deployment_id) is S.SUCCEEDED
    assert "nothing is live on production yet, so there is no performance to compare " \
           "staging with" in world.thread(deployment_id)
    row = {r.name: r for r in world.h.deployments.steps(deployment_id)}["rehearsal_compare"]
    assert row.result == {"passed": True, "compared": False, "environment": STAGING}
    assert world.staging.live is Slot.GREEN and world.prod.live is Slot.BLUE


def test_a_deployment_to_staging_itself_skips_the_rehearsal(world: World) -> None:
    engine = world.engine()
    deployment_id = world.start(engine, environment=STAGING)
    assert engine.run(deployment_id) is S.SUCCEEDED
    states = world.states(engine, deployment_id)
    assert {states[name] for name in REHEARSAL_STEPS} == {StepState.SKIPPED}
    assert world.calls(PROD) == []


def test_staging_already_serving_the_version_is_not_deployed_again(world: World) -> None:
    world.staging.deploy(Slot.GREEN, NEW)
    world.staging.switch(Slot.GREEN)
    world.staging.calls.clear()
    engine = world.engine()
    deployment_id = world.start(engine)
    assert engine.run(deployment_id) is S.SUCCEEDED
    assert "deploy(green, 2.0.0)" not in world.calls(STAGING)
    assert "switch(green)" not in world.calls(STAGING)
    assert "it already serves 2.0.0 on green; not deployed again" in world.thread(deployment_id)
    assert world.prod.live is Slot.GREEN


# -- stopped by staging, before production ------------------------------------------------------


def test_a_staging_smoke_failure_stops_the_run_before_production(world: World) -> None:
    world.web.failing[(STAGING, NEW, "/api/v1/status")] = 500
    engine = world.engine()
    deployment_id = world.start(engine)

    assert engine.run(deployment_id) is S.ROLLED_BACK

    record = world.h.deployments.get(deployment_id)
    assert record is not None and record.error is not None
    assert record.error.startswith("Staging rehearsal: ready and smoke tests failed: smoke "
                                   "tests failed on staging (2.0.0): GET http://staging."
                                   "invalid/green/api/v1/status: HTTP 500"), record.error
    assert_production_untouched(world)
    assert_staging_put_back(world)
    states = world.states(engine, deployment_id)
    assert states["rehearsal_deploy"] is StepState.UNDONE
    assert states["rehearsal_smoke"] is StepState.FAILED
    assert states["snapshot"] is StepState.PENDING  # no production snapshot, no backup
    assert "Stopped staging's green slot (2.0.0)" in world.thread(deployment_id)


def test_a_slower_staging_stops_the_comparison_with_both_p95_figures(world: World) -> None:
    world.web.latency_ms = {PROD: 100.0, STAGING: 300.0}
    engine = world.engine()
    deployment_id = world.start(engine)

    assert engine.run(deployment_id) is S.ROLLED_BACK

    record = world.h.deployments.get(deployment_id)
    assert record is not None and record.error is not None
    assert ("staging is too slow: p95 300 ms on staging (2.0.0) against 100 ms on production "
            "(1.0.0) over 30s (10 rounds), 3.00x, over the 1.5x allowed") in record.error
    row = {r.name: r for r in world.h.deployments.steps(deployment_id)}["rehearsal_compare"]
    assert row.state is StepState.FAILED and row.result is not None
    assert (row.result["staging_p95_ms"], row.result["live_p95_ms"]) == (300.0, 100.0)
    assert row.result["passed"] is False
    # Staging was switched back to blue (recorded) and green stopped; production untouched.
    assert world.calls(STAGING)[-4:] == ["traffic()", "switch(blue)", "traffic()",
                                         "stop(green)"]
    assert_staging_put_back(world)
    assert_production_untouched(world)
    thread = world.thread(deployment_id)
    assert "staging switched back to blue (1.0.0 on blue)" in thread
    # The comparison took its 30 s (ten rounds of 3 s) of the injected clock.
    assert row.started_at is not None and row.finished_at is not None
    assert row.finished_at - row.started_at == timedelta(seconds=30)


def test_a_staging_path_failing_twice_in_a_row_stops_the_comparison_at_once(
        world: World) -> None:
    engine = world.engine()
    deployment_id = world.start(engine)
    # Passes its smoke tests on the slot, then fails on staging's public URL.
    original = world.staging.switch

    def switch_then_break(slot: Slot) -> None:
        original(slot)
        world.web.failing[(STAGING, NEW, "/health")] = 503

    world.staging.switch = switch_then_break  # type: ignore[method-assign]
    assert engine.run(deployment_id) is S.ROLLED_BACK
    record = world.h.deployments.get(deployment_id)
    assert record is not None and record.error is not None
    assert "staging failed 2 checks in a row while compared (2.0.0): GET " \
           "http://127.0.0.1:4/health: HTTP 503" in record.error, record.error
    assert_production_untouched(world)


def test_a_cancel_during_the_comparison_puts_staging_back(world: World) -> None:
    box: dict[str, Engine] = {}

    def sleep(seconds: float) -> None:
        world.h.clock.advance(timedelta(seconds=seconds))
        record = world.h.deployments.get(1)
        if record is not None and record.current_step == "rehearsal_compare" \
                and record.state is S.RUNNING:
            assert box["engine"].request_cancel(1, "U0LEAD1")

    engine = box["engine"] = world.engine(sleep=sleep)
    deployment_id = world.start(engine)
    assert deployment_id == 1
    assert engine.run(deployment_id) is S.ROLLED_BACK
    record = world.h.deployments.get(deployment_id)
    assert record is not None and record.error == "cancelled by <@U0LEAD1>"
    assert_staging_put_back(world)
    assert_production_untouched(world)


# -- the lock -----------------------------------------------------------------------------------


def test_a_person_locking_staging_stops_the_rehearsal_naming_them(world: World) -> None:
    assert world.h.environments.acquire_lock(STAGING, "U0OPS", "testing search", None, None)
    engine = world.engine()
    deployment_id = world.start(engine)

    assert engine.run(deployment_id) is S.ROLLED_BACK
    record = world.h.deployments.get(deployment_id)
    assert record is not None and record.error is not None
    assert ("the rehearsal on staging cannot start: staging is locked by Slack user U0OPS "
            "(testing search)") in record.error, record.error
    assert "/qlp unlock staging" in record.error
    assert world.calls(STAGING) == []
    assert_production_untouched(world)
    assert world.lock(STAGING) == ("U0OPS", None, None)  # still theirs


def test_a_staging_run_under_way_is_waited_for(world: World) -> None:
    other = world.h.deployments.create(ProcedureKind.STANDARD, "1.5.0", STAGING, "U0QA",
                                       state=S.RUNNING)
    assert other.id is not None
    assert world.h.environments.acquire_lock(STAGING, "U0QA", f"deployment #{other.id}",
                                             other.id, "w9", START)
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        world.h.clock.advance(timedelta(seconds=seconds))
        if sum(slept) >= 20 and world.lock(STAGING)[1] == other.id:  # it ends meanwhile
            world.h.deployments.transition(other.id, [S.RUNNING], S.SUCCEEDED)
            world.h.environments.release_lock(STAGING, other.id)

    engine = world.engine(sleep=sleep)
    deployment_id = world.start(engine)
    assert engine.run(deployment_id) is S.SUCCEEDED
    thread = world.thread(deployment_id)
    assert (f"deployment #{other.id} (running) holds the lock on staging (deployment "
            f"#{other.id}): the rehearsal waits for it (up to 10m)") in thread, thread
    assert "staging is free after 20s: rehearsing now" in thread
    assert world.staging.live is Slot.GREEN


def test_a_staging_run_during_the_rehearsal_waits_in_line(world: World) -> None:
    """While the rehearsal holds staging, a staging deployment that a worker claims goes back
    in line, naming the deployment that holds staging; it runs once the rehearsal let go."""
    second = world.engine(worker_id="w2")
    seen: dict[str, object] = {}
    original = world.staging.switch

    def switch_and_try_a_staging_run(slot: Slot) -> None:
        original(slot)
        if "id" in seen:
            return
        staging_run = world.h.deployments.create(ProcedureKind.STANDARD, "3.0.0", STAGING,
                                                 "U0QA", state=S.QUEUED)
        assert staging_run.id is not None
        seen["id"] = staging_run.id
        claimed = world.h.deployments.claim_next("w2")
        assert claimed is not None and claimed.id == staging_run.id
        seen["state"] = second.run(staging_run.id)
        seen["lock"] = world.lock(STAGING)

    world.staging.switch = switch_and_try_a_staging_run  # type: ignore[method-assign]
    engine = world.engine()
    deployment_id = world.start(engine)
    assert engine.run(deployment_id) is S.SUCCEEDED

    staging_id = seen["id"]
    assert isinstance(staging_id, int)
    assert seen["state"] is S.QUEUED
    assert seen["lock"] == (REQUESTER, deployment_id, "w1")
    assert (f"Queued behind #{deployment_id}, which holds staging"
            in "\n".join(world.h.reporter.texts(staging_id)))
    # Once production's run has let go of staging, the staging run goes through.
    claimed = world.h.deployments.claim_next("w2")
    assert claimed is not None and claimed.id == staging_id
    assert second.run(staging_id) is S.SUCCEEDED
    assert world.staging.live is Slot.BLUE and world.staging.slots[Slot.BLUE].version == "3.0.0"


# -- a restart ------------------------------------------------------------------------------------


def test_a_restart_during_the_rehearsal_resumes_without_deploying_twice(
        database: Database, database_factory: _Factory) -> None:
    world = make_world(database, database_factory,
                       staging=CrashAfterDeploy(base_url="http://staging.invalid"))
    engine = world.engine()
    deployment_id = world.start(engine)
    with pytest.raises(Crash):
        engine.run(deployment_id)
    assert world.states(engine, deployment_id)["rehearsal_deploy"] is StepState.RUNNING
    assert world.lock(STAGING) == (REQUESTER, deployment_id, "w1")

    # Another worker takes the run over once the first one's heartbeat is stale: staging's lock
    # is parked with production's (no owner, so the stale-lock reaper leaves it).
    world.h.clock.advance(timedelta(seconds=60))
    survivor = world.engine(worker_id="w2", restarted=True)
    assert survivor.recover(timedelta(seconds=30)) == [deployment_id]
    assert world.lock(STAGING) == (REQUESTER, deployment_id, None)
    claimed = world.h.deployments.claim_next("w2")
    assert claimed is not None and claimed.id == deployment_id
    assert survivor.run(deployment_id) is S.SUCCEEDED

    assert world.calls(STAGING).count("deploy(green, 2.0.0)") == 1
    assert "green already runs 2.0.0" in world.thread(deployment_id)
    assert "not deployed again" in world.thread(deployment_id)
    assert world.staging.live is Slot.GREEN and world.recorded(STAGING) == (Slot.GREEN, NEW)
    assert world.lock(STAGING) == (None, None, None)
    assert world.prod.live is Slot.GREEN
    world.http.close()


def test_production_failing_later_leaves_the_rehearsed_version_on_staging(
        world: World) -> None:
    world.prod.fail("switch", message="front door refused")
    engine = world.engine()
    deployment_id = world.start(engine)
    assert engine.run(deployment_id) is S.ROLLED_BACK
    assert world.staging.live is Slot.GREEN and world.recorded(STAGING) == (Slot.GREEN, NEW)
    assert "staging keeps 2.0.0: its rehearsal had passed" in world.thread(deployment_id)
    assert world.lock(STAGING) == (None, None, None)
    assert world.prod.live is Slot.BLUE


# -- the example policy -----------------------------------------------------------------------


def test_the_example_rehearses_production_on_staging_with_the_seed_values() -> None:
    """qlp.example.yml: production is promoted from staging; its commented ``rehearsal:``
    block, uncommented, loads and holds the defaults (the seed's 300 s, 1.5x)."""
    text = (Path(__file__).resolve().parents[2] / "qlp.example.yml").read_text()
    data = yaml.safe_load(text)
    policy = parse_policy(data)
    assert policy.promoted_from(PROD) == STAGING and policy.promoted_from(STAGING) is None
    lines = text.splitlines()
    start = lines.index("    # rehearsal:")
    block = [re.sub(r"^    # ", "    ", line) for line in lines[start:start + 3]]
    rehearsal = yaml.safe_load("\n".join(line[4:] for line in block))["rehearsal"]
    data["environments"][PROD]["rehearsal"] = rehearsal
    loaded = parse_policy(data).rehearsal_of(PROD)
    assert loaded == Rehearsal() and loaded.compare_for == timedelta(seconds=300)
    assert loaded.max_slowdown == 1.5


def test_a_graceful_stop_during_the_rehearsal_hands_staging_over_with_the_run(
        world: World) -> None:
    box: dict[str, Engine] = {}

    def sleep(seconds: float) -> None:
        world.h.clock.advance(timedelta(seconds=seconds))
        record = world.h.deployments.get(1)
        if record is not None and record.current_step == "rehearsal_compare":
            box["engine"].request_stop()  # the replica got SIGTERM

    engine = box["engine"] = world.engine(sleep=sleep)
    deployment_id = world.start(engine)
    assert engine.run(deployment_id) is S.QUEUED
    # Staging's lock stays the run's, parked (no owner: the stale-lock reaper leaves it).
    assert world.lock(STAGING) == (REQUESTER, deployment_id, None)

    survivor = world.engine(worker_id="w2")
    claimed = world.h.deployments.claim_next("w2")
    assert claimed is not None and claimed.id == deployment_id
    assert survivor.run(deployment_id) is S.SUCCEEDED
    assert world.calls(STAGING).count("deploy(green, 2.0.0)") == 1
    assert world.lock(STAGING) == (None, None, None)
    assert world.staging.live is Slot.GREEN and world.prod.live is Slot.GREEN


def test_the_run_queue_holds_a_staging_run_back_while_a_rehearsal_holds_staging(
        world: World) -> None:
    """The worker's queue does not claim a staging run while a production run's rehearsal
    holds staging's lock (claimed, it would only go back in line, pass after pass); the card
    says once what it waits for, and it is claimed once the rehearsal let go."""
    production = world.h.deployments.create(ProcedureKind.STANDARD, NEW, PROD, REQUESTER,
                                            state=S.RUNNING)
    staging = world.h.deployments.create(ProcedureKind.STANDARD, "3.0.0", STAGING, "U0QA",
                                         state=S.QUEUED)
    assert production.id is not None and staging.id is not None
    assert world.h.environments.acquire_lock(STAGING, REQUESTER,
                                             f"rehearsal of #{production.id} for production",
                                             production.id, "w1", START)
    engine = world.engine(worker_id="w2")
    queue = RunQueueTask(engine, world.h.deployments, worker_id="w2")
    try:
        assert [queue.run_once() for _ in range(3)] == [False, False, False]
        assert world.h.state(staging.id) is S.QUEUED
        said = [t for t in world.h.reporter.texts(staging.id) if "Queued behind" in t]
        assert said == [f"Queued behind #{production.id}, which is under way on staging: "
                        f"#{staging.id} starts when #{production.id} has ended."]
        world.h.environments.release_lock(STAGING, production.id)  # the rehearsal passed
        assert queue.run_once() is True
        record = world.h.deployments.get(staging.id)
        assert record is not None and record.state is not S.QUEUED
    finally:
        queue.shutdown()
