"""A break-glass run passes a person's lock and never takes it over or removes it.

Signed requests into the real app (``/qlp lock``, ``/qlp deploy --override``, the Approve
button, ``/qlp deploy``, ``/qlp unlock``); the runs are the bot's engine and the worker's run
queue on a one-step playbook (``tests.bot.run_helpers``), whose step records the lock row it
sees while the run is under way.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from procedures.model import DeploymentState as S
from procedures.model import ProcedureKind
from tests.bot.run_helpers import TinyRuns, press, thread_text
from tests.fakes.bot_harness import BotHarness

ENV = "production"
OVERRIDE = 'deploy v1.0.0 --override "checkout fix cannot wait"'
PERSONS_LOCK = {"holder": "U0OPS", "reason": "db maintenance", "deployment": None}


@pytest.fixture
def runs(bot: BotHarness) -> Iterator[TinyRuns]:
    tiny = TinyRuns(bot)
    yield tiny
    tiny.close()


def _lock(bot: BotHarness) -> None:
    answer = bot.command(f'lock {ENV} --reason "db maintenance"', user="U0OPS").text
    assert f":lock: {ENV} is locked: db maintenance" in answer, answer


def _lock_row(bot: BotHarness) -> dict[str, object]:
    row = bot.services.environments.get(ENV)
    assert row is not None
    return {"holder": row.lock_holder, "reason": row.lock_reason,
            "deployment": row.lock_deployment_id}


def _after_the_run_the_lock_is_the_persons(bot: BotHarness, deployment_id: int) -> None:
    assert bot.services.deployments.get(deployment_id).state is S.SUCCEEDED
    assert _lock_row(bot) == PERSONS_LOCK
    assert bot.services.environments.get(ENV).lock_owner is None
    # The next plain request is refused on the person's lock, and the holder can unlock it.
    refused = bot.command("deploy v1.0.1").text
    assert "production is locked by <@U0OPS>: db maintenance" in refused, refused
    assert "(rule: environment-lock)" in refused
    unlocked = bot.command(f"unlock {ENV}", user="U0OPS").text
    assert ":unlock: production is unlocked (it was locked by <@U0OPS>" in unlocked, unlocked


@pytest.mark.slow  # 4 s of the fast lane, measured
def test_a_break_glass_deployment_passes_a_persons_lock_and_leaves_it_theirs(
        bot: BotHarness, runs: TinyRuns) -> None:
    _lock(bot)
    answer = bot.command(OVERRIDE).text
    assert "requested with a break-glass override" in answer, answer
    deployment_id = int(answer.split("#")[1].split(" ")[0])
    press(bot, deployment_id, "U0LEAD1")
    press(bot, deployment_id, "U0HEAD1")
    assert bot.services.deployments.get(deployment_id).state is S.QUEUED
    assert _lock_row(bot) == PERSONS_LOCK  # queued: the lock is still the person's

    runs.drain()

    seen = runs.seen[deployment_id]
    assert {k: seen[k] for k in PERSONS_LOCK} == PERSONS_LOCK  # passed, not taken over
    assert str(seen["owner"]).startswith(f"pass#{deployment_id}:")
    assert "The lock of <@U0OPS> on production (db maintenance) stays theirs" in thread_text(
        bot, deployment_id)
    _after_the_run_the_lock_is_the_persons(bot, deployment_id)


def _granted_and_approved(bot: BotHarness, deployment_id: int) -> None:
    """The rows the override flow writes before it queues a break-glass run (the gate checks
    them again when the run starts)."""
    bot.services.approvals.record(deployment_id, "U0HEAD1", "override", "")
    bot.services.approvals.record(deployment_id, "U0LEAD1", "approve", "")


def test_a_queued_break_glass_run_passes_the_lock_and_ends_its_pass_only(
        bot: BotHarness, runs: TinyRuns) -> None:
    """The run side on its own: a break-glass request queued past the person's lock (as the
    override flow queues it) passes it; a plain request is not let past it."""
    _lock(bot)
    deployments = bot.services.deployments
    plain = deployments.create(ProcedureKind.STANDARD, "v0.9.0", ENV, "U0DEV",
                               state=S.QUEUED)
    runs.drain()
    assert deployments.get(plain.id).state is S.FAILED
    assert "production is locked by <@U0OPS>: db maintenance" in deployments.get(plain.id).error
    assert _lock_row(bot) == PERSONS_LOCK

    glass = deployments.create(
        ProcedureKind.STANDARD, "v1.0.0", ENV, "U0DEV", state=S.QUEUED,
        options={"override": {"reason": "checkout fix cannot wait", "requested_by": "U0DEV",
                              "rules": ["environment-lock"]}})
    _granted_and_approved(bot, glass.id)
    runs.drain()
    seen = runs.seen[glass.id]
    assert {k: seen[k] for k in PERSONS_LOCK} == PERSONS_LOCK
    assert str(seen["owner"]).startswith(f"pass#{glass.id}:")
    actions = [e.action for e in bot.services.audit.recent(100, deployment_id=glass.id)]
    assert "lock.passed" in actions and "lock.pass_ended" in actions
    assert "lock.acquired" not in actions
    _after_the_run_the_lock_is_the_persons(bot, glass.id)


def test_the_holder_may_unlock_during_a_pass_and_nothing_is_left_locked(
        bot: BotHarness, runs: TinyRuns) -> None:
    _lock(bot)
    glass = bot.services.deployments.create(
        ProcedureKind.STANDARD, "v1.0.0", ENV, "U0DEV", state=S.QUEUED,
        options={"override": {"reason": "why", "requested_by": "U0DEV", "rules": []}})
    _granted_and_approved(bot, glass.id)
    runs.hold[glass.id] = gate = threading.Event()
    assert runs.pass_once()
    runs.wait_started(glass.id)
    # The pass is not a lock of the run's: the holder still lifts their own lock.
    answer = bot.command(f"unlock {ENV}", user="U0OPS").text
    assert ":unlock: production is unlocked (it was locked by <@U0OPS>" in answer, answer
    gate.set()
    runs.drain()
    assert bot.services.deployments.get(glass.id).state is S.SUCCEEDED
    row = bot.services.environments.get(ENV)
    assert (row.lock_holder, row.lock_owner, row.lock_deployment_id) == (None, None, None)
