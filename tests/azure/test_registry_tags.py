"""The versions that exist on Azure: the image's tags read from the registry's data plane
(the ACR double: token exchange, 401 without the data-plane role, 404 ``NAME_UNKNOWN`` for a
repository it does not know, paging), newest first, as the platform lists them and as the
deploy dialog's version menu offers them through a signed ``block_suggestion``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bot.deploy_dialog_view import CALLBACK_ID, VERSION_ACTION
from bot.platforms import AzureParts
from bot.slack_requests import block_suggestion_body, new_trigger_id, shortcut_body
from procedures import log_context
from procedures.clock import Clock, SystemClock
from procedures.errors import ExternalServiceError
from procedures.platforms.azure import AzureClients, AzurePlatform
from procedures.platforms.azure.monitoring import AzureMetrics
from procedures.platforms.azure.settings import AzureSettings
from procedures.platforms.base import SupportsVersionList
from procedures.policy import Environment
from storage.db import Database
from tests.azure.arm_double import SUBSCRIPTION, ArmDouble
from tests.azure.arm_double.acr import ABAC
from tests.azure.test_azure_platform import StaticTokenCredential, azure_section
from tests.fakes.bot_harness import BotHarness
from tests.fakes.policies import make_policy
from tests.fakes.slack_double import SlackDouble
from tests.fakes.slack_views import ALWAYS_OPEN

LOGIN = "prodqlpacr.azurecr.io"
# Pushed in this order: the newest last. "latest" and "1.2.0" are tags the grammar would not
# deploy as they are (the image of version v1.2.0 is ":v1.2.0").
PUSHED = ("v0.9.0", "v1.0.0", "latest", "v1.1.0-rc.1", "1.2.0")


@pytest.fixture
def double(certificate: tuple[Path, Path]) -> Iterator[ArmDouble]:
    arm = ArmDouble(*certificate).start()
    for tag in PUSHED:
        arm.push_image(f"{LOGIN}/qlp:{tag}")
    yield arm
    arm.stop()


def _clients(double: ArmDouble, certificate: tuple[Path, Path]) -> AzureClients:
    return AzureClients(StaticTokenCredential(), SUBSCRIPTION, base_url=double.url,
                        client_kwargs={"connection_verify": str(certificate[0]),
                                       "retry_total": 0},
                        acr_endpoint=f"{double.url}/_acr/{{login_server}}")


def _section(double: ArmDouble, **changes: Any) -> dict[str, Any]:
    return {"platform": "azure", "url": "https://api.qlp-hq.com", "health": ["/health"],
            "azure": azure_section(double, **changes)}


def _environment(double: ArmDouble, **changes: Any) -> Environment:
    return Environment.model_validate(_section(double, **changes))


def test_the_platform_lists_the_registry_tags_newest_first(
        double: ArmDouble, certificate: tuple[Path, Path]) -> None:
    platform = AzurePlatform("production", _environment(double),
                             clients=_clients(double, certificate))
    try:
        assert isinstance(platform, SupportsVersionList)
        assert platform.available_versions(100) == list(reversed(PUSHED))
        assert platform.available_versions(2) == ["1.2.0", "v1.1.0-rc.1"]
    finally:
        platform.close()
    calls = [c.path for c in double.calls_to("acr")]
    assert any(path.endswith("/oauth2/exchange") for path in calls), calls  # ACR's own tokens
    assert any("/acr/v1/qlp/_tags" in path for path in calls), calls


class _AzureCallsSeen:
    """An observer (procedures.log_context) that keeps the Azure calls it is told of."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, str]] = []

    def azure_call(self, *, service: str, operation: str, result: str,
                   seconds: float) -> None:
        self.calls.append((service, operation, result))


def test_listing_the_tags_is_counted_as_an_azure_call(
        double: ArmDouble, certificate: tuple[Path, Path]) -> None:
    seen = _AzureCallsSeen()
    listed = AzurePlatform("production", _environment(double),
                           clients=_clients(double, certificate))
    unknown = AzurePlatform("production", _environment(double, image="qlp-typo"),
                            clients=_clients(double, certificate))
    try:
        with log_context.scope(seen):
            listed.available_versions(10)
            with pytest.raises(ExternalServiceError):
                unknown.available_versions(10)
    finally:
        listed.close()
        unknown.close()
    # The metric's labels: the service, the code's verb, the result (qlp_azure_calls_total).
    assert seen.calls == [("Azure Container Registry", "list", "ok"),
                          ("Azure Container Registry", "list", "error")]


def test_an_unknown_repository_and_a_missing_role_are_said_plainly(
        double: ArmDouble, certificate: tuple[Path, Path]) -> None:
    platform = AzurePlatform("production", _environment(double, image="qlp-typo"),
                             clients=_clients(double, certificate))
    try:
        with pytest.raises(ExternalServiceError) as unknown:
            platform.available_versions(100)
        assert "NAME_UNKNOWN" in unknown.value.message, unknown.value.message
        assert "qlp-typo" in unknown.value.message
    finally:
        platform.close()
    # In ABAC mode the bot's registry-wide role no longer reads a repository's tags.
    double.set_registry_mode(ABAC)
    platform = AzurePlatform("production", _environment(double),
                             clients=_clients(double, certificate))
    try:
        with pytest.raises(ExternalServiceError) as denied:
            platform.available_versions(100)
        assert "401" in denied.value.message or "UNAUTHORIZED" in denied.value.message
    finally:
        platform.close()


@pytest.fixture
def azure_bot(sqlite_database: Database, double: ArmDouble, certificate: tuple[Path, Path],
              tmp_path: Path) -> Iterator[BotHarness]:
    """The real bot whose production runs on the double's Azure (only its registry is read)."""
    slack = SlackDouble(token="xoxb-test-token", users={"U0DEV": "dev"})
    slack.start()
    policy = make_policy(environments={"production": _section(double)}, windows=ALWAYS_OPEN)

    def factory(name: str, env: Environment, settings: AzureSettings,
                clock: Clock) -> AzureParts:
        metrics = AzureMetrics(settings, credential=StaticTokenCredential(),
                               client_kwargs={"connection_verify": str(certificate[0]),
                                              "retry_total": 0}, clock=clock)
        return AzurePlatform(name, env, clients=_clients(double, certificate)), metrics

    harness = BotHarness(database=sqlite_database, policy=policy, clock=SystemClock(),
                         home=tmp_path / "home", slack=slack)
    harness.services.platforms.azure_factory = factory
    try:
        yield harness
    finally:
        harness.close()
        slack.stop()


def test_the_dialog_offers_the_registry_versions_newest_first(azure_bot: BotHarness,
                                                              double: ArmDouble) -> None:
    trigger = new_trigger_id()
    assert azure_bot.post(shortcut_body(callback_id=CALLBACK_ID, user_id="U0DEV",
                                        trigger_id=trigger)).status_code == 200
    views: Any = azure_bot.wait_for(
        lambda: [v for v in azure_bot.slack.views() if v.trigger_id == trigger], timeout=5,
        what="the dialog")

    def menu(typed: str) -> dict[str, Any]:
        body = block_suggestion_body(view=views[0].view, view_id=views[0].id,
                                     action_id=VERSION_ACTION, block_id="version", value=typed,
                                     user_id="U0DEV")
        response = azure_bot.post(body)
        assert response.status_code == 200, response.text
        answer: dict[str, Any] = response.json()
        return answer

    # Only what the grammar deploys as it is, newest pushed first.
    assert [o["value"] for o in menu("")["options"]] == ["v1.1.0-rc.1", "v1.0.0", "v0.9.0"]
    reads = len([c for c in double.calls_to("acr") if "/_tags" in c.path])
    assert [o["value"] for o in menu("v1.0")["options"]] == ["v1.0.0"]
    # The next keystroke is answered from the list just read, not from the registry again.
    assert len([c for c in double.calls_to("acr") if "/_tags" in c.path]) == reads
    assert menu("v2.0.0")["options"][0]["text"]["text"] == "v2.0.0 (typed)"
    # The listing is in the bot's own metrics, outside any run.
    assert ('qlp_azure_calls_total{operation="list",result="ok",'
            'service="azure_container_registry"} 1.0') in azure_bot.services.metrics.render()


def test_a_registry_that_cannot_list_still_lets_the_person_type(
        azure_bot: BotHarness, double: ArmDouble) -> None:
    double.set_registry_mode(ABAC)  # the bot's role no longer reads the tags
    trigger = new_trigger_id()
    azure_bot.post(shortcut_body(callback_id=CALLBACK_ID, user_id="U0DEV", trigger_id=trigger))
    views: Any = azure_bot.wait_for(
        lambda: [v for v in azure_bot.slack.views() if v.trigger_id == trigger], timeout=5,
        what="the dialog")
    body = block_suggestion_body(view=views[0].view, view_id=views[0].id,
                                 action_id=VERSION_ACTION, block_id="version", value="v1.2.3",
                                 user_id="U0DEV")
    answer = azure_bot.post(body).json()
    [group] = answer["option_groups"]
    assert group["label"]["text"] == "The registry did not answer: type a version"
    assert [o["value"] for o in group["options"]] == ["v1.2.3"]
