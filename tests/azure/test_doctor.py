"""``qlp-bot doctor`` against the ARM double: a correctly set-up environment passes (exit 0);
each broken setup of a table fails (exit 1) on the line that names it: a missing origin group,
a wrong origin port, an unreadable secret, Logs 403, a Slack token without ``chat:write``, a
resource group or a user-assigned identity that does not exist, an image repository unknown to
the registry or without tags, the groups' identity without AcrPull on the registry, and a bot
that cannot read the registry (its resource, or its data plane).

The world: a fresh Front Door (``tests.azure.fresh_world``: origin groups whose origins point
at the colours' future FQDNs, the route at blue), the green container group created through
the platform (so green's origins are compared with a real FQDN and port), two Key Vault
secrets, the workspace-based Logs query, the PostgreSQL server's backups, the registry
``prodqlpacr`` (in its own resource group) with three pushed versions of ``qlp``, and the role
assignments of a correctly set-up bot (``authz.BOT_ROLES``) and of the groups' identity
(``authz.IDENTITY_ROLES``: AcrPull on the registry). Slack is the Slack double with the
manifest's scopes; the bot's database is a migrated SQLite file.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from bot.doctor import MANIFEST_BOT_SCOPES, run_doctor
from bot.platforms import AzureParts
from bot.settings import Settings
from procedures.clock import Clock
from procedures.doctor import DoctorReport, Verdict
from procedures.model import Slot
from procedures.platforms.azure import AzureClients, AzurePlatform
from procedures.platforms.azure.doctor import allowed
from procedures.platforms.azure.monitoring import AzureMetrics
from procedures.platforms.azure.settings import AzureSettings
from procedures.policy import Environment
from storage.db import Database
from storage.migrate import upgrade
from tests.azure.arm_double import SUBSCRIPTION, ArmDouble, set_backups
from tests.azure.arm_double.authz import (
    IDENTITY_ID,
    REGISTRY_ID,
    RESOURCE_GROUP_ID,
    VAULT_ID,
    WORKSPACE_ID,
)
from tests.azure.arm_double.resources import IDENTITY_PRINCIPAL_ID
from tests.azure.fresh_world import fqdn_for, fresh_front_door
from tests.azure.test_azure_platform import DB_URL, RG, StaticTokenCredential, azure_section
from tests.fakes.bot_harness import BOT_TOKEN
from tests.fakes.policies import BASE
from tests.fakes.slack_double import SlackDouble

pytestmark = pytest.mark.slow  # HTTPS double, Slack double, SQLite

WORKSPACE_GUID = "11111111-2222-3333-4444-555555555555"
DB_SERVER = "qlp-prod-db"
PROFILE = "qlp-frontdoor"
LOGIN_SERVER = "prodqlpacr.azurecr.io"


@dataclass
class DoctorWorld:
    double: ArmDouble
    certificate: str
    slack: SlackDouble
    home: Path
    section: dict[str, Any]

    def clients(self) -> AzureClients:
        return AzureClients(
            StaticTokenCredential(), SUBSCRIPTION, base_url=self.double.url,
            client_kwargs={"connection_verify": self.certificate, "polling_interval": 0,
                           "retry_total": 0},
            keyvault_kwargs={"verify_challenge_resource": False},
            acr_endpoint=f"{self.double.url}/_acr/{{login_server}}")

    def factory(self, name: str, env: Environment, settings: AzureSettings,
                clock: Clock) -> AzureParts:
        metrics = AzureMetrics(settings, credential=StaticTokenCredential(),
                               client_kwargs={"connection_verify": self.certificate,
                                              "retry_total": 0}, clock=clock)
        return AzurePlatform(name, env, clients=self.clients(), clock=clock), metrics

    def settings(self, **azure_changes: Any) -> Settings:
        section = {**self.section, **azure_changes}
        policy = dict(BASE)
        policy["environments"] = {"production": {
            "platform": "azure", "url": "https://api.qlp-hq.com", "health": ["/health"],
            "azure": section}}
        path = self.home / "qlp.yml"
        path.write_text(yaml.safe_dump(policy), encoding="utf-8")
        return Settings(SLACK_BOT_TOKEN=BOT_TOKEN, SLACK_API_URL=self.slack.api_url,
                        QLP_HOME=self.home, QLP_CONFIG=path)

    def doctor(self, **azure_changes: Any) -> DoctorReport:
        return run_doctor(self.settings(**azure_changes), azure_factory=self.factory)


@pytest.fixture
def world(certificate: tuple[Path, Path], tmp_path: Path) -> Iterator[DoctorWorld]:
    double = ArmDouble(*certificate, polls=0).start()
    slack = SlackDouble(token=BOT_TOKEN)
    slack.start()
    try:
        fresh_front_door(double)
        double.add_secret("database-url", DB_URL)
        double.add_secret("openai-key", "sk-openai-0123456789abcdef")
        now = datetime.now(UTC)
        set_backups(double, DB_SERVER, [("daily", "Full", (now - timedelta(hours=3)).isoformat())])
        section = azure_section(double, "route", postgres_server=DB_SERVER,
                                app_insights={"workspace_id": WORKSPACE_GUID,
                                              "endpoint": double.url})
        home = tmp_path / "home"
        home.mkdir()
        world = DoctorWorld(double, str(certificate[0]), slack, home, section)
        database = Database(world.settings().database_url)
        upgrade(database)
        database.dispose()
        # Three versions pushed (the last one newest); only pushed tags pull from now on.
        for version in ("v0.9.0", "v1.0.0", "v1.1.0"):
            double.push_image(f"{LOGIN_SERVER}/qlp:{version}")
        # The green colour exists (created the way the bot creates it); blue does not yet.
        env = Environment.model_validate({"platform": "azure", "url": "https://api.qlp-hq.com",
                                          "azure": section})
        platform = AzurePlatform("production", env, clients=world.clients())
        try:
            platform.deploy(Slot.GREEN, "v1.0.0")
        finally:
            platform.close()
        yield world
    finally:
        slack.stop()
        double.stop()


def line(report: DoctorReport, name: str) -> str:
    found = [r.line() for r in report.results if r.name == name]
    assert found, f"no line {name!r} in:\n{report.text()}"
    return "\n".join(found)


def test_a_correctly_set_up_environment_passes(world: DoctorWorld) -> None:
    report = world.doctor()
    assert report.exit_code == 0, report.text()
    text = report.text()
    assert "[ok] production: Azure credential" in text
    assert "[ok] production: resource group: prod-qlp-rg" in text
    assert "qlp-blue: not yet created: created by the first deployment" in text
    green = fqdn_for("qlp-prod-green", "eastus")
    assert f"[ok] production: origins green: origin group qlp-green-og -> {green}:8080" in text
    assert "[ok] production: secret DATABASE_URL: database-url readable" in text
    # Names only, never values.
    assert DB_URL not in text and "sk-openai" not in text
    assert "[ok] production: Logs query: runs on" in text
    assert "[ok] production: database backups" in text
    assert "[ok] production: permissions on userAssignedIdentities/qlp-acr-pull" in text
    # The registry (found in its own resource group), its tags through its data plane, newest
    # first, and the groups' identity's AcrPull on it.
    assert (f"[ok] production: registry {LOGIN_SERVER}: repository qlp has 3 tags, newest "
            "v1.1.0") in text
    assert (f"[ok] production: registry pull role: qlp-acr-pull can pull from prodqlpacr: "
            f"AcrPull at {REGISTRY_ID}") in text
    exchanges = [c for c in world.double.calls_to("acr") if c.path.endswith("/oauth2/exchange")]
    assert exchanges, "the tags were read without ACR's token exchange"
    assert "[ok] slack: Slack scopes: " + ", ".join(MANIFEST_BOT_SCOPES) in text
    # The manifest asks for channels:read: conversations.info tells whether the bot is in.
    assert "[ok] slack: deployment channel: the bot is" in text
    assert "[ok] database: database: reachable, schema at head" in text


def _missing_origin_group(world: DoctorWorld) -> dict[str, Any]:
    return {"front_door": {**world.section["front_door"],
                           "origin_groups": {"blue": "qlp-blue-og", "green": "qlp-gren-og"}}}


def _wrong_origin_port(world: DoctorWorld) -> dict[str, Any]:
    world.double.add_origin(RG, PROFILE, "qlp-green-og", "qlp-green",
                            host=fqdn_for("qlp-prod-green", "eastus"), enabled=True, http_port=80)
    return {}


def _unreadable_secret(world: DoctorWorld) -> dict[str, Any]:
    world.double.revoke(VAULT_ID, "Key Vault Secrets User")
    return {}


def _logs_forbidden(world: DoctorWorld) -> dict[str, Any]:
    # Monitoring Reader on the resource group holds */read too: take both away.
    world.double.revoke(WORKSPACE_ID, "Log Analytics Reader")
    world.double.revoke(RESOURCE_GROUP_ID, "Monitoring Reader")
    return {}


def _no_chat_write(world: DoctorWorld) -> dict[str, Any]:
    world.slack.scopes = [s for s in MANIFEST_BOT_SCOPES if s != "chat:write"]
    return {}


def _missing_resource_group(world: DoctorWorld) -> dict[str, Any]:
    # Everything ARM routes through the group answers 404 ResourceGroupNotFound from now on.
    world.double.remove_resource_group(RG)
    return {}


def _missing_identity(world: DoctorWorld) -> dict[str, Any]:
    world.double.remove_identity(IDENTITY_ID)
    return {}


def _unknown_repository(world: DoctorWorld) -> dict[str, Any]:
    return {"image": "qlp-api"}


def _repository_without_tags(world: DoctorWorld) -> dict[str, Any]:
    world.double.add_repository(LOGIN_SERVER, "qlp-empty")
    return {"image": "qlp-empty"}


def _identity_without_acr_pull(world: DoctorWorld) -> dict[str, Any]:
    world.double.revoke_principal(IDENTITY_PRINCIPAL_ID, REGISTRY_ID, "AcrPull")
    return {}


def _registry_unreadable(world: DoctorWorld) -> dict[str, Any]:
    # The registry lives outside the bot's resource group: without Reader on it, it is not
    # even listed.
    world.double.revoke(REGISTRY_ID, "Reader")
    return {}


def _registry_data_plane_denied(world: DoctorWorld) -> dict[str, Any]:
    # In ABAC repository permissions mode Reader's */read no longer reads tags; the groups'
    # identity has the repository role, the bot does not.
    world.double.set_registry_mode("AbacRepositoryPermissions")
    world.double.grant_principal(IDENTITY_PRINCIPAL_ID, REGISTRY_ID,
                                 "Container Registry Repository Reader")
    return {}


BROKEN: list[tuple[str, Callable[[DoctorWorld], dict[str, Any]], str, str]] = [
    ("missing resource group", _missing_resource_group, "resource group",
     f"{RG} does not exist in subscription {SUBSCRIPTION}"),
    ("missing identity", _missing_identity, "user-assigned identity",
     f"{IDENTITY_ID} does not exist"),
    ("missing origin group", _missing_origin_group, "origin group green",
     "origin group qlp-gren-og does not exist"),
    ("wrong origin port", _wrong_origin_port, "origins green",
     "HTTP port 80 (the group listens on 8080)"),
    ("unreadable secret", _unreadable_secret, "secret DATABASE_URL", "ForbiddenByRbac"),
    ("Logs 403", _logs_forbidden, "Logs query", "AuthorizationFailed (HTTP 403)"),
    ("Slack token without chat:write", _no_chat_write, "Slack scopes", "lacks chat:write"),
    ("repository unknown", _unknown_repository, f"registry {LOGIN_SERVER}",
     f"repository qlp-api does not exist in {LOGIN_SERVER} (NAME_UNKNOWN)"),
    ("repository without tags", _repository_without_tags, f"registry {LOGIN_SERVER}",
     "repository qlp-empty has no tags"),
    ("groups' identity without AcrPull", _identity_without_acr_pull, "registry pull role",
     "qlp-acr-pull (principal 11111111-0000-0000-0000-000000000001) has no AcrPull on "
     "registry prodqlpacr"),
    ("bot cannot read the registry", _registry_unreadable, f"registry {LOGIN_SERVER}",
     f"no registry with login server {LOGIN_SERVER} that the bot can read"),
    ("bot cannot read the registry's tags", _registry_data_plane_denied,
     f"registry {LOGIN_SERVER}", "UNAUTHORIZED (HTTP 401): authentication required"),
]


@pytest.mark.parametrize(("case", "breakage", "check", "says"), BROKEN,
                         ids=[case for case, *_ in BROKEN])
def test_each_broken_setup_fails_on_its_check(world: DoctorWorld, case: str,
                                              breakage: Callable[[DoctorWorld], dict[str, Any]],
                                              check: str, says: str) -> None:
    changes = breakage(world)
    report = world.doctor(**changes)
    assert report.exit_code == 1, report.text()
    found = line(report, check)
    assert "[FAIL]" in found and says in found, report.text()
    assert "-> fix:" in found
    if case == "missing resource group":
        # Nothing inside it is reported "not yet created"; permissions say what to do first.
        groups = line(report, "container group blue")
        assert "[skipped]" in groups and f"resource group {RG} does not exist" in groups
        permissions = [r.line() for r in report.results if r.name.startswith("permissions")]
        assert permissions and all(f"create resource group {RG} first" in text
                                   for text in permissions if "[FAIL]" in text), permissions
    if case == "bot cannot read the registry's tags":
        found = line(report, f"registry {LOGIN_SERVER}")
        assert "AcrPull" in found and "Container Registry Repository Reader" in found
        assert f"--scope {REGISTRY_ID}" in found and "<the bot's principal id>" in found
        # The groups' identity holds the repository role: only the bot's read fails.
        assert "[ok]" in line(report, "registry pull role")
    if case == "groups' identity without AcrPull":
        assert [r.name for r in report.failures] == ["registry pull role"], report.text()


def test_a_missing_role_assignment_names_the_role_and_the_scope(world: DoctorWorld) -> None:
    world.double.revoke(IDENTITY_ID, "Managed Identity Operator")
    report = world.doctor()
    assert report.exit_code == 1
    found = line(report, "permissions on userAssignedIdentities/qlp-acr-pull")
    assert "[FAIL]" in found
    assert f"missing Managed Identity Operator at {IDENTITY_ID}" in found
    assert "Microsoft.ManagedIdentity/userAssignedIdentities/assign/action" in found
    assert f'--role "Managed Identity Operator" --scope {IDENTITY_ID}' in found
    # Only that scope fails.
    assert [r.name for r in report.failures] == [
        "permissions on userAssignedIdentities/qlp-acr-pull"]


def test_azure_wildcards_and_not_actions() -> None:
    contributor = [{"actions": ["*"], "notActions": ["Microsoft.Authorization/*/Write"]}]
    assert allowed(contributor, "Microsoft.Cdn/profiles/afdEndpoints/routes/write")
    assert not allowed(contributor, "Microsoft.Authorization/roleAssignments/write")
    operator = [{"actions": ["Microsoft.ManagedIdentity/userAssignedIdentities/*/assign/action"]}]
    assert allowed(operator, "microsoft.managedidentity/userAssignedIdentities/assign/action")
    reader = [{"actions": ["*/read"]}]
    assert allowed(reader, "Microsoft.Insights/metrics/read")
    assert not allowed(reader, "Microsoft.Insights/metrics/write")
    # notActions subtract only within their own entry: another role may still grant it.
    both = [*contributor, {"actions": ["Microsoft.Authorization/roleAssignments/write"]}]
    assert allowed(both, "Microsoft.Authorization/roleAssignments/write")
    assert not allowed([], "Microsoft.Cdn/profiles/read")
    assert allowed([{"dataActions": ["Microsoft.KeyVault/vaults/secrets/getSecret/action"]}],
                   "Microsoft.KeyVault/vaults/secrets/getSecret/action", data_action=True)


def test_doctor_report_has_no_failure_verdict_for_skips() -> None:
    from procedures.doctor import CheckResult, DoctorReport

    report = DoctorReport((CheckResult("slack", "Slack token", Verdict.SKIPPED, "skipped"),))
    assert report.exit_code == 0 and "1 skipped" in report.summary()
