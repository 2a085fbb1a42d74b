"""Who is in a Slack user group, asked of Slack (``usergroups.users.list``) and cached briefly.

Membership is asked again when a button is pressed (the cache lives a minute), so someone
removed from the release group cannot approve on the strength of an old answer for long.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from procedures.errors import ExternalServiceError
from procedures.policy import ApprovalRule

_EXPLAIN = {
    "no_such_subteam": "the user group {group} does not exist in this workspace",
    "plan_upgrade_required": "user groups need a paid Slack plan; list approvers by user ID",
    "missing_scope": "the bot lacks the usergroups:read scope; reinstall it from manifest.yml",
}


class SlackGroups:
    """Members of user groups, cached for ``ttl`` seconds."""

    def __init__(self, client: WebClient, *, ttl: float = 60.0,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self._client = client
        self._ttl = ttl
        self._monotonic = monotonic
        self._cache: dict[str, tuple[float, frozenset[str]]] = {}
        self._lock = threading.Lock()

    def members(self, group: str) -> frozenset[str]:
        now = self._monotonic()
        with self._lock:
            cached = self._cache.get(group)
            if cached and now - cached[0] < self._ttl:
                return cached[1]
        try:
            response = self._client.usergroups_users_list(usergroup=group)
        except SlackApiError as error:
            code = str(error.response.get("error", "error"))
            message = _EXPLAIN.get(code, "Slack answered {code}").format(group=group, code=code)
            raise ExternalServiceError("Slack", message, code=code,
                                       retryable=error.response.status_code >= 500 or
                                       error.response.status_code == 429) from None
        users = frozenset(str(u) for u in (response.get("users") or []))
        with self._lock:
            self._cache[group] = (now, users)
        return users

    def may_approve(self, user: str, rule: ApprovalRule) -> bool:
        """True if ``user`` is named in ``rule`` or belongs to one of its groups."""
        if user in rule.users:
            return True
        return any(user in self.members(group) for group in rule.groups)


def describe_rule(rule: ApprovalRule) -> str:
    """``<@U1>, <@U2> or a member of <!subteam^S1>`` for replies and cards."""
    people = [f"<@{u}>" for u in rule.users]
    groups = [f"a member of <!subteam^{g}>" for g in rule.groups]
    names = people + groups
    if not names:
        return "nobody"
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]
