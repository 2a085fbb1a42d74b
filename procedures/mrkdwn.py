"""The one escaping function for text that goes into Slack mrkdwn (issue 13, finding 4).

Slack reserves three characters and asks clients to send them as HTML entities, and only
those three (https://api.slack.com/reference/surfaces/formatting#escaping): ``&`` as
``&amp;``, ``<`` as ``&lt;``, ``>`` as ``&gt;``. Escaped, ``<!channel>``, ``<!here>``,
``<@U…>``, ``<!subteam^…>`` and ``<https://…|label>`` are shown as typed and never ping or
link; ``*bold*`` or ``:emoji:`` in a person's text still format, which is harmless.

It lives here, at the bottom of the import graph, because procedures write mrkdwn too (the
decision table's refusals, the engine's thread replies) and must escape the people's and the
services' text they put into it; ``bot.formatting.escape`` is this same function, which the
bot's message builders import. Every piece of user- or service-supplied text is escaped once,
where it is put into mrkdwn: never text that already is mrkdwn (that would show ``&amp;lt;``).
"""

from __future__ import annotations

__all__ = ["escape"]


def escape(text: str) -> str:
    """``text`` as mrkdwn that shows it literally: ``&``, ``<`` and ``>`` as entities."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
