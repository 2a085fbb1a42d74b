"""Telling audiences: a Slack post to each audience's channel and an e-mail to its addresses.

The routes are the policy's ``notifications.audiences`` (audience -> Slack channel) and
``notifications.email.audiences`` (audience -> addresses). Everything goes into the outbox
(kinds ``post`` and ``email``), delivered by ``bot.outbox_sender`` and
``bot.notification_sender``.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from bot.slack_reporter import channel_key
from procedures.policy import Policy
from storage.outbox import Outbox

log = logging.getLogger(__name__)

CHANNEL_LIMIT = 64  # the outbox's channel column


def notify_audiences(outbox: Outbox, policy: Policy, audiences: list[str], text: str, *,
                     subject: str, dedup_key: str, deployment_id: int | None = None,
                     session: Any = None) -> list[int]:
    """Enqueue ``text`` for each audience: a Slack ``post`` to its channel and an ``email``
    (``{"to", "subject", "body"}``, the body as plain text) to its addresses.

    An audience without a route of a kind gets nothing of that kind (one without any is
    logged). Each message has the dedup key ``<dedup_key>:slack:<audience>`` or
    ``<dedup_key>:email:<audience>``, so calling again with the same ``dedup_key`` sends
    nothing twice (and ``dedup_key`` itself stays free for the caller's own marker). With
    ``session`` the messages join the caller's transaction. Returns the outbox ids, in order.
    """
    channels = policy.notifications.audiences
    email = policy.notifications.email
    mailing = email.audiences if email is not None else {}
    body = plain_text(text)
    ids: list[int] = []
    for audience in dict.fromkeys(audiences):  # each once, in the order given
        channel = channels.get(audience)
        addresses = mailing.get(audience)
        if channel is None and not addresses:
            log.info("notify: audience %r has no Slack channel and no e-mail addresses",
                     audience)
            continue
        if channel is not None:
            ids.append(outbox.enqueue(
                channel, "post", {"text": text}, deployment_id=deployment_id,
                ordering_key=channel_key(channel),
                dedup_key=f"{dedup_key}:slack:{audience}", session=session))
        if addresses:
            route = f"email:{audience}"[:CHANNEL_LIMIT]
            ids.append(outbox.enqueue(
                route, "email", {"to": list(addresses), "subject": subject, "body": body},
                deployment_id=deployment_id, ordering_key=route,
                dedup_key=f"{dedup_key}:email:{audience}", session=session))
    return ids


_LABELLED = re.compile(r"<([@#])[^<>|]+\|([^<>]+)>")
_LINK = re.compile(r"<([^<>|]+)\|([^<>]+)>")
_MENTION = re.compile(r"<([@#!])([^<>|]+)>")
_URL = re.compile(r"<((?:https?|mailto):[^<>]+)>")
_BOLD = re.compile(r"(?<![\w*])\*([^*\n]+)\*(?![\w*])")


def plain_text(mrkdwn: str) -> str:
    """Slack mrkdwn as e-mail text: ``<url|label>`` -> ``label (url)``, ``<@U1>`` -> ``@U1``,
    ``*bold*`` -> ``bold``, entities unescaped."""
    text = _LABELLED.sub(r"\1\2", mrkdwn)
    text = _LINK.sub(r"\2 (\1)", text)
    text = _URL.sub(r"\1", text)
    text = _MENTION.sub(r"\1\2", text)
    text = _BOLD.sub(r"\1", text)
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
