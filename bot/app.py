"""The Bolt app, built by a factory: the same listeners serve HTTP, Socket Mode and the shell."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from slack_bolt import App, BoltResponse
from slack_bolt.authorization import AuthorizeResult
from slack_sdk import WebClient

from bot import listeners
from bot.clicks import click_task
from bot.replies import error_text
from bot.slack_client import make_web_client

if TYPE_CHECKING:
    from bot.ports import AppServices

log = logging.getLogger(__name__)

__all__ = ["create_app", "make_web_client"]  # make_web_client: bot.slack_client's


def create_app(services: AppServices, *, signing_secret: str | None,
               verify_requests: bool = True) -> App:
    """Build the Bolt app over ``services``. No module-level app exists anywhere."""
    token = services.bot_token

    def authorize(**_: Any) -> AuthorizeResult:
        # One workspace, one bot token: no auth.test on the request path, so an ack never
        # waits for Slack.
        return AuthorizeResult(enterprise_id=None, team_id=None, bot_token=token)

    app = App(
        # The listeners' client gets its token from ``authorize``; the worker uses
        # ``services.slack``, which carries the token itself.
        client=WebClient(base_url=services.slack.base_url, timeout=10,
                         retry_handlers=services.slack.retry_handlers),
        signing_secret=signing_secret,
        authorize=authorize,
        request_verification_enabled=verify_requests,
        token_verification_enabled=False,
        # Listeners only validate, write and answer; they never do long work, so the ack can be
        # sent from the request thread without Bolt's 10 ms ack polling.
        process_before_response=True,
        raise_error_for_unhandled_request=False,
        logger=logging.getLogger("slack_bolt"),
    )
    # Every listener, explicitly (bot.listeners); a click is decided after its ack (bot.clicks).
    listeners.register(app, services, click_task(services))

    @app.error
    def on_error(error: Exception, body: dict[str, Any]) -> BoltResponse:
        return BoltResponse(status=200, body=error_text(error))

    return app
