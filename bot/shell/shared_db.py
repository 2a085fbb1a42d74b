"""The shell and a database a served bot uses.

The local shell acts as whatever ``--user`` it is given and shows what the bot posts in a
terminal. Pointed at production's database it would approve as anyone and deliver the served
bot's messages to the terminal instead of Slack. So it looks for a live ``serve``/``socket``
row in ``bot_instances`` (:mod:`storage.markers`) and refuses to start, in one line, unless
given ``--shared-database``. Allowed, it runs in *shared* mode: its outbox delivers only what
it wrote itself (:class:`storage.session_outbox.SessionOutbox`), and timed work, queued runs,
recovery, preflights and e-mail/pager notifications are left to the served bot.
"""

from __future__ import annotations

import logging

from sqlalchemy.exc import SQLAlchemyError

from procedures.clock import Clock
from procedures.errors import QlpError
from storage.db import Database
from storage.markers import LIVE_WITHIN, BotMarkers, Marker

log = logging.getLogger(__name__)

SHARED_FLAG = "--shared-database"
SHARED_TASKS = frozenset({"clicks", "doctor", "slack-outbox", "instance-marker"})
"""The worker tasks a shell on a shared database runs: what answers its own typing."""


class SharedDatabaseRefused(QlpError):
    """A served bot uses the database the shell was pointed at."""


def served_bots(database: Database, clock: Clock) -> list[Marker]:
    """The served bots (serve, socket) that beat within ``LIVE_WITHIN``; none when the
    database has no ``bot_instances`` table yet (never migrated to it: nobody wrote one)."""
    try:
        return BotMarkers(database, clock).live()
    except SQLAlchemyError:
        log.debug("no bot_instances table to read", exc_info=True)
        return []


def refusal(live: list[Marker], clock: Clock) -> str:
    """The one line the shell says when it refuses a shared database."""
    now = clock.now()
    who = "; ".join(m.describe(now) for m in live[:3]) + (" ..." if len(live) > 3 else "")
    minutes = int(LIVE_WITHIN.total_seconds() // 60)
    return (f"refusing to start the shell: a served bot uses this database ({who}, within "
            f"{minutes} min); the shell would act as any --user there and its stand-in would "
            f"swallow messages meant for Slack. Point QLP_DATABASE_URL at another database, "
            f"or pass {SHARED_FLAG} if you mean to share it.")


def check_database(database: Database, clock: Clock, *, shared_ok: bool) -> list[Marker]:
    """The live served bots; raises :class:`SharedDatabaseRefused` if any and not allowed."""
    live = served_bots(database, clock)
    if live and not shared_ok:
        raise SharedDatabaseRefused(refusal(live, clock))
    return live
