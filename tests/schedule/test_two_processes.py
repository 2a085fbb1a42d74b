"""Two real ``qlp-bot serve`` processes on one PostgreSQL database: a reminder goes out once.

Both processes run the scheduler; only the lease holder runs jobs. A manual lock older than
``lock_max_age`` (2 s here) gets its holder exactly one DM, not one per replica. Then the lease
holder is SIGKILLed: the survivor takes the lease over once it expires (2 s) and sends the next
lock's reminder, again exactly once.
"""

from __future__ import annotations

import contextlib
import copy
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import httpx
import pytest
import yaml

from bot.schedule.scheduler import LEASE_NAME
from bot.slack_requests import signed_headers, slash_command_body
from procedures.clock import SystemClock
from storage.db import Database
from storage.leases import LeaseRepository
from tests.conftest import PostgresServer, _sqlalchemy_url
from tests.fakes.policies import BASE, free_port
from tests.fakes.slack_double import SlackDouble

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
SECRET = "two-processes-signing-secret"
TOKEN = "xoxb-two-processes"
CHANNEL = "C0DEPLOY"
MAX_AGE = 2.0  # lock_max_age, seconds
POLL = 0.05
T = TypeVar("T")


class BotProcess:
    """One ``python -m bot serve`` with its output in files."""

    def __init__(self, env: dict[str, str], logs: Path, name: str) -> None:
        self.name = name
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.stderr_path = logs / f"{name}.stderr"
        home = logs / f"{name}-home"
        with open(logs / f"{name}.stdout", "wb") as out, open(self.stderr_path, "wb") as err:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "bot", "serve", "--port", str(self.port)],
                env={**env, "QLP_HOME": str(home)}, cwd=REPO, stdout=out, stderr=err)

    def stderr(self) -> str:
        with contextlib.suppress(OSError):
            return self.stderr_path.read_text(errors="replace")
        return ""

    def health(self) -> dict[str, str] | None:
        with contextlib.suppress(httpx.TransportError):
            response = httpx.get(self.url + "/healthz", timeout=1)
            if response.status_code == 200:
                return dict(response.json())
        return None

    def command(self, text: str, user: str) -> httpx.Response:
        body = slash_command_body(text, user_id=user, channel_id=CHANNEL)
        return httpx.post(self.url + "/slack/events", content=body.encode(),
                          headers=signed_headers(SECRET, body), timeout=10)

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        return self.process.returncode


def _wait(what: str, probe: Callable[[], T | None], timeout: float,
          bots: list[BotProcess]) -> T:
    deadline = time.monotonic() + timeout
    while True:
        result = probe()
        if result:
            return result
        if time.monotonic() >= deadline:
            logs = "\n".join(f"--- {b.name} (pid {b.process.pid}):\n{b.stderr()[-4000:]}"
                             for b in bots)
            raise AssertionError(f"timed out after {timeout} s waiting for {what}\n{logs}")
        time.sleep(POLL)


def _reminders(slack: SlackDouble, user: str, env: str) -> Counter[int]:
    """How many DMs ``user`` got for each reminder number about ``env``'s lock."""
    seen: Counter[int] = Counter()
    for message in slack.messages(user):
        if f"the lock on *{env}*" in message.text:
            match = re.search(r"\(reminder (\d+)\)", message.text)
            seen[int(match.group(1)) if match else 1] += 1
    return seen


def _once_each(seen: Counter[int]) -> bool:
    """Reminder 1 arrived, and no reminder arrived twice (a slow machine may see reminder 2)."""
    return seen[1] == 1 and set(seen.values()) == {1}


def _roles(bots: list[BotProcess]) -> list[str] | None:
    """Each bot's scheduler state once all are healthy and one of them leads."""
    states = [bot.health() for bot in bots]
    roles = [state["scheduler"] for state in states if state]
    return roles if len(roles) == len(bots) and sorted(roles) == ["leader", "standby"] else None


def _lease_pid(leases: LeaseRepository) -> int | None:
    """The pid in the lease holder's name (``host:pid:random``), if anyone holds it."""
    holder = leases.holder(LEASE_NAME)
    return int(holder.split(":")[1]) if holder else None


@pytest.fixture
def database_url(postgres_server: PostgresServer, postgres_template: str) -> Iterator[str]:
    """A scratch PostgreSQL database for the two processes (and the test's reads)."""
    name = postgres_server.create(postgres_template)
    try:
        yield _sqlalchemy_url(name)
    finally:
        postgres_server.drop(name)


def test_two_replicas_remind_once_and_the_survivor_takes_over(
        tmp_path: Path, database_url: str) -> None:
    policy = copy.deepcopy(BASE)
    policy["lock_max_age"] = f"{int(MAX_AGE)}s"
    policy_file = tmp_path / "qlp.yml"
    policy_file.write_text(yaml.safe_dump(policy))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "QLP_"))}
    with SlackDouble(token=TOKEN) as slack:
        env.update(SLACK_BOT_TOKEN=TOKEN, SLACK_SIGNING_SECRET=SECRET,
                   SLACK_API_URL=slack.api_url, QLP_CONFIG=str(policy_file),
                   QLP_DATABASE_URL=database_url, QLP_LOG_LEVEL="INFO",
                   QLP_SCHEDULER_TICK="0.5", QLP_SCHEDULER_LEASE="2")
        bots = [BotProcess(env, tmp_path, "bot1"), BotProcess(env, tmp_path, "bot2")]
        database = Database(database_url)
        leases = LeaseRepository(database, SystemClock())
        try:
            roles = _wait("both bots healthy, one leading", lambda: _roles(bots), 30, bots)
            leader, standby = (bots if roles[0] == "leader" else bots[::-1])

            # A lock taken through the standby: the leader's scheduler reminds, once.
            locked = standby.command('lock production --reason "db maintenance"', "U0DEV")
            assert locked.status_code == 200 and "production is locked" in locked.text
            started = time.monotonic()
            _wait("the reminder about production", lambda: slack.messages("U0DEV"), 8, bots)
            # Past due by well over a tick and a lease renewal, still before reminder 2.
            time.sleep(max(0.0, started + MAX_AGE * 1.6 - time.monotonic()))
            production = _reminders(slack, "U0DEV", "production")
            assert _once_each(production), production
            assert standby.command("unlock production", "U0DEV").status_code == 200

            # Kill the lease holder (its pid is in the lease row: host:pid:random).
            assert _lease_pid(leases) == leader.process.pid
            os.kill(leader.process.pid, signal.SIGKILL)
            leader.process.wait(timeout=10)

            # The survivor takes the lease once it has expired, and reminds, once.
            locked = standby.command('lock staging --reason "load test"', "U0LEAD1")
            assert locked.status_code == 200 and "staging is locked" in locked.text
            started = time.monotonic()
            _wait("the survivor holding the lease",
                  lambda: _lease_pid(leases) == standby.process.pid, 6, bots)
            _wait("the reminder about staging", lambda: slack.messages("U0LEAD1"), 8, bots)
            time.sleep(max(0.0, started + MAX_AGE * 1.6 - time.monotonic()))
            staging = _reminders(slack, "U0LEAD1", "staging")
            assert _once_each(staging), staging
            health = standby.health()
            assert health is not None and health["scheduler"] == "leader"
            # Reminders of production ended with its unlock; no process sent anything twice.
            production = _reminders(slack, "U0DEV", "production")
            assert _once_each(production), production

            assert standby.stop() == 0
            assert leases.holder(LEASE_NAME) is None  # released on the clean stop
        finally:
            for bot in bots:
                bot.stop()
            database.dispose()
