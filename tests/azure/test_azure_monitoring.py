"""AzureMetrics with the real LogsQueryClient against the Logs endpoint of the local double.

The client trusts the double's self-signed certificate and gets a static token; the double
answers ``POST /v1/workspaces/{id}/query`` (and ``/v1{resourceId}/query``) from the request
counts each cloud role name was given.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from procedures.clock import FixedClock
from procedures.errors import ConfigError
from procedures.model import Slot
from procedures.platforms.azure.monitoring import AzureMetrics, request_counts_query
from procedures.platforms.azure.settings import AzureSettings, parse_azure_settings
from procedures.playbook import MetricsSource
from tests.azure.arm_double import SUBSCRIPTION, ArmDouble, make_certificate
from tests.azure.test_azure_platform import StaticTokenCredential

pytestmark = pytest.mark.slow  # starts an HTTPS server

WORKSPACE = "11111111-2222-3333-4444-555555555555"
COMPONENT = (f"/subscriptions/{SUBSCRIPTION}/resourceGroups/prod-qlp-rg/providers/"
             "Microsoft.Insights/components/qlp-ai")
NOW = datetime(2026, 12, 1, 11, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return make_certificate(tmp_path_factory.mktemp("logs-double"))


@pytest.fixture
def double(certificate: tuple[Path, Path]) -> Iterator[ArmDouble]:
    arm = ArmDouble(*certificate).start()
    yield arm
    arm.stop()


def settings(double: ArmDouble, **insights: Any) -> AzureSettings:
    return parse_azure_settings({
        "subscription_id": SUBSCRIPTION, "resource_group": "prod-qlp-rg", "location": "eastus",
        "container_group_prefix": "qlp", "registry": "prodqlpacr", "image": "qlp",
        "identity": "qlp-acr-pull", "dns_name_label": "qlp-prod",
        "front_door": {"kind": "standard", "profile": "p", "endpoint": "e", "route": "r",
                       "origin_groups": {"blue": "b", "green": "g"}},
        "app_insights": {"endpoint": double.url, **(insights or {"workspace_id": WORKSPACE})},
    }, where="environments.production.azure")


def metrics(double: ArmDouble, certificate: tuple[Path, Path], clock: FixedClock,
            **insights: Any) -> AzureMetrics:
    return AzureMetrics(settings(double, **insights), credential=StaticTokenCredential(),
                        client_kwargs={"connection_verify": str(certificate[0]),
                                       "retry_total": 0},
                        clock=clock)


def test_counts_per_colour_from_a_workspace_query(double: ArmDouble,
                                                  certificate: tuple[Path, Path]) -> None:
    clock = FixedClock(NOW)
    source = metrics(double, certificate, clock)
    typed: MetricsSource = source
    assert typed is source
    double.set_requests("qlp-green", total=240, failed=37)
    double.set_requests("qlp-blue", total=500, failed=1)
    since = NOW - timedelta(minutes=5)

    assert source.error_count(Slot.GREEN, since) == 37
    assert source.request_count(Slot.GREEN, since) == 240
    assert source.error_count(Slot.BLUE, since) == 1
    calls = double.calls_to("logs", "POST")
    # One query answers both figures of a slot (reused while fresh): green once, blue once.
    assert len(calls) == 2
    first = calls[0]
    assert first.path == f"/v1/workspaces/{WORKSPACE}/query" and first.authorized
    assert 'AppRoleName == "qlp-green"' in first.body["query"]
    assert "sumif(ItemCount, Success == false)" in first.body["query"]
    assert first.body["timespan"].startswith("2026-12-01T10:55:00")

    # Later, the answer is asked again (not cached forever).
    clock.advance(timedelta(seconds=6))
    double.set_requests("qlp-green", total=300, failed=40)
    assert source.error_count(Slot.GREEN, since) == 40
    source.close()


def test_no_rows_no_requests_and_failures_are_no_data(double: ArmDouble,
                                                      certificate: tuple[Path, Path]) -> None:
    clock = FixedClock(NOW)
    source = metrics(double, certificate, clock, resource_id=COMPONENT)
    since = NOW - timedelta(minutes=5)

    # No rows for the role: None (inconclusive), never 0.
    assert source.error_count(Slot.GREEN, since) is None
    assert source.request_count(Slot.GREEN, since) is None
    call = double.calls_to("logs", "POST")[-1]
    assert call.path == f"/v1{COMPONENT}/query"
    assert 'cloud_RoleName == "qlp-green"' in call.body["query"]

    # A row saying no requests at all: still no data.
    clock.advance(timedelta(seconds=10))
    double.set_requests("qlp-green", total=0, failed=0)
    assert source.error_count(Slot.GREEN, since) is None

    # The query fails: no data, no exception.
    clock.advance(timedelta(seconds=10))
    double.set_requests("qlp-green", total=100, failed=2)
    double.logs_failures.append(400)
    assert source.error_count(Slot.GREEN, since) is None
    clock.advance(timedelta(seconds=10))
    assert source.error_count(Slot.GREEN, since) == 2
    source.close()


def test_without_app_insights_every_reading_is_none(double: ArmDouble) -> None:
    plain = settings(double).model_copy(update={"app_insights": None})
    source = AzureMetrics(plain, clock=FixedClock(NOW))
    assert source.error_count(Slot.BLUE, NOW) is None
    assert source.request_count(Slot.BLUE, NOW) is None
    assert double.calls_to("logs") == []


def test_app_insights_settings_are_checked(double: ArmDouble) -> None:
    with pytest.raises(ConfigError) as caught:
        settings(double, workspace_id=WORKSPACE, resource_id=COMPONENT)
    assert caught.value.key == "environments.production.azure.app_insights"
    assert "exactly one of workspace_id" in str(caught.value)
    with pytest.raises(ConfigError) as caught:
        settings(double, workspace_id="not-a-guid")
    assert caught.value.key == "environments.production.azure.app_insights.workspace_id"
    with pytest.raises(ConfigError) as caught:
        settings(double, workspace_id=WORKSPACE, role_prefix="x")
    assert "did you mean role_name_prefix" in str(caught.value)
    custom = settings(double, workspace_id=WORKSPACE, role_name_prefix="api")
    assert custom.role_name("green") == "api-green"
    assert custom.app_insights is not None
    assert 'AppRoleName == "api-blue"' in request_counts_query(custom.app_insights, "api-blue")
