"""How much time the engine and the bot themselves add to a deployment.

    python benchmarks/engine.py [--runs 20] [--steps 50] [--deployments 5] [--rollbacks 5]

Prints figures; asserts nothing. Three measurements, each next to its target:

1. **Engine overhead per step** on SQLite and on PostgreSQL: a playbook of no-op steps run by
   the real Engine over the real repositories (the bot's own wiring: group-committed audit,
   ``NullReporter``), mean and median ms per step over the runs. PostgreSQL is a scratch
   database ``qlp_bench_<hex>`` on the local server (``QLP_BENCH_POSTGRES_URL``, default
   ``postgresql+psycopg://postgres@127.0.0.1:5432/postgres``), migrated, dropped at the end.
   Targets: <= 5 ms/step (SQLite), <= 10 ms/step (PostgreSQL).
2. **A zero-wait standard deployment** on the real local platform (router and sample-service
   processes on free ports under a temporary directory), SQLite, ``NullReporter``, monitoring
   as short as the policy allows (duration = interval = 1 s). Waiting goes through a clock that
   runs at wall speed and jumps forward on the injected sleep, so monitoring and the pauses of
   the extended health check cost no wall time; polling for readiness is real. Wall time of
   ``Engine.run`` from start to SUCCEEDED, split into waiting on the platform (the
   ``deploy_idle_slot`` + ``wait_healthy`` steps: process start and readiness) and the rest
   (the bot's own work, HTTP checks included). Target: <= 2 s for the whole deployment.
3. **Rollback latency**: v1 live on blue, then ``v2.0.0-unhealthy`` (healthy for the first
   ``QLP_SAMPLE_HEALTHY_FOR`` health requests: readiness, smoke and extended health pass,
   monitoring fails). From the moment the monitor step raises (``time.perf_counter()`` just
   before the exception leaves the step) to the first GET through the router answered by v1
   (a background thread polls every 5 ms once the trigger has fired). Target: <= 0.5 s.

Every process, temporary directory and scratch database is cleaned up, also on error.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import socket
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.scratch import POSTGRES_URL, admin_connection, scratch_postgres  # noqa: E402
from procedures.checks.http import HttpChecker  # noqa: E402
from procedures.engine import Engine  # noqa: E402
from procedures.model import DeploymentState, ProcedureKind  # noqa: E402
from procedures.platforms.base import Platform  # noqa: E402
from procedures.platforms.local import LocalPlatform  # noqa: E402
from procedures.platforms.local.metrics import LocalMetrics  # noqa: E402
from procedures.playbook import MetricsSource, Playbook, Step, StepContext, StepResult  # noqa: E402
from procedures.playbooks import standard_playbook  # noqa: E402
from procedures.policy import Policy  # noqa: E402
from procedures.reporting import NullReporter  # noqa: E402
from storage.audit import AuditLog  # noqa: E402
from storage.audit_group import GroupCommitAuditLog  # noqa: E402
from storage.baselines import BaselineRepository  # noqa: E402
from storage.db import Database  # noqa: E402
from storage.deployments import DeploymentRepository  # noqa: E402
from storage.environments import EnvironmentStateRepository  # noqa: E402
from storage.migrate import upgrade  # noqa: E402
from tests.fakes.policies import BASE, free_port, make_policy  # noqa: E402

TARGET_SQLITE_MS = 5.0
TARGET_POSTGRES_MS = 10.0
TARGET_DEPLOY_S = 2.0
TARGET_ROLLBACK_S = 0.5
ENV = "production"
REQUESTER = "U0BENCH"
POLL_EVERY = 0.005
HEALTHY_FOR = 5  # wait_ready 1 + smoke tests 1 + extended health 3; monitoring then fails


class SkippingClock:
    """The wall clock, plus every second slept through :meth:`sleep` (which returns at once).

    Durations measured with it are real except for waits, which cost nothing.
    """

    def __init__(self) -> None:
        self._skipped = 0.0
        self._lock = threading.Lock()

    def now(self) -> datetime:
        with self._lock:
            skipped = self._skipped
        return datetime.now(UTC) + timedelta(seconds=skipped)

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self._skipped += max(seconds, 0.0)


def _nowhere(_environment: str) -> Any:
    raise AssertionError("the no-op playbook touches no platform and no metrics")


def build_engine(database: Database, clock: SkippingClock, playbook: Playbook, policy: Policy,
                 platform_for: Callable[[str], Platform] = _nowhere,
                 metrics_for: Callable[[str], MetricsSource] = _nowhere) -> Engine:
    """An Engine wired as ``bot.wiring`` wires it, with a NullReporter."""
    return Engine(
        deployments=DeploymentRepository(database, clock),
        environments=EnvironmentStateRepository(database, clock),
        audit=GroupCommitAuditLog(AuditLog(database, clock), database, clock),
        reporter=NullReporter(),
        playbooks={playbook.kind: playbook},
        policy=policy,
        platform_for=platform_for,
        metrics_for=metrics_for,
        baselines=BaselineRepository(database, clock),
        clock=clock,
        sleep=clock.sleep,
        worker_id="bench",
    )


def claim(engine: Engine, version: str) -> int:
    """A queued standard deployment of ``version``, claimed for ``engine`` (as the worker)."""
    deployments = engine.deployments
    assert isinstance(deployments, DeploymentRepository)
    created = deployments.create(ProcedureKind.STANDARD, version, ENV, REQUESTER,
                                 state=DeploymentState.QUEUED)
    claimed = deployments.claim_next(engine.worker_id)
    assert created.id is not None and claimed is not None and claimed.id == created.id
    return created.id


def ms(seconds: float) -> str:
    return f"{seconds * 1000:7.1f} ms"


# -- 1. engine overhead per step ----------------------------------------------------------------


def noop(_ctx: StepContext) -> StepResult:
    return None


def overhead(database: Database, runs: int, steps: int) -> list[float]:
    """Seconds per step of each run of a playbook of ``steps`` no-op steps (after a warm-up)."""
    playbook = Playbook(ProcedureKind.STANDARD, "No-op", tuple(
        Step(f"noop_{i:02d}", f"No-op {i}", noop) for i in range(steps)))
    engine = build_engine(database, SkippingClock(), playbook, make_policy())
    per_step: list[float] = []
    for number in range(runs + 1):
        deployment_id = claim(engine, "1.0.0")
        started = time.perf_counter()
        state = engine.run(deployment_id)
        took = time.perf_counter() - started
        if state is not DeploymentState.SUCCEEDED:
            raise RuntimeError(f"no-op run #{deployment_id} ended {state.value}")
        if number:  # the first run warms caches and connection pools
            per_step.append(took / steps)
    return per_step


def report_overhead(backend: str, per_step: list[float], target_ms: float, steps: int) -> None:
    mean, median = statistics.fmean(per_step) * 1000, statistics.median(per_step) * 1000
    verdict = "ok" if median <= target_ms else "OVER TARGET"
    print(f"  {backend:<10} mean {mean:5.2f} ms/step  median {median:5.2f} ms/step  "
          f"(min {min(per_step) * 1000:.2f}, max {max(per_step) * 1000:.2f}; "
          f"{median * steps:.0f} ms per {steps}-step run)  target <= {target_ms:g} ms/step: "
          f"{verdict}")


def bench_overhead(tmp: Path, runs: int, steps: int) -> None:
    print(f"1. Engine overhead: {runs} runs of {steps} no-op steps (after one warm-up run)")
    sqlite = Database(f"sqlite:///{tmp / 'overhead.db'}")
    try:
        upgrade(sqlite)
        report_overhead("SQLite", overhead(sqlite, runs, steps), TARGET_SQLITE_MS, steps)
    finally:
        sqlite.dispose()
    try:
        admin = admin_connection()
    except psycopg.OperationalError as exc:
        print(f"  PostgreSQL skipped (not reachable at {POSTGRES_URL}): {exc}")
        return
    try:
        with scratch_postgres(admin) as database:
            report_overhead("PostgreSQL", overhead(database, runs, steps), TARGET_POSTGRES_MS,
                            steps)
    finally:
        admin.close()


# -- 2 and 3. the standard playbook on the local platform --------------------------------------


def local_policy(monitoring: Mapping[str, Any]) -> Policy:
    env = {
        "platform": "local",
        "url": f"http://127.0.0.1:{free_port()}",
        "health": ["/health"],
        "smoke": ["/api/v1/status"],
        "local": {"command": BASE["environments"]["production"]["local"]["command"],
                  "slots": {"blue": free_port(), "green": free_port()},
                  "ready_timeout": "10s"},
    }
    return make_policy(environments={ENV: env}, monitoring=dict(monitoring))


@dataclass
class Timings:
    """Wall time per step of the current run, and when the monitor step raised."""

    steps: dict[str, float] = field(default_factory=dict)
    monitor_raised: float | None = None
    raised: threading.Event = field(default_factory=threading.Event)

    def reset(self) -> None:
        self.steps.clear()
        self.monitor_raised = None
        self.raised.clear()


def timed(playbook: Playbook, timings: Timings) -> Playbook:
    """``playbook`` with each step's ``run`` timed; the monitor step notes when it raises."""

    def wrap(step: Step) -> Step:
        inner = step.run

        def run(ctx: StepContext) -> StepResult:
            started = time.perf_counter()
            try:
                return inner(ctx)
            except BaseException:
                if step.name == "monitor":
                    timings.monitor_raised = time.perf_counter()
                    timings.raised.set()
                raise
            finally:
                timings.steps[step.name] = (timings.steps.get(step.name, 0.0)
                                            + time.perf_counter() - started)

        return dataclasses.replace(step, run=run)

    return dataclasses.replace(playbook, steps=tuple(wrap(step) for step in playbook.steps))


@dataclass
class Site:
    """One local environment with its engine, torn down by :meth:`close`."""

    policy: Policy
    platform: LocalPlatform
    database: Database
    http: HttpChecker
    engine: Engine
    timings: Timings

    @classmethod
    def open(cls, directory: Path, monitoring: Mapping[str, Any],
             extra_env: Mapping[str, str] | None = None) -> Site:
        policy = local_policy(monitoring)
        clock = SkippingClock()
        platform = LocalPlatform(ENV, policy.environments[ENV], directory / "state",
                                 extra_env=extra_env)
        metrics = LocalMetrics(platform, clock=clock)
        directory.mkdir(parents=True, exist_ok=True)
        database = Database(f"sqlite:///{directory / 'qlp.db'}")
        http = HttpChecker()
        timings = Timings()
        playbook = timed(standard_playbook(http=http, monitoring=policy.monitoring), timings)
        engine = build_engine(database, clock, playbook, policy,
                              platform_for=lambda _env: platform,
                              metrics_for=lambda _env: metrics)
        site = cls(policy, platform, database, http, engine, timings)
        try:
            upgrade(database)
        except BaseException:
            site.close()
            raise
        return site

    def deploy(self, version: str) -> tuple[DeploymentState, float]:
        """Run one deployment of ``version``; its final state and the wall time of the run."""
        deployment_id = claim(self.engine, version)
        self.timings.reset()
        started = time.perf_counter()
        state = self.engine.run(deployment_id)
        took = time.perf_counter() - started
        return state, took

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.platform.shutdown_all()
        self.platform.close()
        self.http.close()
        self.database.dispose()


def require(site: Site, version: str, expected: DeploymentState) -> float:
    state, took = site.deploy(version)
    if state is not expected:
        raise RuntimeError(f"deploying {version} ended {state.value}, not {expected.value}; "
                           f"steps timed: {sorted(site.timings.steps)}")
    return took


def bench_deployment(directory: Path, deployments: int) -> None:
    print("\n2. Zero-wait standard deployment on the local platform (SQLite, NullReporter, "
          "monitoring 1 s at 1 s on a skipping clock)")
    site = Site.open(directory, {"duration": "1s", "interval": "1s"})
    try:
        first = require(site, "v1.0.0", DeploymentState.SUCCEEDED)
        print(f"  first deployment (starts the router, nothing to validate or stop): "
              f"{first:.3f} s")
        print(f"  {'version':<9} {'total':>10} {'platform':>10} {'bot own':>10} "
              f"{'stop old':>10} {'own - stop':>10}")
        totals, owns = [], []
        for number in range(1, deployments + 1):
            version = f"v1.{number}.0"
            total = require(site, version, DeploymentState.SUCCEEDED)
            steps = site.timings.steps
            platform = steps["deploy_idle_slot"] + steps["wait_healthy"]
            stop = steps["stop_old_slot"]
            own = total - platform
            totals.append(total)
            owns.append(own)
            print(f"  {version:<9} {ms(total)} {ms(platform)} {ms(own)} {ms(stop)} "
                  f"{ms(own - stop)}")
        median = statistics.median(totals)
        verdict = "ok" if median <= TARGET_DEPLOY_S else "OVER TARGET"
        print(f"  median total {median:.3f} s (min {min(totals):.3f}, max {max(totals):.3f}), "
              f"bot's own median {statistics.median(owns):.3f} s; target <= "
              f"{TARGET_DEPLOY_S:g} s for the whole deployment: {verdict}")
        print("  platform = deploy_idle_slot + wait_healthy (process start, readiness polls "
              "every 0.1 s); stop old = stop_old_slot (SIGTERM, wait for exit), counted in "
              "bot own")
        slowest = sorted(site.timings.steps.items(), key=lambda item: -item[1])[:5]
        print("  last run, slowest steps: " + ", ".join(
            f"{name} {seconds * 1000:.0f} ms" for name, seconds in slowest))
    finally:
        site.close()


def first_v1_after(url: str, armed: threading.Event, stop: threading.Event,
                   out: list[float]) -> None:
    """Once ``armed``, GET ``url`` every 5 ms; append the time the first v1 answer arrived."""
    with httpx.Client(trust_env=False, timeout=1.0) as client:
        if not armed.wait(timeout=120):
            return
        while not stop.is_set():
            try:
                response = client.get(url)
                version = response.json().get("version") if response.status_code == 200 else None
            except (httpx.HTTPError, ValueError):
                version = None
            if version == "v1.0.0":
                out.append(time.perf_counter())
                return
            time.sleep(POLL_EVERY)


def bench_rollback(directory: Path, repeats: int) -> None:
    print("\n3. Rollback latency: monitor step raises -> router serves v1 again "
          f"({repeats} times; v2.0.0-unhealthy, QLP_SAMPLE_HEALTHY_FOR={HEALTHY_FOR})")
    site = Site.open(directory, {"duration": "5s", "interval": "1s",
                                 "health_failure_ratio": 0.5},
                     extra_env={"QLP_SAMPLE_HEALTHY_FOR": str(HEALTHY_FOR)})
    url = site.platform.router_url + "/api/v1/status"
    try:
        require(site, "v1.0.0", DeploymentState.SUCCEEDED)
        latencies: list[float] = []
        for number in range(1, repeats + 1):
            served: list[float] = []
            stop = threading.Event()
            poller = threading.Thread(target=first_v1_after,
                                      args=(url, site.timings.raised, stop, served),
                                      daemon=True)
            site.timings.reset()
            poller.start()
            try:
                state, _took = site.deploy("v2.0.0-unhealthy")
                finished = time.perf_counter()
                poller.join(timeout=5)
            finally:
                stop.set()
                site.timings.raised.set()  # release a poller still waiting to be armed
                poller.join(timeout=5)
            raised = site.timings.monitor_raised
            if state is not DeploymentState.ROLLED_BACK or raised is None or not served:
                raise RuntimeError(
                    f"repeat {number}: {state.value}, monitor raised: {raised is not None}, "
                    f"v1 seen: {bool(served)}; steps run: {list(site.timings.steps)}")
            latency = served[0] - raised
            latencies.append(latency)
            print(f"  repeat {number}: trigger -> v1 served {ms(latency)}; trigger -> "
                  f"ROLLED_BACK {ms(finished - raised)} (includes stopping green)")
        median = statistics.median(latencies)
        verdict = "ok" if median <= TARGET_ROLLBACK_S else "OVER TARGET"
        print(f"  min {ms(min(latencies))}  median {ms(median)}  max {ms(max(latencies))}  "
              f"target <= {TARGET_ROLLBACK_S:g} s: {verdict}")
    finally:
        site.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--deployments", type=int, default=5)
    parser.add_argument("--rollbacks", type=int, default=5)
    args = parser.parse_args()
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, {socket.gethostname()}")
    with tempfile.TemporaryDirectory(prefix="qlp-bench-engine-") as name:
        tmp = Path(name)
        bench_overhead(tmp, args.runs, args.steps)
        bench_deployment(tmp / "deploy", args.deployments)
        bench_rollback(tmp / "rollback", args.rollbacks)


if __name__ == "__main__":
    main()
