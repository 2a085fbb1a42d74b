"""Button handlers (Approve, Reject, Cancel, Roll back, checklist ticks)."""

from __future__ import annotations

from typing import Any

from bot import actions
from bot.app import action_handler
from bot.context import HandlerContext
from procedures.errors import PolicyRefusal


def _not_yet(ctx: HandlerContext, action: dict[str, Any]) -> str | None:
    raise PolicyRefusal(
        "This button belongs to a feature that is not available in this version of the bot; "
        "nothing was done.",
        rule="not-implemented",
    )


for _action_id in actions.ALL_ACTIONS:
    action_handler(_action_id)(_not_yet)
