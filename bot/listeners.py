"""Every listener the Bolt app answers, registered explicitly (as Bolt's starter template does).

:data:`BUTTONS` names each button's handler by action id; :func:`register` puts the slash command
and every button on an app. Handlers are plain functions of ``(HandlerContext, action)``: none of
them imports the app, and a test calls one directly. A button's listener only stores the click
and acks; ``bot.clicks.ClickTask`` (built by the composition root with these same handlers)
decides it after the ack.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from bot import actions, deploy_dialog, home_buttons, interactions
from bot.commands.registry import HANDLERS, run_command
from bot.context import HandlerContext, Request
from bot.metrics import note_ack
from bot.replies import error_blocks, error_text
from procedures import tracing
from procedures.log_context import scope

if TYPE_CHECKING:
    from slack_bolt import Ack, App

    from bot.clicks import ClickTask
    from bot.ports import HandlerServices

__all__ = ["BUTTONS", "ButtonHandler", "register", "registered_action_ids"]

ButtonHandler = Callable[[HandlerContext, dict[str, Any]], str | None]

BUTTONS: Mapping[str, ButtonHandler] = MappingProxyType({
    actions.APPROVE: interactions.approve,
    actions.REJECT: interactions.reject,
    actions.CANCEL: interactions.cancel,
    actions.ROLLBACK: interactions.rollback,
    actions.CHECKLIST_TICK: interactions.checklist_tick,
    actions.OFFER: interactions.run_offer,
    actions.HOME_DEPLOY: home_buttons.deploy,  # the App Home's buttons (bot.home_buttons)
    actions.HOME_ROLLBACK: home_buttons.rollback,
    actions.HOME_UNLOCK: home_buttons.unlock,
})
"""Every button's handler by action id."""


def registered_action_ids() -> set[str]:
    """The action ids the app registers (the manifest test checks them)."""
    return set(BUTTONS)


def register(app: App, services: HandlerServices, clicks: ClickTask) -> None:
    """Register ``/qlp``, every button of :data:`BUTTONS` and ``app_home_opened`` on ``app``."""
    app.command(actions.COMMAND)(_command_listener(services))
    for action_id in BUTTONS:
        app.action(action_id)(_button_listener(clicks, action_id))
    # The App Home: its viewer and a publish are written; Bolt acks the event (bot.home_buttons).
    app.event("app_home_opened")(home_buttons.home_opened_listener(services))
    # The deploy dialog: its shortcut, its version menu and its submission (bot.deploy_dialog).
    deploy_dialog.register(app, services)


def _command_listener(services: HandlerServices) -> Callable[[Ack, dict[str, Any]], None]:
    def on_command(ack: Ack, body: dict[str, Any]) -> None:
        request = _request_from_command(body)
        blocks = None
        words = str(body.get("text") or "").split(maxsplit=1)
        name = words[0].lower() if words else "help"
        label = name if name in HANDLERS else "unknown"  # never the person's text
        note_ack("command", label)
        # A span (procedures.tracing) queued for export by its own thread: no network here.
        with tracing.span("qlp.command", tracing.SpanKind.SERVER, command=label):
            try:
                with scope(slack_user=request.user_id, request_id=request.request_key):
                    text = run_command(HandlerContext(request, services),
                                       str(body.get("text") or ""))
            except Exception as error:  # the one place a command error becomes a reply
                text = error_text(error)
                blocks = error_blocks(error, text)  # a refusal's one-click alternative
            if blocks is None:
                ack(text=text)
            else:
                ack(text=text, blocks=blocks)

    return on_command


def _button_listener(clicks: ClickTask,
                     action_id: str) -> Callable[[Ack, dict[str, Any]], None]:
    """A click is stored and acked; it is decided after the ack (``bot.clicks``): no network
    call (a membership read, an answer) spends Slack's 3 seconds."""

    def listener(ack: Ack, body: dict[str, Any]) -> None:
        action = (body.get("actions") or [{}])[0]
        request = Request(
            user_id=str((body.get("user") or {}).get("id", "")),
            channel_id=str((body.get("channel") or {}).get("id", "")),
            team_id=(body.get("team") or {}).get("id"),
            enterprise_id=((body.get("enterprise") or {}).get("id")
                           or (body.get("team") or {}).get("enterprise_id")),
            response_url=body.get("response_url"),
            trigger_id=body.get("trigger_id"),
            request_key=f"{action.get('action_id')}:{action.get('action_ts')}:"
                        f"{(body.get('user') or {}).get('id')}",
        )
        note_ack("button", action_id)
        value = str(action.get("value") or "")
        # A card's buttons carry its deployment id: the click joins that deployment's trace.
        # Only 1-18 ASCII digits are one (int() refuses 10,000 digits and '²'): the click is
        # still accepted, and answered 'does not name a deployment' (issue 13, finding 2).
        named = value.isascii() and value.isdigit() and len(value) <= 18
        with tracing.span("qlp.button", tracing.SpanKind.SERVER, button=action_id,
                          deployment_id=int(value) if named else None):
            with scope(slack_user=request.user_id, request_id=request.request_key):
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
