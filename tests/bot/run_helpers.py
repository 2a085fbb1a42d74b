"""Shared by the signed-request tests of H8's behaviours: press a button, read the thread, and
run queued deployments with the worker's own run queue on a tiny playbook.

The playbooks are swapped for one step that records the environment's lock while it runs and,
when asked, waits on an Event: the tests are about who holds an environment and when a run
starts, not about deploying (the standard playbook's steps have their own tests).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from typing import Any

from bot.clicks import click_task
from bot.runner import RunQueueTask
from procedures.model import ProcedureKind
from procedures.playbook import Playbook, Step, StepContext, StepResult
from tests.fakes.bot_harness import BotHarness

CARD_TS = "1764849600.000100"  # handlers resolve clicks from the database, not the message


def press(bot: BotHarness, deployment_id: int, user: str, action: str = "qlp_approve") -> str:
    """Press a card's button (Approve by default) on ``deployment_id`` as ``user``, wait until
    the click is decided; the ephemeral answer they got."""
    before = len(bot.slack.ephemerals(user))
    response = bot.press(action, str(deployment_id), user=user, message_ts=CARD_TS)
    assert response.status_code == 200
    # The click is decided after its ack: wait for the decision, not only for an answer (a
    # slow Slack first gets the person a "Checking your approval..." note).
    clicks = click_task(bot.services)
    bot.wait_for(lambda: not clicks.busy(), what=f"{user}'s click to be decided")

    def answers() -> list[str]:
        return [str(m.text) for m in bot.slack.ephemerals(user)[before:]
                if not str(m.text).startswith("Checking your")]

    bot.wait_for(answers, what=f"{user}'s answer")
    return answers()[-1]


def thread_text(bot: BotHarness, deployment_id: int) -> str:
    """Every thread reply queued for ``deployment_id`` (the sender is not running)."""
    return "\n".join(str(n.payload.get("text")) for n in bot.services.outbox.undelivered(1000)
                     if n.thread_of == deployment_id and n.kind == "post")


class TinyRuns:
    """The bot's engine on a one-step playbook for every kind, run by a ``RunQueueTask``."""

    def __init__(self, bot: BotHarness) -> None:
        self.bot = bot
        self.seen: dict[int, Mapping[str, Any]] = {}  # the lock row each run saw
        self.hold: dict[int, threading.Event] = {}  # runs that wait until set
        self.started: dict[int, threading.Event] = {}
        engine = bot.services.engine
        engine.playbooks = {kind: Playbook(kind, "Tiny", (Step("work", "Work", self._work),))
                            for kind in ProcedureKind}
        # As wired in production: the policy gate judges each queued run at its start.
        self.queue = RunQueueTask(engine, bot.services.deployments, max_parallel=2,
                                  worker_id=engine.worker_id,
                                  gate=bot.services.flows.gate.ready_to_start)

    def _work(self, ctx: StepContext) -> StepResult:
        row = self.bot.services.environments.get(ctx.environment_name)
        assert row is not None
        self.seen[ctx.deployment_id] = {
            "holder": row.lock_holder, "reason": row.lock_reason,
            "deployment": row.lock_deployment_id, "owner": row.lock_owner}
        self.started.setdefault(ctx.deployment_id, threading.Event()).set()
        gate = self.hold.get(ctx.deployment_id)
        if gate is not None:
            assert gate.wait(20), "the test never let the run finish"
        return {"ok": True}

    def pass_once(self) -> bool:
        return self.queue.run_once()

    def wait_started(self, deployment_id: int) -> None:
        assert self.started.setdefault(deployment_id, threading.Event()).wait(20)

    def drain(self, timeout: float = 20) -> None:
        """Claim and run until nothing is queued that can start, and no run is going."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            # Idle is read before the pass: a run that ends during the pass frees its
            # environment after the pass looked, so only a pass that began idle may end this.
            idle = not any(not f.done() for f in self.queue._running.values())
            claimed = self.queue.run_once()
            if not claimed and idle:
                return
            time.sleep(0.02)
        raise TimeoutError("runs still going")

    def close(self) -> None:
        for gate in self.hold.values():
            gate.set()
        self.queue.shutdown()
