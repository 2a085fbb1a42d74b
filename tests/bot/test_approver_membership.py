"""Approvers named by user group are read from Slack when the button is pressed (issue 11).

Membership used to be cached for a minute: someone taken out of the release group could still
approve a production deployment for the next 30-60 s. Signed requests into the real app, with
the group changed in the Slack double between two clicks. The read happens after the ack, when
the click is decided (``bot.clicks``); the answer arrives asynchronously, so ``_press`` waits for
it. The read is bounded by a timeout: a Slack that hangs refuses the decision.
"""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler
from typing import Any

import pytest
from slack_sdk import WebClient

from bot.membership import SlackGroups
from procedures.errors import ExternalServiceError
from procedures.model import DeploymentState as S
from procedures.policy import ApprovalRule
from tests.bot.run_helpers import press
from tests.fakes.bot_harness import BOT_TOKEN, BotHarness
from tests.fakes.slack_double import SlackDouble

CARD_TS = "1764849600.000100"
RELEASE = "S0RELEASE"


class _HeldSlack(SlackDouble):
    """A Slack double whose ``usergroups.users.list`` answers only once released."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.release = threading.Event()

    def _serve(self, handler: BaseHTTPRequestHandler) -> None:
        if "usergroups.users.list" in handler.path:
            self.release.wait(30)
        super()._serve(handler)


_press = press  # the click is decided after its ack: run_helpers.press waits for it


def _request(bot: BotHarness, text: str) -> int:
    answer = bot.command(text).text
    assert "requested" in answer, answer
    return int(answer.split("#")[1].split(" ")[0])


def test_a_member_removed_from_the_group_is_refused_at_the_next_click(
        bot: BotHarness, slack: SlackDouble) -> None:
    production = _request(bot, "deploy v1.2.3")
    staging = _request(bot, "deploy v1.2.3 to staging")

    assert "You approved #1; it is starting." in _press(bot, production, "U0LEAD2")
    assert bot.services.deployments.get(production).state is S.QUEUED
    asked = slack.served_count("usergroups.users.list")
    assert asked >= 1

    with slack._cond:  # the workspace admin takes U0LEAD2 out of the release group
        slack.groups[RELEASE].remove("U0LEAD2")
    answer = _press(bot, staging, "U0LEAD2")  # at once: no clock moves, no cache expires
    assert "You may not approve standard deployments." in answer
    assert bot.services.deployments.get(staging).state is S.PENDING_APPROVAL
    assert slack.served_count("usergroups.users.list") > asked  # asked again at the click
    refused = [e for e in bot.services.audit.recent(50) if e.action == "approval.refused"]
    assert [(e.actor, e.deployment_id, e.detail["rule"]) for e in refused] == [
        ("U0LEAD2", staging, "approvers")]

    with slack._cond:  # and put back: the next click counts again
        slack.groups[RELEASE].append("U0LEAD2")
    assert f"You approved #{staging}; it is starting." in _press(bot, staging, "U0LEAD2")


def test_a_display_may_reuse_a_recent_answer_a_decision_never_does() -> None:
    double = SlackDouble(token=BOT_TOKEN, groups={RELEASE: ["U0LEAD2"]})
    double.start()
    try:
        now = [100.0]
        groups = SlackGroups(WebClient(token=BOT_TOKEN, base_url=double.api_url),
                             monotonic=lambda: now[0])
        rule = ApprovalRule(users=[], groups=[RELEASE], required=1)
        assert groups.may_approve("U0LEAD2", rule)
        with double._cond:
            double.groups[RELEASE].clear()
        assert groups.members(RELEASE, max_age=30) == frozenset({"U0LEAD2"})  # display
        assert not groups.may_approve("U0LEAD2", rule)  # decision: asked again
        assert double.served_count("usergroups.users.list") == 2
    finally:
        double.stop()


def test_a_slack_that_does_not_answer_refuses_the_decision_within_the_timeout() -> None:
    double = _HeldSlack(token=BOT_TOKEN, groups={RELEASE: ["U0LEAD2"]})
    double.start()
    try:
        groups = SlackGroups(WebClient(token=BOT_TOKEN, base_url=double.api_url), timeout=0.3)
        rule = ApprovalRule(users=[], groups=[RELEASE], required=1)
        started = time.monotonic()
        with pytest.raises(ExternalServiceError) as raised:
            groups.may_approve("U0LEAD2", rule)
        assert time.monotonic() - started < 2.0
        assert raised.value.code == "timeout"
        assert "did not answer within 0.3 s" in raised.value.message
        assert "nothing was decided" in raised.value.message
    finally:
        double.release.set()
        double.stop()
