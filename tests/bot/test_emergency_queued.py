"""An emergency approved while another run holds the environment waits in line and starts
right after it; it is never failed on the lock.

Signed requests into the real app (``/qlp deploy``, ``/qlp emergency``, the Approve button);
the runs are the bot's engine and the worker's run queue on a one-step playbook
(``tests.bot.run_helpers``) whose first run is held until the test lets it finish.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from procedures.model import DeploymentState as S
from tests.bot.run_helpers import TinyRuns, press, thread_text
from tests.fakes.bot_harness import BotHarness


@pytest.fixture
def runs(bot: BotHarness) -> Iterator[TinyRuns]:
    tiny = TinyRuns(bot)
    yield tiny
    tiny.close()


@pytest.mark.slow  # 3 s of the fast lane, measured
def test_an_emergency_approved_during_a_run_is_queued_behind_it_then_runs(
        bot: BotHarness, runs: TinyRuns) -> None:
    deployments = bot.services.deployments
    answer = bot.command("deploy v1.2.3").text
    assert "Deployment #1 requested" in answer, answer
    # A request waiting for approval does not hold an emergency back.
    answer = bot.command('emergency outage v1.2.5 --reason "API down"').text
    assert "Emergency deployment #2 requested" in answer, answer

    press(bot, 1, "U0LEAD1")
    runs.hold[1] = gate = threading.Event()
    assert runs.pass_once()
    runs.wait_started(1)
    assert deployments.get(1).state is S.RUNNING

    press(bot, 2, "U0LEAD2")
    assert deployments.get(2).state is S.QUEUED
    thread = thread_text(bot, 2)
    assert "It waits for #1, under way on production, and starts when it has ended." in thread
    assert "Starting." not in thread  # never told it starts, then dropped
    assert not runs.pass_once()  # production is #1's: #2 waits in line
    assert deployments.get(2).state is S.QUEUED
    assert "Queued behind #1, which is under way on production: #2 starts when #1 has " \
        "ended." in thread_text(bot, 2)
    assert not runs.pass_once()
    assert thread_text(bot, 2).count("Queued behind #1") == 1  # said once

    gate.set()
    runs.drain()
    assert deployments.get(1).state is S.SUCCEEDED
    emergency = deployments.get(2)
    assert emergency.state is S.SUCCEEDED, (emergency.state, emergency.error)
    assert "did not start" not in thread_text(bot, 2)
    assert runs.seen[2]["deployment"] == 2  # it held production itself


def test_a_run_that_finds_another_run_holding_the_lock_goes_back_in_line(
        bot: BotHarness, runs: TinyRuns) -> None:
    """The engine's side of it (two replicas racing their claims): a claimed run that finds
    the environment's lock held by a run under way is queued again, not failed."""
    deployments = bot.services.deployments
    bot.command("deploy v1.2.3")
    bot.command('emergency outage v1.2.5 --reason "API down"')
    press(bot, 1, "U0LEAD1")
    runs.hold[1] = gate = threading.Event()
    assert runs.pass_once()
    runs.wait_started(1)
    press(bot, 2, "U0LEAD2")
    claimed = deployments.claim_next("another-replica")  # not the run queue's choice
    assert claimed is not None and claimed.id == 2
    assert deployments.transition(2, [S.RUNNING], S.RUNNING,
                                  worker_id=bot.services.engine.worker_id)
    assert bot.services.engine.run(2) is S.QUEUED
    record = deployments.get(2)
    assert (record.state, record.worker_id) == (S.QUEUED, None)
    assert "Queued behind #1, which holds production" in thread_text(bot, 2)
    gate.set()
    runs.drain()
    assert deployments.get(2).state is S.SUCCEEDED


def test_an_emergency_requested_during_a_run_is_told_it_waits_then_runs_after_it(
        bot: BotHarness, runs: TinyRuns) -> None:
    deployments = bot.services.deployments
    bot.command("deploy v1.2.3")
    press(bot, 1, "U0LEAD1")
    runs.hold[1] = gate = threading.Event()
    assert runs.pass_once()
    runs.wait_started(1)

    answer = bot.command('emergency outage v1.2.5 --reason "API down"').text
    assert "Emergency deployment #2 requested" in answer, answer
    assert "It waits for #1, under way on production, and starts right after it." in answer
    assert "It waits for #1" in thread_text(bot, 2)  # the card's thread says so up front
    press(bot, 2, "U0LEAD2")
    assert deployments.get(2).state is S.QUEUED
    assert "Starting." not in thread_text(bot, 2)
    assert not runs.pass_once()

    gate.set()
    runs.drain()
    assert deployments.get(1).state is S.SUCCEEDED
    assert deployments.get(2).state is S.SUCCEEDED
    assert "did not start" not in thread_text(bot, 2)


def test_a_queued_run_that_the_gate_no_longer_allows_does_not_start(
        bot: BotHarness, runs: TinyRuns) -> None:
    """Approved, then someone locks the environment before a worker claims the run: the gate
    refuses it at its start (nothing done, said with the rule); the person's lock stays."""
    deployments = bot.services.deployments
    bot.command("deploy v1.2.3")
    press(bot, 1, "U0LEAD1")
    assert deployments.get(1).state is S.QUEUED
    assert bot.services.environments.acquire_lock("production", "U0OPS", "db maintenance",
                                                  None, None)
    assert not runs.pass_once()
    record = deployments.get(1)
    assert record.state is S.FAILED
    assert record.error.startswith("did not start: A standard deployment is not allowed now: "
                                   "production is locked by <@U0OPS>"), record.error
    assert "(rule: environment-lock)" in thread_text(bot, 1)
    assert 1 not in runs.started
    lock = bot.services.environments.get("production")
    assert (lock.lock_holder, lock.lock_reason) == ("U0OPS", "db maintenance")
