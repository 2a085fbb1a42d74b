"""SlowQueryCheck on the real local PostgreSQL, in a scratch database.

What is exercised for real: connecting, the "not installed" path (no ``pg_stat_statements``
view in the database), the "created but not preloaded" path (``CREATE EXTENSION`` works on the
test server but reading the view raises SQLSTATE 55000 because ``shared_preload_libraries`` is
empty), an unreachable server, and the SQL that filters, orders and limits.

What is NOT exercised: real statistics gathered by the extension. The test server does not
preload it, so the threshold/parsing tests read a view with the extension's columns (``dbid``,
``query``, ``calls``, ``mean_exec_time``) that the test creates in a separate schema
(``qlp_fake.pg_stat_statements``) and points the check at with ``relation=``.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import httpx
import psycopg
import pytest
from psycopg import sql

from procedures.checks.http import HttpChecker
from procedures.checks.slow_queries import SlowQueryCheck, shorten_query
from procedures.clock import FixedClock
from procedures.errors import ConfigError, StepFailure
from procedures.playbooks.standard import FinalChecks, StandardSteps
from tests.conftest import PostgresServer, _libpq_dsn
from tests.fakes.platform import FakePlatform
from tests.fakes.policies import BASE, make_policy
from tests.playbooks.test_standard_failures import ZeroErrors
from tests.playbooks.test_standard_steps import StepRunner

pytestmark = pytest.mark.postgres

LONG_QUERY = "SELECT " + ", ".join(f"column_{i}" for i in range(40)) + " FROM orders"


@pytest.fixture
def scratch(postgres_server: PostgresServer) -> Iterator[str]:
    name = postgres_server.create()
    try:
        yield _libpq_dsn(name)
    finally:
        postgres_server.drop(name)


def fake_statistics(dsn: str, rows: Sequence[tuple[str, int, float]], *,
                    other_db_rows: Sequence[tuple[str, int, float]] = ()) -> None:
    """A view shaped like pg_stat_statements in schema qlp_fake, with ``rows`` for this
    database and ``other_db_rows`` for another (dbid 0)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA qlp_fake")
        conn.execute("CREATE TABLE qlp_fake.stats (dbid oid, query text, calls bigint, "
                     "mean_exec_time double precision)")
        oid = conn.execute("SELECT oid FROM pg_database WHERE datname = current_database()"
                           ).fetchone()
        assert oid is not None
        for query, calls, mean in rows:
            conn.execute("INSERT INTO qlp_fake.stats VALUES (%s, %s, %s, %s)",
                         (oid[0], query, calls, mean))
        for query, calls, mean in other_db_rows:
            conn.execute("INSERT INTO qlp_fake.stats VALUES (0, %s, %s, %s)",
                         (query, calls, mean))
        conn.execute(sql.SQL("CREATE VIEW qlp_fake.pg_stat_statements AS "
                             "SELECT dbid, query, calls, mean_exec_time FROM qlp_fake.stats"))


def test_the_test_server_does_not_preload_the_extension(scratch: str) -> None:
    with psycopg.connect(scratch) as conn:
        row = conn.execute("SHOW shared_preload_libraries").fetchone()
    assert row is not None and "pg_stat_statements" not in row[0]


def test_no_extension_in_the_database_is_not_installed(scratch: str) -> None:
    result = SlowQueryCheck(scratch).check(500)
    assert not result.available and not result.slow
    assert result.reason == "pg_stat_statements is not installed"
    assert result.describe() == "pg_stat_statements is not installed: slow queries not checked"


def test_an_extension_that_is_not_preloaded_cannot_answer(scratch: str) -> None:
    with psycopg.connect(scratch, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION pg_stat_statements")
    result = SlowQueryCheck(scratch).check(500)
    assert not result.available
    assert result.reason is not None
    assert result.reason.startswith("pg_stat_statements is not installed")
    assert "shared_preload_libraries" in result.reason


def test_slow_statements_over_the_threshold_slowest_first_top_five(scratch: str) -> None:
    fake_statistics(scratch, [
        ("SELECT 1", 1000, 0.1),
        ("SELECT * FROM orders WHERE id = $1", 50, 650.0),
        ("UPDATE stock\n   SET  n = n - $1", 7, 1200.5),
        (LONG_QUERY, 3, 900.0),
        ("SELECT a FROM b", 2, 501.0),
        ("SELECT c FROM d", 2, 800.0),
        ("SELECT e FROM f", 2, 700.0),
        ("SELECT exactly FROM threshold", 9, 500.0),
    ], other_db_rows=[("SELECT slow FROM elsewhere", 1, 99_999.0)])
    result = SlowQueryCheck(scratch, relation="qlp_fake.pg_stat_statements").check(500)
    assert result.available and result.slow
    assert [q.mean_ms for q in result.queries] == [1200.5, 900.0, 800.0, 700.0, 650.0]
    assert result.queries[0].query == "UPDATE stock SET n = n - $1"
    assert result.queries[0].calls == 7
    assert len(result.queries[1].query) == 120 and result.queries[1].query.endswith("…")
    text = result.describe()
    assert text.startswith("5 queries average more than 500 ms (pg_stat_statements):")
    assert "• 1200 ms mean over 7 calls: UPDATE stock SET n = n - $1" in text
    assert "elsewhere" not in text


def test_nothing_over_the_threshold_is_an_answer(scratch: str) -> None:
    fake_statistics(scratch, [("SELECT 1", 1000, 0.1), ("SELECT 2", 5, 499.9)])
    result = SlowQueryCheck(scratch, relation="qlp_fake.pg_stat_statements").check(500)
    assert result.available and not result.slow
    assert result.describe() == "No query averages more than 500 ms (pg_stat_statements)."


def test_an_unreachable_database_cannot_answer() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = SlowQueryCheck(f"postgresql://postgres@127.0.0.1:{port}/x",
                            connect_timeout=2).check(500)
    assert not result.available
    assert result.reason is not None and result.reason.startswith(
        "the database could not be asked")


@pytest.mark.parametrize("relation", ["x; DROP TABLE y", "a.b.c", "Stats", "", "a-b"])
def test_the_relation_must_be_an_identifier(relation: str) -> None:
    with pytest.raises(ValueError, match="identifier"):
        SlowQueryCheck("postgresql://unused", relation=relation)


def test_shorten_query() -> None:
    assert shorten_query("SELECT  1\n\tFROM x") == "SELECT 1 FROM x"
    assert shorten_query("x" * 200, 10) == "x" * 9 + "…"


# -- final_validation with `slow_query_ms` -----------------------------------------------------


def validate(dsn: str, *, relation: str = "pg_stat_statements",
             **validation: Any) -> tuple[StepRunner, Mapping[str, Any]]:
    """final_validation on a FakePlatform whose production has database_url + slow_query_ms;
    ``validation`` is the policy's validation section."""
    production = dict(BASE["environments"]["production"])
    production.update(database_url=dsn, slow_query_ms=500)
    ctx = StepRunner(FakePlatform(), ZeroErrors(),
                     make_policy(environments={"production": production},
                                 validation=validation),
                     FixedClock(datetime(2026, 12, 1, 11, 0, tzinfo=UTC)), "2.0.0")
    healthy = httpx.MockTransport(lambda request: httpx.Response(200, json={"ok": True}))
    steps = StandardSteps(HttpChecker(transport=healthy),
                          FinalChecks(slow_query_relation=relation))
    return ctx, steps.final_validation(ctx) or {}


def test_final_validation_reports_a_missing_extension_and_goes_on(scratch: str) -> None:
    ctx, result = validate(scratch)
    assert result["slow_queries"] == {"checked": False,
                                      "reason": "pg_stat_statements is not installed"}
    assert "pg_stat_statements is not installed: slow queries not checked" in ctx.reports


SLOW = [(f"SELECT * FROM orders WHERE id = ${n}", 50, 650.0 + n) for n in range(1, 7)]


def test_more_than_five_slow_queries_warn_by_default(scratch: str) -> None:
    fake_statistics(scratch, SLOW)
    ctx, result = validate(scratch, relation="qlp_fake.pg_stat_statements")
    assert result["slow_queries"] == {"checked": True, "slow": 6}
    warning = [r for r in ctx.reports if r.startswith(":large_orange_circle: Warning (Slow")]
    assert len(warning) == 1, ctx.reports
    assert "more than 5 database queries average more than 500 ms" in warning[0]
    assert "(validation.slow_queries: warn)" in warning[0]


def test_slow_queries_gate_when_the_policy_says_so(scratch: str) -> None:
    fake_statistics(scratch, SLOW)
    with pytest.raises(StepFailure, match=r"more than 5 database queries average more than "
                                          r"500 ms: 656 ms mean over 50 calls: SELECT \* FROM"):
        validate(scratch, relation="qlp_fake.pg_stat_statements", slow_queries="gate")


def test_a_few_slow_queries_are_evidence_not_a_warning(scratch: str) -> None:
    fake_statistics(scratch, [("SELECT * FROM orders WHERE id = $1", 50, 650.0)])
    ctx, result = validate(scratch, relation="qlp_fake.pg_stat_statements",
                           slow_queries="gate")
    assert result["slow_queries"] == {"checked": True, "slow": 1}
    assert not any("Warning" in r for r in ctx.reports)


def test_final_validation_passes_without_slow_queries(scratch: str) -> None:
    fake_statistics(scratch, [("SELECT 1", 10, 1.0)])
    ctx, result = validate(scratch, relation="qlp_fake.pg_stat_statements")
    assert result["slow_queries"] == {"checked": True, "slow": 0}
    assert "No query averages more than 500 ms (pg_stat_statements)." in ctx.reports


def test_slow_query_ms_needs_a_database_url() -> None:
    production = dict(BASE["environments"]["production"])
    production["slow_query_ms"] = 500
    with pytest.raises(ConfigError, match="slow_query_ms needs the environment's database_url"):
        make_policy(environments={"production": production})
