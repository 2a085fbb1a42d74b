"""The newest backup of a PostgreSQL flexible server, read through the ARM pipeline from the double.

The double answers ``GET .../Microsoft.DBforPostgreSQL/flexibleServers/{name}/backups``
(api-version 2024-08-01) with the backups ``set_backups`` gave it, two per page joined by
``nextLink``; ``fail_backups`` injects an ARM error.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from procedures.checks.http import HttpChecker
from procedures.clock import FixedClock
from procedures.errors import ConfigError, ExternalServiceError, StepFailure
from procedures.platforms.azure import AzurePlatform
from procedures.platforms.azure.backups import (
    FlexibleServerBackups,
    arm_pipeline,
    latest_backup,
)
from procedures.platforms.azure.settings import parse_azure_settings
from procedures.playbooks.standard import StandardSteps
from tests.azure.arm_double import (
    SUBSCRIPTION,
    ArmDouble,
    fail_backups,
    set_backups,
)
from tests.azure.test_azure_platform import RG, azure_section
from tests.fakes.policies import make_policy
from tests.playbooks.test_standard_failures import ZeroErrors
from tests.playbooks.test_standard_steps import StepRunner

pytestmark = pytest.mark.slow  # starts an HTTPS server

NOW = datetime(2026, 12, 1, 11, 0, tzinfo=UTC)
SERVER = "qlp-prod-db"
BACKUPS_PATH = (f"/subscriptions/{SUBSCRIPTION}/resourceGroups/{RG}/providers/"
                f"Microsoft.DBforPostgreSQL/flexibleServers/{SERVER}/backups")



@pytest.fixture
def double(certificate: tuple[Path, Path]) -> Iterator[ArmDouble]:
    arm = ArmDouble(*certificate).start()
    arm.add_route(RG, "qlp-frontdoor", "qlp-endpoint", "default-route", "qlp-blue-og")
    yield arm
    arm.stop()


def section(double: ArmDouble, **changes: Any) -> dict[str, Any]:
    return azure_section(double, **{"postgres_server": SERVER, **changes})


@pytest.fixture
def make_platform(make_platform: Callable[..., AzurePlatform]) -> Callable[..., AzurePlatform]:
    """The shared factory, with this module's flexible server configured."""
    return lambda **changes: make_platform(**{"postgres_server": SERVER, **changes})


NIGHTLY = [
    ("daily_20261129T030000", "Full", "2026-11-29T03:04:10.2369184+00:00"),
    ("daily_20261130T030000", "Full", "2026-11-30T03:05:00+00:00"),
    ("ondemand-before-release", "Customer On-Demand", "2026-11-30T17:30:00Z"),
    ("daily_20261201T030000", "Full", None),  # still running: no completedTime yet
]


# -- the reader -------------------------------------------------------------------------------


def test_a_fresh_backup_is_ok_with_its_age(make_platform: Callable[..., AzurePlatform],
                                           double: ArmDouble) -> None:
    set_backups(double, SERVER, NIGHTLY)
    found = latest_backup(make_platform(), NOW)

    assert found is not None and found.fresh
    assert found.count == 3  # the running backup is not counted
    assert found.latest is not None and found.latest.name == "ondemand-before-release"
    assert found.latest.backup_type == "Customer On-Demand"
    assert found.age == timedelta(hours=17, minutes=30)
    assert found.describe() == (
        "PostgreSQL server qlp-prod-db: latest backup 2026-11-30 17:30 UTC "
        "(Customer On-Demand, on-demand) (17h 30m old)")
    calls = double.calls_to("backups", "GET")
    assert len(calls) == 2  # two pages, followed through nextLink
    assert all(call.authorized and call.path == BACKUPS_PATH for call in calls)
    assert calls[0].query == {"api-version": "2024-08-01"}
    assert calls[1].query["$skipToken"] == "2"


def test_a_stale_backup_is_refused_with_the_numbers(make_platform: Callable[..., AzurePlatform],
                                                    double: ArmDouble) -> None:
    set_backups(double, SERVER, NIGHTLY[:2])
    found = latest_backup(make_platform(max_backup_age="24h"), NOW)

    assert found is not None and not found.fresh
    assert found.age == timedelta(days=1, hours=7, minutes=55)
    assert found.max_age == timedelta(hours=24)
    assert found.describe() == (
        "PostgreSQL server qlp-prod-db: latest backup 2026-11-30 03:05 UTC (Full, automatic) "
        "(1d 7h old), older than the 1d allowed")


def test_no_backup_at_all_is_refused(make_platform: Callable[..., AzurePlatform],
                                     double: ArmDouble) -> None:
    set_backups(double, SERVER, [("daily_20261201T030000", "Full", None)])
    found = latest_backup(make_platform(), NOW)
    assert found is not None and found.latest is None and not found.fresh
    assert found.age is None and found.count == 0
    assert found.describe() == ("PostgreSQL server qlp-prod-db: no completed backup at all "
                                "(at most 1d 2h old is allowed)")


def test_a_403_is_translated(make_platform: Callable[..., AzurePlatform],
                             double: ArmDouble) -> None:
    fail_backups(double, 403, "AuthorizationFailed",
                 "The client 'qlp-bot' does not have authorization to perform action "
                 "'Microsoft.DBforPostgreSQL/flexibleServers/backups/read'.")
    with pytest.raises(ExternalServiceError) as caught:
        latest_backup(make_platform(), NOW)
    error = caught.value
    assert error.service == "Azure Database for PostgreSQL"
    assert error.code == "AuthorizationFailed" and not error.retryable
    assert error.message.startswith(
        "Azure Database for PostgreSQL: list the backups of PostgreSQL server qlp-prod-db: "
        "AuthorizationFailed: The client 'qlp-bot' does not have authorization")


def test_an_unknown_server_and_throttling(make_platform: Callable[..., AzurePlatform],
                                          double: ArmDouble) -> None:
    platform = make_platform()
    with pytest.raises(ExternalServiceError) as missing:
        latest_backup(platform, NOW)  # the double knows no backups of this server
    assert missing.value.code == "ResourceNotFound" and not missing.value.retryable
    set_backups(double, SERVER, NIGHTLY)
    double.throttle("GET", "/backups", retry_after="9")
    with pytest.raises(ExternalServiceError) as throttled:
        latest_backup(platform, NOW)
    assert throttled.value.retryable and throttled.value.retry_after == 9.0


def test_no_server_configured_or_not_azure(make_platform: Callable[..., AzurePlatform],
                                           double: ArmDouble) -> None:
    assert latest_backup(make_platform(postgres_server=None), NOW) is None
    assert latest_backup(object(), NOW) is None
    assert double.calls_to("backups") == []
    platform = make_platform(postgres_server=None)
    client = arm_pipeline(platform._clients)
    try:
        with pytest.raises(ValueError, match="no postgres_server"):
            FlexibleServerBackups(platform.settings, client)
    finally:
        client.close()


def test_the_settings_keys(double: ArmDouble) -> None:
    settings = parse_azure_settings(section(double, max_backup_age="30h"))
    assert settings.postgres_server == SERVER
    assert settings.max_backup_age == timedelta(hours=30)
    assert parse_azure_settings(azure_section(double)).max_backup_age == timedelta(hours=26)
    with pytest.raises(ConfigError, match=r"azure\.postgres_server: 'Prod_DB' is not a "
                                          r"PostgreSQL flexible server name"):
        parse_azure_settings(section(double, postgres_server="Prod_DB"))
    with pytest.raises(ConfigError, match="max_backup_age must be positive"):
        parse_azure_settings(section(double, max_backup_age="0s"))


# -- final_validation -------------------------------------------------------------------------


@pytest.fixture
def validate(double: ArmDouble, make_platform: Callable[..., AzurePlatform]
             ) -> Callable[..., tuple[StepRunner, dict[str, Any]]]:
    healthy = httpx.MockTransport(lambda request: httpx.Response(200, json={"ok": True}))
    steps = StandardSteps(HttpChecker(transport=healthy))

    def run(**changes: Any) -> tuple[StepRunner, dict[str, Any]]:
        policy = make_policy(environments={"production": {
            "platform": "azure", "url": "https://api.qlp-hq.com", "health": ["/health"],
            "azure": section(double, **changes)}})
        ctx = StepRunner(make_platform(**changes), ZeroErrors(), policy, FixedClock(NOW),
                         "2.0.0")
        return ctx, dict(steps.final_validation(ctx) or {})

    return run


FRESH = ("ondemand-3h", "Customer On-Demand", "2026-12-01T08:00:00Z")  # 3h before NOW


def test_final_validation_reports_a_fresh_backup(
        validate: Callable[..., tuple[StepRunner, dict[str, Any]]], double: ArmDouble) -> None:
    set_backups(double, SERVER, [*NIGHTLY, FRESH])
    ctx, result = validate()
    assert result["live"] is None  # Front Door names blue, but no group runs there yet
    assert result["backup"] == {
        "server": SERVER, "latest": "2026-12-01T08:00:00+00:00", "type": "Customer On-Demand",
        "name": "ondemand-3h", "age_s": 10800, "max_age_s": 21600}
    assert ("Database backup: qlp-prod-db: newest backup 2026-12-01 08:00 UTC "
            "(Customer On-Demand, on-demand), 3h old (at most 6h).") in ctx.reports


def test_final_validation_fails_on_a_stale_or_missing_backup(
        validate: Callable[..., tuple[StepRunner, dict[str, Any]]], double: ArmDouble) -> None:
    # The policy's validation.backup_max_age (the seed's 6h) decides, not azure.max_backup_age.
    set_backups(double, SERVER, NIGHTLY)
    with pytest.raises(StepFailure, match=r"the newest backup of the database of production "
                                          r"\(qlp-prod-db\) is 17h 30m old: older than the 6h "
                                          r"allowed \(validation.backup_max_age\)") as stale:
        validate(max_backup_age="24h")
    assert not stale.value.retryable
    set_backups(double, SERVER, [])
    with pytest.raises(StepFailure, match="has no completed backup; at most 6h old") as none:
        validate()
    assert not none.value.retryable


def test_final_validation_is_inconclusive_when_azure_cannot_answer(
        validate: Callable[..., tuple[StepRunner, dict[str, Any]]], double: ArmDouble) -> None:
    fail_backups(double, 403, "AuthorizationFailed", "no backups/read permission")
    with pytest.raises(StepFailure, match=r"latest database backup of production is unknown: "
                                          r".*AuthorizationFailed") as denied:
        validate()
    assert not denied.value.retryable
    assert "backups/read" in (denied.value.hint or "")
    fail_backups(double, 503, "ServiceUnavailable", "try later")
    with pytest.raises(StepFailure, match="ServiceUnavailable") as busy:
        validate()
    assert busy.value.retryable


def test_final_validation_without_postgres_server_checks_no_backup(
        validate: Callable[..., tuple[StepRunner, dict[str, Any]]], double: ArmDouble) -> None:
    _, result = validate(postgres_server=None)
    assert "backup" not in result
    assert double.calls_to("backups") == []
