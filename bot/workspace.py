"""Which Slack workspace the bot belongs to, and whether a click came from it (issue 13, 6).

A signed request proves only that Slack sent it to this app; an app distributed to several
workspaces, or a payload from an Enterprise Grid org the bot is not installed in, carries
another ``team`` / ``enterprise``. A button press is acted on only when its team and enterprise
are the bot's own:

- ``SLACK_TEAM_ID`` (and ``SLACK_ENTERPRISE_ID`` for an Enterprise Grid install) when set;
- otherwise the workspace of the bot token's install, as ``auth.test`` names it (``team_id``,
  ``enterprise_id``), asked once per process on the click threads (never before an ack) and
  kept. When Slack cannot be asked, the click is refused with "try again": a click is never
  accepted because the bot could not tell where it came from.

The channel of a card's buttons is checked by the handlers (``bot.interactions``): the card
lives in the deployment's channel.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

from slack_sdk import WebClient

from bot.formatting import escape
from procedures.errors import ExternalServiceError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Workspace:
    """The bot's own team and enterprise (None: not part of an Enterprise Grid org)."""

    team_id: str
    enterprise_id: str | None = None

    def refusal(self, team_id: str | None, enterprise_id: str | None) -> str | None:
        """Why a click from ``team_id`` / ``enterprise_id`` is not acted on (None: it is ours)."""
        if (team_id or None) != self.team_id:
            return (f"This button was pressed from another Slack workspace "
                    f"(`{escape(team_id or 'none')}`) than the bot's own (`{self.team_id}`); "
                    "it was not acted on.")
        if (enterprise_id or None) != self.enterprise_id:
            return (f"This button was pressed from another Slack organisation "
                    f"(`{escape(enterprise_id or 'none')}`) than the bot's own "
                    f"(`{self.enterprise_id or 'none'}`); it was not acted on.")
        return None


class WorkspaceIdentity:
    """The bot's :class:`Workspace`: configured, or read once from ``auth.test``."""

    def __init__(self, client: WebClient | None, *, team_id: str | None = None,
                 enterprise_id: str | None = None) -> None:
        self._client = client
        self._known = Workspace(team_id, enterprise_id or None) if team_id else None
        self._lock = threading.Lock()

    @classmethod
    def of(cls, services: object) -> WorkspaceIdentity:
        """The identity of the composition root's services: its settings' ``SLACK_TEAM_ID`` /
        ``SLACK_ENTERPRISE_ID``, else its Web API client's ``auth.test``. Services without
        either (a test's smaller object) refuse every click rather than accept any."""
        settings = getattr(services, "settings", None)
        client = getattr(services, "slack", None)
        return cls(client if isinstance(client, WebClient) else None,
                   team_id=getattr(settings, "slack_team_id", None),
                   enterprise_id=getattr(settings, "slack_enterprise_id", None))

    def get(self) -> Workspace:
        """The workspace; ExternalServiceError (retryable) when Slack cannot say."""
        with self._lock:
            if self._known is not None:
                return self._known
            try:
                if self._client is None:
                    raise RuntimeError("no Slack client to ask")
                answer = self._client.auth_test()
            except Exception as error:
                log.warning("auth.test failed; clicks wait for the bot's own workspace: %s",
                            type(error).__name__)
                raise ExternalServiceError(
                    "Slack", "the bot could not confirm which Slack workspace it belongs to, so "
                    "the click was not acted on", retryable=True) from None
            team = answer.get("team_id")
            if not isinstance(team, str) or not team:
                raise ExternalServiceError(
                    "Slack", "Slack's auth.test named no workspace, so the click was not acted "
                    "on", retryable=True)
            enterprise = answer.get("enterprise_id")
            self._known = Workspace(team, enterprise if isinstance(enterprise, str)
                                    and enterprise else None)
            return self._known
