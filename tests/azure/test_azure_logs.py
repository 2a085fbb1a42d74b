"""Logs that behave like Log Analytics, and the bot's findings when they refuse.

The double parses the KQL the bot sends against the two schemas (workspace ``AppRequests``,
classic component ``requests``) and answers Log Analytics' error envelope for an unknown name or
a type error; the bot's :class:`AzureMetrics` (real ``LogsQueryClient``) turns a failure into
``MetricsUnavailable`` with Azure's code and message, and final validation's error check shows
it on the finding instead of "no data".
"""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import httpx
import pytest

from procedures.checks.findings import CheckVerdict
from procedures.checks.http import HttpChecker
from procedures.clock import FixedClock
from procedures.errors import MetricsUnavailable
from procedures.model import Slot
from procedures.platforms.azure import monitoring
from procedures.platforms.azure.monitoring import AzureMetrics, request_counts_query
from procedures.platforms.azure.settings import AppInsightsSettings, parse_azure_settings
from procedures.platforms.base import Platform
from procedures.playbooks.final_validation import FinalValidation, Validation
from tests.azure.arm_double import SUBSCRIPTION, TOKEN, ArmDouble
from tests.azure.arm_double.authz import RESOURCE_GROUP_ID, WORKSPACE_ID
from tests.azure.arm_double.logs import DEFAULT_COMPONENT, DEFAULT_WORKSPACE_GUID, TelemetryRow
from tests.azure.test_azure_platform import StaticTokenCredential
from tests.playbooks.test_standard_steps import StepRunner, step_policy

pytestmark = pytest.mark.slow  # starts an HTTPS server

WORKSPACE = DEFAULT_WORKSPACE_GUID
OTHER_COMPONENT = (f"/subscriptions/{SUBSCRIPTION}/resourceGroups/staging-qlp-rg/providers/"
                   "Microsoft.Insights/components/qlp-staging-ai")
NOW = datetime(2026, 12, 1, 11, 0, tzinfo=UTC)
SINCE = NOW - timedelta(minutes=5)


@pytest.fixture
def double(certificate: tuple[Path, Path]) -> Iterator[ArmDouble]:
    arm = ArmDouble(*certificate).start()
    yield arm
    arm.stop()


def source(double: ArmDouble, certificate: tuple[Path, Path],
           **insights: Any) -> AzureMetrics:
    settings = parse_azure_settings({
        "subscription_id": SUBSCRIPTION, "resource_group": "prod-qlp-rg", "location": "eastus",
        "container_group_prefix": "qlp", "registry": "prodqlpacr", "image": "qlp",
        "identity": "qlp-acr-pull", "dns_name_label": "qlp-prod",
        "front_door": {"kind": "standard", "profile": "p", "endpoint": "e", "route": "r",
                       "origin_groups": {"blue": "b", "green": "g"}},
        "app_insights": {"endpoint": double.url, **(insights or {"workspace_id": WORKSPACE})},
    }, where="environments.production.azure")
    return AzureMetrics(settings, credential=StaticTokenCredential(),
                        client_kwargs={"connection_verify": str(certificate[0]),
                                       "retry_total": 0},
                        clock=FixedClock(NOW))


def post(double: ArmDouble, certificate: tuple[Path, Path], path: str,
         query: str, timespan: str | None = None) -> httpx.Response:
    """A raw query, as the SDK sends it."""
    return httpx.post(f"{double.url}/v1{path}/query", json={"query": query,
                                                            "timespan": timespan},
                      headers={"Authorization": f"Bearer {TOKEN}"},
                      verify=ssl.create_default_context(cafile=str(certificate[0])), timeout=10)


def final_validation(metrics: AzureMetrics) -> tuple[Validation, StepRunner]:
    """Final validation's checks on a local-platform policy (health answered 200) with
    ``metrics`` as the source of the live green slot's errors."""
    http = HttpChecker(transport=httpx.MockTransport(lambda request: httpx.Response(200)))
    policy = step_policy()  # errors gate here, so a query the double refuses stops the step
    policy = policy.model_copy(update={
        "validation": policy.validation.model_copy(update={"errors": "gate", "no_data": "gate"})})
    ctx = StepRunner(cast(Platform, None), metrics, policy, FixedClock(NOW), "v1.1.0")
    try:
        return FinalValidation(http).run(ctx, Slot.GREEN, "v1.0.0", collect_all=True), ctx
    finally:
        http.close()


def errors_finding(validation: Validation) -> str:
    [finding] = [f for f in validation.findings if f.name == "errors"]
    # A query that fails is named; the errors check only warns by default (validation.errors).
    assert finding.verdict in (CheckVerdict.WARNING, CheckVerdict.INCONCLUSIVE)
    # The errors check reads the last hour; a query it could not run is "could not be read",
    # never worded as an absence of data.
    assert not finding.evidence.startswith("no data"), finding.evidence
    return finding.evidence


# -- the Must-show: a KQL mistake is caught by the double and named by the finding ------------


def test_a_renamed_column_is_refused_and_the_finding_names_it(
        double: ArmDouble, certificate: tuple[Path, Path],
        monkeypatch: pytest.MonkeyPatch) -> None:
    real = monitoring.request_counts_query

    def misspelt(insights: AppInsightsSettings, role: str) -> str:
        return real(insights, role).replace("Success", "Sucess")

    monkeypatch.setattr(monitoring, "request_counts_query", misspelt)
    double.set_requests("qlp-green", total=100, failed=2)
    metrics = source(double, certificate)

    with pytest.raises(MetricsUnavailable) as caught:
        metrics.error_count(Slot.GREEN, SINCE)
    assert caught.value.code == "SemanticError" and not caught.value.retryable
    assert caught.value.detail == ("'summarize' operator: Failed to resolve column or scalar "
                                   "expression named 'Sucess'")

    validation, ctx = final_validation(metrics)
    evidence = errors_finding(validation)
    assert evidence == (
        "Application Insights could not be read for the live green slot over the last 1h: "
        "SemanticError (the query is the bot's: report it): 'summarize' operator: Failed to "
        "resolve column or scalar expression named 'Sucess'")
    assert validation.failure is not None
    assert "Sucess" in validation.failure.message  # the refused query is named
    assert validation.failure.hint == "the query is the bot's: report it"
    assert any("named 'Sucess'" in report for report in ctx.reports)
    metrics.close()


def test_log_analytics_error_envelope_for_unknown_names(double: ArmDouble,
                                                        certificate: tuple[Path, Path]) -> None:
    workspace = f"/workspaces/{WORKSPACE}"
    answer = post(double, certificate, workspace,
                  'AppRequests | where AppRoleName == "qlp-green" and Sucess == false '
                  "| summarize count()")
    assert answer.status_code == 400
    body = answer.json()
    assert body["error"]["code"] == "BadArgumentError"
    assert body["error"]["message"] == "The request had some invalid properties"
    assert body["error"]["innererror"] == {
        "code": "SemanticError", "message": "A semantic error occurred.",
        "innererror": {"code": "SEM0100", "message": "'where' operator: Failed to resolve "
                       "column or scalar expression named 'Sucess'"}}
    # A table of the other schema is unknown in a workspace query.
    answer = post(double, certificate, workspace, "requests | summarize count()")
    assert answer.status_code == 400
    assert answer.json()["error"]["innererror"]["innererror"]["message"] == (
        "'summarize' operator: Failed to resolve table or column expression named 'requests'")
    # Valid KQL the double does not evaluate is said to be the double's limit, not Azure's.
    answer = post(double, certificate, workspace, "AppRequests | take 5")
    assert answer.status_code == 501 and "'take' operator" in answer.json()["error"]["message"]


def test_the_result_is_computed_from_the_querys_own_names(
        double: ArmDouble, certificate: tuple[Path, Path]) -> None:
    double.set_requests("qlp-green", total=240, failed=37, p95_ms=512.0)
    answer = post(double, certificate, f"/workspaces/{WORKSPACE}",
                  'AppRequests | where AppRoleName =~ "QLP-GREEN" | summarize '
                  "n = sum(ItemCount), bad = sumif(ItemCount, not(Success)), count(), "
                  "percentilew(DurationMs, ItemCount, 95)")
    assert answer.status_code == 200, answer.text
    [table] = answer.json()["tables"]
    assert table["columns"] == [
        {"name": "n", "type": "long"}, {"name": "bad", "type": "long"},
        {"name": "count_", "type": "long"},
        {"name": "percentile_DurationMs_95", "type": "real"}]
    assert table["rows"] == [[240, 37, 2, 512.0]]


# -- the classic schema: success is a string ------------------------------------------------


def test_classic_success_is_a_string_read_with_tobool(double: ArmDouble,
                                                      certificate: tuple[Path, Path]) -> None:
    double.set_requests("qlp-green", total=100, failed=7)
    component = DEFAULT_COMPONENT
    refused = post(double, certificate, component,
                   'requests | where cloud_RoleName == "qlp-green" '
                   "| summarize failed = sumif(itemCount, success == false)")
    assert refused.status_code == 400
    assert refused.json()["error"]["innererror"]["innererror"] == {
        "code": "SEM0064", "message": "'summarize' operator: Cannot compare values of types "
                                      "string and bool. Try adding explicit casts"}
    fine = post(double, certificate, component,
                'requests | where cloud_RoleName == "qlp-green" '
                "| summarize failed = sumif(itemCount, tobool(success) == false)")
    assert fine.status_code == 200 and fine.json()["tables"][0]["rows"] == [[7]]

    # The bot's own query in component mode works, through the SDK's resource-centric call.
    metrics = source(double, certificate, resource_id=component)
    assert metrics.error_count(Slot.GREEN, SINCE) == 7
    assert metrics.request_count(Slot.GREEN, SINCE) == 100
    [call] = double.calls_to("logs", "POST")[-1:]
    assert call.path == f"/v1{component}/query"
    metrics.close()


# -- scoping: one workspace, two components ---------------------------------------------------


def test_two_components_in_one_workspace_are_not_mixed(double: ArmDouble,
                                                       certificate: tuple[Path, Path]) -> None:
    # Staging's component sends to production's workspace too; its colours have the same names.
    double.component_workspaces[OTHER_COMPONENT.lower()] = WORKSPACE_ID
    double.set_requests("qlp-green", total=100, failed=1)
    double.set_requests("qlp-green", total=900, failed=300, component=OTHER_COMPONENT)

    scoped = source(double, certificate, workspace_id=WORKSPACE, resource_id=DEFAULT_COMPONENT)
    assert scoped.error_count(Slot.GREEN, SINCE) == 1
    assert scoped.request_count(Slot.GREEN, SINCE) == 100
    query = double.calls_to("logs", "POST")[-1].body["query"]
    assert f'| where _ResourceId =~ "{DEFAULT_COMPONENT.lower()}"' in query

    # Workspace-only settings (accepted, documented as mixing environments) count both.
    mixed = source(double, certificate, workspace_id=WORKSPACE)
    assert mixed.request_count(Slot.GREEN, SINCE) == 1000
    scoped.close()
    mixed.close()


def test_the_timespan_bounds_rows_that_have_a_time(double: ArmDouble,
                                                   certificate: tuple[Path, Path]) -> None:
    double.add_requests(
        TelemetryRow("qlp-blue", False, 50, 10.0, DEFAULT_COMPONENT, NOW - timedelta(hours=2)),
        TelemetryRow("qlp-blue", True, 20, 10.0, DEFAULT_COMPONENT, NOW - timedelta(minutes=1)),
        TelemetryRow("qlp-blue", False, 3, 10.0, DEFAULT_COMPONENT, NOW - timedelta(minutes=2)))
    metrics = source(double, certificate)
    assert metrics.request_count(Slot.BLUE, SINCE) == 23  # the old failures are outside
    assert metrics.error_count(Slot.BLUE, SINCE) == 3
    metrics.close()


# -- failures that used to look like "no data" ------------------------------------------------


def test_a_missing_role_names_authorization_failed_and_the_fix(
        double: ArmDouble, certificate: tuple[Path, Path]) -> None:
    double.set_requests("qlp-green", total=100, failed=2)
    double.revoke(WORKSPACE_ID, "Log Analytics Reader")
    double.revoke(RESOURCE_GROUP_ID, "Monitoring Reader")  # its */read covers queries too
    validation, _ = final_validation(source(double, certificate))
    evidence = errors_finding(validation)
    assert evidence.startswith(
        "Application Insights could not be read for the live green slot over the last 1h: "
        "AuthorizationFailed (grant the bot's identity Log Analytics Reader on the workspace "
        f"of app_insights.workspace_id {WORKSPACE}): The client")
    assert validation.failure is not None and not validation.failure.retryable
    assert "Microsoft.OperationalInsights/workspaces/query/read" in validation.failure.message
    assert (validation.failure.hint or "").startswith(
        "grant the bot's identity Log Analytics Reader")


def test_a_partial_result_is_named_not_counted(double: ArmDouble,
                                               certificate: tuple[Path, Path]) -> None:
    double.set_requests("qlp-green", total=100, failed=2)
    double.logs_partial_next("Query exceeded the maximum result set size")
    metrics = source(double, certificate)
    with pytest.raises(MetricsUnavailable) as caught:
        metrics.error_count(Slot.GREEN, SINCE)
    assert caught.value.code == "PartialError" and caught.value.retryable
    assert caught.value.detail == ("There were some errors when processing your query: Query "
                                   "exceeded the maximum result set size")
    validation, _ = final_validation(source(double, certificate))  # a fresh, whole answer
    assert [f.verdict for f in validation.findings if f.name == "errors"] == [CheckVerdict.OK]
    metrics.close()


def test_an_unknown_workspace_and_throttling_are_named(double: ArmDouble,
                                                       certificate: tuple[Path, Path]) -> None:
    other = "99999999-2222-3333-4444-555555555555"
    validation, _ = final_validation(source(double, certificate, workspace_id=other))
    assert errors_finding(validation).endswith(
        "WorkspaceNotFoundError (check app_insights.workspace_id (the workspace's GUID, not "
        f"its name)): The workspace {other} could not be found")

    double.throttle("POST", "/query", retry_after="9")
    with pytest.raises(MetricsUnavailable) as caught:
        source(double, certificate).error_count(Slot.GREEN, SINCE)
    assert caught.value.code == "TooManyRequests"
    assert caught.value.retryable and caught.value.retry_after == 9.0


def test_the_bots_queries_in_both_modes_are_accepted_by_the_double(
        double: ArmDouble, certificate: tuple[Path, Path]) -> None:
    """Every form of the bot's query parses and type-checks against its schema."""
    forms = [{"workspace_id": WORKSPACE}, {"resource_id": DEFAULT_COMPONENT},
             {"workspace_id": WORKSPACE, "resource_id": DEFAULT_COMPONENT}]
    double.set_requests("qlp-blue", total=10, failed=1, p95_ms=80.0)
    for insights in forms:
        metrics = source(double, certificate, **insights)
        counts = metrics.counts(Slot.BLUE, SINCE)
        assert counts is not None and (counts.total, counts.failed) == (10, 1), insights
        assert counts.p95_ms == 80.0
        settings = metrics.settings.app_insights
        assert settings is not None
        assert request_counts_query(settings, "qlp-blue").count("| where") == len(insights)
        metrics.close()
