"""The ARM double's container groups, authorization and Key Vault behave like Azure: each refusal
ARM or ACI answers, provisioning that takes model time, 200 vs 201, 409 while an operation goes
on, 403 ``AuthorizationFailed`` / ``LinkedAuthorizationFailed`` / ``ForbiddenByRbac`` once a role
is revoked, the permissions listing, and the resource group and identity GETs doctor makes.

Requests go over HTTPS with httpx (the double's certificate trusted), and once through the real
SDK client; the double's clock is a fake the tests move.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from azure.core.exceptions import HttpResponseError

from procedures.platforms.azure import AzureClients, parse_azure_settings
from procedures.platforms.azure.container_groups import build_group
from tests.azure.arm_double import SUBSCRIPTION, TOKEN, ArmDouble
from tests.azure.arm_double.authz import (
    IDENTITY_ID,
    PERMISSIONS_API_VERSION,
    RESOURCE_GROUP_ID,
    ROLES,
)
from tests.azure.test_azure_platform import StaticTokenCredential, azure_section

pytestmark = pytest.mark.slow  # starts an HTTPS server

API = "api-version=2023-05-01"
GROUPS = f"{RESOURCE_GROUP_ID}/providers/Microsoft.ContainerInstance/containerGroups"
IMAGE = "prodqlpacr.azurecr.io/qlp:v1.2.2"


class FakeClock:
    """Model seconds that only the test moves."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def double(certificate: tuple[Path, Path], clock: FakeClock) -> Iterator[ArmDouble]:
    arm = ArmDouble(*certificate, clock=clock).start()
    yield arm
    arm.stop()


@pytest.fixture
def http(double: ArmDouble, certificate: tuple[Path, Path]) -> Iterator[httpx.Client]:
    trust = ssl.create_default_context(cafile=certificate[0])
    with httpx.Client(base_url=double.url, verify=trust, timeout=10,
                      headers={"Authorization": f"Bearer {TOKEN}"}) as client:
        yield client


def body(colour: str = "blue", version: str = "v1.2.2", **changes: Any) -> dict[str, Any]:
    """The bot's own PUT body for ``colour`` (build_group, serialised as the SDK sends it)."""
    class Vault:
        url = "https://prod-qlp-kv.vault.azure.net"

    settings = parse_azure_settings(azure_section(Vault(), **changes))  # type: ignore[arg-type]
    built: dict[str, Any] = build_group(settings, colour, version, {"DATABASE_URL": "s3cr3t"},
                                        environment_name="production").serialize()
    return built


def put(http: httpx.Client, name: str, payload: Any) -> httpx.Response:
    return http.put(f"{GROUPS}/{name}?{API}", json=payload)


def error(response: httpx.Response) -> tuple[int, str, str]:
    envelope = response.json()["error"]
    return response.status_code, envelope["code"], envelope["message"]


def poll(http: httpx.Client, response: httpx.Response) -> dict[str, Any]:
    status: dict[str, Any] = http.get(response.headers["Azure-AsyncOperation"]).json()
    return status


# -- refusals ---------------------------------------------------------------------------------


def refused(http: httpx.Client, name: str, payload: dict[str, Any]) -> tuple[int, str, str]:
    response = put(http, name, payload)
    assert response.status_code >= 400, response.text
    return error(response)


def test_the_bots_body_is_accepted_and_creates_the_group(http: httpx.Client,
                                                         double: ArmDouble) -> None:
    response = put(http, "qlp-blue", body())
    assert response.status_code == 201
    assert poll(http, response)["status"] == "InProgress"
    assert response.json()["properties"]["provisioningState"] == "Pending"


def test_read_only_properties_are_ignored_not_refused_and_never_stored(
        http: httpx.Client, double: ArmDouble) -> None:
    # ARM ignores read-only properties on a PUT: a group read back and sent again is accepted.
    sent = body()
    sent["properties"]["provisioningState"] = "Succeeded"
    sent["properties"]["instanceView"] = {"state": "Running", "events": []}
    sent["properties"]["ipAddress"]["fqdn"] = "elsewhere.example.net"
    response = put(http, "qlp-blue", sent)
    assert response.status_code == 201, response.text
    props = response.json()["properties"]
    assert props["provisioningState"] == "Pending"  # the service's, not the request's
    assert props["instanceView"]["state"] == "Pending"
    assert "fqdn" not in props["ipAddress"]  # only provisioning gives the group its FQDN
    poll(http, response)
    while poll(http, response)["status"] == "InProgress":
        pass
    got = http.get(f"{GROUPS}/qlp-blue?{API}").json()["properties"]
    assert got["provisioningState"] == "Succeeded"
    assert got["ipAddress"]["fqdn"] != "elsewhere.example.net"

    # A raw GET-then-PUT of the group (id, name, type, instanceView and all) is accepted.
    again = http.get(f"{GROUPS}/qlp-blue?{API}").json()
    assert again["properties"]["instanceView"]["state"] == "Running"
    answer = put(http, "qlp-blue", again)
    assert answer.status_code == 200, answer.text
    assert answer.json()["properties"]["provisioningState"] == "Pending"


def test_a_body_outside_the_published_definition_is_refused_naming_the_property(
        http: httpx.Client) -> None:
    unknown = body()
    unknown["properties"]["containers"][0]["properties"]["cpuCount"] = 2
    status, code, message = refused(http, "qlp-blue", unknown)
    assert (status, code) == (400, "InvalidRequestContent")
    assert "$.properties.containers[0].properties.cpuCount: unknown property" in message


    bad_enum = body()
    bad_enum["properties"]["osType"] = "MacOS"
    status, code, message = refused(http, "qlp-blue", bad_enum)
    assert code == "InvalidRequestContent" and "'MacOS' is not one of Windows, Linux" in message

    no_os = body()
    del no_os["properties"]["osType"]
    assert "$.properties.osType: required property missing" in refused(http, "g", no_os)[2]

    no_requests = body()
    del no_requests["properties"]["containers"][0]["properties"]["resources"]["requests"]
    assert "resources.requests: required property missing" in refused(http, "g", no_requests)[2]

    wrong_type = body()
    wrong_type["properties"]["containers"][0]["properties"]["ports"][0]["port"] = "8080"
    assert "port: expected an integer, got a string" in refused(http, "g", wrong_type)[2]


def test_acis_own_rules(http: httpx.Client, double: ArmDouble) -> None:
    no_location = body()
    del no_location["location"]
    assert refused(http, "qlp-blue", no_location)[:2] == (400, "LocationRequired")

    no_containers = body()
    no_containers["properties"]["containers"] = []
    assert refused(http, "qlp-blue", no_containers)[:2] == (400, "MissingContainers")

    for label in ("Qlp-Prod", "1qlp", "qlp_prod", "ab-", "x" * 64):
        bad_label = body()
        bad_label["properties"]["ipAddress"]["dnsNameLabel"] = label
        status, code, message = refused(http, "qlp-blue", bad_label)
        assert (status, code) == (400, "InvalidDnsNameLabel") and label in message

    stray_port = body()
    stray_port["properties"]["ipAddress"]["ports"].append({"port": 443, "protocol": "TCP"})
    status, code, message = refused(http, "qlp-blue", stray_port)
    assert (status, code) == (400, "InvalidIpAddressPorts") and "'443'" in message

    label_and_subnet = body()
    label_and_subnet["properties"]["subnetIds"] = [{"id": f"{RESOURCE_GROUP_ID}/providers/"
                                                          "Microsoft.Network/virtualNetworks/v/"
                                                          "subnets/aci"}]
    double.grant(RESOURCE_GROUP_ID, "Network Contributor")  # the subnet join is allowed
    assert refused(http, "qlp-blue", label_and_subnet)[1] == "DnsNameLabelNotSupportedWithSubnet"

    private_with_scope = body()
    address = private_with_scope["properties"]["ipAddress"]
    address["type"] = "Private"
    del address["dnsNameLabel"]
    assert refused(http, "qlp-blue", private_with_scope)[1] == \
        "InvalidAutoGeneratedDomainNameLabelScope"

    other_identity = body()
    other_identity["properties"]["imageRegistryCredentials"][0]["identity"] = \
        IDENTITY_ID.replace("qlp-acr-pull", "someone-else")
    status, code, message = refused(http, "qlp-blue", other_identity)
    assert (status, code) == (400, "InvalidImageRegistryIdentity")
    assert "not found in container group identity list" in message

    double.remove_identity(IDENTITY_ID)
    status, code, message = refused(http, "qlp-blue", body())
    assert (status, code) == (400, "FailedIdentityOperation") and IDENTITY_ID in message
    double.add_identity(IDENTITY_ID)

    assert put(http, "qlp-blue", body()).status_code == 201
    taken = refused(http, "qlp-other", body())  # the same label, another group, same region
    assert taken[:2] == (409, "DnsNameLabelAlreadyInUse") and "qlp-blue" in taken[2]
    assert "qlp-other" not in double.groups


def test_only_pushed_tags_pull_from_a_registry_the_test_mentions(http: httpx.Client,
                                                                  double: ArmDouble) -> None:
    # A registry the test never mentions is public-ish: any tag pulls.
    assert put(http, "qlp-blue", body(version="v0.0.1")).status_code == 201
    double.push_image(IMAGE)
    status, code, message = refused(http, "qlp-green", body("green", "v9.9.9"))
    assert (status, code) == (400, "InaccessibleImage")
    assert message == ("The image 'prodqlpacr.azurecr.io/qlp:v9.9.9' in container group "
                       "'qlp-green' is not accessible. Please check the image and registry "
                       "credential.")
    assert put(http, "qlp-green", body("green", "v1.2.2")).status_code == 201


# -- provisioning on the model clock ----------------------------------------------------------


def test_provisioning_takes_model_time_then_the_group_runs(http: httpx.Client,
                                                           double: ArmDouble,
                                                           clock: FakeClock) -> None:
    double.provision_seconds = 40
    created = put(http, "qlp-blue", body())
    assert created.status_code == 201

    def group() -> dict[str, Any]:
        read: dict[str, Any] = http.get(f"{GROUPS}/qlp-blue?{API}").json()
        return read

    assert group()["properties"]["provisioningState"] == "Pending"
    assert "fqdn" not in group()["properties"]["ipAddress"]
    for _ in range(5):  # more polls than ``polls``: still InProgress before the time has come
        assert poll(http, created)["status"] == "InProgress"

    clock.now += 15
    props = group()["properties"]
    container = props["containers"][0]["properties"]["instanceView"]
    assert props["provisioningState"] == "Creating"
    assert [e["name"] for e in container["events"]] == ["Pulling"]
    assert container["currentState"]["state"] == "Waiting"

    clock.now += 20
    container = group()["properties"]["containers"][0]["properties"]["instanceView"]
    assert [e["name"] for e in container["events"]] == ["Pulling", "Pulled"]
    assert poll(http, created)["status"] == "InProgress"

    clock.now += 5
    assert poll(http, created)["status"] == "Succeeded"
    props = group()["properties"]
    assert props["provisioningState"] == "Succeeded"
    assert props["instanceView"]["state"] == "Running"
    state = props["containers"][0]["properties"]["instanceView"]["currentState"]
    assert state["state"] == "Running" and state["startTime"] == "2026-12-01T11:17:20Z"
    assert props["ipAddress"]["ip"] == "20.1.2.3"
    assert props["ipAddress"]["fqdn"].startswith("qlp-prod-blue.")
    assert "secureValue" not in str(props)


def test_a_creation_nobody_polls_still_ends_and_a_get_or_list_shows_it(
        http: httpx.Client, double: ArmDouble, clock: FakeClock) -> None:
    # Instant provisioning: ACI finishes the creation whether or not its operation is polled.
    created = put(http, "qlp-blue", body())
    assert created.status_code == 201
    props = http.get(f"{GROUPS}/qlp-blue?{API}").json()["properties"]
    assert props["provisioningState"] == "Succeeded"
    assert props["instanceView"]["state"] == "Running"
    assert props["ipAddress"]["fqdn"].startswith("qlp-prod-blue.")
    assert poll(http, created)["status"] == "Succeeded"  # the operation ended with it

    # Timed provisioning: the list settles an unpolled creation once its time is over.
    double.provision_seconds = 40
    assert put(http, "qlp-green", body("green")).status_code == 201
    listed = http.get(f"{GROUPS}?{API}").json()["value"]
    assert [(g["name"], g["properties"]["provisioningState"]) for g in listed] == [
        ("qlp-blue", "Succeeded"), ("qlp-green", "Pending")]
    clock.now += 40
    listed = http.get(f"{GROUPS}?{API}").json()["value"]
    assert [g["properties"]["provisioningState"] for g in listed] == ["Succeeded", "Succeeded"]
    assert "secureValue" not in str(listed)

    # A failed creation nobody polls reads Failed; an unpolled deletion has removed the group.
    double.provision_seconds = 0
    double.fail_next_create("InaccessibleImage", "The image is not accessible.",
                            name="qlp-red")
    assert put(http, "qlp-red", body("green", dns_name_label="qlp-red")).status_code == 201
    assert http.get(f"{GROUPS}/qlp-red?{API}").json()["properties"][
        "provisioningState"] == "Failed"
    assert http.delete(f"{GROUPS}/qlp-blue?{API}").status_code == 202
    missing = http.get(f"{GROUPS}/qlp-blue?{API}")
    assert error(missing)[:2] == (404, "ResourceNotFound")
    assert [g["name"] for g in http.get(f"{GROUPS}?{API}").json()["value"]] == [
        "qlp-green", "qlp-red"]


def test_listing_needs_read_on_the_resource_group(http: httpx.Client,
                                                  double: ArmDouble) -> None:
    double.revoke(RESOURCE_GROUP_ID, "Container Instances Deployer")
    double.revoke(RESOURCE_GROUP_ID, "Monitoring Reader")
    status, code, message = error(http.get(f"{GROUPS}?{API}"))
    assert (status, code) == (403, "AuthorizationFailed")
    assert ("'Microsoft.ContainerInstance/containerGroups/read' over scope "
            f"'{RESOURCE_GROUP_ID}'") in message


def test_an_existing_group_answers_200_and_keeps_what_aci_cannot_change(
        http: httpx.Client, double: ArmDouble, clock: FakeClock) -> None:
    double.provision_seconds = 40
    first = put(http, "qlp-blue", body())
    assert first.status_code == 201

    # While the creation goes on, another PUT or a DELETE collides with it.
    again = put(http, "qlp-blue", body())
    assert error(again)[:2] == (409, "Conflict") and "in progress" in error(again)[2]
    deleting = http.delete(f"{GROUPS}/qlp-blue?{API}")
    assert error(deleting)[:2] == (409, "Conflict")

    clock.now += 40  # done in Azure, whether or not anyone polled
    same = put(http, "qlp-blue", body(version="v1.2.3"))
    assert same.status_code == 200
    clock.now += 40

    for changes in ({"cpu": 4}, {"memory_gb": 4}, {"ports": [9090]},
                    {"restart_policy": "OnFailure"}):
        status, code, message = refused(http, "qlp-blue", body(version="v1.2.3", **changes))
        assert (status, code) == (409, "ContainerGroupUpdateNotSupported"), changes
        assert "cannot be updated in place" in message

    gone = http.delete(f"{GROUPS}/qlp-blue?{API}")
    assert gone.status_code == 202
    assert http.get(gone.headers["Location"]).status_code == 202  # polls
    clock.now += 1
    assert put(http, "qlp-blue", body(cpu=4)).status_code == 201  # the delete had ended


def test_conflict_injection_answers_409_like_a_throttle(http: httpx.Client,
                                                        double: ArmDouble) -> None:
    double.conflict_next("PUT", "/containerGroups/qlp-blue", times=1)
    status, code, message = error(put(http, "qlp-blue", body()))
    assert (status, code) == (409, "Conflict") and "concurrent request" in message
    assert put(http, "qlp-blue", body()).status_code == 201


# -- authorization ----------------------------------------------------------------------------


def test_a_revoked_role_answers_authorization_failed_as_arm_does(http: httpx.Client,
                                                                 double: ArmDouble) -> None:
    double.revoke(RESOURCE_GROUP_ID, "Container Instances Deployer")
    status, code, message = error(put(http, "qlp-blue", body()))
    assert (status, code) == (403, "AuthorizationFailed")
    assert message == (
        "The client '33333333-0000-0000-0000-0000000000cc' with object id "
        "'44444444-0000-0000-0000-0000000000dd' does not have authorization to perform action "
        "'Microsoft.ContainerInstance/containerGroups/write' over scope "
        f"'{GROUPS}/qlp-blue' or the scope is invalid. If access was recently granted, please "
        "refresh your credentials.")
    # Monitoring Reader on the resource group still lets it read.
    assert http.get(f"{GROUPS}/qlp-blue?{API}").status_code == 404
    double.revoke(RESOURCE_GROUP_ID, "Monitoring Reader")
    assert error(http.get(f"{GROUPS}/qlp-blue?{API}"))[:2] == (403, "AuthorizationFailed")
    assert "containerGroups/delete" in error(http.delete(f"{GROUPS}/qlp-blue?{API}"))[2]


def test_assigning_the_identity_needs_managed_identity_operator(http: httpx.Client,
                                                                double: ArmDouble) -> None:
    double.revoke(IDENTITY_ID, "Managed Identity Operator")
    status, code, message = error(put(http, "qlp-blue", body()))
    assert (status, code) == (403, "LinkedAuthorizationFailed")
    assert message == (
        "The client '33333333-0000-0000-0000-0000000000cc' with object id "
        "'44444444-0000-0000-0000-0000000000dd' has permission to perform action "
        "'Microsoft.ContainerInstance/containerGroups/write' on scope "
        f"'{GROUPS}/qlp-blue'; however, it does not have permission to perform action(s) "
        "'Microsoft.ManagedIdentity/userAssignedIdentities/assign/action' on the linked "
        f"scope(s) '{IDENTITY_ID}' (respectively) or the linked scope(s) are invalid.")
    # Contributor on the resource group covers the identity too (scope inheritance).
    double.grant(RESOURCE_GROUP_ID, "Contributor")
    assert put(http, "qlp-blue", body()).status_code == 201


def test_the_sdk_surfaces_arms_403(double: ArmDouble, certificate: tuple[Path, Path]) -> None:
    clients = AzureClients(StaticTokenCredential(), SUBSCRIPTION, base_url=double.url,
                           client_kwargs={"connection_verify": str(certificate[0]),
                                          "retry_total": 0, "polling_interval": 0})
    double.revoke(RESOURCE_GROUP_ID, "Container Instances Deployer")
    double.revoke(RESOURCE_GROUP_ID, "Monitoring Reader")
    groups = clients.container_instances.container_groups
    with pytest.raises(HttpResponseError) as caught:
        groups.get("prod-qlp-rg", "qlp-blue")
    assert caught.value.status_code == 403
    assert caught.value.error is not None and caught.value.error.code == "AuthorizationFailed"


def test_key_vault_refuses_a_caller_without_secrets_user(http: httpx.Client,
                                                         double: ArmDouble) -> None:
    double.add_secret("database-url", "postgresql://x")
    assert http.get("/secrets/database-url?api-version=7.5").json()["value"] == "postgresql://x"
    double.revoke(double.vault_id, "Key Vault Secrets User")
    refused = http.get("/secrets/database-url?api-version=7.5")
    assert refused.status_code == 403
    envelope = refused.json()["error"]
    assert envelope["code"] == "Forbidden"
    assert envelope["innererror"] == {"code": "ForbiddenByRbac"}
    assert envelope["message"].startswith(
        "Caller is not authorized to perform action on resource.\r\nIf role assignments, deny "
        "assignments or role definitions were changed recently, please observe propagation "
        "time.\r\nCaller: appid=33333333-0000-0000-0000-0000000000cc;")
    assert "Action: 'Microsoft.KeyVault/vaults/secrets/getSecret/action'\r\n" in \
        envelope["message"]
    assert "Assignment: (not found)" in envelope["message"]
    # A control-plane role does not grant the data action.
    double.grant(RESOURCE_GROUP_ID, "Contributor")
    assert http.get("/secrets/database-url?api-version=7.5").status_code == 403


# -- the plain resources doctor reads ---------------------------------------------------------


def test_the_resource_group_and_the_identity_answer_as_arm_does(http: httpx.Client,
                                                               double: ArmDouble) -> None:
    rg = http.get(RESOURCE_GROUP_ID.replace("resourceGroups", "resourcegroups"),
                  params={"api-version": "2021-04-01"})
    assert rg.status_code == 200
    assert rg.json() == {"id": RESOURCE_GROUP_ID, "name": "prod-qlp-rg",
                         "type": "Microsoft.Resources/resourceGroups", "location": "eastus",
                         "properties": {"provisioningState": "Succeeded"}}
    other = RESOURCE_GROUP_ID.replace("prod-qlp-rg", "prod-qlp-rgx")
    # ARM authorizes first: without a role there, a missing group is a 403 like any scope.
    assert error(http.get(other, params={"api-version": "2021-04-01"}))[:2] == (
        403, "AuthorizationFailed")
    double.grant(f"/subscriptions/{SUBSCRIPTION}", "Reader")
    assert error(http.get(other, params={"api-version": "2021-04-01"})) == (
        404, "ResourceGroupNotFound", "Resource group 'prod-qlp-rgx' could not be found.")
    assert error(http.get(RESOURCE_GROUP_ID, params={"api-version": "2019-01-01"}))[:2] == (
        400, "InvalidApiVersionParameter")

    identity = http.get(IDENTITY_ID, params={"api-version": "2023-01-31"})
    assert identity.status_code == 200
    assert identity.json()["properties"]["clientId"] == "22222222-0000-0000-0000-000000000002"
    # The same principal a container group shows for the identity assigned to it.
    assert put(http, "qlp-blue", body()).status_code == 201
    shown = http.get(f"{GROUPS}/qlp-blue?{API}").json()["identity"]["userAssignedIdentities"]
    assert shown[IDENTITY_ID]["clientId"] == identity.json()["properties"]["clientId"]
    double.remove_identity(IDENTITY_ID)
    status, code, message = error(http.get(IDENTITY_ID, params={"api-version": "2023-01-31"}))
    assert (status, code) == (404, "ResourceNotFound")
    assert message.startswith("The Resource 'Microsoft.ManagedIdentity/userAssignedIdentities/"
                              "qlp-acr-pull' under resource group 'prod-qlp-rg' was not found.")

    # Without the resource group, everything under it is ResourceGroupNotFound.
    double.add_identity(IDENTITY_ID)
    double.remove_resource_group("prod-qlp-rg")
    for answer in (http.get(IDENTITY_ID, params={"api-version": "2023-01-31"}),
                   http.get(f"{GROUPS}/qlp-blue?{API}"), put(http, "qlp-green", body("green"))):
        assert error(answer)[:2] == (404, "ResourceGroupNotFound")
    assert "qlp-green" not in double.groups


def test_reading_the_resource_group_or_identity_needs_a_role(http: httpx.Client,
                                                             double: ArmDouble) -> None:
    double.revoke(RESOURCE_GROUP_ID, "Monitoring Reader")  # its */read covered both
    status, code, message = error(http.get(RESOURCE_GROUP_ID,
                                           params={"api-version": "2021-04-01"}))
    assert (status, code) == (403, "AuthorizationFailed")
    assert ("'Microsoft.Resources/subscriptions/resourceGroups/read' over scope "
            f"'{RESOURCE_GROUP_ID}'") in message
    # Managed Identity Operator on the identity still lets the bot read the identity.
    assert http.get(IDENTITY_ID, params={"api-version": "2023-01-31"}).status_code == 200
    double.revoke(IDENTITY_ID, "Managed Identity Operator")
    status, code, message = error(http.get(IDENTITY_ID, params={"api-version": "2023-01-31"}))
    assert (status, code) == (403, "AuthorizationFailed")
    assert "userAssignedIdentities/read" in message


def test_the_permissions_listing_answers_the_roles_effective_at_a_scope(
        http: httpx.Client, double: ArmDouble, certificate: tuple[Path, Path]) -> None:
    def listed(scope: str) -> list[dict[str, list[str]]]:
        response = http.get(f"{scope}/providers/Microsoft.Authorization/permissions",
                            params={"api-version": PERMISSIONS_API_VERSION})
        assert response.status_code == 200, response.text
        value: list[dict[str, list[str]]] = response.json()["value"]
        return value

    deployer, monitoring = ROLES["Container Instances Deployer"], ROLES["Monitoring Reader"]
    assert listed(RESOURCE_GROUP_ID) == [deployer, monitoring]
    assert listed(IDENTITY_ID) == [deployer, ROLES["Managed Identity Operator"], monitoring]
    assert listed(double.vault_id) == [deployer, {
        "actions": [], "notActions": [], "notDataActions": [],
        "dataActions": ["Microsoft.KeyVault/vaults/secrets/getSecret/action",
                        "Microsoft.KeyVault/vaults/secrets/readMetadata/action"]}, monitoring]
    double.revoke(RESOURCE_GROUP_ID, "Monitoring Reader")
    assert listed(RESOURCE_GROUP_ID) == [deployer]
    other_rg = f"/subscriptions/{SUBSCRIPTION}/resourceGroups/elsewhere"
    missing = http.get(f"{other_rg}/providers/Microsoft.Authorization/permissions",
                       params={"api-version": PERMISSIONS_API_VERSION})
    assert error(missing) == (404, "ResourceGroupNotFound",
                              "Resource group 'elsewhere' could not be found.")
    double.add_resource_group("elsewhere")
    assert listed(other_rg) == []
    unauthenticated = httpx.get(
        f"{double.url}{RESOURCE_GROUP_ID}/providers/Microsoft.Authorization/permissions",
        params={"api-version": PERMISSIONS_API_VERSION},
        verify=ssl.create_default_context(cafile=certificate[0]))
    assert unauthenticated.status_code == 401


def test_a_double_without_roles_refuses_everything(certificate: tuple[Path, Path],
                                                   clock: FakeClock) -> None:
    arm = ArmDouble(*certificate, clock=clock, roles="none").start()
    try:
        assert arm.assignments == []
        assert arm.check_access("Microsoft.Cdn/profiles/afdEndpoints/routes/write",
                                f"{RESOURCE_GROUP_ID}/providers/Microsoft.Cdn/profiles/p") \
            is not None
        arm.grant_bot_roles()
        route = (f"{RESOURCE_GROUP_ID}/providers/Microsoft.Cdn/profiles/qlp-frontdoor/"
                 "afdEndpoints/e/routes/r")
        assert arm.check_access("Microsoft.Cdn/profiles/afdEndpoints/routes/write", route) is None
        classic = f"{RESOURCE_GROUP_ID}/providers/Microsoft.Network/frontDoors/qlp-classic-fd"
        assert arm.check_access("Microsoft.Network/frontDoors/write", classic) is None
        assert arm.check_access("Microsoft.Insights/metrics/read", f"{GROUPS}/qlp-blue") is None
        assert arm.check_access("Microsoft.OperationalInsights/workspaces/query/read",
                                arm.workspace_id) is None
        # Writes outside what the bot is given are refused.
        assert arm.check_access("Microsoft.Network/frontDoors/write",
                                classic.replace("qlp-classic-fd", "other")) is not None
        assert arm.check_access("Microsoft.Authorization/roleAssignments/write",
                                RESOURCE_GROUP_ID) is not None
    finally:
        arm.stop()


def test_contributor_does_not_write_role_assignments(double: ArmDouble) -> None:
    double.grant(RESOURCE_GROUP_ID, "Contributor")
    assert double.check_access("Microsoft.Authorization/roleAssignments/write",
                               RESOURCE_GROUP_ID) is not None
    assert double.check_access("Microsoft.Cdn/profiles/write",
                               f"{RESOURCE_GROUP_ID}/providers/Microsoft.Cdn/profiles/x") is None
