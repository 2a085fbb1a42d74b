"""The Bolt app, built by a factory: the same listeners serve HTTP, Socket Mode and the shell."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from slack_bolt import Ack, App, BoltResponse
from slack_bolt.authorization import AuthorizeResult
from slack_sdk import WebClient

from bot import actions
from bot.clicks import click_task
from bot.commands.registry import run_command
from bot.context import HandlerContext, Request
from bot.replies import error_text

if TYPE_CHECKING:
    from bot.wiring import Services

log = logging.getLogger(__name__)

# Action listeners register themselves here (action_id -> handler) so tests and the manifest
# check can see exactly what the app answers.
ActionHandler = Callable[[HandlerContext, dict[str, Any]], str | None]
_ACTION_HANDLERS: dict[str, ActionHandler] = {}


def action_handler(action_id: str) -> Callable[[ActionHandler], ActionHandler]:
    """Declare the handler of a Block Kit button."""

    def register(fn: ActionHandler) -> ActionHandler:
        _ACTION_HANDLERS[action_id] = fn
        return fn

    return register


def registered_action_ids() -> set[str]:
    """The action ids the app factory registers (the manifest test checks them)."""
    return set(action_handlers())


def action_handlers() -> dict[str, ActionHandler]:
    """Every button's handler by action id (``bot.clicks`` runs them after the ack)."""
    import bot.interactions  # noqa: F401  (registers the button handlers)

    return dict(_ACTION_HANDLERS)


def create_app(services: Services, *, signing_secret: str | None,
               verify_requests: bool = True) -> App:
    """Build the Bolt app over ``services``. No module-level app exists anywhere."""
    settings = services.settings
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
    del settings

    @app.command(actions.COMMAND)
    def on_command(ack: Ack, body: dict[str, Any]) -> None:
        request = _request_from_command(body)
        try:
            text = run_command(HandlerContext(request, services), str(body.get("text") or ""))
        except Exception as error:  # the one place a command error becomes a reply
            text = error_text(error)
        ack(text=text)

    for action_id in registered_action_ids():
        app.action(action_id)(_button_listener(services, action_id))

    @app.error
    def on_error(error: Exception, body: dict[str, Any]) -> BoltResponse:
        return BoltResponse(status=200, body=error_text(error))

    return app


def _button_listener(services: Services,
                     action_id: str) -> Callable[[Ack, dict[str, Any]], None]:
    """A click is stored and acked; it is decided after the ack (``bot.clicks``): no network
    call (a membership read, an answer) spends Slack's 3 seconds."""
    clicks = click_task(services)

    def listener(ack: Ack, body: dict[str, Any]) -> None:
        action = (body.get("actions") or [{}])[0]
        request = Request(
            user_id=str((body.get("user") or {}).get("id", "")),
            channel_id=str((body.get("channel") or {}).get("id", "")),
            team_id=(body.get("team") or {}).get("id"),
            response_url=body.get("response_url"),
            trigger_id=body.get("trigger_id"),
            request_key=f"{action.get('action_id')}:{action.get('action_ts')}:"
                        f"{(body.get('user') or {}).get('id')}",
        )
        clicks.accept(request, action_id, action)
        ack()

    return listener


def _request_from_command(body: dict[str, Any]) -> Request:
    return Request(
        user_id=str(body.get("user_id", "")),
        channel_id=str(body.get("channel_id", "")),
        team_id=body.get("team_id"),
        response_url=body.get("response_url"),
        trigger_id=body.get("trigger_id"),
        request_key=body.get("trigger_id"),
    )


def make_web_client(token: str, api_url: str) -> WebClient:
    """The one Web API client: pointed at ``SLACK_API_URL``, retrying connection errors.

    429s are not retried here: the outbox sender honours ``Retry-After`` itself, so a rate limit
    never puts a thread to sleep.
    """
    from slack_sdk.http_retry.builtin_handlers import ConnectionErrorRetryHandler

    return WebClient(token=token, base_url=api_url, timeout=10,
                     retry_handlers=[ConnectionErrorRetryHandler(max_retry_count=2)])
