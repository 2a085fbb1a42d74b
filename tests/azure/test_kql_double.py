"""The double's KQL on its own (no server): tokens, names, types and aggregates."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from tests.azure.arm_double.kql import KqlError, NotImplementedInDouble, Schema, run_query, tokenize
from tests.azure.arm_double.logs import APP_REQUESTS, REQUESTS, TelemetryRow

COMPONENT = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Insights/components/ai"
ROWS = [TelemetryRow("api-blue", True, 8, 100.0, COMPONENT, datetime(2026, 1, 1, tzinfo=UTC)),
        TelemetryRow("api-blue", False, 2, 900.0, COMPONENT, None, "500"),
        TelemetryRow('we"ird', True, 1, None, COMPONENT)]


def run(schema: Schema, query: str) -> list[list[Any]]:
    result = run_query(query, lambda name: schema if name == schema.name else None,
                       lambda s: [r.as_app_requests() if s is APP_REQUESTS else r.as_requests()
                                  for r in ROWS])
    return result.rows


def test_tokens_strings_comments_and_verbatim() -> None:
    tokens = tokenize('T // a comment\n| where a == "x \\"y\\"" or b == @"c:\\d" and c == \'q\'')
    assert [t.value for t in tokens if t.kind == "string"] == ['x "y"', "c:\\d", "q"]
    assert [t.text for t in tokens if t.kind == "name"] == ["T", "where", "a", "or", "b", "and",
                                                             "c"]
    with pytest.raises(KqlError) as caught:
        tokenize('T | where a == "open')
    assert caught.value.kind == "SyntaxError"


@pytest.mark.parametrize(("schema", "query", "rows"), [
    (APP_REQUESTS, 'AppRequests | where AppRoleName == "api-blue" | summarize sum(ItemCount), '
                   "sumif(ItemCount, Success == false), countif(ResultCode == \"500\")",
     [[10, 2, 1]]),
    (APP_REQUESTS, 'AppRequests | where AppRoleName == "we\\"ird" | summarize c = count()',
     [[1]]),
    (APP_REQUESTS, "AppRequests | where DurationMs > 50 and DurationMs <= 100.0 "
                   "| summarize max(DurationMs), min(ItemCount), avg(DurationMs)",
     [[100.0, 8, 100.0]]),
    (APP_REQUESTS, 'AppRequests | where AppRoleName != "api-blue" | summarize '
                   "percentile(DurationMs, 50)", [[None]]),
    (REQUESTS, 'requests | where cloud_RoleName == "nobody" | summarize n = sum(itemCount), '
               "p = percentilew(duration, itemCount, 95)", [[0, None]]),
    (REQUESTS, "requests | where not(tobool(success)) | summarize sum(itemCount)", [[2]]),
    (REQUESTS, 'requests | where tolower(success) == "true" | summarize count()', [[2]]),
])
def test_queries_are_evaluated(schema: Schema, query: str, rows: list[list[Any]]) -> None:
    assert run(schema, query) == rows


@pytest.mark.parametrize(("schema", "query", "code", "message"), [
    (APP_REQUESTS, "AppRequest | summarize count()", "SEM0100",
     "'summarize' operator: Failed to resolve table or column expression named 'AppRequest'"),
    (APP_REQUESTS, "AppRequests | where Sucess == false", "SEM0100",
     "'where' operator: Failed to resolve column or scalar expression named 'Sucess'"),
    (REQUESTS, "requests | summarize sumif(itemCount, success == false)", "SEM0064",
     "'summarize' operator: Cannot compare values of types string and bool. Try adding "
     "explicit casts"),
    (APP_REQUESTS, "AppRequests | where ItemCount =~ 3", "SEM0064",
     "'where' operator: Cannot compare values of types int and long. Try adding explicit "
     "casts"),
])
def test_names_and_types_are_refused_as_kusto_does(schema: Schema, query: str, code: str,
                                                    message: str) -> None:
    with pytest.raises(KqlError) as caught:
        run(schema, query)
    assert (caught.value.kind, caught.value.code, caught.value.message) == (
        "SemanticError", code, message)


@pytest.mark.parametrize("query", ["AppRequests | take 3", "AppRequests | summarize dcount(Id)",
                                   "AppRequests | summarize count() by AppRoleName",
                                   "AppRequests | where isnotempty(Name)"])
def test_what_the_double_does_not_implement_is_said(query: str) -> None:
    with pytest.raises(NotImplementedInDouble):
        run(APP_REQUESTS, query)
