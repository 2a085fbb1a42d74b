"""A click is acted on only from the card's workspace, organisation and channel (issue 13,
finding 6), and a button value that names no deployment is refused clearly (finding 2).

Signed block_actions requests go into the real app over HTTP; the Slack double's ``auth.test``
names the bot's workspace (``T0QLP0001``), as Slack names the token's install.
"""

from __future__ import annotations

import json
from urllib.parse import parse_qs, urlencode

import pytest

from bot.clicks import click_task
from bot.slack_requests import LOCAL_TEAM_ID, block_actions_body
from bot.workspace import Workspace, WorkspaceIdentity
from procedures.errors import ExternalServiceError
from procedures.model import DeploymentState
from tests.fakes.bot_harness import BOT_TOKEN, BotHarness
from tests.fakes.slack_double import SlackDouble

CARD_TS = "1764849600.000100"
CHANNEL = "C0DEPLOY"


def _click(bot: BotHarness, value: str, *, user: str = "U0LEAD1", team: str = LOCAL_TEAM_ID,
           enterprise: str | None = None, channel: str = CHANNEL,
           action: str = "qlp_approve") -> str:
    """Press ``action`` with ``value`` as Slack would send it from ``team`` / ``enterprise`` /
    ``channel``; the answer the presser got once the click was decided."""
    before = len(bot.slack.ephemerals(user))
    url = bot.slack.response_url(f"click-{len(bot.slack.ephemerals())}-{value[:8]}",
                                 channel=channel, user=user, message_ts=CARD_TS)
    body = block_actions_body(action_id=action, value=value, user_id=user, channel_id=channel,
                              message_ts=CARD_TS, response_url=url, team_id=team)
    if enterprise is not None:
        payload = json.loads(parse_qs(body)["payload"][0])
        payload["enterprise"] = {"id": enterprise, "name": "Elsewhere Inc"}
        payload["team"]["enterprise_id"] = enterprise
        payload["is_enterprise_install"] = False
        body = urlencode({"payload": json.dumps(payload)})
    response = bot.post(body)
    assert response.status_code == 200
    clicks = click_task(bot.services)
    bot.wait_for(lambda: not clicks.busy(), what="the click to be decided")

    def answers() -> list[str]:
        return [str(m.text) for m in bot.slack.ephemerals(user)[before:]
                if not str(m.text).startswith("Checking your")]

    bot.wait_for(answers, what="the answer")
    return answers()[-1]


def _pending(bot: BotHarness) -> int:
    answer = bot.command("deploy v1.2.3").text
    rows = bot.services.deployments.list_in_states((DeploymentState.PENDING_APPROVAL,))
    assert len(rows) == 1, answer
    assert rows[0].id is not None
    return rows[0].id


def _state(bot: BotHarness, deployment_id: int) -> DeploymentState:
    row = bot.services.deployments.get(deployment_id)
    assert row is not None
    return row.state


def _approvals(bot: BotHarness, deployment_id: int) -> list[str]:
    return list(bot.services.views.snapshot(deployment_id).approvers)


def test_a_click_from_another_workspace_is_refused(bot: BotHarness) -> None:
    deployment_id = _pending(bot)
    answer = _click(bot, str(deployment_id), team="T0ELSEWHERE")
    assert "another Slack workspace (`T0ELSEWHERE`)" in answer
    assert "(`T0QLP0001`)" in answer and "not acted on" in answer
    assert _state(bot, deployment_id) is DeploymentState.PENDING_APPROVAL
    assert _approvals(bot, deployment_id) == []
    refused = [e for e in bot.services.audit.recent(50) if e.action == "click.refused"]
    assert refused and refused[0].detail["team"] == "T0ELSEWHERE"


def test_a_click_from_another_enterprise_is_refused(bot: BotHarness) -> None:
    deployment_id = _pending(bot)
    answer = _click(bot, str(deployment_id), enterprise="E0ELSEWHERE")
    assert "another Slack organisation (`E0ELSEWHERE`)" in answer
    assert _state(bot, deployment_id) is DeploymentState.PENDING_APPROVAL
    assert _approvals(bot, deployment_id) == []


def test_a_click_from_another_channel_than_the_cards_is_refused(bot: BotHarness) -> None:
    deployment_id = _pending(bot)
    answer = _click(bot, str(deployment_id), channel="C0ELSEWHERE")
    assert f"#{deployment_id}'s card is in <#{CHANNEL}>" in answer
    assert "pressed in <#C0ELSEWHERE>" in answer and "(rule: channel)" in answer
    assert _state(bot, deployment_id) is DeploymentState.PENDING_APPROVAL
    assert _approvals(bot, deployment_id) == []
    # Reject and Cancel are card buttons too.
    assert "not acted on" in _click(bot, str(deployment_id), channel="C0ELSEWHERE",
                                    action="qlp_reject")
    assert _state(bot, deployment_id) is DeploymentState.PENDING_APPROVAL


def test_the_same_click_from_the_cards_workspace_and_channel_counts(bot: BotHarness) -> None:
    deployment_id = _pending(bot)
    answer = _click(bot, str(deployment_id))
    assert "You approved" in answer, answer
    assert _approvals(bot, deployment_id) == ["U0LEAD1"]


@pytest.mark.parametrize("value", [
    "9" * 10_000,  # int() of it raises ValueError (Python's 4,300-digit limit)
    "\u0661",  # Arabic-Indic one: str.isdigit() says yes, int() reads 1
    "²",  # superscript two: isdigit() yes, int() fails
    "\uff11",  # fullwidth one
    "99999999999999999999",  # beyond a database id
    "",
    "<!channel>",
])
def test_a_button_value_that_names_no_deployment_is_refused_clearly(
        bot: BotHarness, value: str) -> None:
    _pending(bot)
    answer = _click(bot, value)
    assert "This button does not name a deployment" in answer
    assert "Something went wrong" not in answer
    assert "<!channel>" not in answer
    assert _approvals(bot, 1) == []


def test_a_configured_workspace_is_used_without_asking_slack(slack: SlackDouble) -> None:
    from slack_sdk import WebClient

    client = WebClient(token=BOT_TOKEN, base_url=slack.api_url)
    identity = WorkspaceIdentity(client, team_id="T0MINE", enterprise_id="E0MINE")
    assert identity.get() == Workspace("T0MINE", "E0MINE")
    assert slack.calls("auth.test") == []
    assert identity.get().refusal("T0MINE", "E0MINE") is None
    assert identity.get().refusal("T0MINE", None) is not None
    assert identity.get().refusal("T0OTHER", "E0MINE") is not None


def test_without_a_configured_workspace_the_installs_is_asked_once(slack: SlackDouble) -> None:
    from slack_sdk import WebClient

    client = WebClient(token=BOT_TOKEN, base_url=slack.api_url)
    slack.fail_next("auth.test", "invalid_auth")
    identity = WorkspaceIdentity(client)
    with pytest.raises(ExternalServiceError) as raised:
        identity.get()  # Slack could not say: the click is refused ("try again"), not accepted
    assert raised.value.retryable
    assert identity.get() == Workspace(slack.team_id, None)
    assert identity.get() == Workspace(slack.team_id, None)
    assert len(slack.calls("auth.test")) == 2  # the failed one and one answer, kept
    assert WorkspaceIdentity(None).get  # no client: refuses every click
    with pytest.raises(ExternalServiceError):
        WorkspaceIdentity(None).get()
