"""A real ``qlp-bot serve`` is SIGKILLed in the middle of a deployment and started again.

The slots and the router of the local platform are separate processes: they outlive the bot.
The restarted bot must take the run over once its heartbeat is stale (``QLP_STALE_AFTER``),
rerun the interrupted ``monitor`` step and finish the run, continuing the same card and thread
in Slack, with an intact audit chain and the environment lock released at the end.
"""

from __future__ import annotations

import contextlib
import copy
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
import yaml

from bot.actions import APPROVE
from bot.cards import STATE_LABEL
from bot.slack_requests import block_actions_body, signed_headers, slash_command_body
from procedures.clock import SystemClock
from procedures.model import DeploymentState
from procedures.platforms.local import processes
from storage.audit import AuditLog
from storage.db import Database
from storage.deployments import DeploymentRepository
from storage.environments import EnvironmentStateRepository
from storage.models import AuditEvent, Deployment
from storage.outbox import Outbox
from tests.fakes.policies import BASE, free_port
from tests.fakes.slack_double import SlackDouble

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
QLP_BOT = [sys.executable, "-m", "bot"]
SECRET = "restart-test-signing-secret"
TOKEN = "xoxb-restart-test"
CHANNEL = "C0DEPLOY"
ENV = "production"
# QLP_STALE_AFTER must exceed the engine's heartbeat period (5 s, fixed in procedures.engine;
# a waiting step beats at the next 1 s slice after that) plus the longest stretch a step blocks:
# with 2 s the live bot takes its own run over every few seconds before it is ever killed.
STALE_AFTER = 8
MONITOR_SECONDS = 20
POLL = 0.1

T = TypeVar("T")


# -- the world: policy, Slack double, bot processes ------------------------------------------


def _policy(path: Path) -> str:
    """Write the policy; return the production router's URL."""
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


class BotProcess:
    """One ``python -m bot serve`` with its output in files."""

    def __init__(self, env: dict[str, str], logs: Path, name: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.name = name
        self.stderr_path = logs / f"{name}.stderr"
        self.stdout_path = logs / f"{name}.stdout"
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.process = subprocess.Popen([*QLP_BOT, "serve", "--port", str(self.port)],
                                            env=env, cwd=REPO, stdout=out, stderr=err)

    @property
    def pid(self) -> int:
        return self.process.pid

    def stderr(self) -> str:
        try:
            return self.stderr_path.read_text(errors="replace")
        except OSError:
            return ""

    def wait_healthy(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"{self.name} exited with {self.process.returncode}:\n"
                                     f"{self.stderr()}")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return
            time.sleep(POLL)
        raise AssertionError(f"{self.name} did not become healthy:\n{self.stderr()}")

    def kill(self) -> None:
        """SIGKILL: no shutdown handler runs, nothing is flushed."""
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> int | None:
        """SIGTERM (the graceful way), SIGKILL if it does not go; the exit status."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        return self.process.returncode


@dataclass
class World:
    """One test's Slack double, policy, QLP_HOME and the bot processes started on them."""

    tmp: Path
    home: Path
    env: dict[str, str]
    slack: SlackDouble
    router_url: str
    bots: list[BotProcess]
    db: Database | None = None
    _n: int = 0

    # -- processes ---------------------------------------------------------------------------

    def start_bot(self) -> BotProcess:
        bot = BotProcess(self.env, self.tmp, f"bot{len(self.bots) + 1}")
        self.bots.append(bot)
        bot.wait_healthy()
        if self.db is None:  # migrated by the bot; read only from here on
            self.db = Database(f"sqlite:///{self.home / 'qlp.db'}")
        return bot

    @property
    def bot(self) -> BotProcess:
        return self.bots[-1]

    def platform_pid_files(self) -> list[Path]:
        return sorted((self.home / "platform" / ENV).glob("*.pid"))

    # -- Slack, signed -----------------------------------------------------------------------

    def _post(self, body: str) -> httpx.Response:
        return httpx.post(self.bot.url + "/slack/events", content=body.encode(),
                          headers=signed_headers(SECRET, body), timeout=10)

    def command(self, text: str, user: str) -> httpx.Response:
        self._n += 1
        url = self.slack.response_url(f"cmd-{self._n}", channel=CHANNEL, user=user)
        return self._post(slash_command_body(text, user_id=user, channel_id=CHANNEL,
                                             response_url=url))

    def press(self, action_id: str, value: str, user: str, message_ts: str) -> httpx.Response:
        self._n += 1
        url = self.slack.response_url(f"act-{self._n}", channel=CHANNEL, user=user,
                                      message_ts=message_ts)
        return self._post(block_actions_body(action_id=action_id, value=value, user_id=user,
                                             channel_id=CHANNEL, message_ts=message_ts,
                                             response_url=url))

    # -- reading the bot's state -------------------------------------------------------------

    @property
    def deployments(self) -> DeploymentRepository:
        assert self.db is not None
        return DeploymentRepository(self.db, SystemClock())

    def deployment(self, id: int) -> Deployment:
        found = self.deployments.get(id)
        assert found is not None, f"deployment #{id} does not exist"
        return found

    def lock_holder(self) -> str | None:
        assert self.db is not None
        state = EnvironmentStateRepository(self.db, SystemClock()).get(ENV)
        return state.lock_holder if state else None

    def audit(self) -> list[AuditEvent]:
        assert self.db is not None
        return list(reversed(AuditLog(self.db, SystemClock()).recent(limit=100_000)))

    def outbox(self) -> Outbox:
        assert self.db is not None
        return Outbox(self.db, SystemClock())

    def thread(self, id: int) -> list[str]:
        ts = self.deployment(id).card_ts
        return [m.text for m in self.slack.thread(CHANNEL, ts)] if ts else []

    def served_version(self) -> str | None:
        """The version the public URL serves (``/api/v1/status``: ``/health`` counts towards
        an unhealthy sample's budget, so the test never asks it)."""
        try:
            response = httpx.get(self.router_url + "/api/v1/status", timeout=2)
        except httpx.TransportError:
            return None
        if response.status_code != 200:
            return None
        return str(response.json().get("version"))

    # -- waiting -----------------------------------------------------------------------------

    def diagnosis(self, id: int | None = None) -> str:
        parts = []
        for bot in self.bots:
            parts.append(f"--- {bot.name} (pid {bot.pid}) stderr:\n{bot.stderr()[-6000:]}")
        if id is not None and self.db is not None:
            with contextlib.suppress(Exception):
                record = self.deployment(id)
                parts.append(f"--- #{id}: {record.state} step={record.current_step} "
                             f"worker={record.worker_id} error={record.error}")
                card = self.slack.find_message(record.card_ts or "")
                parts.append(f"--- card: {card.text if card else None}")
                parts.append("--- thread:\n" + "\n".join(self.thread(id)))
                parts.append("--- undelivered:\n" + "\n".join(
                    f"{n.id} {n.kind} {n.ordering_key} attempts={n.attempts} "
                    f"next={n.next_attempt_at}" for n in self.outbox().undelivered()))
                parts.append("--- audit:\n" + "\n".join(
                    f"{e.id} {e.action} #{e.deployment_id} {e.detail}" for e in self.audit()))
        return "\n".join(parts)

    def wait(self, what: str, probe: Callable[[], T | None], timeout: float,
             id: int | None = None) -> T:
        deadline = time.monotonic() + timeout
        while True:
            for bot in self.bots[-1:]:
                if bot.process.poll() is not None:
                    raise AssertionError(f"{bot.name} exited while waiting for {what}\n"
                                         + self.diagnosis(id))
            result = probe()
            if result:
                return result
            if time.monotonic() >= deadline:
                raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}\n"
                                     + self.diagnosis(id))
            time.sleep(POLL)

    def finished(self, id: int, timeout: float) -> Deployment:
        def probe() -> Deployment | None:
            record = self.deployments.get(id)
            return record if record is not None and record.state.terminal else None
        return self.wait(f"#{id} to finish", probe, timeout, id)

    # -- one deployment, requested and approved ---------------------------------------------

    def deploy_and_approve(self, version: str, id: int) -> str:
        """``/qlp deploy <version>`` as U0DEV, Approve as U0LEAD1; the card's ts."""
        answer = self.command(f"deploy {version}", user="U0DEV")
        assert answer.status_code == 200, answer.text
        assert f"Deployment #{id} requested" in answer.text, answer.text
        cards = self.wait(f"the card of #{id}",
                          lambda: (lambda m: m if len(m) >= id else None)(
                              self.slack.messages(CHANNEL)), 10, id)
        card_ts = cards[id - 1].ts
        pressed = self.press(APPROVE, str(id), user="U0LEAD1", message_ts=card_ts)
        assert pressed.status_code == 200, pressed.text
        self.wait(f"#{id} to be approved and started",
                  lambda: self.deployment(id).state not in (DeploymentState.PENDING_APPROVAL,),
                  10, id)
        assert self.deployment(id).card_ts == card_ts
        return card_ts


def _env(home: Path, policy: Path, slack: SlackDouble, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "QLP_"))}
    env.update(SLACK_BOT_TOKEN=TOKEN, SLACK_SIGNING_SECRET=SECRET, SLACK_API_URL=slack.api_url,
               QLP_CONFIG=str(policy), QLP_HOME=str(home), QLP_STALE_AFTER=str(STALE_AFTER),
               **extra)
    return env


@pytest.fixture
def world_factory(tmp_path: Path) -> Iterator[Callable[..., World]]:
    worlds: list[World] = []

    def make(**extra_env: str) -> World:
        slack = SlackDouble(token=TOKEN, users={"U0DEV": "dev", "U0LEAD1": "lead1"})
        slack.start()
        home = tmp_path / "home"
        policy = tmp_path / "qlp.yml"
        router_url = _policy(policy)
        world = World(tmp=tmp_path, home=home, env=_env(home, policy, slack, **extra_env),
                      slack=slack, router_url=router_url, bots=[])
        worlds.append(world)
        return world

    yield make
    for world in worlds:
        for bot in world.bots:
            with contextlib.suppress(Exception):
                bot.stop()
        # The router and the slots outlive the bot: stop them through their pid files (which
        # name exactly our processes; pkill by name would hit parallel tests).
        for pid_file in world.platform_pid_files():
            with contextlib.suppress(Exception):
                processes.stop(pid_file, grace=3.0)
        leftovers = [p for p in world.platform_pid_files() if processes.find(p) is not None]
        if world.db is not None:
            world.db.dispose()
        world.slack.stop()
        assert not leftovers, f"platform processes still running: {leftovers}"


# -- the tests -------------------------------------------------------------------------------


def _actions(events: list[AuditEvent], id: int) -> list[tuple[str, Any]]:
    return [(e.action, e.detail.get("step")) for e in events if e.deployment_id == id]


@dataclass(frozen=True)
class Killed:
    """What was true when the bot was killed."""

    card_ts: str
    replies: int  # thread replies under the card
    updates: int  # chat.update calls on the card
    worker: str  # the dead bot's worker id
    audit_rows: int
    at: float


def _first_deployment(world: World) -> None:
    """v1.0.0 from nothing, approved and finished: the version a rollback returns to."""
    world.deploy_and_approve("v1.0.0", 1)
    first = world.finished(1, MONITOR_SECONDS + 30)
    assert first.state is DeploymentState.SUCCEEDED, world.diagnosis(1)
    assert world.served_version() == "v1.0.0"
    world.wait("the Deployed reply of #1",
               lambda: any(t.startswith("Deployed v1.0.0 to production")
                           for t in world.thread(1)), 10, 1)


def _deploy_and_kill_during_monitor(world: World, version: str) -> Killed:
    """Deploy ``version`` as #2, wait until it runs its monitor step, SIGKILL the bot."""
    card_ts = world.deploy_and_approve(version, 2)

    def monitoring() -> bool:
        record = world.deployment(2)
        return (record.state is DeploymentState.RUNNING and record.current_step == "monitor"
                and ("step.started", "monitor") in _actions(world.audit(), 2)
                # Nothing on its way to Slack: a message the dead bot had claimed stays leased
                # for 60 s (storage.outbox.DEFAULT_LEASE) and holds back its key (the card's
                # updates, or the channel's replies) that long after the restart.
                and world.outbox().pending_count() == 0)

    world.wait("#2 to reach the monitor step", monitoring, 40, 2)
    world.bot.kill()
    killed = Killed(
        card_ts=card_ts, replies=len(world.slack.thread(CHANNEL, card_ts)),
        updates=_card_updates(world, card_ts), worker=str(world.deployment(2).worker_id),
        audit_rows=len(world.audit()), at=time.monotonic())
    record = world.deployment(2)
    assert record.state is DeploymentState.RUNNING and record.current_step == "monitor"
    assert record.card_ts == card_ts
    actions = _actions(world.audit(), 2)
    # Exactly one life so far: the live bot never took over its own run.
    assert ("run.taken_over", None) not in actions, actions
    # The platform's processes are not the bot's: the router still answers, with the new slot.
    assert world.served_version() == version, "the router stopped answering with the bot"
    return killed


def _card_updates(world: World, card_ts: str) -> int:
    return sum(1 for call in world.slack.calls("chat.update")
               if call.ok and call.args.get("ts") == card_ts)


def _assert_thread_continued(world: World, killed: Killed, final: DeploymentState) -> None:
    """The same card and thread went on after the restart; nothing was re-posted."""
    label = STATE_LABEL[final]
    world.wait(f"the card of #2 to say {label}",
               lambda: (m := world.slack.find_message(killed.card_ts)) is not None
               and m.text.endswith(label), 10, 2)
    top = [m.ts for m in world.slack.messages(CHANNEL)]
    assert len(top) == 2, top  # one card per deployment: #2's card was not posted again
    assert top.count(killed.card_ts) == 1
    thread = world.slack.thread(CHANNEL, killed.card_ts)
    assert len(thread) > killed.replies, "nothing was posted in the thread after the restart"
    assert all(m.thread_ts == killed.card_ts for m in thread[killed.replies:])
    assert _card_updates(world, killed.card_ts) > killed.updates, \
        "the card was not updated (chat.update) after the restart"


def _assert_audit(world: World, killed: Killed, after_kill: list[tuple[str, Any]]) -> None:
    """No row lost: the chain verifies, the pre-kill rows are there, and the restarted worker
    took the run over exactly once and wrote ``after_kill`` (in this order)."""
    events = world.audit()
    before = _actions(events[:killed.audit_rows], 2)
    after = _actions(events[killed.audit_rows:], 2)
    assert ("step.started", "monitor") in before, before
    takeovers = [e for e in events if e.deployment_id == 2 and e.action == "run.taken_over"]
    assert len(takeovers) == 1, [e.detail for e in takeovers]
    assert takeovers[0].detail["previous_worker"] == killed.worker
    assert takeovers[0].actor != killed.worker
    position = 0
    for expected in [("run.taken_over", None), ("run.resumed", None), *after_kill]:
        assert expected in after[position:], (expected, after)
        position = after.index(expected, position) + 1
    verify = subprocess.run([*QLP_BOT, "audit", "verify"], env=world.env, cwd=REPO,
                            capture_output=True, text=True, timeout=60)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert f"audit chain intact: {len(events)} rows checked" in verify.stdout, verify.stdout


def _restart_and_finish(world: World, killed: Killed) -> Deployment:
    world.start_bot()
    # take-over within STALE_AFTER + one recovery period (5 s), then the monitor step again
    record = world.finished(2, STALE_AFTER + 5 + MONITOR_SECONDS + 15)
    print(f"\n#2 {record.state.value} {time.monotonic() - killed.at:.1f} s after the kill")
    monitor = world.deployments.get_step(2, "monitor")
    assert monitor is not None and monitor.attempts == 2, monitor  # one attempt per life
    return record


def test_a_killed_bot_resumes_the_run_after_a_restart(
        world_factory: Callable[..., World]) -> None:
    started = time.monotonic()
    world = world_factory()
    world.start_bot()
    _first_deployment(world)
    killed = _deploy_and_kill_during_monitor(world, "v1.1.0")

    second = _restart_and_finish(world, killed)

    assert second.state is DeploymentState.SUCCEEDED, world.diagnosis(2)
    assert world.served_version() == "v1.1.0"
    world.wait("the Deployed reply of #2",
               lambda: any(t.startswith("Deployed v1.1.0 to production")
                           for t in world.thread(2)), 10, 2)
    platform = world.home / "platform" / ENV
    assert processes.find(platform / "blue.pid") is None  # the old slot was stopped
    assert processes.find(platform / "green.pid") is not None
    assert world.lock_holder() is None
    _assert_thread_continued(world, killed, DeploymentState.SUCCEEDED)
    assert world.bot.stop() == 0, world.bot.stderr()
    _assert_audit(world, killed, [("step.started", "monitor"), ("step.succeeded", "monitor"),
                                  ("step.succeeded", "stop_old_slot"), ("run.succeeded", None)])
    print(f"resumed run: {time.monotonic() - started:.1f} s in all")


def test_a_killed_bot_rolls_back_an_unhealthy_version_after_a_restart(
        world_factory: Callable[..., World]) -> None:
    started = time.monotonic()
    # An "unhealthy" sample version answers /health 200 eight times (readiness, smoke tests,
    # extended health, post-deployment tests), then 500 for ever: it fails in monitoring.
    world = world_factory(QLP_SAMPLE_HEALTHY_FOR="8")
    world.start_bot()
    _first_deployment(world)
    killed = _deploy_and_kill_during_monitor(world, "v1.1.0-unhealthy")

    second = _restart_and_finish(world, killed)

    assert second.state is DeploymentState.ROLLED_BACK, world.diagnosis(2)
    assert "health checks failed" in (second.error or ""), second.error
    assert world.served_version() == "v1.0.0"
    # Replies queued together go out as one post (bot.outbox_coalesce), at Slack's pace.
    world.wait("the Rolled back reply of #2",
               lambda: any(line.startswith("Rolled back #2") for t in world.thread(2)
                           for line in t.splitlines()), 30, 2)
    thread = "\n".join(world.thread(2))
    assert "health checks failed" in thread, thread
    platform = world.home / "platform" / ENV
    assert processes.find(platform / "blue.pid") is not None  # v1.0.0 serves again
    assert processes.find(platform / "green.pid") is None  # the unhealthy slot was stopped
    assert world.lock_holder() is None
    _assert_thread_continued(world, killed, DeploymentState.ROLLED_BACK)
    assert world.bot.stop() == 0, world.bot.stderr()
    _assert_audit(world, killed, [("step.started", "monitor"), ("step.failed", "monitor"),
                                  ("run.rolling_back", "monitor"),
                                  ("step.undone", "switch_traffic"),
                                  ("step.undone", "deploy_idle_slot"), ("run.rolled_back", None)])
    print(f"rolled-back run: {time.monotonic() - started:.1f} s in all")
