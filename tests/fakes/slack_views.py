"""Reading what the bot posted to the Slack double: the card of a deployment, its thread,
someone's ephemeral answers, a message's buttons. Shared by the end-to-end tests."""

from __future__ import annotations

from typing import Any

from tests.fakes.slack_double import SlackDouble

CHANNEL = "C0DEPLOY"

# A window open every day, all day: end-to-end tests run on the wall clock.
ALWAYS_OPEN = {"preferred": [{"days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"],
                              "start": "00:00", "end": "24:00"}]}


def card(slack: SlackDouble, deployment_id: int, channel: str = CHANNEL) -> Any:
    """The card of deployment ``deployment_id`` (its title holds ``#<id>:``), or None."""
    for message in slack.messages(channel):
        if f"#{deployment_id}:" in message.text:
            return message
    return None


def thread_text(slack: SlackDouble, deployment_id: int, channel: str = CHANNEL) -> str:
    """Every reply in the card's thread, one per line ("" before the card exists)."""
    found = card(slack, deployment_id, channel)
    return "\n".join(m.text for m in slack.thread(channel, found.ts)) if found else ""


def ephemeral_for(slack: SlackDouble, user: str) -> str:
    """Everything only ``user`` was shown."""
    return "\n".join(m.text for m in slack.ephemerals(user))


def button_ids(message: Any) -> list[str]:
    """The action ids of a message's buttons, in order."""
    return [element["action_id"] for block in message.blocks if block["type"] == "actions"
            for element in block["elements"]]
