"""``/qlp help [command]``: the grammar with examples."""

from __future__ import annotations

from bot.formatting import escape
from bot.grammar import SPEC_BY_NAME, SPECS, Command, did_you_mean
from procedures.errors import UserError


def help_text(command: Command, available: frozenset[str]) -> str:
    """The grammar, or one command's usage when a topic is given."""
    if command.topic:
        spec = SPEC_BY_NAME.get(command.topic)
        if spec is None:
            raise UserError(
                f"There is no command `{command.topic}`." + did_you_mean(command.topic,
                                                                         list(SPEC_BY_NAME)),
                hint="Try `/qlp help` for the list.",
            )
        lines = [f"*/qlp {escape(spec.usage)}*", spec.summary]
        if spec.name not in available:
            lines.append("_Not available in this version of the bot yet._")
        lines += ["Examples:", *(f"• `{example}`" for example in spec.examples)]
        return "\n".join(lines)
    lines = ["*QLP deploy bot*: deployments with approvals, windows, blue-green and "
             "automatic rollback.", ""]
    for spec in SPECS:
        marker = "" if spec.name in available else "  _(not available yet)_"
        lines.append(f"• `/qlp {escape(spec.usage)}`: {spec.summary}{marker}")
    lines += ["", "Environments default to production. Times are in the policy's time zone.",
              "`/qlp help &lt;command&gt;` shows examples."]
    return "\n".join(lines)
