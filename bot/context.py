"""What a command handler gets: who asked, where, and the services it may use."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bot.ports import HandlerServices


@dataclass(frozen=True)
class Request:
    """One slash command or button press, reduced to what handlers need."""

    user_id: str
    channel_id: str
    team_id: str | None = None
    enterprise_id: str | None = None  # an Enterprise Grid org's id (None outside one)
    response_url: str | None = None
    trigger_id: str | None = None
    request_key: str | None = None  # idempotency key: same key, same effect, once


@dataclass(frozen=True)
class HandlerContext:
    """A request plus the services."""

    request: Request
    services: HandlerServices
