"""Slow database queries (the seed's 2.1 item 4) from ``pg_stat_statements``, with psycopg 3.

:meth:`SlowQueryCheck.check` connects to the environment's ``database_url`` and reads the
statements of the current database whose mean execution time exceeds the threshold, slowest
first, at most five, with their call count and mean time; query text is whitespace-collapsed
and cut to 120 characters (pg_stat_statements already replaces literals with ``$1``...).

It never raises for the database's state: a :class:`SlowQueryResult` says either what it found
(``available``) or why it could not answer (``reason``):

- the ``pg_stat_statements`` view does not exist (extension not created in this database);
- the view exists but the module is not loaded (``shared_preload_libraries``), which PostgreSQL
  reports as SQLSTATE 55000 when the view is read;
- no permission to read it, or the database cannot be reached (``reason`` says which).

The caller decides what "no answer" means (``final_validation`` reports it and continues).

``relation`` names the view to read, ``pg_stat_statements`` by default. It is a trusted,
validated identifier (``[schema.]name``, composed with ``psycopg.sql.Identifier``), never user
input; tests point it at a view of the same shape in a scratch schema, because the local test
server does not preload the extension.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import psycopg
from psycopg import sql

__all__ = [
    "DEFAULT_LIMIT",
    "QUERY_TEXT_CHARS",
    "SlowQuery",
    "SlowQueryCheck",
    "SlowQueryResult",
    "shorten_query",
]

DEFAULT_LIMIT = 5
QUERY_TEXT_CHARS = 120
_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_NOT_LOADED = "55000"  # object_not_in_prerequisite_state: module not in shared_preload_libraries


@dataclass(frozen=True)
class SlowQuery:
    """One statement slower on average than the threshold."""

    query: str
    calls: int
    mean_ms: float

    def describe(self) -> str:
        return f"{self.mean_ms:.0f} ms mean over {self.calls} calls: {self.query}"


@dataclass(frozen=True)
class SlowQueryResult:
    """What the check found (``available``), or why it could not answer (``reason``)."""

    available: bool
    threshold_ms: float
    queries: list[SlowQuery] = field(default_factory=list)
    reason: str | None = None

    @property
    def slow(self) -> bool:
        return self.available and bool(self.queries)

    def describe(self) -> str:
        """One line (plus one per slow statement) for a report."""
        if not self.available:
            return f"{self.reason}: slow queries not checked"
        if not self.queries:
            return f"No query averages more than {self.threshold_ms:g} ms (pg_stat_statements)."
        lines = [f"{len(self.queries)} quer{'y' if len(self.queries) == 1 else 'ies'} "
                 f"average more than {self.threshold_ms:g} ms (pg_stat_statements):"]
        lines += [f"• {query.describe()}" for query in self.queries]
        return "\n".join(lines)


def shorten_query(text: str, limit: int = QUERY_TEXT_CHARS) -> str:
    """Collapse whitespace and cut to ``limit`` characters (an ellipsis marks the cut)."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[:limit - 1] + "…"


class SlowQueryCheck:
    """Reads slow statements of one database (``database_url``, a libpq URL or DSN)."""

    def __init__(self, database_url: str, *, relation: str = "pg_stat_statements",
                 connect_timeout: int = 5, statement_timeout_ms: int = 10_000) -> None:
        parts = relation.split(".")
        if len(parts) > 2 or not all(_IDENTIFIER.fullmatch(part) for part in parts):
            raise ValueError(f"{relation!r} is not a [schema.]name identifier")
        self._url = database_url
        self._relation = relation
        self._parts = parts
        self._connect_timeout = connect_timeout
        self._statement_timeout_ms = statement_timeout_ms

    def check(self, threshold_ms: float, *, limit: int = DEFAULT_LIMIT) -> SlowQueryResult:
        """Statements whose mean time exceeds ``threshold_ms``, slowest first (at most
        ``limit``); an unavailable result with the reason when it cannot tell."""
        try:
            with psycopg.connect(self._url, connect_timeout=self._connect_timeout,
                                 autocommit=True) as conn:
                conn.execute(sql.SQL("SET statement_timeout = {}").format(
                    sql.Literal(self._statement_timeout_ms)))
                found = conn.execute("SELECT to_regclass(%s)", (self._relation,)).fetchone()
                if not found or found[0] is None:
                    return SlowQueryResult(False, threshold_ms,
                                           reason="pg_stat_statements is not installed")
                rows = conn.execute(self._query(), (threshold_ms, limit)).fetchall()
        except psycopg.errors.ObjectNotInPrerequisiteState:
            return SlowQueryResult(False, threshold_ms, reason=(
                "pg_stat_statements is not installed (the extension exists but is not in "
                "shared_preload_libraries)"))
        except psycopg.errors.InsufficientPrivilege as exc:
            return SlowQueryResult(False, threshold_ms,
                                   reason=f"no permission to read pg_stat_statements ({exc})")
        except psycopg.Error as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            return SlowQueryResult(False, threshold_ms,
                                   reason=f"the database could not be asked ({first})")
        queries = [SlowQuery(shorten_query(str(text or "")), int(calls), float(mean))
                   for text, calls, mean in rows]
        return SlowQueryResult(True, threshold_ms, queries)

    def _query(self) -> sql.Composed:
        relation = sql.SQL(".").join(sql.Identifier(part) for part in self._parts)
        return sql.SQL(
            "SELECT query, calls, mean_exec_time FROM {} "
            "WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) "
            "AND mean_exec_time > %s "
            "ORDER BY mean_exec_time DESC LIMIT %s").format(relation)
