"""Commands the grammar knows but this version of the bot cannot run yet say so plainly."""

from __future__ import annotations

from bot.formatting import escape
from bot.grammar import SPEC_BY_NAME, Command
from procedures.errors import PolicyRefusal


def refuse_unavailable(command: Command) -> str:
    """Raise a refusal that says the command is not there yet; nothing is changed."""
    spec = SPEC_BY_NAME[command.name]
    raise PolicyRefusal(
        f"`/qlp {command.name}` is not available in this version of the bot yet; "
        "nothing was done.",
        rule="not-implemented",
        hint=f"It will take `/qlp {escape(spec.usage)}`. `/qlp help` marks what works today.",
    )
