"""Who is in a Slack user group, asked of Slack (``usergroups.users.list``).

A permission decision (may this person approve, grant an override, cancel, unlock...) reads the
membership from Slack at that moment: someone taken out of the release group cannot approve on
the strength of an earlier answer, not even for a minute. Only reads for display may use an
answer up to ``ttl`` old (``members(group, max_age=...)``).

The read happens after Slack has its acknowledgement: a click is stored and acked by its
listener and decided on ``bot.clicks``' threads, so a slow ``usergroups.users.list`` delays the
answer, never the ack. It is still bounded: a Slack that does not answer within ``timeout``
seconds refuses the decision (fails closed; the person presses again).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from procedures.errors import ExternalServiceError
from procedures.policy import ApprovalRule

_EXPLAIN = {
    "no_such_subteam": "the user group {group} does not exist in this workspace",
    "plan_upgrade_required": "user groups need a paid Slack plan; list approvers by user ID",
    "missing_scope": "the bot lacks the usergroups:read scope; reinstall it from manifest.yml",
}

DECISION_TIMEOUT = 10.0
"""Seconds a permission decision waits for ``usergroups.users.list`` (after the ack, so not
bound by Slack's 3 s; as long as the Web API client's own timeout)."""


_SLOW = threading.local()


@contextmanager
def when_slow(after: float, callback: Callable[[], None]) -> Iterator[None]:
    """While in this block, a membership read on this thread that has not been answered after
    ``after`` seconds calls ``callback`` once (``bot.clicks`` tells the person the click is
    being checked) and goes on waiting."""
    previous = getattr(_SLOW, "hook", None)
    _SLOW.hook = (after, callback)
    try:
        yield
    finally:
        _SLOW.hook = previous


class SlackGroups:
    """Members of user groups: read fresh for every decision, kept ``ttl`` seconds for display.

    ``timeout`` bounds one read (``DECISION_TIMEOUT`` by default).
    """

    def __init__(self, client: WebClient, *, ttl: float = 60.0,
                 timeout: float = DECISION_TIMEOUT,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self._client = client
        self._ttl = ttl
        self._timeout = timeout
        self._monotonic = monotonic
        self._cache: dict[str, tuple[float, frozenset[str]]] = {}
        self._lock = threading.Lock()

    def members(self, group: str, *, max_age: float = 0.0) -> frozenset[str]:
        """The members of ``group``. By default asked of Slack now (for a decision); a display
        may pass ``max_age`` (capped at ``ttl``) to accept an answer that old."""
        now = self._monotonic()
        if max_age > 0:
            with self._lock:
                cached = self._cache.get(group)
            if cached and now - cached[0] < min(max_age, self._ttl):
                return cached[1]
        users = self._ask(group)
        with self._lock:
            self._cache[group] = (now, users)
        return users

    def may_approve(self, user: str, rule: ApprovalRule) -> bool:
        """True if ``user`` is named in ``rule`` or belongs to one of its groups (asked now)."""
        if user in rule.users:
            return True
        return any(user in self.members(group) for group in rule.groups)

    def _ask(self, group: str) -> frozenset[str]:
        """``usergroups.users.list``, waited for at most ``timeout`` seconds.

        The call runs on a daemon thread so a Slack that hangs costs the listener ``timeout``,
        not the client's own 30 s; the late answer is dropped (nothing is cached from it).
        """
        outcome: dict[str, Any] = {}
        done = threading.Event()

        def call() -> None:
            try:
                outcome["response"] = self._client.usergroups_users_list(usergroup=group)
            except BaseException as error:  # handed to the waiting listener below
                outcome["error"] = error
            finally:
                done.set()

        threading.Thread(target=call, name=f"qlp-usergroups-{group}", daemon=True).start()
        started = time.monotonic()
        hook = getattr(_SLOW, "hook", None)
        if hook is not None and hook[0] < self._timeout and not done.wait(hook[0]):
            _SLOW.hook = None  # once per click
            hook[1]()
        if not done.wait(max(0.0, self._timeout - (time.monotonic() - started))):
            raise ExternalServiceError(
                "Slack", f"usergroups.users.list did not answer within {self._timeout:g} s, so "
                f"membership of the user group {group} could not be checked; nothing was decided "
                "(press again in a moment)", code="timeout")
        error = outcome.get("error")
        if isinstance(error, SlackApiError):
            code = str(error.response.get("error", "error"))
            message = _EXPLAIN.get(code, "Slack answered {code}").format(group=group, code=code)
            raise ExternalServiceError("Slack", message, code=code,
                                       retryable=error.response.status_code >= 500 or
                                       error.response.status_code == 429) from None
        if error is not None:
            raise error
        response = outcome["response"]
        return frozenset(str(u) for u in (response.get("users") or []))


def describe_rule(rule: ApprovalRule) -> str:
    """``<@U1>, <@U2> or a member of <!subteam^S1>`` for replies and cards."""
    people = [f"<@{u}>" for u in rule.users]
    groups = [f"a member of <!subteam^{g}>" for g in rule.groups]
    names = people + groups
    if not names:
        return "nobody"
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]
