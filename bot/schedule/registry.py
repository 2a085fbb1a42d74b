"""Which ``DueWork`` a bot process's scheduler ticks, built from its services."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bot.schedule.work import DueWork
    from bot.wiring import Services


def build_due_works(services: Services) -> list[DueWork]:
    """Every kind of timed work, in the order a tick runs them."""
    del services
    works: list[DueWork] = []
    return works
