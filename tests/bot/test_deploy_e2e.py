"""A standard deployment end to end: signed requests into the real Bolt app, a Slack double
behind SLACK_API_URL, the real engine and worker, and the local platform's real processes."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from bot.clicks import click_task
from procedures.clock import SystemClock
from procedures.model import DeploymentState
from storage.db import Database
from tests.fakes.bot_harness import BotHarness
from tests.fakes.policies import make_policy
from tests.fakes.slack_double import SlackDouble
from tests.fakes.slack_views import ALWAYS_OPEN, CHANNEL
from tests.fakes.slack_views import button_ids as _button_ids
from tests.fakes.slack_views import card as _card
from tests.fakes.slack_views import ephemeral_for as _ephemeral_for
from tests.fakes.slack_views import thread_text as _thread_text


@pytest.fixture
def live_bot(database: Database, slack: SlackDouble, tmp_path: Path) -> Iterator[BotHarness]:
    policy = make_policy(real_ports=True, windows=ALWAYS_OPEN,
                         monitoring={"duration": "3s", "interval": "1s"})
    harness = BotHarness(database=database, policy=policy, clock=SystemClock(),
                         home=tmp_path / "home", slack=slack, start_worker=True)
    yield harness
    harness.close()


def _live_version(bot: BotHarness) -> str:
    url = bot.services.policy.environments["production"].url
    return str(httpx.get(url + "/health", timeout=5).json()["version"])


def _request_and_approve(bot: BotHarness, version: str, approver: str) -> int:
    response = bot.command(f"deploy {version}")
    assert response.status_code == 200
    assert "requested" in response.text, response.text
    deployment_id = int(response.text.split("#")[1].split(" ")[0].rstrip(":"))
    card = bot.wait_for(lambda: _card(bot.slack, deployment_id), what="the card")
    assert _button_ids(card) == ["qlp_approve", "qlp_reject"]
    answer = bot.press("qlp_approve", str(deployment_id), user=approver, message_ts=card.ts)
    assert answer.status_code == 200
    return deployment_id


@pytest.mark.slow  # the local platform's real processes, monitoring on the wall clock
def test_request_refusals_approval_run_and_automatic_rollback(live_bot: BotHarness) -> None:
    bot, slack = live_bot, live_bot.slack
    deployments = bot.services.deployments

    # Request; the requester cannot approve; a stranger cannot approve.
    response = bot.command("deploy v1.0.0")
    assert "Deployment #1 requested" in response.text
    card = bot.wait_for(lambda: _card(slack, 1), what="the card")
    assert bot.press("qlp_approve", "1", user="U0DEV", message_ts=card.ts).status_code == 200
    assert bot.press("qlp_approve", "1", user="U0STRANGER",
                     message_ts=card.ts).status_code == 200
    bot.wait_for(lambda: "someone else must approve" in _ephemeral_for(slack, "U0DEV"),
                 what="the self-approval refusal")
    bot.wait_for(lambda: "may not approve" in _ephemeral_for(slack, "U0STRANGER"),
                 what="the stranger's refusal")
    assert deployments.get(1).state is DeploymentState.PENDING_APPROVAL
    refusals = [e.action for e in bot.services.audit.recent(100)]
    assert refusals.count("approval.refused") == 2

    # A member of the release group approves: the run goes through.
    bot.press("qlp_approve", "1", user="U0LEAD2", message_ts=card.ts)
    bot.wait_for(lambda: deployments.get(1).state.terminal, timeout=90, what="run #1 to end")
    assert deployments.get(1).state is DeploymentState.SUCCEEDED, deployments.get(1).error
    assert _live_version(bot) == "v1.0.0"
    bot.wait_for(lambda: "Deployed v1.0.0 to production" in _thread_text(slack, 1),
                 what="the final reply")
    thread = _thread_text(slack, 1)
    for phrase in ("Approved by <@U0LEAD2>", "✓ Final validation", "✓ Switch traffic",
                   "✓ Monitor the new version", "Stop the old slot"):
        assert phrase in thread, (phrase, thread)
    bot.wait_for(lambda: "Succeeded" in _card(slack, 1).text or
                 any("Succeeded" in str(b) for b in _card(slack, 1).blocks),
                 what="the card to say Succeeded")
    assert _button_ids(_card(slack, 1)) == ["qlp_rollback"]
    # What the deployment said (posts, card updates, the chart's upload); the lookups the
    # approval rules and the click worker make (usergroups.users.list, auth.test) vary with
    # the cache and are not the economy this bounds.
    calls_for_one = [c.method for c in slack.calls()
                     if c.method not in ("response_url", "auth.test", "usergroups.users.list")]
    from collections import Counter
    print("Web API calls by method:", Counter(calls_for_one))

    # A version whose health fails after the switch: automatic rollback to v1.0.0.
    deployment_id = _request_and_approve(bot, "v1.1.0-unhealthy", "U0LEAD1")
    bot.wait_for(lambda: deployments.get(deployment_id).state.terminal, timeout=90,
                 what="run #2 to end")
    final = deployments.get(deployment_id)
    assert final.state is DeploymentState.ROLLED_BACK, final.error
    assert _live_version(bot) == "v1.0.0"
    bot.wait_for(lambda: "Traffic switched back" in _thread_text(slack, deployment_id),
                 what="the rollback replies")
    thread = _thread_text(slack, deployment_id)
    assert "health checks failed" in thread, thread
    assert "Rolling back" in thread
    broadcast = [m for m in slack.thread(CHANNEL, _card(slack, deployment_id).ts) if m.broadcast]
    assert any("Rolling back" in m.text for m in broadcast)
    assert bot.services.environments.get("production").lock_holder is None
    print(f"Web API calls for the first deployment: {len(calls_for_one)}")
    # 18 on a quiet machine, 23 under CI's load (replies spread further apart merge less).
    assert len(calls_for_one) <= 28, Counter(calls_for_one)
    posts = [c.at for c in slack.calls("chat.postMessage")]
    gaps = [later - earlier for earlier, later in itertools.pairwise(posts)]
    print(f"chat.postMessage calls to {CHANNEL}: {len(posts)}, smallest gap "
          f"{min(gaps):.2f} s")
    # About one post a second per channel, a short burst of two at most (Slack allows short
    # bursts; the double refuses beyond its pace and was never made to).
    assert slack.paced_refusals() == []
    assert all(c - a >= 0.9 for a, c in zip(posts, posts[2:], strict=False))


def test_two_approvers_at_once_start_the_run_once(live_bot: BotHarness) -> None:
    bot, slack = live_bot, live_bot.slack
    live_bot.services.stop_worker()  # keep it queued: we only look at the decision
    response = bot.command("deploy v2.0.0")
    assert "Deployment #1 requested" in response.text
    bot.services.worker_tasks()[-1].run_once()  # deliver the card
    card = bot.wait_for(lambda: _card(slack, 1), what="the card")
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(3) as pool:
        presses = list(pool.map(
            lambda user: bot.press("qlp_approve", "1", user=user, message_ts=card.ts),
            ["U0LEAD1", "U0LEAD2", "U0LEAD1"]))
    assert all(p.status_code == 200 for p in presses)
    clicks = click_task(bot.services)  # the clicks are decided after their acks
    bot.wait_for(lambda: not clicks.busy(), what="the clicks to be decided")
    assert bot.services.deployments.get(1).state is DeploymentState.QUEUED
    approvals = [e for e in bot.services.audit.recent(100) if e.action == "deployment.approved"]
    assert len(approvals) == 1
    texts = _ephemeral_for(slack, "U0LEAD1") + _ephemeral_for(slack, "U0LEAD2")
    assert texts.count("it is starting") == 1
    assert "already approved by" in texts


def test_a_slack_retry_of_the_same_click_is_handled_once(live_bot: BotHarness) -> None:
    bot, slack = live_bot, live_bot.slack
    live_bot.services.stop_worker()
    bot.command("deploy v3.0.0")
    bot.services.worker_tasks()[-1].run_once()
    card = bot.wait_for(lambda: _card(slack, 1), what="the card")
    first = bot.press("qlp_approve", "1", user="U0LEAD1", message_ts=card.ts,
                      action_ts="1764165700.000001")
    retry = bot.press("qlp_approve", "1", user="U0LEAD1", message_ts=card.ts,
                      action_ts="1764165700.000001",
                      extra_headers={"x-slack-retry-num": "1",
                                     "x-slack-retry-reason": "http_timeout"})
    assert first.status_code == retry.status_code == 200
    clicks = click_task(bot.services)  # the click is decided after its ack
    bot.wait_for(lambda: not clicks.busy(), what="the click to be decided")
    assert _ephemeral_for(slack, "U0LEAD1").count("You approved #1") == 1
    assert "already" not in _ephemeral_for(slack, "U0LEAD1")


def test_outside_the_window_a_deploy_is_refused_with_the_next_slot(
        database: Database, slack: SlackDouble, tmp_path: Path) -> None:
    from datetime import UTC, datetime

    from procedures.clock import FixedClock

    friday = FixedClock(datetime(2026, 12, 4, 11, 0, tzinfo=UTC))
    bot = BotHarness(database=database, policy=make_policy(), clock=friday,
                     home=tmp_path / "home", slack=slack)
    try:
        text = bot.command("deploy v1.2.3").text
        assert "not allowed now" in text and "avoided-day" in text
        assert "Tue 2026-12-08 10:00 UTC" in text
        assert bot.services.deployments.list_recent() == []
        dry = bot.command("deploy v1.2.3 --dry-run").text
        assert "Dry run" in dry and "closed" in dry and "nothing was changed" in dry
        # The seed's matrix: response time and error counts warn, they never roll back.
        assert "automatic rollback if more than 50% of health checks fail" in dry
        assert "warnings (never a rollback): responses over 2000 ms" in dry
        assert bot.services.deployments.list_recent() == []
    finally:
        bot.close()
