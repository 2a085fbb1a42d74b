"""The one place where errors become Slack replies. Listeners never show a traceback."""

from __future__ import annotations

import logging
import uuid
from typing import Any

from bot.actions import OFFER
from bot.formatting import escape
from procedures.errors import (
    ConfigError,
    ConflictError,
    ExternalServiceError,
    PolicyRefusal,
    QlpError,
    StepFailure,
    UserError,
)

log = logging.getLogger(__name__)


def error_text(error: BaseException) -> str:
    """The ephemeral text a person sees for ``error``."""
    if isinstance(error, UserError):
        return _join(f":warning: {error.message}", error.hint)
    if isinstance(error, PolicyRefusal):
        return _join(f":no_entry: {error.message} _(rule: {error.rule})_", error.hint)
    if isinstance(error, ConflictError):
        return _join(f":information_source: {error.message}", error.hint)
    if isinstance(error, ExternalServiceError):
        # Nothing retries a command or a click by itself: say what the person can do. The
        # message holds a service's words (an HTTP body, Azure's error): shown, never rendered.
        again = " This may pass: try again in a minute." if error.retryable else ""
        return f":x: {escape(error.message)}.{again}"
    if isinstance(error, StepFailure):
        return _join(f":x: {escape(error.message)}", error.hint)
    if isinstance(error, ConfigError):
        return f":gear: The bot's configuration is wrong: {error.message}"
    if isinstance(error, QlpError):
        return _join(f":x: {error.message}", error.hint)
    reference = uuid.uuid4().hex[:8]
    log.exception("unexpected error (reference %s)", reference, exc_info=error)
    return (f":x: Something went wrong on the bot's side (reference `{reference}`). "
            "Nothing was changed; the operators can find the details in the log.")


def error_blocks(error: BaseException, text: str) -> list[dict[str, Any]] | None:
    """Blocks for a refusal that offers a one-click alternative (a button that runs the
    offered command as the person who presses it); None for any other error."""
    offer = getattr(error, "offer", None) if isinstance(error, PolicyRefusal) else None
    if offer is None:
        return None
    return [
        {"type": "section", "text": {"type": "mrkdwn", "text": text[:3000]}},
        {"type": "actions", "elements": [{
            "type": "button", "action_id": OFFER, "style": "primary",
            "text": {"type": "plain_text", "text": offer.label[:75], "emoji": True},
            "value": offer.command[:2000]}]},
    ]


def _join(first: str, hint: str | None) -> str:
    return f"{first}\n{hint}" if hint else first
