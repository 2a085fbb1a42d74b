"""Two ``qlp-bot serve`` replicas on one PostgreSQL database: one stops mid-monitoring.

Issue 14, item 8. The replicas share the database, the Slack double and the local platform's
state (``QLP_HOME``: the slots and the router, as two replicas share one Azure subscription).

* SIGTERM: the replica running the deployment hands it over at once (``bot.graceful_stop``):
  it exits 0 after one log line per thing released, and the other replica claims the run at
  its next poll. ``QLP_STALE_AFTER`` is a minute here, so a take-over after a stale heartbeat
  would show (and there is no ``run.taken_over`` row): the figure printed is the time from the
  ``run.released`` audit row to the survivor's ``run.resumed``.
* SIGKILL while a thread reply is in flight (the double holds ``chat.postMessage``; Slack
  stores it after the killed replica is gone): the survivor takes the run over after
  ``QLP_STALE_AFTER`` and hands the dead replica's outbox claim on well before its 60 s lease
  runs out; its lookup finds the reply Slack already has, so it is not posted again.

Either way every outbox message appears in the thread exactly once (by the outbox id each
post carries in its metadata), the card is never posted again and the audit chain verifies.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path

import httpx
import pytest
import yaml
from sqlmodel import col, select

from procedures.model import DeploymentState
from procedures.platforms.local import processes
from storage.db import Database
from storage.models import AuditEvent, Notification
from tests.bot.test_restart import CHANNEL, ENV, QLP_BOT, REPO, SECRET, TOKEN, BotProcess, World
from tests.conftest import PostgresServer, _sqlalchemy_url
from tests.fakes.policies import BASE, free_port
from tests.fakes.slack_double import SlackDouble

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

MONITOR_SECONDS = 20
AUDIT_KEY = "graceful-stop-test-audit-key-0123456789abcdef"


def _policy(path: Path) -> str:
    """One environment on the local platform, always in its window, 20 s of monitoring."""
    data = copy.deepcopy(BASE)
    prod = data["environments"][ENV]
    prod["url"] = f"http://127.0.0.1:{free_port()}"
    prod["local"]["slots"] = {"blue": free_port(), "green": free_port()}
    prod["health"] = ["/health"]
    data["environments"] = {ENV: prod}
    data["windows"] = {"preferred": [{"days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"],
                                      "start": "00:00", "end": "24:00"}]}
    data["approvals"]["standard"] = {"users": ["U0LEAD1"], "required": 1}
    data["monitoring"] = dict(data["monitoring"], duration=f"{MONITOR_SECONDS}s",
                              interval="1s")
    path.write_text(yaml.safe_dump(data))
    return str(prod["url"])


class Replicas(World):
    """The test's world with two replicas; ``bots[-1]`` is the one Slack talks to (and the
    one whose exit fails a wait), so the survivor is moved there."""

    def survivor_last(self, survivor: BotProcess) -> None:
        self.bots.remove(survivor)
        self.bots.append(survivor)

    def runner_of(self, id: int) -> BotProcess:
        """The replica whose worker runs ``id`` (its worker id is host:pid:random)."""
        worker = str(self.deployment(id).worker_id)
        pid = int(worker.split(":")[1])
        return next(bot for bot in self.bots if bot.pid == pid)

    def audit_rows(self, id: int, action: str) -> list[AuditEvent]:
        return [e for e in self.audit() if e.deployment_id == id and e.action == action]

    def health(self, bot: BotProcess) -> dict[str, object]:
        with contextlib.suppress(httpx.TransportError, ValueError):
            return dict(httpx.get(bot.url + "/healthz", timeout=2).json())
        return {}


@pytest.fixture
def replicas(tmp_path: Path, postgres_server: PostgresServer) -> Iterator[Callable[..., Replicas]]:
    made: list[tuple[Replicas, str]] = []

    def make(stale_after: float) -> Replicas:
        name = postgres_server.create()  # empty: the replicas migrate it (one at a time)
        slack = SlackDouble(token=TOKEN, users={"U0DEV": "dev", "U0LEAD1": "lead1"})
        slack.start()
        home, policy = tmp_path / "home", tmp_path / "qlp.yml"
        router_url = _policy(policy)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "QLP_"))}
        env.update(SLACK_BOT_TOKEN=TOKEN, SLACK_SIGNING_SECRET=SECRET,
                   SLACK_API_URL=slack.api_url, QLP_CONFIG=str(policy), QLP_HOME=str(home),
                   QLP_DATABASE_URL=_sqlalchemy_url(name), QLP_AUDIT_KEY=AUDIT_KEY,
                   QLP_STALE_AFTER=str(stale_after), QLP_SCHEDULER_LEASE="6")
        world = Replicas(tmp=tmp_path, home=home, env=env, slack=slack, router_url=router_url,
                         bots=[], db=Database(_sqlalchemy_url(name)))
        made.append((world, name))
        return world

    yield make
    for world, name in made:
        for bot in world.bots:
            with contextlib.suppress(Exception):
                bot.stop()
        # The router and the slots outlive the bots: stopped through their pid files.
        for pid_file in world.platform_pid_files():
            with contextlib.suppress(Exception):
                processes.stop(pid_file, grace=3.0)
        leftovers = [p for p in world.platform_pid_files() if processes.find(p) is not None]
        assert world.db is not None
        world.db.dispose()
        world.slack.stop()
        postgres_server.drop(name)
        assert not leftovers, f"platform processes still running: {leftovers}"


def _start_two(world: Replicas) -> None:
    first = world.start_bot()
    world.wait("the first replica to lead the scheduler",
               lambda: world.health(first).get("scheduler") == "leader", 15)
    world.start_bot()


def _monitoring(world: Replicas, id: int) -> bool:
    record = world.deployment(id)
    return (record.state is DeploymentState.RUNNING and record.current_step == "monitor"
            and any(e.action == "step.started" and e.detail.get("step") == "monitor"
                    for e in world.audit_rows(id, "step.started")))


def _outbox_ids(world: Replicas, card_ts: str) -> list[int]:
    """The outbox ids (and ids merged into them) of the thread's posts, in order."""
    ids: list[int] = []
    for message in world.slack.thread(CHANNEL, card_ts):
        metadata = world.slack.metadata_of(message.ts) or {}
        event = metadata.get("event_payload") or {}
        if "outbox_id" in event:
            ids.append(int(event["outbox_id"]))
            ids.extend(int(m) for m in str(event.get("merged") or "").split(",") if m)
    return ids


def _assert_each_reply_once(world: Replicas, id: int, card_ts: str) -> None:
    ids = _outbox_ids(world, card_ts)
    doubled = sorted({i for i in ids if ids.count(i) > 1})
    assert not doubled, f"posted more than once: {doubled}\n" + world.diagnosis(id)
    sent = {n.id for n in _thread_rows(world, id) if n.state == "sent"}
    assert sent <= set(ids) | _file_rows(world, id), (sorted(sent - set(ids)),
                                                     world.diagnosis(id))
    assert [m.ts for m in world.slack.messages(CHANNEL)] == [card_ts]  # one card, never again


def _thread_rows(world: Replicas, id: int) -> list[Notification]:
    assert world.db is not None
    with world.db.session(read_only=True) as s:
        return list(s.exec(select(Notification).where(
            col(Notification.thread_of) == id, col(Notification.kind) == "post")).all())


def _file_rows(world: Replicas, id: int) -> set[int]:
    """Thread posts that are file shares (the monitoring chart): no message metadata."""
    return {n.id for n in _thread_rows(world, id) if (n.payload or {}).get("file")}


def _verify_audit(world: Replicas) -> None:
    verify = subprocess.run([*QLP_BOT, "audit", "verify"], env=world.env, cwd=REPO,
                            capture_output=True, text=True, timeout=60)
    assert verify.returncode == 0, verify.stdout + verify.stderr


def _log_lines(bot: BotProcess) -> list[str]:
    lines = []
    for line in bot.stderr().splitlines():
        with contextlib.suppress(ValueError):
            lines.append(str(json.loads(line).get("message", "")))
    return lines


def _at(event: AuditEvent) -> datetime:
    return event.at


def test_sigterm_mid_monitoring_hands_the_run_to_the_other_replica(
        replicas: Callable[..., Replicas]) -> None:
    world = replicas(stale_after=60)  # a stale take-over could not happen within the test
    _start_two(world)
    card_ts = world.deploy_and_approve("v1.0.0", 1)
    world.wait("#1 to monitor", lambda: _monitoring(world, 1), 60, 1)
    time.sleep(3)  # a few checks into the 20 s window
    runner = world.runner_of(1)
    survivor = next(bot for bot in world.bots if bot is not runner)
    worker = world.deployment(1).worker_id
    led = world.health(runner).get("scheduler") == "leader"
    world.survivor_last(survivor)

    signalled = time.monotonic()
    runner.process.send_signal(signal.SIGTERM)
    assert runner.process.wait(timeout=40) == 0, runner.stderr()
    exited = time.monotonic() - signalled
    resumed = world.wait("the survivor to resume #1",
                         lambda: world.audit_rows(1, "run.resumed"), 20, 1)
    assert resumed[0].actor != worker
    released = world.audit_rows(1, "run.released")
    assert len(released) == 1, world.diagnosis(1)
    assert released[0].detail["state"] == "queued" and released[0].detail["step"] == "monitor"
    handover = (_at(resumed[0]) - _at(released[0])).total_seconds()

    lines = _log_lines(runner)
    assert any(line.startswith("released run #1 (queued)") for line in lines), lines
    if led:
        assert any(line.startswith("released the scheduler lease") for line in lines), lines
    assert any(line.startswith("stopped in ") for line in lines), lines
    assert "Traceback" not in runner.stderr()
    if led:
        world.wait("the survivor to lead the scheduler",
                   lambda: world.health(survivor).get("scheduler") == "leader", 15)

    record = world.finished(1, MONITOR_SECONDS + 30)
    assert record.state is DeploymentState.SUCCEEDED, world.diagnosis(1)
    assert not world.audit_rows(1, "run.taken_over"), "taken over as stale, not handed over"
    assert world.served_version() == "v1.0.0"
    world.wait("the Deployed reply of #1",
               lambda: any(t.startswith("Deployed v1.0.0 to production")
                           for t in world.thread(1)), 15, 1)
    thread = "\n".join(world.thread(1))
    assert thread.count("↪ Handed over during ") == 1, thread
    monitor = world.deployments.get_step(1, "monitor")
    assert monitor is not None and monitor.attempts == 2  # one attempt per replica
    # The survivor continued the window the runner had started (KeepsProgress), it did not
    # watch a whole window again: the window's start is before the hand-over.
    assert "continues its window" in thread, thread
    assert monitor.result is not None
    window_started = datetime.fromisoformat(monitor.result["series_started_at"])
    assert window_started < _at(released[0]), (window_started, _at(released[0]))
    _assert_each_reply_once(world, 1, card_ts)
    assert world.lock_holder() is None
    assert survivor.stop() == 0, survivor.stderr()
    _verify_audit(world)
    print(f"\nSIGTERM: the replica exited {exited:.1f} s after the signal; handover "
          f"(run.released -> run.resumed) {handover:.2f} s; #1 succeeded on the other replica "
          f"{((record.finished_at or _at(resumed[0])) - _at(resumed[0])).total_seconds():.1f} s "
          "after it resumed "
          f"(the rest of the {MONITOR_SECONDS} s window)")


def test_sigkill_mid_reply_is_taken_over_and_the_reply_is_not_posted_twice(
        replicas: Callable[..., Replicas]) -> None:
    stale_after = 8
    world = replicas(stale_after=stale_after)
    _start_two(world)
    card_ts = world.deploy_and_approve("v1.0.0", 1)
    world.wait("#1 to monitor", lambda: _monitoring(world, 1), 60, 1)
    runner = world.runner_of(1)
    survivor = next(bot for bot in world.bots if bot is not runner)
    worker = str(world.deployment(1).worker_id)
    world.survivor_last(survivor)
    outbox = world.outbox()

    # Hold the thread's next reply in Slack until the runner's own sender is the one posting
    # it (either replica's sender may claim the run's replies).
    held: list[int] = []
    for _ in range(10):
        before = len(world.slack.arrivals("chat.postMessage"))
        world.slack.hold(["chat.postMessage"])

        def in_flight(before: int = before) -> list[tuple[int, str]] | None:
            if len(world.slack.arrivals("chat.postMessage")) <= before:
                return None
            claimed = [(int(n.id or 0), str(n.claimed_by)) for n in _thread_rows(world, 1)
                       if n.state == "pending" and n.claimed_by is not None]
            return claimed or None

        claims = world.wait("a reply in flight", in_flight, 30, 1)
        held = [i for i, by in claims if by == worker]
        if held:
            break
        world.slack.release()  # the survivor's own post: let it go and try the next one
    assert held, "the runner never posted a reply itself"
    runner.kill()  # well within the client's 10 s timeout: the call is still in flight
    killed = time.monotonic()
    time.sleep(0.5)
    world.slack.release()  # Slack takes the reply after its sender is gone
    assert all(outbox.get(i).state == "pending" for i in held)  # type: ignore[union-attr]

    def handed_on() -> bool:
        return all(outbox.get(i).state == "sent" for i in held)  # type: ignore[union-attr]

    # Well before the claim's 60 s lease: the survivor sees the dead replica's heartbeat row
    # go stale (QLP_STALE_AFTER) and hands its claim on.
    world.wait("the dead replica's reply to be confirmed", handed_on, 40, 1)
    confirmed = time.monotonic() - killed
    assert "claimed by a replica that is gone" in survivor.stderr(), survivor.stderr()
    for i in held:  # found in Slack by its metadata on a later try, not posted again
        row = outbox.get(i)
        assert row is not None and row.attempts >= 2 and row.slack_ts, (
            row, world.slack.calls("conversations.replies"), survivor.stderr()[-4000:])
    record = world.finished(1, stale_after + 5 + MONITOR_SECONDS + 20)
    took = time.monotonic() - killed
    assert record.state is DeploymentState.SUCCEEDED, world.diagnosis(1)
    taken = world.audit_rows(1, "run.taken_over")
    assert len(taken) == 1 and taken[0].detail["previous_worker"] == worker
    monitor = world.deployments.get_step(1, "monitor")
    assert monitor is not None and monitor.result is not None
    window_started = datetime.fromisoformat(monitor.result["series_started_at"])
    assert window_started < _at(taken[0]), "the window started again after the take-over"
    assert not world.audit_rows(1, "run.released")
    world.wait("the Deployed reply of #1",
               lambda: any(t.startswith("Deployed v1.0.0 to production")
                           for t in world.thread(1)), 15, 1)
    _assert_each_reply_once(world, 1, card_ts)
    assert world.lock_holder() is None
    assert survivor.stop() == 0, survivor.stderr()
    _verify_audit(world)
    print(f"\nSIGKILL: the dead replica's in-flight reply confirmed {confirmed:.1f} s after "
          f"the kill (lease 60 s); #1 finished {took:.1f} s after the kill "
          f"(QLP_STALE_AFTER {stale_after} s + the rest of the {MONITOR_SECONDS} s window)")
