"""Slack economy: 20 deployments at once in one channel, against Slack's pace.

    python benchmarks/slack_economy.py [--runs 20] [--monitor 60] [--rollbacks 3]
                                       [--postgres] [--one-channel-key]

Prints figures; asserts nothing. Target (issue 14 item 7): no thread reply more than 30 s late.

What runs, for real: the production ``SlackOutboxSender`` in a ``bot.worker.Worker`` (poll
0.25 s, as the bot runs it), the production WebClient (``bot.app.make_web_client``) over HTTP to
the Slack double enforcing Slack's pace on real time (``chat.postMessage`` one a second per
channel with a burst of 3, ``chat.update`` 50 a minute per workspace with a burst of 10; 429 +
``Retry-After`` beyond), the outbox on SQLite (or a scratch PostgreSQL database with
``--postgres``), the real ``SlackReporter`` writing the rows.

What is generated: the *runs*. Twenty runs of the standard playbook on 2 cores through the bot
harness and the local platform would measure the machine rather than the outbox, so a
run-shaped load generator drives the real reporter instead: one thread per deployment calls
``run_changed`` and ``event`` exactly as the engine does (the card when requested, an update
when approved, per step an update at its start, an update and a "✓ <step> (<duration>)" reply
at its end, the playbook's own replies inside steps, the broadcast "Traffic switched" and
"Deployed ... in ..."), with the standard playbook's 14 steps and durations shaped like the
local platform's (deploy 2 s, readiness 1.5 s, extended health 5 s, monitoring ``--monitor``
seconds with a progress reply every 20 s, the rest 0.2-0.5 s). ``--rollbacks`` of them fail
monitoring half-way: the urgent broadcast "✗ ... Rolling back.", an "↩ Undid" reply per undone
step, the broadcast "Rolled back". The runs are requested within the first 4 s, and each is
approved 2-6 s after Slack shows its card (nobody presses a button Slack has not shown).

Figures: messages enqueued (thread replies, card posts, card updates), Web API calls made
(posts, updates, per deployment), 429s received, the lateness of each thread reply (from the
moment the reporter wrote it to the moment Slack accepted the post carrying it: max, p99,
p50), of the urgent replies alone, the staleness of cards (a card update's content shown by a
later ``chat.update`` counts from when it was written until then), and the drain time (from the
last message written to the last delivered). ``--one-channel-key`` puts thread replies back in
one ordering key per channel, as before this change, for comparison.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import random
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from sqlmodel import col, select

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import bot.slack_reporter as slack_reporter  # noqa: E402
from benchmarks.scratch import admin_connection, scratch_postgres  # noqa: E402
from bot.app import make_web_client  # noqa: E402
from bot.outbox_sender import SlackOutboxSender  # noqa: E402
from bot.slack_reporter import SlackReporter  # noqa: E402
from bot.worker import Worker  # noqa: E402
from procedures.clock import SystemClock  # noqa: E402
from procedures.model import DeploymentState, ProcedureKind, StepState  # noqa: E402
from procedures.reporting import RunSnapshot, StepSnapshot  # noqa: E402
from storage.db import Database  # noqa: E402
from storage.deployments import DeploymentRepository  # noqa: E402
from storage.migrate import upgrade  # noqa: E402
from storage.models import Notification  # noqa: E402
from storage.outbox import URGENT, Outbox  # noqa: E402
from tests.fakes.bot_harness import BOT_TOKEN  # noqa: E402
from tests.fakes.slack_double import SlackDouble  # noqa: E402

CHANNEL = "C0DEPLOY"
TARGET_S = 30.0

# The standard playbook's steps (procedures/playbooks/standard.py), the local platform's shape
# of their durations (seconds), and the replies the playbook itself writes inside each.
STEPS: list[tuple[str, str, float, list[str]]] = [
    ("final_validation", "Final validation of the live system", 0.5, []),
    ("snapshot", "Pre-deployment snapshot", 0.5, ["Backup qlp-env.dump created (1.2 MB)"]),
    ("maintenance_on", "Maintenance mode on", 0.2, []),
    ("migrate_database", "Database migration of this version (if any)", 0.2,
     ["No migration in this version"]),
    ("deploy_idle_slot", "Deploy the new version to the idle slot", 2.0,
     ["Deploying {version} to green"]),
    ("wait_healthy", "Wait until the new slot is healthy", 1.5, []),
    ("smoke_tests", "Smoke tests on the new slot", 0.5, ["Smoke tests passed: 3 of 3"]),
    ("switch_traffic", "Switch traffic to the new slot", 0.3, ["!Traffic switched to green"]),
    ("maintenance_off", "Maintenance mode off", 0.2, []),
    ("extended_health", "Extended health check on the public URL", 5.0, []),
    ("post_deploy_tests", "Post-deployment tests on the public URL", 0.5, []),
    ("monitor", "Monitor the new version", -1.0, []),
    ("record_baseline", "Record the performance baseline", 0.2, []),
    ("stop_old_slot", "Stop the old slot", 0.5, []),
]


@dataclass
class Figures:
    """What one benchmark run measured."""

    enqueued: dict[str, int]
    calls: dict[str, int]
    refusals: int
    lateness: list[float]
    urgent_lateness: list[float]
    staleness: list[float]
    drain_s: float
    undelivered: int
    post_times: list[float]  # when Slack accepted each chat.postMessage (time.time())


class Run(threading.Thread):
    """One deployment's reporting, shaped like the engine's, on real time."""

    def __init__(self, reporter: SlackReporter, deployments: DeploymentRepository,
                 deployment_id: int, number: int, *, delay: float, approve_after: float,
                 monitor: float, rollback: bool) -> None:
        super().__init__(name=f"run-{deployment_id}", daemon=True)
        self.reporter = reporter
        self.deployments = deployments
        self.approve_after = approve_after
        self.version = f"v1.{number}.0"
        self.delay = delay
        self.monitor = monitor
        self.rollback = rollback
        now = datetime.now(UTC)
        self.snap = RunSnapshot(
            deployment_id=deployment_id, kind=ProcedureKind.STANDARD, version=self.version,
            environment=f"env{number:02d}", requester="U0DEV",
            state=DeploymentState.PENDING_APPROVAL, created_at=now, approvals_required=1,
            steps=tuple(StepSnapshot(name, title, StepState.PENDING)
                        for name, title, _, _ in STEPS))
        self.error: BaseException | None = None

    def _card_posted(self) -> bool:
        deployment = self.deployments.get(self.snap.deployment_id)
        return deployment is not None and deployment.card_ts is not None

    def _step(self, name: str, **changes: Any) -> None:
        steps = tuple(replace(s, **changes) if s.name == name else s for s in self.snap.steps)
        self.snap = replace(self.snap, steps=steps)

    def _changed(self, **changes: Any) -> None:
        self.snap = replace(self.snap, **changes)
        self.reporter.run_changed(self.snap)

    def _say(self, text: str, *, broadcast: bool = False) -> None:
        self.reporter.event(self.snap, text, broadcast=broadcast)

    def run(self) -> None:
        try:
            self._script()
        except BaseException as error:  # reported by the main thread
            self.error = error

    def _script(self) -> None:
        time.sleep(self.delay)
        self._changed()  # the card, asking for approval
        # Nobody presses Approve on a card Slack has not shown yet.
        while not self._card_posted():
            time.sleep(0.1)
        time.sleep(self.approve_after)
        self._say("Approved by <@U0LEAD1>")
        self._changed(state=DeploymentState.QUEUED, approvers=("U0LEAD1",))
        time.sleep(0.3)
        started = datetime.now(UTC)
        self._changed(state=DeploymentState.RUNNING, started_at=started)
        done: list[tuple[str, str]] = []
        for name, title, seconds, says in STEPS:
            began = datetime.now(UTC)
            self._step(name, state=StepState.RUNNING, started_at=began)
            self._changed(current_step=name)
            if name == "monitor":
                if self._monitor(title, began, done):
                    return
                continue
            time.sleep(seconds / 2)
            for line in says:
                broadcast = line.startswith("!")
                self._say(line.lstrip("!").format(version=self.version), broadcast=broadcast)
            time.sleep(seconds / 2)
            self._finish_step(name, title, began)
            done.append((name, title))
        took = datetime.now(UTC) - started
        self._changed(state=DeploymentState.SUCCEEDED, current_step=None,
                      finished_at=datetime.now(UTC))
        self._say(f"Deployed {self.version} to {self.snap.environment} in "
                  f"{took.total_seconds():.0f}s", broadcast=True)

    def _finish_step(self, name: str, title: str, began: datetime) -> None:
        ended = datetime.now(UTC)
        self._step(name, state=StepState.SUCCEEDED, finished_at=ended)
        self._changed()
        self._say(f"✓ {title} ({(ended - began).total_seconds():.1f}s)")

    def _monitor(self, title: str, began: datetime, done: list[tuple[str, str]]) -> bool:
        """Monitoring; True when it failed and the run rolled back."""
        length = self.monitor / 2 if self.rollback else self.monitor
        waited = 0.0
        while waited < length:
            pause = min(20.0, length - waited)
            time.sleep(pause)
            waited += pause
            if waited < length:
                self._say(f"Monitoring: {waited:.0f}s of {self.monitor:.0f}s, no warnings")
        if not self.rollback:
            self._finish_step("monitor", title, began)
            return False
        self._step("monitor", state=StepState.FAILED, finished_at=datetime.now(UTC),
                   error="error rate 12% > 5%")
        self._changed(state=DeploymentState.ROLLING_BACK, error="monitoring failed")
        self._say(f"✗ {title} failed: error rate 12% > 5%. Rolling back.", broadcast=True)
        for name, step_title in reversed(done):
            time.sleep(0.3)
            self._step(name, state=StepState.UNDONE)
            self._changed()
            self._say(f"↩ Undid {step_title} (0.3s)")
        self._changed(state=DeploymentState.ROLLED_BACK, current_step=None,
                      finished_at=datetime.now(UTC))
        self._say(f"Rolled back #{self.snap.deployment_id}: undid {len(done)} steps. "
                  f"{self.snap.environment} serves the previous version.", broadcast=True)
        return True


def measure(database: Database, runs: int, monitor: float, rollbacks: int, burst: int
            ) -> Figures:
    clock = SystemClock()
    outbox = Outbox(database, clock)
    deployments = DeploymentRepository(database, clock)
    reporter = SlackReporter(outbox, channel=CHANNEL, zone=ZoneInfo("UTC"), clock=clock)
    rng = random.Random(14)
    with SlackDouble(token=BOT_TOKEN) as slack:
        client = make_web_client(BOT_TOKEN, slack.api_url)
        sender = SlackOutboxSender(outbox, deployments, client, clock, burst=burst)
        worker = Worker([sender], poll_interval=0.25)
        failing = set(rng.sample(range(runs), rollbacks))
        threads = []
        for number in range(runs):
            created = deployments.create(ProcedureKind.STANDARD, f"v1.{number}.0",
                                         f"env{number:02d}", "U0DEV", channel=CHANNEL)
            assert created.id is not None
            threads.append(Run(reporter, deployments, created.id, number,
                               delay=rng.uniform(0, 4), approve_after=rng.uniform(2, 6),
                               monitor=monitor, rollback=number in failing))
        worker.start()
        try:
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            errors = [t.error for t in threads if t.error is not None]
            if errors:
                raise RuntimeError(f"a generated run failed: {errors[0]!r}") from errors[0]
            deadline = time.monotonic() + 900
            while sender.busy() and time.monotonic() < deadline:
                time.sleep(0.2)
        finally:
            worker.stop()
        calls = {m: slack.served_count(m) for m in ("chat.postMessage", "chat.update")}
        calls["all"] = slack.served_count()
        refusals = slack.fault_count() + len(slack.paced_refusals())
        post_times = [c.at for c in slack.calls("chat.postMessage") if c.ok]
    with database.session(read_only=True) as s:
        rows = list(s.exec(select(Notification).order_by(col(Notification.id))).all())
    return _figures(rows, calls, refusals, post_times)


def _figures(rows: list[Notification], calls: dict[str, int], refusals: int,
             post_times: list[float]) -> Figures:
    replies = [r for r in rows if r.kind == "post" and r.thread_of is not None]
    cards = [r for r in rows if r.kind == "post" and r.payload.get("card_for")]
    updates = [r for r in rows if r.kind == "update"]
    delivered = [r for r in rows if r.sent_at is not None]

    def late(row: Notification) -> float:
        assert row.sent_at is not None
        return (row.sent_at - row.created_at).total_seconds()

    lateness = [late(r) for r in replies if r.state == "sent"]
    urgent = [late(r) for r in replies if r.state == "sent" and r.priority >= URGENT]
    # A card update's content is on the card once it, or a newer update of that card, is sent.
    staleness: list[float] = []
    by_card: dict[str, list[Notification]] = {}
    for row in updates:
        by_card.setdefault(row.ordering_key, []).append(row)
    for rows_of_card in by_card.values():
        shown_at: datetime | None = None
        for row in reversed(rows_of_card):
            if row.state == "sent" and row.sent_at is not None:
                shown_at = row.sent_at
            if shown_at is not None:
                staleness.append((shown_at - row.created_at).total_seconds())
    last_written = max(r.created_at for r in rows)
    last_sent = max((r.sent_at for r in delivered if r.sent_at), default=last_written)
    return Figures(
        enqueued={"replies": len(replies), "cards": len(cards), "updates": len(updates)},
        calls=calls, refusals=refusals, lateness=lateness, urgent_lateness=urgent,
        staleness=staleness, drain_s=max(0.0, (last_sent - last_written).total_seconds()),
        undelivered=sum(1 for r in rows if r.state in ("pending", "dead")),
        post_times=post_times)


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def report(label: str, runs: int, f: Figures) -> None:
    print(f"  {label}")
    print(f"    enqueued: {f.enqueued['replies']} thread replies, {f.enqueued['cards']} cards, "
          f"{f.enqueued['updates']} card updates "
          f"({sum(f.enqueued.values())} messages)")
    print(f"    Web API calls: {f.calls['chat.postMessage']} chat.postMessage, "
          f"{f.calls['chat.update']} chat.update, {f.calls['all']} in all "
          f"({f.calls['all'] / runs:.1f} per deployment); 429s received: {f.refusals}")
    print(f"    reply lateness: max {max(f.lateness, default=float('nan')):.1f} s, "
          f"p99 {_pct(f.lateness, 0.99):.1f} s, p50 {statistics.median(f.lateness):.1f} s "
          f"over {len(f.lateness)} replies")
    if f.urgent_lateness:
        print(f"    urgent replies (failures, rollbacks): max {max(f.urgent_lateness):.1f} s "
              f"over {len(f.urgent_lateness)}")
    print(f"    card staleness: max {max(f.staleness, default=float('nan')):.1f} s, "
          f"p99 {_pct(f.staleness, 0.99):.1f} s")
    busiest = max((sum(1 for t in f.post_times if start <= t < start + 60)
                   for start in f.post_times), default=0)
    print(f"    channel use: {busiest} posts in its busiest minute (Slack's pace: about 60)")
    print(f"    drain after the last message written: {f.drain_s:.1f} s; "
          f"undelivered: {f.undelivered}")
    worst = max(f.lateness, default=float("inf"))
    print(f"    target: no reply more than {TARGET_S:g} s late: "
          f"{'met' if worst <= TARGET_S and not f.undelivered else 'NOT met'}")


@contextlib.contextmanager
def sqlite_database() -> Iterator[Database]:
    with tempfile.TemporaryDirectory(prefix="qlp-economy-") as tmp:
        database = Database(f"sqlite:///{Path(tmp) / 'qlp.db'}")
        try:
            upgrade(database)
            yield database
        finally:
            database.dispose()


@contextlib.contextmanager
def postgres_database() -> Iterator[Database]:
    with admin_connection() as admin, scratch_postgres(admin) as database:
        yield database


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--monitor", type=float, default=60.0,
                        help="seconds of monitoring per run (the demo policy's minute)")
    parser.add_argument("--rollbacks", type=int, default=3)
    parser.add_argument("--postgres", action="store_true", help="the outbox on PostgreSQL")
    parser.add_argument("--burst", type=int, default=2,
                        help="the sender's burst per channel (its default: 2)")
    parser.add_argument("--one-channel-key", action="store_true",
                        help="thread replies in one ordering key per channel (as before)")
    args = parser.parse_args()
    if args.one_channel_key:
        # As before this change: every reply of the channel in the channel's one key.
        slack_reporter.thread_key = lambda _d: slack_reporter.channel_key(CHANNEL)
    backend = "PostgreSQL" if args.postgres else "SQLite"
    print(f"Slack economy: {args.runs} deployments at once in one channel, "
          f"{args.rollbacks} rolled back, {args.monitor:g} s monitoring, outbox on {backend}, "
          f"Slack double at Slack's pace (1 post/s per channel, burst 3; 50 updates/min)")
    started = time.monotonic()
    with (postgres_database() if args.postgres else sqlite_database()) as database:
        figures = measure(database, args.runs, args.monitor, args.rollbacks, args.burst)
    keys = "one key per channel (as before)" if args.one_channel_key else "one key per thread"
    report(f"{keys}; {time.monotonic() - started:.0f} s wall", args.runs, figures)


if __name__ == "__main__":
    main()
