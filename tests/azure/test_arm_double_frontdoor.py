"""The Front Door part of the ARM double behaves like Azure Front Door: origin groups are
resources a route must point at, PATCH bodies are validated, a change's ``deploymentStatus``
and the edge follow the propagation time on the model clock (a rollout made to fail reads
``Failed``, and the bot's switch stops on it without retrying), and ARM's authorization is asked
first. Also the application stand-in (``tests.azure.app_standin``) that serves what the edge
serves, and the fresh-environment world (``tests.azure.fresh_world``).

Driven through the real azure-mgmt-cdn client where the bot uses it, and through raw signed
HTTPS (httpx) where the point is the wire (bodies the SDK would never send, status codes and
headers)."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from azure.core.exceptions import HttpResponseError
from azure.mgmt.cdn import CdnManagementClient
from azure.mgmt.cdn.models import (
    AFDOriginUpdateParameters,
    AFDOriginUpdatePropertiesParameters,
    ResourceReference,
    RouteUpdateParameters,
    RouteUpdatePropertiesParameters,
)

from procedures.errors import StepFailure
from procedures.model import Slot
from procedures.platforms.azure import AzureClients, AzurePlatform
from procedures.policy import Environment
from tests.azure.app_standin import AppStandIn
from tests.azure.arm_double import API_VERSIONS, SUBSCRIPTION, TOKEN, Answer, ArmDouble
from tests.azure.arm_double.core import _error
from tests.azure.fresh_world import (
    fqdn_for,
    fresh_classic_front_door,
    fresh_front_door,
    fresh_origins_front_door,
)
from tests.azure.test_azure_platform import (
    FRONT_DOORS,
    FakeTime,
    StaticTokenCredential,
    azure_section,
)

RG = "prod-qlp-rg"
PROFILE = f"/subscriptions/{SUBSCRIPTION}/resourceGroups/{RG}/providers/Microsoft.Cdn/profiles/" \
          "qlp-frontdoor"
ROUTE_PATH = f"{PROFILE}/afdEndpoints/qlp-endpoint/routes/default-route"
CDN = {"api-version": API_VERSIONS["cdn"]}
ROUTE = ("qlp-frontdoor", "qlp-endpoint", "default-route")


class ModelClock:
    """Model time the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> ModelClock:
    return ModelClock()


@pytest.fixture
def arm(certificate: tuple[Path, Path], clock: ModelClock) -> Iterator[ArmDouble]:
    double = ArmDouble(*certificate, polls=1, clock=clock).start()
    yield double
    double.stop()


@pytest.fixture
def http(arm: ArmDouble, certificate: tuple[Path, Path]) -> Iterator[httpx.Client]:
    context = ssl.create_default_context(cafile=str(certificate[0]))
    with httpx.Client(base_url=arm.url, verify=context, timeout=10,
                      headers={"Authorization": f"Bearer {TOKEN}"}) as client:
        yield client


@pytest.fixture
def cdn(arm: ArmDouble, certificate: tuple[Path, Path]) -> Iterator[CdnManagementClient]:
    client = CdnManagementClient(StaticTokenCredential(), SUBSCRIPTION, base_url=arm.url,
                                 connection_verify=str(certificate[0]), polling_interval=0,
                                 retry_total=0)
    yield client
    client.close()


@pytest.fixture
def app(arm: ArmDouble) -> Iterator[AppStandIn]:
    stand_in = AppStandIn(arm)
    yield stand_in
    stand_in.stop()


def point_route(cdn: CdnManagementClient, group: str) -> None:
    """What the bot's switch does: PATCH the route's originGroup and wait for the operation."""
    update = RouteUpdateParameters(properties=RouteUpdatePropertiesParameters(
        origin_group=ResourceReference(id=f"{PROFILE}/originGroups/{group}")))
    cdn.routes.begin_update(RG, *ROUTE, update).result()


def running_group(arm: ArmDouble, colour: str, version: str, *, state: str = "Succeeded",
                  port: int = 8080) -> str:
    """A container group as the double leaves it once created (``state`` its provisioning
    state), at the FQDN ``fresh_front_door``'s origins expect; its FQDN."""
    name, fqdn = f"qlp-{colour}", fqdn_for(f"qlp-prod-{colour}", "eastus")
    with arm.lock:
        arm.groups[name] = {
            "id": f"/subscriptions/{SUBSCRIPTION}/resourceGroups/{RG}/providers/"
                  f"Microsoft.ContainerInstance/containerGroups/{name}",
            "name": name, "location": "eastus", "tags": {"qlp-version": version},
            "properties": {
                "provisioningState": state,
                "ipAddress": {"type": "Public", "dnsNameLabel": f"qlp-prod-{colour}",
                              "fqdn": fqdn, "ports": [{"port": port, "protocol": "TCP"}]},
                "instanceView": {"state": "Running" if state == "Succeeded" else "Pending"},
                "containers": []}}
    return fqdn


# -- origin groups and the route's reference ---------------------------------------------------


def test_route_must_point_at_an_existing_origin_group_with_an_enabled_origin(
        arm: ArmDouble, cdn: CdnManagementClient) -> None:
    fresh_front_door(arm)
    arm.add_origin_group(RG, "qlp-frontdoor", "qlp-empty-og")

    for group in ("qlp-nope-og", "qlp-empty-og"):
        with pytest.raises(HttpResponseError) as refused:
            point_route(cdn, group)
        assert refused.value.status_code == 400
        assert refused.value.error is not None and refused.value.error.code == "BadRequest"
        assert "originGroup is created successfully and at least one enabled origin" in \
            str(refused.value.error.message)
    assert arm.route_origin_group(*ROUTE) == "qlp-blue-og"
    assert not arm.calls_to("operation")  # refused before any operation started

    # Another profile's group is refused too; the profile's own green group is taken.
    other = PROFILE.replace("qlp-frontdoor", "other-fd")
    update = RouteUpdateParameters(properties=RouteUpdatePropertiesParameters(
        origin_group=ResourceReference(id=f"{other}/originGroups/qlp-green-og")))
    with pytest.raises(HttpResponseError, match="not in profile qlp-frontdoor"):
        cdn.routes.begin_update(RG, *ROUTE, update).result()
    point_route(cdn, "qlp-green-og")
    assert arm.route_origin_group(*ROUTE) == "qlp-green-og"

    # The origin groups are resources: GET one, list the profile's, list a group's origins.
    found = cdn.afd_origin_groups.get(RG, "qlp-frontdoor", "qlp-green-og")
    assert found.name == "qlp-green-og"
    names = {g.name for g in cdn.afd_origin_groups.list_by_profile(RG, "qlp-frontdoor")}
    assert names == {"qlp-blue-og", "qlp-green-og", "qlp-empty-og"}
    origins = list(cdn.afd_origins.list_by_origin_group(RG, "qlp-frontdoor", "qlp-green-og"))
    assert [(o.host_name, o.http_port) for o in origins] == [
        (fqdn_for("qlp-prod-green", "eastus"), 8080)]
    with pytest.raises(HttpResponseError) as missing:
        cdn.afd_origin_groups.get(RG, "qlp-frontdoor", "qlp-nope-og")
    assert missing.value.status_code == 404


def test_the_profile_answers_once_it_has_origin_groups_and_needs_read(
        arm: ArmDouble, cdn: CdnManagementClient, http: httpx.Client) -> None:
    assert http.get(PROFILE, params=CDN).json()["error"]["code"] == "ResourceNotFound"
    fresh_front_door(arm)
    profile = cdn.profiles.get(RG, "qlp-frontdoor")
    assert profile.sku is not None and profile.sku.name == "Standard_AzureFrontDoor"
    assert profile.provisioning_state == "Succeeded"
    arm.revoke(PROFILE, "CDN Profile Contributor")
    arm.revoke(PROFILE.split("/providers/")[0], "Monitoring Reader")
    with pytest.raises(HttpResponseError) as denied:
        cdn.profiles.get(RG, "qlp-frontdoor")
    assert denied.value.status_code == 403 and "Microsoft.Cdn/profiles/read" in str(denied.value)


def test_route_patch_with_an_unknown_property_or_a_bad_enum_is_refused(
        arm: ArmDouble, http: httpx.Client) -> None:
    fresh_front_door(arm)
    # deploymentStatus is a Route's, not a RouteUpdateParameters' (the PATCH body's)
    # property: unknown there, not read-only.
    for properties in ({"originGroupId": f"{PROFILE}/originGroups/qlp-green-og"},
                       {"deploymentStatus": "Succeeded"},
                       {"linkToDefaultDomain": "Sometimes"}):
        answer = http.patch(ROUTE_PATH, params=CDN, json={"properties": properties})
        assert answer.status_code == 400, properties
        error = answer.json()["error"]
        assert error["code"] == "BadRequest"
        assert next(iter(properties)) in error["message"]
    assert arm.route_origin_group(*ROUTE) == "qlp-blue-og"


def test_route_patch_ignores_read_only_properties_as_arm_does(
        arm: ArmDouble, http: httpx.Client) -> None:
    fresh_front_door(arm)
    arm.propagation_seconds = 60
    # endpointName is RouteUpdatePropertiesParameters' one read-only property.
    before = http.get(ROUTE_PATH, params=CDN).json()["properties"].get("endpointName")
    answer = http.patch(ROUTE_PATH, params=CDN, json={"properties": {
        "originGroup": {"id": f"{PROFILE}/originGroups/qlp-green-og"},
        "endpointName": "elsewhere"}})
    assert answer.status_code == 202, answer.text
    route = answer.json()["properties"]
    # The writable part applies; the server-owned value is the service's own.
    assert route["originGroup"]["id"].endswith("/qlp-green-og")
    assert route.get("endpointName") == before
    assert route["deploymentStatus"] == "InProgress"
    assert arm.route_origin_group(*ROUTE) == "qlp-green-og"


# -- propagation ---------------------------------------------------------------------------


def test_route_change_propagates_on_the_model_clock(arm: ArmDouble, cdn: CdnManagementClient,
                                                    clock: ModelClock) -> None:
    fresh_front_door(arm)
    arm.propagation_seconds = 90
    assert cdn.routes.get(RG, *ROUTE).deployment_status == "Succeeded"

    point_route(cdn, "qlp-green-og")
    # ARM has the new configuration and the operation finished; the edge has not caught up.
    route = cdn.routes.get(RG, *ROUTE)
    assert route.origin_group is not None and route.origin_group.id is not None
    assert route.origin_group.id.endswith("/qlp-green-og")
    assert route.deployment_status == "InProgress" and route.provisioning_state == "Succeeded"
    assert arm.route_origin_group(*ROUTE) == "qlp-green-og"
    assert arm.served_origin_group(*ROUTE) == "qlp-blue-og"

    clock.advance(89.5)
    assert cdn.routes.get(RG, *ROUTE).deployment_status == "InProgress"
    assert arm.served_origin_group(*ROUTE) == "qlp-blue-og"
    clock.advance(0.5)
    assert cdn.routes.get(RG, *ROUTE).deployment_status == "Succeeded"
    assert arm.served_origin_group(*ROUTE) == "qlp-green-og"


def test_the_edge_waits_for_the_operation_even_without_propagation_time(
        arm: ArmDouble, http: httpx.Client) -> None:
    fresh_front_door(arm)
    answer = http.patch(ROUTE_PATH, params=CDN, json={"properties": {"originGroup": {
        "id": f"{PROFILE}/originGroups/qlp-green-og"}}})
    assert answer.status_code == 202
    assert answer.json()["properties"]["provisioningState"] == "Updating"
    assert answer.json()["properties"]["deploymentStatus"] == "InProgress"
    operation = answer.headers["Azure-AsyncOperation"].removeprefix(arm.url)
    assert arm.served_origin_group(*ROUTE) == "qlp-blue-og"
    assert http.get(operation).json()["status"] == "InProgress"
    assert arm.served_origin_group(*ROUTE) == "qlp-blue-og"
    assert http.get(operation).json()["status"] == "Succeeded"
    assert arm.served_origin_group(*ROUTE) == "qlp-green-og"
    route = http.get(ROUTE_PATH, params=CDN).json()
    assert route["properties"]["deploymentStatus"] == "Succeeded"


def test_origin_switch_is_validated_answers_202_and_propagates(
        arm: ArmDouble, cdn: CdnManagementClient, http: httpx.Client,
        clock: ModelClock) -> None:
    fresh_origins_front_door(arm)
    green = f"{PROFILE}/originGroups/qlp-og/origins/qlp-green"
    for properties in ({"weight": 0}, {"weight": 1001}, {"priority": 6}, {"httpPort": 0},
                       {"httpsPort": 65536}, {"enabledState": "On"}, {"colour": "green"}):
        answer = http.patch(green, params=CDN, json={"properties": properties})
        assert answer.status_code == 400, properties
        assert answer.json()["error"]["code"] == "BadRequest"
    assert arm.origin("qlp-frontdoor", "qlp-og", "qlp-green")["properties"]["weight"] == 1000
    assert not arm.calls_to("operation")

    arm.propagation_seconds = 60
    answer = http.patch(green, params=CDN, json={"properties": {"enabledState": "Enabled",
                                                                "weight": 1000}})
    assert answer.status_code == 202 and "Azure-AsyncOperation" in answer.headers
    assert answer.json()["properties"]["deploymentStatus"] == "InProgress"
    assert answer.json()["properties"]["enabledState"] == "Enabled"
    http.get(answer.headers["Azure-AsyncOperation"].removeprefix(arm.url))
    http.get(answer.headers["Azure-AsyncOperation"].removeprefix(arm.url))
    # Through the SDK, as the bot disables the old colour.
    cdn.afd_origins.begin_update(RG, "qlp-frontdoor", "qlp-og", "qlp-blue",
                                 AFDOriginUpdateParameters(
                                     properties=AFDOriginUpdatePropertiesParameters(
                                         enabled_state="Disabled"))).result()
    blue = cdn.afd_origins.get(RG, "qlp-frontdoor", "qlp-og", "qlp-blue")
    assert blue.enabled_state == "Disabled" and blue.deployment_status == "InProgress"
    assert arm.served_origin("qlp-frontdoor", "qlp-og") == "qlp-blue"

    clock.advance(60)
    assert arm.served_origin("qlp-frontdoor", "qlp-og") == "qlp-green"
    assert cdn.afd_origins.get(RG, "qlp-frontdoor", "qlp-og",
                               "qlp-blue").deployment_status == "Succeeded"


def test_an_injected_rollout_failure_reads_failed_and_never_reaches_the_edge(
        arm: ArmDouble, cdn: CdnManagementClient, clock: ModelClock) -> None:
    fresh_front_door(arm)
    arm.propagation_seconds = 30
    arm.fail_deployment("qlp-frontdoor", endpoint="qlp-endpoint", route="default-route")
    point_route(cdn, "qlp-green-og")  # ARM accepts the write: its operation Succeeds
    route = cdn.routes.get(RG, *ROUTE)
    assert (route.provisioning_state, route.deployment_status) == ("Succeeded", "InProgress")
    clock.advance(30)
    assert cdn.routes.get(RG, *ROUTE).deployment_status == "Failed"
    assert arm.route_origin_group(*ROUTE) == "qlp-green-og"
    clock.advance(600)
    assert arm.served_origin_group(*ROUTE) == "qlp-blue-og"  # the edge never got it

    # The failure is used up: the next write (an undo, or a retry) rolls out.
    point_route(cdn, "qlp-green-og")
    clock.advance(30)
    assert cdn.routes.get(RG, *ROUTE).deployment_status == "Succeeded"
    assert arm.served_origin_group(*ROUTE) == "qlp-green-og"

    # On origins: only the named origin's write fails.
    fresh_origins_front_door(arm, profile="qlp-other")
    arm.grant(PROFILE.replace("qlp-frontdoor", "qlp-other"), "CDN Profile Contributor")
    arm.fail_deployment("qlp-other", origin_group="qlp-og", origin="qlp-green")
    origins = cdn.afd_origins
    for name, state in (("qlp-green", "Enabled"), ("qlp-blue", "Disabled")):
        origins.begin_update(RG, "qlp-other", "qlp-og", name, AFDOriginUpdateParameters(
            properties=AFDOriginUpdatePropertiesParameters(enabled_state=state))).result()
    clock.advance(30)
    assert [origins.get(RG, "qlp-other", "qlp-og", name).deployment_status
            for name in ("qlp-green", "qlp-blue")] == ["Failed", "Succeeded"]
    assert arm.served_origins("qlp-other", "qlp-og") == []  # blue off, green never on

    with pytest.raises(ValueError, match="not both"):
        arm.fail_deployment("qlp-frontdoor", route="default-route", origin="qlp-blue")


def test_the_bots_switch_stops_on_a_failed_rollout_without_retrying(
        certificate: tuple[Path, Path]) -> None:
    fake_time = FakeTime()
    start = fake_time.clock.now()
    arm = ArmDouble(*certificate, polls=1,
                    clock=lambda: (fake_time.clock.now() - start).total_seconds()).start()
    app = AppStandIn(arm, FRONT_DOORS["route"])
    env = Environment.model_validate({
        "platform": "azure", "url": "https://api.qlp-hq.com", "health": ["/health"],
        "azure": azure_section(arm, "route", secrets={})})
    clients = AzureClients(StaticTokenCredential(), SUBSCRIPTION, base_url=arm.url,
                           client_kwargs={"connection_verify": str(certificate[0]),
                                          "polling_interval": 0, "retry_total": 0})
    platform = AzurePlatform("production", env, clients=clients,
                             slot_base=lambda slot, host: app.host_url(host),
                             public_url=app.public_url, clock=fake_time.clock,
                             sleep=fake_time.sleep)
    try:
        fresh_front_door(arm)
        platform.deploy(Slot.BLUE, "v1.0.0")
        platform.deploy(Slot.GREEN, "v1.1.0")
        arm.propagation_seconds = 20
        arm.fail_deployment("qlp-frontdoor")
        slept = sum(fake_time.sleeps)
        with pytest.raises(StepFailure) as failed:
            platform.switch(Slot.GREEN)
        assert not failed.value.retryable
        assert "deploymentStatus Failed for the switch to green" in str(failed.value)
        assert len(arm.calls_to("route", "PATCH")) == 1  # waited, then stopped: no re-PATCH
        assert sum(fake_time.sleeps) - slept >= 20  # it waited while the rollout went on
        assert arm.served_origin_group(*ROUTE) == "qlp-blue-og"
    finally:
        platform.close()
        app.stop()
        arm.stop()


def test_classic_front_door_serves_the_old_pool_while_propagating(
        arm: ArmDouble, http: httpx.Client, clock: ModelClock) -> None:
    fresh_classic_front_door(arm)
    arm.propagation_seconds = 30
    path = (f"/subscriptions/{SUBSCRIPTION}/resourceGroups/{RG}/providers/"
            "Microsoft.Network/frontDoors/qlp-classic-fd")
    params = {"api-version": API_VERSIONS["frontdoor"]}
    # A raw GET-then-PUT, read-only properties and all, as against Azure.
    front_door = http.get(path, params=params).json()
    forwarding = front_door["properties"]["routingRules"][0]["properties"]["routeConfiguration"]
    fd_id = front_door["properties"]["routingRules"][0]["id"].split("/routingRules/")[0]

    forwarding["backendPool"]["id"] = fd_id + "/backendPools/qlp-missing-pool"
    assert http.put(path, params=params, json=front_door).status_code == 400

    forwarding["backendPool"]["id"] = fd_id + "/backendPools/qlp-green-pool"
    answer = http.put(path, params=params, json=front_door)
    assert answer.status_code == 202
    operation = answer.headers["Azure-AsyncOperation"].removeprefix(arm.url)
    while http.get(operation).json()["status"] == "InProgress":
        pass
    assert arm.classic_pool("qlp-classic-fd", "default-routing-rule") == "qlp-green-pool"
    assert arm.classic_served_pool("qlp-classic-fd", "default-routing-rule") == "qlp-blue-pool"
    clock.advance(30)
    assert arm.classic_served_pool("qlp-classic-fd", "default-routing-rule") == "qlp-green-pool"


def test_a_classic_get_then_put_with_read_only_fields_keeps_the_server_owned_values(
        arm: ArmDouble, http: httpx.Client) -> None:
    fresh_classic_front_door(arm)
    path = (f"/subscriptions/{SUBSCRIPTION}/resourceGroups/{RG}/providers/"
            "Microsoft.Network/frontDoors/qlp-classic-fd")
    params = {"api-version": API_VERSIONS["frontdoor"]}
    before = http.get(path, params=params).json()
    sent = http.get(path, params=params).json()
    props = sent["properties"]
    # Every kind of read-only field the classic body has, sent with values of the caller's.
    assert {"provisioningState", "resourceState", "cname"} <= set(props)
    sent["id"], sent["name"], sent["type"] = "/elsewhere", "other-fd", "Microsoft.Network/x"
    props.update(provisioningState="Failed", resourceState="Disabled",
                 cname="evil.azurefd.net", frontdoorId="not-ours")
    rule = props["routingRules"][0]
    rule["type"] = "Microsoft.Network/Frontdoors/Elsewhere"
    rule["properties"]["resourceState"] = "Deleting"
    rule["properties"]["routeConfiguration"]["backendPool"]["id"] = \
        rule["id"].split("/routingRules/")[0] + "/backendPools/qlp-green-pool"
    props["frontendEndpoints"][0]["properties"]["customHttpsProvisioningState"] = "Enabled"

    answer = http.put(path, params=params, json=sent)
    assert answer.status_code == 202, answer.text
    after = http.get(path, params=params).json()
    # The writable change applied...
    assert arm.classic_pool("qlp-classic-fd", "default-routing-rule") == "qlp-green-pool"
    # ... and every server-owned value is as it was.
    for key in ("id", "name", "type"):
        assert after[key] == before[key]
    for key in ("provisioningState", "resourceState", "cname"):
        assert after["properties"][key] == before["properties"][key]
    assert "frontdoorId" not in after["properties"]  # the request's value never stored
    after_rule = after["properties"]["routingRules"][0]
    assert after_rule["type"] == before["properties"]["routingRules"][0]["type"]
    assert after_rule["properties"]["resourceState"] == "Enabled"
    endpoint = after["properties"]["frontendEndpoints"][0]["properties"]
    assert "customHttpsProvisioningState" not in endpoint
    assert after["properties"]["backendPools"] == before["properties"]["backendPools"]


# -- authorization -------------------------------------------------------------------------


class RouteWriteDenied(ArmDouble):
    """A double whose caller lacks ``routes/write`` (a reader role on the profile)."""

    def check_access(self, action: str, scope: str) -> Answer | None:
        self.asked.append((action, scope))
        if action == "Microsoft.Cdn/profiles/afdEndpoints/routes/write":
            return _error(403, "AuthorizationFailed",
                          f"The client does not have authorization to perform action "
                          f"'{action}' over scope '{scope}' or the scope is invalid.")
        return super().check_access(action, scope)

    def _setup(self) -> None:
        super()._setup()
        self.asked: list[tuple[str, str]] = []


def test_each_handler_asks_for_access_and_a_denial_reaches_the_client(
        certificate: tuple[Path, Path], clock: ModelClock) -> None:
    double = RouteWriteDenied(*certificate, polls=1, clock=clock).start()
    client = CdnManagementClient(StaticTokenCredential(), SUBSCRIPTION, base_url=double.url,
                                 connection_verify=str(certificate[0]), polling_interval=0,
                                 retry_total=0)
    try:
        fresh_front_door(double)
        assert cdn_route_group(client) == "qlp-blue-og"  # reading is allowed
        with pytest.raises(HttpResponseError) as denied:
            point_route(client, "qlp-green-og")
        assert denied.value.status_code == 403
        assert denied.value.error is not None
        assert denied.value.error.code == "AuthorizationFailed"
        assert "afdEndpoints/routes/write" in str(denied.value.error.message)
        assert double.route_origin_group(*ROUTE) == "qlp-blue-og"
        client.afd_origins.get(RG, "qlp-frontdoor", "qlp-blue-og", "qlp-blue")
        assert [action for action, _ in double.asked] == [
            "Microsoft.Cdn/profiles/afdEndpoints/routes/read",
            "Microsoft.Cdn/profiles/afdEndpoints/routes/write",
            "Microsoft.Cdn/profiles/originGroups/origins/read"]
        assert double.asked[1][1] == ROUTE_PATH
    finally:
        client.close()
        double.stop()


def cdn_route_group(client: CdnManagementClient) -> str:
    route = client.routes.get(RG, *ROUTE)
    assert route.origin_group is not None and route.origin_group.id is not None
    return route.origin_group.id.rsplit("/", 1)[-1]


# -- the application stand-in --------------------------------------------------------------


def test_fresh_world_public_url_answers_502_until_blue_runs(arm: ArmDouble,
                                                            app: AppStandIn) -> None:
    fqdns = fresh_front_door(arm)
    assert not arm.groups
    assert fqdns["blue"].startswith("qlp-prod-blue.") and fqdns["blue"].endswith(
        ".eastus.azurecontainer.io")
    answer = httpx.get(f"{app.public_url}/health", timeout=5)
    assert answer.status_code == 502 and "X-Azure-Ref" in answer.headers

    running_group(arm, "blue", "v1.0.0", state="Creating")
    assert httpx.get(f"{app.public_url}/health", timeout=5).status_code == 503
    running_group(arm, "blue", "v1.0.0")
    answer = httpx.get(f"{app.public_url}/health", timeout=5)
    assert answer.status_code == 200 and answer.json() == {"status": "ok", "version": "v1.0.0"}

    # An origin whose port the group does not expose is unreachable.
    running_group(arm, "blue", "v1.0.0", port=80)
    assert httpx.get(f"{app.public_url}/health", timeout=5).status_code == 502


def test_public_url_serves_the_edge_colour_in_each_health_mode(
        arm: ArmDouble, cdn: CdnManagementClient, clock: ModelClock) -> None:
    fresh_front_door(arm)
    blue = running_group(arm, "blue", "v1.0.0")
    running_group(arm, "green", "v1.1.0")
    arm.propagation_seconds = 90
    plain = AppStandIn(arm, health_mode="plain")
    bare = AppStandIn(arm, health_mode="bare-version")
    try:
        answer = httpx.get(f"{plain.public_url}/health", timeout=5)
        assert answer.status_code == 200 and answer.text == "OK"
        assert answer.headers["content-type"].startswith("text/plain")
        assert httpx.get(f"{bare.host_url(blue)}/health", timeout=5).json() == {
            "version": "1.0.0"}

        point_route(cdn, "qlp-green-og")
        assert httpx.get(f"{bare.public_url}/health", timeout=5).json() == {"version": "1.0.0"}
        clock.advance(90)
        assert httpx.get(f"{bare.public_url}/health", timeout=5).json() == {"version": "1.1.0"}
        assert [s.group for s in bare.seen_public("/health")] == ["qlp-blue", "qlp-green"]
    finally:
        plain.stop()
        bare.stop()


def test_overrides_headers_and_connections_are_recorded(arm: ArmDouble, app: AppStandIn,
                                                        clock: ModelClock) -> None:
    fresh_origins_front_door(arm)
    running_group(arm, "blue", "v1.0.0")
    green = running_group(arm, "green", "v1.1.0")
    app.override("green", 500, after=10)
    assert httpx.get(f"{app.host_url(green)}/health", timeout=5).status_code == 200
    clock.advance(10)
    assert httpx.get(f"{app.host_url(green)}/health", timeout=5).status_code == 500
    assert httpx.get(f"{app.public_url}/health", timeout=5).status_code == 200  # blue is live

    # Two probes on fresh connections come from two ports; two on one kept-alive client, one.
    for _ in range(2):
        httpx.get(f"{app.public_url}/health", headers={"Cache-Control": "no-cache"}, timeout=5)
    with httpx.Client(timeout=5) as pooled:
        for _ in range(2):
            pooled.get(f"{app.public_url}/health")
    probes = app.seen_public("/health")[-4:]
    assert [p.headers.get("cache-control") for p in probes] == ["no-cache", "no-cache",
                                                                None, None]
    assert probes[0].client_port != probes[1].client_port
    assert probes[2].client_port == probes[3].client_port
