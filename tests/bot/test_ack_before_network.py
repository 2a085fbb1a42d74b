"""No network call before the ack (issue 11): a click or ``/qlp checklist`` is acked while
Slack is held, and decided or answered afterwards.

Signed requests into the real app; the Slack double holds calls (``SlackDouble.hold``) instead
of sleeping, and the assertions look at its call log when the ack has come back, not at a time.
"""

from __future__ import annotations

from dataclasses import asdict

import pytest

from bot.clicks import click_task
from bot.context import Request
from procedures.model import DeploymentState as S
from storage.requests import ClickQueue
from tests.fakes.bot_harness import BotHarness
from tests.fakes.slack_double import SlackDouble

CARD_TS = "1764849600.000100"
CHANNEL = "C0DEPLOY"


def _request(bot: BotHarness, text: str) -> int:
    answer = bot.command(text).text
    assert "requested" in answer, answer
    return int(answer.split("#")[1].split(" ")[0])


def _answers(slack: SlackDouble, user: str) -> list[str]:
    return [str(m.text) for m in slack.ephemerals(user)]


def _settled(bot: BotHarness) -> None:
    tasks = click_task(bot.services)
    bot.wait_for(lambda: not tasks.busy(), what="the clicks to be decided")


@pytest.mark.slow  # 4 s of the fast lane, measured
def test_an_approve_click_is_acked_before_slack_is_asked_and_decided_after(
        bot: BotHarness, slack: SlackDouble) -> None:
    deployment = _request(bot, "deploy v1.2.3")
    answered_before = len(slack.calls())
    slack.hold(["usergroups.users.list"])  # Slack takes "forever" to list the release group
    try:
        response = bot.press("qlp_approve", str(deployment), user="U0LEAD2", message_ts=CARD_TS)
        # The ack is back: no Slack call was answered on its way, nothing was said to anyone,
        # and nothing is decided yet.
        assert response.status_code == 200
        # (auth.test is the click worker's one-time lookup of the bot's own workspace, made
        # after the ack, bot/clicks.py; it may land before this line reads the calls.)
        assert [c for c in slack.calls()[answered_before:] if c.method != "auth.test"] == []
        assert "response_url" not in slack.arrivals()
        assert "chat.postEphemeral" not in slack.arrivals()
        assert bot.services.deployments.get(deployment).state is S.PENDING_APPROVAL

        # The decision waits on Slack after the ack; after a moment the person hears why.
        slack.wait_for(lambda: "Checking your approval of #1…" in _answers(slack, "U0LEAD2"))
        assert slack.arrivals("usergroups.users.list")
        assert bot.services.deployments.get(deployment).state is S.PENDING_APPROVAL
    finally:
        slack.release()
    slack.wait_for(lambda: len(_answers(slack, "U0LEAD2")) == 2)
    assert _answers(slack, "U0LEAD2") == ["Checking your approval of #1…",
                                          "You approved #1; it is starting."]
    assert bot.services.deployments.get(deployment).state is S.QUEUED


def test_a_slack_retry_and_a_double_click_approve_once(bot: BotHarness,
                                                       slack: SlackDouble) -> None:
    deployment = _request(bot, "deploy v1.2.3")
    slack.hold(["usergroups.users.list"])
    try:
        for action_ts in ("1764849700.000001", "1764849700.000001", "1764849700.000002"):
            response = bot.press("qlp_approve", str(deployment), user="U0LEAD2",
                                 message_ts=CARD_TS, action_ts=action_ts)
            assert response.status_code == 200
    finally:
        slack.release()
    _settled(bot)
    slack.wait_for(lambda: len(_answers(slack, "U0LEAD2")) >= 2)
    answers = sorted(a for a in _answers(slack, "U0LEAD2") if not a.startswith("Checking"))
    # The retry (same action_ts) was not stored again; the double click was told it was done.
    assert len(answers) == 2, answers
    assert answers[1] == "You approved #1; it is starting."
    # Which of the two wording the double click gets depends on whether the first click had
    # already moved the request on: both say it was already approved, neither approves again.
    assert "already approved" in answers[0], answers
    approvals = bot.services.approvals.for_deployment(
        deployment, bot.services.deployments.get(deployment).plan_hash or "")
    assert [(a.actor, a.decision) for a in approvals] == [("U0LEAD2", "approve")]
    approved = [e for e in bot.services.audit.recent(50) if e.action == "deployment.approved"]
    assert len(approved) == 1


def test_a_stored_click_that_no_thread_decided_is_decided_by_the_worker(
        bot: BotHarness, slack: SlackDouble) -> None:
    """A click stored just before the process stopped: the next process's worker decides it."""
    deployment = _request(bot, "deploy v1.2.3")
    request = Request(user_id="U0LEAD2", channel_id=CHANNEL, team_id="T0QLP0001",
                      response_url=slack.response_url("act-restart", channel=CHANNEL,
                                                      user="U0LEAD2", message_ts=CARD_TS),
                      request_key="qlp_approve:1764849800.000001:U0LEAD2")
    key = f"click:{request.request_key}"
    queue = ClickQueue(bot.services.database, bot.services.clock)
    assert queue.queue(key, {"action_id": "qlp_approve", "action": {"value": str(deployment)},
                             "request": asdict(request)})
    assert bot.services.deployments.get(deployment).state is S.PENDING_APPROVAL

    assert click_task(bot.services).run_once()  # the worker's pass picks it up
    _settled(bot)
    assert bot.services.deployments.get(deployment).state is S.QUEUED
    assert queue.answer(key) == "You approved #1; it is starting."
    assert not click_task(bot.services).run_once()  # decided: never again


def test_the_checklist_is_acked_before_its_boxes_are_posted(bot: BotHarness,
                                                          slack: SlackDouble) -> None:
    record = bot.services.deployments.create(
        "standard", "v1.2.3", "production", "U0DEV", state=S.SUCCEEDED, channel=CHANNEL)
    slack.hold(["response_url"])
    try:
        response = bot.command(f"checklist {record.id}")
        assert response.status_code == 200
        assert f"Checklist for #{record.id}: 0 of" in response.text
        assert "the list follows" in response.text
        assert slack.calls("response_url") == []
    finally:
        slack.release()
    message = slack.wait_for(lambda: [m for m in slack.ephemerals("U0DEV") if m.blocks])[-1]
    assert f"Standard checklist for #{record.id}" in str(message.text)
