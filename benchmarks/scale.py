"""``/qlp history``, ``/qlp stats`` and ``/qlp status`` at scale, on PostgreSQL.

    python benchmarks/scale.py [--deployments 100000] [--audit 1000000] [--span-days 730]
                               [--calls 50] [--keep]

Prints figures; asserts nothing. Makes a scratch database ``qlp_scale_bench`` on the local
server (``QLP_BENCH_POSTGRES_URL``, default
``postgresql+psycopg://postgres@127.0.0.1:5432/postgres``), dropped first if it exists,
migrates it, and loads with ``COPY``:

* ``--deployments`` deployments (default 100,000) requested over the last ``--span-days`` days
  (default 730, so the 365-day period holds about half of them; ``--span-days 365`` puts every
  one in it) across the demo policy's environments, of every kind and outcome, with one
  approval each and five step rows each;
* ``--audit`` audit rows (default 1,000,000; their hash chain is not valid, nothing here
  verifies it);
* each run's monitoring window figures (error and request counts, for the error rate during
  deployments) and a performance baseline for each succeeded change (for the p95 comparison);
* 200,000 sent outbox rows, a few retrying and dead ones, and a few running deployments;

then rebuilds the ``/qlp stats`` summary tables (COPY bypasses the transitions that keep them).

Then, after ``ANALYZE``, calls the command handlers themselves (``history_text``,
``stats_text``, ``status_text`` with a real ``HandlerContext`` over ``build_services``; status
without its burst cache, so each call reads the database) ``--calls`` times each after three
warm-up calls, and prints p50/p99 in ms next to the target (p99 < 50 ms). The database is
dropped at the end unless ``--keep``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bot.commands.history import history_text  # noqa: E402
from bot.commands.stats import stats_text  # noqa: E402
from bot.commands.status import status_text  # noqa: E402
from bot.context import HandlerContext, Request  # noqa: E402
from bot.grammar import parse  # noqa: E402
from bot.policy_source import demo_policy  # noqa: E402
from bot.settings import Settings  # noqa: E402
from bot.wiring import build_services  # noqa: E402
from procedures.clock import SystemClock  # noqa: E402
from procedures.engine import CANCELLED_BY  # noqa: E402
from procedures.model import DeploymentState as S  # noqa: E402
from procedures.model import ProcedureKind as K  # noqa: E402
from storage.db import Database  # noqa: E402
from storage.migrate import upgrade  # noqa: E402
from storage.stats_queries import StatsQueries  # noqa: E402
from storage.stats_summary import rebuild  # noqa: E402

POSTGRES_URL = os.environ.get(
    "QLP_BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
NAME = "qlp_scale_bench"
TARGET_MS = 50.0
NOTIFICATIONS = 200_000
STEPS = ("check_window", "deploy_idle_slot", "wait_healthy", "switch", "monitor")


def _libpq(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


@contextlib.contextmanager
def scratch_database(keep: bool, reuse: bool) -> Iterator[Database]:
    """``qlp_scale_bench``, dropped and made again (unless ``reuse``), migrated; dropped at
    the end unless ``keep``."""
    with psycopg.connect(_libpq(POSTGRES_URL), autocommit=True) as admin:
        drop = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(NAME))
        if not reuse:
            admin.execute(drop)
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(NAME)))
        database = Database(make_url(POSTGRES_URL).set(database=NAME))
        try:
            upgrade(database)
            yield database
        finally:
            database.dispose()
            if not keep:
                admin.execute(drop)


class _Copy:
    """Rows written as COPY text (tab-separated, ``\\N`` for NULL)."""

    def __init__(self) -> None:
        self.buffer = io.StringIO()

    def row(self, *values: Any) -> None:
        self.buffer.write("\t".join("\\N" if v is None else str(v) for v in values) + "\n")


def _ts(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


def load(database: Database, *, deployments: int, audit: int, span: timedelta,
         environments: list[str], now: datetime) -> None:
    rng = random.Random(14)
    weights = {S.SUCCEEDED: 70, S.ROLLED_BACK: 6, S.FAILED: 4, S.CANCELLED: 3, S.REJECTED: 3,
               S.EXPIRED: 3, S.NEEDS_ATTENTION: 1}
    states, state_weights = list(weights), list(weights.values())
    d, a, st, b = _Copy(), _Copy(), _Copy(), _Copy()
    step_id = baseline_id = 0
    times = sorted(now - timedelta(seconds=rng.uniform(0, span.total_seconds()))
                   for _ in range(deployments))
    for id, requested in enumerate(times, start=1):
        kind = K.ROLLBACK if rng.random() < 0.05 else rng.choice(
            [K.STANDARD, K.STANDARD, K.STANDARD, K.HOTFIX, K.EMERGENCY])
        state = rng.choices(states, state_weights)[0]
        cancelled = state in (S.ROLLED_BACK, S.CANCELLED) and rng.random() < 0.3
        started = None if state in (S.REJECTED, S.EXPIRED, S.CANCELLED) else \
            requested + timedelta(seconds=rng.uniform(5, 1800))
        finished = (started or requested) + timedelta(seconds=rng.uniform(60, 3600))
        error = f"{CANCELLED_BY}<@U0LEAD1>" if cancelled else (
            "5 of 10 health checks failed" if state in (S.ROLLED_BACK, S.FAILED,
                                                        S.NEEDS_ATTENTION) else None)
        env = rng.choice(environments)
        d.row(id, kind.value, f"v1.{id // 100}.{id % 100}", env, "U0DEV", state.value, "{}",
              "plan", "C0DEPLOY", _ts(requested), _ts(finished), _ts(started), _ts(finished),
              0, error)
        a.row(id, "U0LEAD1", "approve", "plan", _ts(requested))
        if started is not None:
            # The monitoring window's figures (the error rate during deployments), and the
            # baseline a succeeded change records (the p95 comparison): every figure of
            # /qlp stats has rows to read.
            requests = rng.randrange(500, 20_000)
            monitor = (f'{{"error_count": {rng.randrange(0, requests // 50)}, '
                       f'"request_count": {requests}}}')
            for position, name in enumerate(STEPS):
                step_id += 1
                st.row(step_id, id, position, name, "succeeded", 1, _ts(started),
                       _ts(started), monitor if name == "monitor" else "{}")
            if state is S.SUCCEEDED and kind is not K.ROLLBACK:
                baseline_id += 1
                b.row(baseline_id, env, f"v1.{id // 100}.{id % 100}", _ts(finished),
                      f'{{"response_ms_p95": {rng.uniform(80, 400):.1f}, '
                      f'"response_ms_p50": {rng.uniform(20, 80):.1f}}}')
    running = []
    for env in environments:  # what status shows: one run going in each environment
        id = deployments + len(running) + 1
        running.append(id)
        d.row(id, K.STANDARD.value, "v9.9.9", env, "U0DEV", S.RUNNING.value, "{}", "plan",
              "C0DEPLOY", _ts(now), _ts(now), _ts(now), None, 0, None)
    with psycopg.connect(_libpq(str(database.url.set(drivername="postgresql")))) as pg:
        with pg.cursor() as cur:
            _copy(cur, "deployments (id, kind, version, environment, requester, state, options, "
                  "plan_hash, channel, created_at, updated_at, started_at, finished_at, "
                  "revision, error)", d)
            _copy(cur, "approvals (deployment_id, actor, decision, plan_hash, created_at)", a)
            _copy(cur, "step_runs (id, deployment_id, position, name, state, attempts, "
                  "started_at, finished_at, result)", st)
            _copy(cur, "performance_baselines (id, environment, version, recorded_at, "
                  "metrics)", b)
            events = _Copy()
            first = now - span
            for id in range(1, audit + 1):
                at = first + span * (id / audit)
                deployment_id = rng.randrange(1, deployments + 1)
                events.row(id, _ts(at), "U0DEV", "deployment.transition", deployment_id,
                           rng.choice(environments), '{"to": "succeeded"}', "0" * 64,
                           f"{id:064x}")
                if id % 200_000 == 0:
                    _copy(cur, "audit_events (id, at, actor, action, deployment_id, "
                          "environment, detail, prev_hash, hash)", events)
                    events = _Copy()
            _copy(cur, "audit_events (id, at, actor, action, deployment_id, environment, "
                  "detail, prev_hash, hash)", events)
            n = _Copy()
            for id in range(1, NOTIFICATIONS + 1):
                at = now - span + span * (id / NOTIFICATIONS)
                state = "sent" if id < NOTIFICATIONS - 10 else ("dead" if id % 2 else "pending")
                n.row(id, _ts(at), "C0DEPLOY", "post", '{"text": "hello"}',
                      "channel:C0DEPLOY", state, 1, _ts(at),
                      None if state == "sent" else "ratelimited",
                      _ts(at) if state == "sent" else None)
            _copy(cur, "notifications (id, created_at, channel, kind, payload, ordering_key, "
                  "state, attempts, next_attempt_at, last_error, sent_at)", n)
            for table, column in (("deployments", "id"), ("step_runs", "id"),
                                  ("performance_baselines", "id"),
                                  ("approvals", "id"), ("audit_events", "id"),
                                  ("notifications", "id")):
                cur.execute(sql.SQL("SELECT setval(pg_get_serial_sequence({}, {}), "
                                    "(SELECT max({}) FROM {}))").format(
                    sql.Literal(table), sql.Literal(column), sql.Identifier(column),
                    sql.Identifier(table)))
            cur.execute("UPDATE audit_head SET last_id = %s", (audit,))
        pg.commit()
    # COPY bypasses the repository's transitions, which keep /qlp stats' summary: rebuild it
    # as migration 0008 does for existing deployments.
    rebuilding = time.perf_counter()
    with database.connect() as connection, connection.begin():
        rebuild(connection)
    print(f"Rebuilt the /qlp stats summary in {time.perf_counter() - rebuilding:.1f} s")
    with psycopg.connect(_libpq(str(database.url.set(drivername="postgresql"))),
                         autocommit=True) as pg:
        pg.execute("VACUUM ANALYZE")


def _copy(cur: psycopg.Cursor[Any], target: str, rows: _Copy) -> None:
    with cur.copy(f"COPY {target} FROM STDIN") as copy:  # type: ignore[arg-type]
        copy.write(rows.buffer.getvalue())


def _server_cpu(database: Database) -> float:
    """CPU seconds used so far by the PostgreSQL backends serving ``database`` (same host:
    read from /proc; 0 where it cannot be read)."""
    with database.connect(read_only=True) as connection:
        from sqlalchemy import text
        pids = connection.execute(text(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database()")).scalars()
        total = 0
        for pid in pids:
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            total += int(fields[11]) + int(fields[12])  # utime, stime (clock ticks)
    return total / os.sysconf("SC_CLK_TCK")


def measure(name: str, call: Callable[[], str], calls: int, database: Database) -> float:
    """Time ``calls`` calls after three warm-ups; print p50/p99 of the wall time, and the CPU
    per call (this process plus the database's backends): on a shared, busy machine the wall
    time is mostly waiting for a core, the CPU time is what the call costs."""
    for _ in range(3):
        call()
    samples = []
    cpu_before, server_before = time.process_time(), _server_cpu(database)
    for _ in range(calls):
        start = time.perf_counter()
        call()
        samples.append((time.perf_counter() - start) * 1000)
    client = (time.process_time() - cpu_before) * 1000 / calls
    server = (_server_cpu(database) - server_before) * 1000 / calls
    samples.sort()
    p50 = statistics.median(samples)
    p99 = samples[min(len(samples) - 1, round(0.99 * (len(samples) - 1)))]
    verdict = "ok" if p99 < TARGET_MS else "MISSED"
    print(f"  {name:<26} p50 {p50:6.1f} ms  p99 {p99:6.1f} ms  (max {samples[-1]:6.1f})  "
          f"CPU/call {client:5.1f} + {server:5.1f} ms (bot + database)  "
          f"target p99 < {TARGET_MS:g} ms: {verdict}")
    return p99


def _totals(database: Database, days: int, environment: str | None = None) -> str:
    now = datetime.now(UTC)
    return str(StatsQueries(database).totals(
        since=now - timedelta(days=days), until=now, environment=environment,
        frequency_environment=environment or "production"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--deployments", type=int, default=100_000)
    parser.add_argument("--audit", type=int, default=1_000_000)
    parser.add_argument("--span-days", type=int, default=730)
    parser.add_argument("--calls", type=int, default=50)
    parser.add_argument("--keep", action="store_true", help="do not drop the database")
    parser.add_argument("--reuse", action="store_true",
                        help="measure a database kept by an earlier --keep run (no load)")
    args = parser.parse_args()
    policy = demo_policy()
    environments = list(policy.environments)
    now = datetime.now(UTC)
    with scratch_database(args.keep or args.reuse, args.reuse) as database, \
            tempfile.TemporaryDirectory() as home:
        started = time.perf_counter()
        if not args.reuse:
            load(database, deployments=args.deployments, audit=args.audit,
                 span=timedelta(days=args.span_days), environments=environments, now=now)
        verb = "Reused" if args.reuse else "Loaded"
        print(f"{verb} {args.deployments:,} deployments over {args.span_days} days "
              f"({', '.join(environments)}), {args.audit:,} audit rows, {NOTIFICATIONS:,} "
              f"outbox rows into {NAME} in {time.perf_counter() - started:.1f} s")
        settings = Settings(QLP_HOME=Path(home), QLP_DATABASE_URL=str(
            database.url.render_as_string(hide_password=False)))
        services = build_services(settings, policy=policy, clock=SystemClock(),
                                  database=database, migrate=False)
        services.status_reader = None  # every status call reads the database
        ctx = HandlerContext(Request(user_id="U0DEV", channel_id="C0DEPLOY"), services)
        with database.connect(read_only=True) as connection:
            from sqlalchemy import text
            in_year = connection.execute(text(
                "SELECT count(*) FROM deployments WHERE created_at >= now() - interval "
                "'365 days'")).scalar()
        busy = os.getloadavg()[0]
        print(f"{args.calls} calls each (after 3 warm-ups); the 365-day period holds "
              f"{in_year:,} deployments; load average {busy:.1f} on {os.cpu_count()} CPUs:")
        other = environments[-1]
        for name, text_of in (
            ("history (10)", lambda: history_text(ctx, parse("history"))),
            ("history (100)", lambda: history_text(ctx, parse("history 100"))),
            (f"history {other} (100)", lambda: history_text(ctx, parse(f"history {other} 100"))),
            ("stats 30 days", lambda: stats_text(ctx, parse("stats 30"))),
            ("stats 365 days", lambda: stats_text(ctx, parse("stats 365"))),
            (f"stats {other} 365 days", lambda: stats_text(ctx, parse(f"stats {other} 365"))),
            ("status", lambda: status_text(ctx, parse("status"))),
            # The totals alone (storage.stats_queries over the summary tables), without the
            # handler's other reads (storage.stats_impact's error rate and p95 comparison).
            ("stats totals 30 days", lambda: _totals(database, 30)),
            ("stats totals 365 days", lambda: _totals(database, 365)),
            (f"stats totals {other} 365 d", lambda: _totals(database, 365, other)),
        ):
            measure(name, text_of, args.calls, database)
        print("\n" + stats_text(ctx, parse("stats 365")))
        services.audit.close()


if __name__ == "__main__":
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    main()
