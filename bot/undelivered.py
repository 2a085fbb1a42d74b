"""Notifications that are not getting through: ``/qlp status``'s lines, ``/metrics``'
figures and the page when Slack delivery is blocked.

Listed: messages that failed at least once and wait for their next try, and messages given up
in the last :data:`DEAD_WINDOW` (a dead message stays in the outbox; after a week it is old
news). A message still waiting for its first try is on its way and not listed, so a healthy
bot shows nothing at all. Above them, when Slack refuses the bot for a reason someone must fix
(``bot.outbox_sender.BLOCKING_ERRORS``), one line per reason says so, what to do, and that
the messages go out once it is fixed.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from bot.formatting import escape, relative
from bot.paging import INCIDENTS_MAIL, ONCALL_ROUTE, SOURCE
from procedures.notifiers.pagerduty import SUMMARY_LIMIT
from procedures.policy import Policy
from storage.db import Database
from storage.models import Notification
from storage.outbox import Outbox
from storage.undelivered import Blocked, Undelivered, read_blocked, read_undelivered

log = logging.getLogger(__name__)

DEAD_WINDOW = timedelta(days=7)
SHOWN = 5
ERROR_LIMIT = 200


def undelivered_lines(database: Database, now: datetime, *, shown: int = SHOWN) -> list[str]:
    """A heading and the oldest ``shown`` stuck messages; no lines when all is delivered."""
    return report_lines(read_undelivered(database, dead_since=now - DEAD_WINDOW, limit=shown),
                        now)


_FIX = {
    "invalid_auth": "the bot's token is not accepted: check SLACK_BOT_TOKEN",
    "not_authed": "no token reached Slack: check SLACK_BOT_TOKEN",
    "token_revoked": "the bot's token was revoked: reinstall the app, update SLACK_BOT_TOKEN",
    "token_expired": "the bot's token expired: reinstall the app, update SLACK_BOT_TOKEN",
    "account_inactive": "the bot's user or the workspace is deactivated: reinstall the app",
    "missing_scope": "the token lacks a scope: reinstall the app from manifest.yml",
    "team_access_not_granted": "the app is not allowed in this workspace: ask an admin",
    "not_in_channel": "the bot is not in the channel: invite it with /invite @qlp",
    "channel_not_found": "Slack does not show the bot the channel: invite it, or fix the "
                         "policy's channel",
    "is_archived": "the channel is archived: unarchive it, or change the policy's channel",
}


def blocked_lines(blocked: list[Blocked], now: datetime) -> list[str]:
    """One line per reason Slack delivery is blocked; none when it flows."""
    lines = []
    for block in blocked:
        where = ", ".join(f"<#{c}>" for c in block.channels[:3])
        if len(block.channels) > 3:
            where += f" +{len(block.channels) - 3}"
        fix = _FIX.get(block.reason, "see the bot's log")
        count = f"{block.messages} message{'s' if block.messages != 1 else ''}"
        lines.append(f":no_entry: *Slack delivery is blocked*: `{escape(block.reason)}` ({fix}). "
                     f"{count} to {where} {'wait' if block.messages != 1 else 'waits'} "
                     f"(the oldest queued "
                     f"{relative(block.since, now)}) and go out once it is fixed.")
    return lines


def report_lines(report: Undelivered, now: datetime) -> list[str]:
    """:func:`undelivered_lines` of a report already read (status reads it with the rest)."""
    if not report.retrying and not report.dead:
        return []
    counts = []
    if report.retrying:
        counts.append(f"{report.retrying} waiting to be retried")
    if report.dead:
        counts.append(f"{report.dead} given up in the last {DEAD_WINDOW.days} days")
    lines = blocked_lines(report.blocked, now)
    lines.append(f":warning: *Undelivered notifications*: {', '.join(counts)}")
    lines.extend(_line(n, now) for n in report.oldest)
    more = report.retrying + report.dead - len(report.oldest)
    if more > 0:
        lines.append(f"… and {more} more")
    return lines


def _line(n: Notification, now: datetime) -> str:
    about = f" (deployment #{n.deployment_id})" if n.deployment_id is not None else ""
    tries = f"{n.attempts} attempt{'s' if n.attempts != 1 else ''}"
    error = escape(" ".join((n.last_error or "no error recorded").split())[:ERROR_LIMIT])
    head = f"• #{n.id} {n.kind} to {_target(n)}{about}"
    if n.state == "dead":
        return f"{head}: given up after {tries}: {error}"
    return f"{head}: {tries}, next try {relative(n.next_attempt_at, now)}; last error: {error}"


def _target(n: Notification) -> str:
    if n.kind == "pagerduty":
        return f"PagerDuty ({escape(n.channel)})"
    if n.kind == "email":
        to = n.payload.get("to")
        addresses = [str(a) for a in to] if isinstance(to, list) else [str(to)]
        shown = ", ".join(addresses[:3]) + (f" +{len(addresses) - 3}" if len(addresses) > 3
                                           else "")
        return escape(shown)
    return f"<#{n.channel}>"


def blocked_gauges(database: Database) -> dict[str, float]:
    """``/metrics``: Slack messages held back by a blocking error, per reason (empty: none)."""
    return {block.reason: float(block.messages) for block in read_blocked(database)}


PAGE_ORDERING_KEY = f"pagerduty:{ONCALL_ROUTE}:slack-delivery"


def delivery_incident_key(scope: str) -> str:
    """PagerDuty's dedup key of the alert about blocked delivery (``*``: the whole token)."""
    return "qlp-slack-delivery" if scope == "*" else f"qlp-slack-delivery-{scope}"


class DeliveryPager:
    """Pages on-call when Slack delivery becomes blocked, and resolves when it flows again
    (``bot.outbox_sender.BlockPager``). Without a PagerDuty route in the policy it only logs
    (the sender logs the block as an error either way); with an e-mail route each trigger and
    resolve is mailed too, as ``bot.paging`` does for deployments."""

    def __init__(self, outbox: Outbox, policy: Policy) -> None:
        self._outbox = outbox
        self._policy = policy

    def blocked(self, scope: str, code: str, detail: str, first_id: int) -> None:
        where = "every channel" if scope == "*" else f"channel {scope}"
        summary = (f"QLP bot cannot post to Slack ({where}): {detail}; messages are queued "
                   f"until it is fixed")[:SUMMARY_LIMIT]
        fix = _FIX.get(code, "see the bot's log")
        if self._policy.notifications.pagerduty is not None:
            event = {
                "event_action": "trigger",
                "dedup_key": delivery_incident_key(scope),
                "payload": {
                    "summary": summary, "source": SOURCE, "severity": "error",
                    "component": "slack", "group": "notifications",
                    "class": "slack-delivery-blocked",
                    "custom_details": {"error": code, "detail": detail, "scope": scope,
                                       "fix": fix, "first_message": first_id},
                },
            }
            self._outbox.enqueue(ONCALL_ROUTE, "pagerduty", event,
                                 ordering_key=PAGE_ORDERING_KEY,
                                 dedup_key=f"page:slack-blocked:{scope}:{first_id}")
        self._mail(f"slack-blocked:{scope}:{first_id}", f"[qlp] {summary}",
                   [summary, "", f"What to do: {fix}."])

    def unblocked(self, scope: str, code: str, first_id: int) -> None:
        summary = f"QLP bot posts to Slack again (it was blocked by {code})"
        if self._policy.notifications.pagerduty is not None:
            self._outbox.enqueue(ONCALL_ROUTE, "pagerduty",
                                 {"event_action": "resolve",
                                  "dedup_key": delivery_incident_key(scope)},
                                 ordering_key=PAGE_ORDERING_KEY,
                                 dedup_key=f"page:slack-unblocked:{scope}:{first_id}")
        self._mail(f"slack-unblocked:{scope}:{first_id}", f"[qlp] Resolved: {summary}",
                   [summary])

    def _mail(self, key: str, subject: str, lines: list[str]) -> None:
        email = self._policy.notifications.email
        if email is None or not email.to:
            return
        self._outbox.enqueue(INCIDENTS_MAIL, "email",
                             {"to": list(email.to), "subject": subject,
                              "body": "\n".join(lines)},
                             ordering_key=f"{INCIDENTS_MAIL}:slack-delivery",
                             dedup_key=f"page-mail:{key}")
