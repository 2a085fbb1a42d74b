"""``/qlp lock``, ``/qlp unlock`` and ``/qlp cancel`` over signed requests into the real app."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from procedures.clock import FixedClock
from procedures.model import DeploymentState as S
from procedures.model import ProcedureKind
from storage.db import Database
from tests.fakes.bot_harness import BotHarness
from tests.fakes.policies import make_policy
from tests.fakes.slack_double import SlackDouble

CHANNEL = "C0DEPLOY"


def _notices(bot: BotHarness) -> list[str]:
    """Texts the bot queued for the deployment channel itself (not card threads)."""
    return [str(n.payload.get("text")) for n in bot.services.outbox.undelivered(500)
            if n.channel == CHANNEL and n.kind == "post" and n.deployment_id is None
            and n.thread_of is None]


def _thread_texts(bot: BotHarness, deployment_id: int) -> list[str]:
    return [str(n.payload.get("text")) for n in bot.services.outbox.undelivered(500)
            if n.thread_of == deployment_id and n.kind == "post"]


def _actions(bot: BotHarness) -> list[str]:
    return [e.action for e in bot.services.audit.recent(200)]


def _deployment(bot: BotHarness, state: S, *, requester: str = "U0DEV",
                env: str = "production", version: str = "v1.2.3") -> int:
    deployments = bot.services.deployments
    created = deployments.create(ProcedureKind.STANDARD, version, env, requester,
                                 channel=CHANNEL)
    assert created.id is not None
    path = {S.PENDING_APPROVAL: [], S.RUNNING: [S.QUEUED, S.RUNNING],
            S.SUCCEEDED: [S.QUEUED, S.RUNNING, S.SUCCEEDED],
            S.NEEDS_ATTENTION: [S.QUEUED, S.RUNNING, S.ROLLING_BACK, S.NEEDS_ATTENTION]}[state]
    current = S.PENDING_APPROVAL
    for target in path:
        fields: dict[str, Any] = {"worker_id": "worker-x"} if target is S.RUNNING else {}
        assert deployments.transition(created.id, [current], target, **fields)
        current = target
    return created.id


# -- lock -----------------------------------------------------------------------------------


def test_lock_takes_a_manual_lock_audits_and_tells_the_channel(bot: BotHarness) -> None:
    response = bot.command('lock production --reason "incident 42 <!channel>"')
    assert response.status_code == 200
    assert "production is locked: incident 42 &lt;!channel&gt;" in response.text
    state = bot.services.environments.get("production")
    assert state is not None
    assert (state.lock_holder, state.lock_reason, state.lock_deployment_id, state.lock_owner) \
        == ("U0DEV", "incident 42 <!channel>", None, None)
    assert "environment.locked" in _actions(bot)
    notices = _notices(bot)
    assert len(notices) == 1
    assert notices[0].startswith(":lock: <@U0DEV> locked *production*: incident 42 "
                                 "&lt;!channel&gt;.")
    assert "<!channel>" not in notices[0]
    # Deploy refuses while it is held (bot/commands/deploy.py).
    assert "locked by <@U0DEV>" in bot.command("deploy v1.2.3").text


def test_locking_twice_is_refused_naming_holder_reason_and_since(bot: BotHarness,
                                                                 clock: FixedClock) -> None:
    bot.command('lock production --reason "incident 42"')
    clock.advance(timedelta(minutes=5))
    text = bot.command('lock production --reason "me too"', user="U0LEAD1").text
    assert text.startswith(":no_entry: production is already locked by <@U0DEV> since "
                           "Tue 2026-12-01 11:00 UTC (5m ago): incident 42.")
    assert "(rule: environment-lock)" in text and "/qlp unlock production" in text
    own = bot.command('lock production --reason "again"').text
    assert "already locked by you" in own and "lock it again" in own
    assert bot.services.environments.get("production").lock_reason == "incident 42"
    assert _actions(bot).count("lock.refused") == 2
    assert len(_notices(bot)) == 1


def test_locking_an_environment_a_deployment_holds_names_the_deployment(
        bot: BotHarness) -> None:
    deployment_id = _deployment(bot, S.RUNNING, requester="U0LEAD1")
    bot.services.environments.acquire_lock("production", "U0LEAD1",
                                           f"deployment #{deployment_id}", deployment_id,
                                           "worker-x")
    text = bot.command('lock production --reason "incident"').text
    assert (f"already locked by deployment #{deployment_id} (v1.2.3, running, requested by "
            "<@U0LEAD1>)") in text
    assert f"/qlp cancel {deployment_id}" in text


def test_lock_mentions_requests_that_will_not_start_and_checks_the_environment(
        bot: BotHarness) -> None:
    waiting = _deployment(bot, S.PENDING_APPROVAL)
    text = bot.command('lock production --reason "hold on"').text
    assert f"Requested deployments (#{waiting}) will not start" in text
    unknown = bot.command('lock prod --reason "hold on"').text
    assert "There is no environment `prod`. Did you mean `production`?" in unknown
    assert "needs a reason" in bot.command("lock staging").text


# -- unlock ---------------------------------------------------------------------------------


def test_a_stranger_may_not_unlock_and_is_told_who_may(bot: BotHarness) -> None:
    bot.command('lock production --reason "incident 42"')
    text = bot.command("unlock production", user="U0STRANGER").text
    assert text.startswith(":no_entry: You may not unlock production: <@U0DEV> locked it. "
                           "_(rule: approvals.lock)_")
    assert text.split("\n")[1].startswith("<@U0DEV> (who locked it), ")
    assert text.endswith("(`approvals.lock`) or <@U0HEAD1> (`approvals.override`) may unlock it.")
    assert bot.services.environments.get("production").lock_holder == "U0DEV"
    assert "unlock.refused" in _actions(bot)


def test_the_holder_unlocks_and_the_channel_is_told(bot: BotHarness) -> None:
    bot.command('lock production --reason "incident 42"')
    text = bot.command('unlock production --reason "all clear"').text
    assert text.startswith(":unlock: production is unlocked (it was locked by <@U0DEV> since "
                           "Tue 2026-12-01 11:00 UTC (now): incident 42).")
    assert bot.services.environments.get("production").lock_holder is None
    assert "environment.unlocked" in _actions(bot)
    assert _notices(bot)[-1].startswith(":unlock: <@U0DEV> unlocked *production*: all clear")
    assert "is not locked" in bot.command("unlock production").text


def test_an_override_approver_unlocks_someone_elses_lock(bot: BotHarness) -> None:
    bot.command('lock staging --reason "load test"')
    assert "staging is unlocked" in bot.command("unlock staging", user="U0HEAD1").text
    assert bot.services.environments.get("staging").lock_holder is None


def test_a_running_deployments_lock_cannot_be_unlocked_here(bot: BotHarness) -> None:
    deployment_id = _deployment(bot, S.RUNNING)
    bot.services.environments.acquire_lock("production", "U0DEV",
                                           f"deployment #{deployment_id}", deployment_id,
                                           "worker-x")
    for user in ("U0DEV", "U0HEAD1"):
        text = bot.command("unlock production", user=user).text
        assert f"production is locked by deployment #{deployment_id}" in text
        assert "(rule: deployment-lock)" in text
        assert f"`/qlp cancel {deployment_id}`" in text
    assert bot.services.environments.get("production").lock_deployment_id == deployment_id


def test_the_lock_kept_after_needs_attention_is_lifted_by_an_approver(bot: BotHarness) -> None:
    deployment_id = _deployment(bot, S.NEEDS_ATTENTION)
    bot.services.environments.acquire_lock(
        "production", "U0DEV", f"needs attention after #{deployment_id}: undo failed",
        deployment_id, None)
    locking = bot.command('lock production --reason "mine now"', user="U0LEAD1").text
    assert f"already locked by deployment #{deployment_id} (v1.2.3, needs attention" in locking
    assert "an approver can `/qlp unlock production`" in locking
    text = bot.command("unlock production").text
    assert f"stays locked after deployment #{deployment_id} (needs attention)" in text
    assert "<@U0HEAD1> may unlock it." in text
    assert "production is unlocked" in bot.command("unlock production", user="U0HEAD1").text
    assert bot.services.environments.get("production").lock_holder is None


@pytest.fixture
def standard_only_bot(database: Database, clock: FixedClock, slack: SlackDouble,
                      tmp_path: Path) -> Iterator[BotHarness]:
    policy = make_policy(approvals={"standard": {"users": ["U0LEAD1"], "groups": ["S0RELEASE"],
                                                 "required": 1}})
    harness = BotHarness(database=database, policy=policy, clock=clock,
                         home=tmp_path / "home", slack=slack)
    yield harness
    harness.close()


def test_without_an_override_rule_standard_approvers_unlock(
        standard_only_bot: BotHarness) -> None:
    bot = standard_only_bot
    # Without approvals.lock the standard approvers lock (issue 13, finding 6).
    bot.command('lock production --reason "incident 42"', user="U0LEAD1")
    refused = bot.command("unlock production", user="U0STRANGER").text
    assert "(rule: approvals.standard)" in refused
    assert ("<@U0LEAD1> (who locked it), <@U0LEAD1> or a member of <!subteam^S0RELEASE> "
            "(`approvals.standard`) may") in refused
    # U0LEAD2 approves through the release group, asked of Slack.
    assert "production is unlocked" in bot.command("unlock production", user="U0LEAD2").text


# -- cancel ---------------------------------------------------------------------------------


def test_cancel_by_a_stranger_is_refused_naming_who_may(bot: BotHarness) -> None:
    deployment_id = _deployment(bot, S.PENDING_APPROVAL)
    text = bot.command(f"cancel {deployment_id}", user="U0STRANGER").text
    assert text.startswith(f":no_entry: You may not cancel #{deployment_id}. "
                           "_(rule: approvers)_")
    assert "The requester (<@U0DEV>) or <@U0LEAD1> or a member of <!subteam^S0RELEASE> may." \
        in text
    assert bot.services.deployments.get(deployment_id).state is S.PENDING_APPROVAL
    assert "cancel.refused" in _actions(bot)


def test_the_requester_cancels_a_request_before_it_starts(bot: BotHarness) -> None:
    deployment_id = _deployment(bot, S.PENDING_APPROVAL)
    text = bot.command(f"cancel #{deployment_id}").text
    assert text == f"You cancelled #{deployment_id} before it started; nothing was changed."
    assert bot.services.deployments.get(deployment_id).state is S.CANCELLED
    assert "run.cancelled" in _actions(bot)
    again = bot.command(f"cancel {deployment_id}").text
    assert again == f":information_source: #{deployment_id} is cancelled; there is nothing to " \
                    "cancel."


def test_an_approver_cancels_a_running_deployment(bot: BotHarness) -> None:
    deployment_id = _deployment(bot, S.RUNNING)
    text = bot.command(f"cancel {deployment_id}", user="U0LEAD2").text
    assert text == f"Cancelling #{deployment_id}; completed steps will be undone."
    record = bot.services.deployments.get(deployment_id)
    assert record.state is S.ROLLING_BACK and record.error == "cancelled by <@U0LEAD2>"
    assert any("Cancel requested by <@U0LEAD2>." in t
               for t in _thread_texts(bot, deployment_id))


def test_a_finished_deployment_says_its_state(bot: BotHarness) -> None:
    deployment_id = _deployment(bot, S.SUCCEEDED)
    text = bot.command(f"cancel {deployment_id}").text
    assert text == f":information_source: #{deployment_id} is succeeded; there is nothing " \
                   "to cancel."
    assert "There is no deployment #999." in bot.command("cancel 999").text
    assert "not a deployment number" in bot.command("cancel twelve").text


def test_of_concurrent_cancels_exactly_one_wins(bot: BotHarness) -> None:
    deployment_id = _deployment(bot, S.RUNNING)
    users = ["U0DEV", "U0LEAD1", "U0LEAD2", "U0DEV", "U0LEAD1", "U0LEAD2"]
    with ThreadPoolExecutor(len(users)) as pool:
        texts = list(pool.map(lambda u: bot.command(f"cancel {deployment_id}", user=u).text,
                              users))
    assert sum(t.startswith("Cancelling") for t in texts) == 1, texts
    assert sum("is rolling back; there is nothing to cancel" in t for t in texts) == 5, texts
    assert _actions(bot).count("run.cancel_requested") == 1


def test_the_cancel_button_follows_the_same_rules(bot: BotHarness) -> None:
    deployment_id = _deployment(bot, S.RUNNING)
    slack = bot.slack
    bot.press("qlp_cancel", str(deployment_id), user="U0STRANGER", message_ts="1.0")
    bot.wait_for(lambda: any(f"You may not cancel #{deployment_id}" in m.text
                             for m in slack.ephemerals("U0STRANGER")), what="the refusal")
    bot.press("qlp_cancel", str(deployment_id), user="U0DEV", message_ts="1.0")
    bot.wait_for(lambda: any(f"Cancelling #{deployment_id}" in m.text
                             for m in slack.ephemerals("U0DEV")), what="the answer")
    assert bot.services.deployments.get(deployment_id).state is S.ROLLING_BACK
