"""The App Home's listener and buttons: Deploy..., Roll back... and Unlock.

``app_home_opened`` (the Home tab, not the Messages tab) writes the viewer and a publish and
returns: Bolt acks an event itself, and nothing here calls Slack (``bot.home_publisher``).

The buttons are ordinary clicks (``bot.listeners.BUTTONS``): stored and acked by the button
listener, decided after the ack by ``bot.clicks``, which also refuses a click from another
workspace. Each handler asks what the Home asked before showing the button, and then runs what
the command runs: Unlock is ``/qlp unlock <env>`` typed by the presser, Roll back... is
``/qlp rollback``'s request (the gate at the request moment, the irreversible-migration rule,
``approvals.rollback``), Deploy... opens the deploy dialog when the bot has one
(``bot.deploy_dialog.open_deploy_dialog``) after the gate's request-moment verdict, and
otherwise says which command to type. So a forged click by someone without the right gets the
gate's (or the command's) refusal, audited as the command's refusals are.

A Home click has no channel and no ``response_url``: the answer is kept as the viewer's notice
and shown at the top of their Home, republished at once; it is also the click's stored answer.
"""

from __future__ import annotations

import importlib
import logging
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from bot.commands.registry import run_command
from bot.commands.requesting import refuse_unless_allowed, refused
from bot.commands.rollback import request_rollback
from bot.context import HandlerContext
from bot.formatting import escape, local_time
from bot.home_facts import home_context, may_deploy
from bot.home_publisher import enqueue_home, home_opened
from bot.metrics import note_ack
from bot.replies import error_text
from procedures.errors import UserError
from procedures.log_context import scope
from procedures.model import ProcedureKind
from storage.home_viewers import HomeViewers

if TYPE_CHECKING:
    from bot.ports import HandlerServices

log = logging.getLogger(__name__)

__all__ = ["deploy", "home_opened_listener", "rollback", "unlock"]

_USER = re.compile(r"[UW][A-Z0-9]{2,30}")
ROLLBACK_REASON = "requested from the App Home"


def home_opened_listener(services: HandlerServices) -> Callable[[dict[str, Any],
                                                                dict[str, Any]], None]:
    """The ``app_home_opened`` listener (Bolt acks events itself, before or after: the
    listener writes two rows and returns)."""

    def on_home_opened(body: dict[str, Any], event: dict[str, Any]) -> None:
        note_ack("event", "app_home_opened")
        if event.get("tab") != "home":
            return  # the Messages tab: nothing to publish
        user = str(event.get("user") or "")
        if _USER.fullmatch(user) is None:
            log.warning("app_home_opened without a user id; ignored")
            return
        team = body.get("team_id")
        with scope(slack_user=user):
            home_opened(services, user, str(team) if team else None)

    return on_home_opened


def deploy(ctx: HandlerContext, action: dict[str, Any]) -> str | None:
    """Deploy...: the gate's verdict for this person, then the dialog (or the command)."""
    def call(home: HandlerContext, env: str) -> str:
        if not may_deploy(home, env):
            refuse_unless_allowed(home, ProcedureKind.STANDARD, env)  # raises the refusal
        if _open_dialog(ctx, home, env):
            return f"The deploy dialog for {escape(env)} is open."
        slot = home.services.flows.gate.windows_for(env).next_open(home.services.clock.now())
        when = (f" (the next preferred slot is {local_time(slot, home.services.policy.zone)})"
                if slot is not None else "")
        return (f"To deploy to {escape(env)}, type `/qlp deploy <version> to {escape(env)}` in "
                f"<#{home.services.policy.channel}>; add `at YYYY-MM-DD HH:MM` to schedule it"
                f"{when}.")

    return _answered(ctx, action, "deploy", call)


def rollback(ctx: HandlerContext, action: dict[str, Any]) -> str | None:
    """Roll back...: ``/qlp rollback``'s request (confirmed in Slack's dialog already)."""
    def call(home: HandlerContext, env: str) -> str:
        key = f"click:{ctx.request.request_key}" if ctx.request.request_key else None
        return request_rollback(home, env, None, ROLLBACK_REASON, request_key=key)

    return _answered(ctx, action, "rollback", call)


def unlock(ctx: HandlerContext, action: dict[str, Any]) -> str | None:
    """Unlock: exactly ``/qlp unlock <env>`` typed by the presser."""
    return _answered(ctx, action, "unlock", lambda home, env: run_command(home, f"unlock {env}"))


def _answered(ctx: HandlerContext, action: dict[str, Any], what: str,
              call: Callable[[HandlerContext, str], str]) -> str:
    """Run ``call`` for the button's environment as the presser; their answer (or refusal,
    audited) becomes their Home's notice, republished now, and the click's answer."""
    services = ctx.services
    home = home_context(services, ctx.request.user_id, ctx.request.team_id)
    try:
        env = _environment(ctx, action)
        text = refused(home, what, env, lambda: call(home, env))
    except Exception as error:  # the click's answer, as bot.clicks makes it (and logs a bug)
        text = error_text(error)
    viewers = HomeViewers(services.database, services.clock)
    with services.database.session() as session:
        viewers.note(ctx.request.user_id, ctx.request.team_id, text, session=session)
        enqueue_home(services.outbox, ctx.request.user_id, ctx.request.team_id,
                     session=session)
    services.wake_worker()
    return text


def _environment(ctx: HandlerContext, action: dict[str, Any]) -> str:
    """The button's environment; a value naming none of the policy's is refused."""
    value = str(action.get("value") or "")
    if value not in ctx.services.policy.environments:
        raise UserError("This button does not name one of the bot's environments; it may be "
                        "from an older version of the bot. Nothing was done.")
    return value


def _open_dialog(ctx: HandlerContext, home: HandlerContext, env: str) -> bool:
    """Open ``bot.deploy_dialog``'s modal on the click's trigger, when the bot has the dialog
    (``open_deploy_dialog``); False when it has none or Slack did not open it."""
    try:
        module = importlib.import_module("bot.deploy_dialog")
    except ImportError:
        return False
    opener = getattr(module, "open_deploy_dialog", None)
    client = getattr(ctx.services, "slack", None)
    if not callable(opener) or client is None or not ctx.request.trigger_id:
        return False
    try:
        return bool(opener(client, home.services.policy, trigger_id=ctx.request.trigger_id,
                           environment=env, origin="home"))
    except TypeError:  # a dialog of another shape: the typed command still works
        log.warning("bot.deploy_dialog.open_deploy_dialog takes other arguments", exc_info=True)
        return False
