"""Parse the text of ``/qlp`` and run the command: the only entry point listeners use."""

from __future__ import annotations

from collections.abc import Callable

from bot.commands.cancel import cancel_text
from bot.commands.checklist import checklist_text
from bot.commands.deploy import deploy_text
from bot.commands.doctor import doctor_text
from bot.commands.emergency import emergency_text
from bot.commands.help import help_text
from bot.commands.history import history_text
from bot.commands.hotfix import hotfix_text
from bot.commands.lock import lock_text, unlock_text
from bot.commands.migrate import migrate_text
from bot.commands.rollback import rollback_text
from bot.commands.stats import stats_text
from bot.commands.status import status_text
from bot.commands.unavailable import refuse_unavailable
from bot.commands.window import window_text
from bot.context import HandlerContext
from bot.grammar import Command, parse

Handler = Callable[[HandlerContext, Command], str]

HANDLERS: dict[str, Handler] = {
    "help": lambda ctx, command: help_text(command, frozenset(HANDLERS)),
    "window": window_text,
    "status": status_text,
    "deploy": deploy_text,
    "hotfix": hotfix_text,
    "emergency": emergency_text,
    "rollback": rollback_text,
    "lock": lock_text,
    "unlock": unlock_text,
    "cancel": cancel_text,
    "checklist": checklist_text,
    "history": history_text,
    "stats": stats_text,
    "migrate": migrate_text,
    "doctor": doctor_text,
}


# Commands that only read. Everything that requests, decides or changes is audited before it
# is answered (and the change itself carries its own audit row in the same transaction).
READ_ONLY = frozenset({"help", "status", "window", "history", "stats", "checklist"})


def run_command(ctx: HandlerContext, text: str) -> str:
    """Run one command and return the reply text. Raises the project's errors on refusal."""
    command = parse(text)
    detail = {"text": text[:500], "channel": ctx.request.channel_id}
    if command.name in READ_ONLY:
        # Queued, committed in the background: a read answers without waiting for the disk.
        ctx.services.audit.record(ctx.request.user_id, f"command.{command.name}", detail=detail)
    else:
        ctx.services.audit.append(ctx.request.user_id, f"command.{command.name}", detail=detail)
    handler = HANDLERS.get(command.name)
    if handler is None:
        return refuse_unavailable(command)
    return handler(ctx, command)
