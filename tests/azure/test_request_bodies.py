"""The request bodies the bot sends for its Azure writes validate against Azure's published REST
definitions, stored in ``tests/azure/specs`` (``specs/PROVENANCE.md`` says where each came from):
the container group PUT (``ContainerGroup``, 2023-05-01), the route PATCH
(``RouteUpdateParameters``, 2026-10-01), the origin PATCHes (``AFDOriginUpdateParameters``) and
the classic Front Door's whole-object PUT (``FrontDoor``, 2025-10-01, whose routing rules'
``routeConfiguration`` is polymorphic on ``@odata.type``).

The check is strict about read-only properties (``validate``'s default): the bot's bodies carry
none, although ARM, and so the double, ignores them in a request (``allow_read_only=True``).

The Logs query POST the bot's ``AzureMetrics`` sends (``azure-monitor-query`` 2.x, to
``/v1/workspaces/{id}/query`` or ``/v1{component}/query``) fits Log Analytics' ``queryBody``
(2022-10-27, the data-plane definition with ``basePath`` ``/v1``).

The bodies are the ones on the wire: the bot's own code (``build_group`` + ``ContainerGroups``,
``traffic_switch``) drives the real SDK clients against the ARM double, and the test reads what
the double received. One negative case per definition shows the validator says no.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from procedures.clock import FixedClock
from procedures.model import Slot
from procedures.platforms.azure import AzureClients, parse_azure_settings
from procedures.platforms.azure.container_groups import ContainerGroups, build_group
from procedures.platforms.azure.errors import AzureCalls
from procedures.platforms.azure.frontdoor import traffic_switch
from procedures.platforms.azure.monitoring import AzureMetrics, request_counts_query
from tests.azure.arm_double import API_VERSIONS, SUBSCRIPTION, TOKEN, ArmDouble
from tests.azure.arm_double.logs import DEFAULT_COMPONENT, DEFAULT_WORKSPACE_GUID
from tests.azure.fresh_world import fresh_classic_front_door
from tests.azure.spec_validation import strip_read_only, validate
from tests.azure.test_azure_platform import StaticTokenCredential, azure_section

pytestmark = pytest.mark.slow  # starts an HTTPS server

RG = "prod-qlp-rg"
ACI = "containerinstance-2023-05-01"
CDN = "cdn-2026-10-01"
FRONT_DOOR = "frontdoor-2025-10-01"
LOGS = "loganalytics-2022-10-27"
FORWARDING = "#Microsoft.Azure.FrontDoor.Models.FrontdoorForwardingConfiguration"
NOW = datetime(2026, 12, 1, 11, 0, tzinfo=UTC)


@pytest.fixture
def double(certificate: tuple[Path, Path]) -> Iterator[ArmDouble]:
    arm = ArmDouble(*certificate).start()
    arm.add_route(RG, "qlp-frontdoor", "qlp-endpoint", "default-route", "qlp-green-og")
    for colour, enabled in (("blue", False), ("green", True)):
        arm.add_origin(RG, "qlp-frontdoor", "qlp-og", f"qlp-{colour}",
                       host=f"qlp-prod-{colour}.abc.eastus.azurecontainer.io", enabled=enabled)
    yield arm
    arm.stop()


@pytest.fixture
def clients(double: ArmDouble, certificate: tuple[Path, Path]) -> Iterator[AzureClients]:
    made = AzureClients(StaticTokenCredential(), SUBSCRIPTION, base_url=double.url,
                        client_kwargs={"connection_verify": str(certificate[0]),
                                       "retry_total": 0, "polling_interval": 0})
    yield made
    made.close()


def sent(double: ArmDouble, kind: str, method: str) -> list[Any]:
    bodies = [c.body for c in double.calls_to(kind, method)]
    assert bodies, f"no {method} of {kind} reached the double"
    return bodies


def test_the_container_group_put_fits_container_group(double: ArmDouble,
                                                      clients: AzureClients) -> None:
    settings = parse_azure_settings(azure_section(double))
    group = build_group(settings, "blue", "v1.2.2", {"DATABASE_URL": "postgresql://s3cr3t"},
                        environment_name="production")
    groups = ContainerGroups(clients, settings, AzureCalls("Azure Container Instances"))
    state = groups.create("qlp-blue", group, timeout=timedelta(minutes=1))
    assert state.succeeded
    [body] = sent(double, "group", "PUT")
    assert validate(body, "ContainerGroup", spec=ACI) == []
    # What the validator read: the body has the parts the definition checks.
    assert body["properties"]["osType"] == "Linux" and body["identity"]["type"] == "UserAssigned"


def test_the_route_patch_fits_route_update_parameters(double: ArmDouble,
                                                      clients: AzureClients) -> None:
    settings = parse_azure_settings(azure_section(double, "route"))
    traffic_switch(settings, clients, AzureCalls("Azure Front Door")).switch(Slot.BLUE)
    [body] = sent(double, "route", "PATCH")
    assert validate(body, "RouteUpdateParameters", spec=CDN) == []
    assert body["properties"]["originGroup"]["id"].endswith("/originGroups/qlp-blue-og")


def test_the_origin_patches_fit_afd_origin_update_parameters(double: ArmDouble,
                                                             clients: AzureClients) -> None:
    settings = parse_azure_settings(azure_section(double, "origins"))
    traffic_switch(settings, clients, AzureCalls("Azure Front Door")).switch(Slot.BLUE)
    bodies = sent(double, "origin", "PATCH")
    assert len(bodies) == 2  # enable blue, then disable green
    for body in bodies:
        assert validate(body, "AFDOriginUpdateParameters", spec=CDN) == []
    assert [b["properties"]["enabledState"] for b in bodies] == ["Enabled", "Disabled"]


def test_the_classic_front_door_put_fits_front_door(double: ArmDouble,
                                                   clients: AzureClients) -> None:
    fresh_classic_front_door(double)
    settings = parse_azure_settings(azure_section(double, "classic"))
    traffic_switch(settings, clients, AzureCalls("Azure Front Door")).switch(Slot.GREEN)
    [body] = sent(double, "frontdoor", "PUT")
    assert validate(body, "FrontDoor", spec=FRONT_DOOR) == []
    # What the validator read: the polymorphic part, checked as a forwarding configuration.
    [rule] = body["properties"]["routingRules"]
    forwarding = rule["properties"]["routeConfiguration"]
    assert forwarding["@odata.type"] == FORWARDING
    assert forwarding["backendPool"]["id"].endswith("/backendPools/qlp-green-pool")
    assert double.classic_pool("qlp-classic-fd", "default-routing-rule") == "qlp-green-pool"


def test_the_double_refuses_a_classic_put_outside_the_definition(
        double: ArmDouble, clients: AzureClients, certificate: tuple[Path, Path]) -> None:
    fresh_classic_front_door(double)
    settings = parse_azure_settings(azure_section(double, "classic"))
    traffic_switch(settings, clients, AzureCalls("Azure Front Door")).switch(Slot.GREEN)
    [body] = sent(double, "frontdoor", "PUT")
    rule = body["properties"]["routingRules"][0]["properties"]
    rule["routeConfiguration"]["@odata.type"] = "#Microsoft.Azure.FrontDoor.Models.Forwarding"
    path = double.calls_to("frontdoor", "PUT")[0].path
    # Over raw HTTPS: the SDK's model would not build this body.
    answer = httpx.put(f"{double.url}{path}", params={"api-version": API_VERSIONS["frontdoor"]},
                       json=body, headers={"Authorization": f"Bearer {TOKEN}"},
                       verify=ssl.create_default_context(cafile=certificate[0]),
                       timeout=10)
    assert answer.status_code == 400
    error = answer.json()["error"]
    assert error["code"] == "BadRequest"
    assert ("$.properties.routingRules[0].properties.routeConfiguration.@odata.type: "
            "'#Microsoft.Azure.FrontDoor.Models.Forwarding' is not one of") in error["message"]
    assert double.classic_pool("qlp-classic-fd", "default-routing-rule") == "qlp-green-pool"


@pytest.mark.parametrize("insights", [{"workspace_id": DEFAULT_WORKSPACE_GUID},
                                      {"resource_id": DEFAULT_COMPONENT}],
                         ids=["workspace", "component"])
def test_the_logs_query_post_fits_query_body(double: ArmDouble, certificate: tuple[Path, Path],
                                             insights: dict[str, str]) -> None:
    settings = parse_azure_settings(azure_section(
        double, app_insights={"endpoint": double.url, **insights}))
    role = settings.role_name("green")
    double.set_requests(role, total=20, failed=2, p95_ms=120.0)
    metrics = AzureMetrics(settings, credential=StaticTokenCredential(),
                           client_kwargs={"connection_verify": str(certificate[0]),
                                          "retry_total": 0}, clock=FixedClock(NOW))
    try:
        assert metrics.error_count(Slot.GREEN, NOW - timedelta(minutes=5)) == 2
    finally:
        metrics.close()
    [call] = double.calls_to("logs", "POST")
    # azure-monitor-query 2.0.0 serialises the unset additional workspaces as null; JSON null
    # is how an optional property is left out (the service, like the double, reads it as
    # absent), and Swagger 2.0 cannot declare it: the rest is checked strictly.
    assert call.body["workspaces"] is None
    sent = {name: value for name, value in call.body.items() if value is not None}
    assert validate(sent, "queryBody", spec=LOGS) == []
    # What the validator read: the bot's own KQL and the window, nothing else.
    assert settings.app_insights is not None
    assert sent["query"] == request_counts_query(settings.app_insights, role)
    assert sent["timespan"] == "2026-12-01T10:55:00.000Z/2026-12-01T11:00:00.000Z"
    assert set(sent) == {"query", "timespan"}
    target = (f"/workspaces/{DEFAULT_WORKSPACE_GUID}" if "workspace_id" in insights
              else DEFAULT_COMPONENT)
    assert call.path == f"/v1{target}/query"
    # The SDK asks for no server timeout, statistics or visualisation: its Prefer is empty.
    assert call.headers.get("prefer", "") == ""
    assert call.headers["content-type"].startswith("application/json")


def test_the_double_refuses_a_logs_query_body_outside_query_body(
        double: ArmDouble, certificate: tuple[Path, Path]) -> None:
    trust = ssl.create_default_context(cafile=certificate[0])

    def post(body: Any) -> httpx.Response:
        return httpx.post(f"{double.url}/v1/workspaces/{DEFAULT_WORKSPACE_GUID}/query",
                          json=body, headers={"Authorization": f"Bearer {TOKEN}"},
                          verify=trust, timeout=10)

    for body, message in (({"timespan": "PT5M"}, "'query' property is required"),
                          ({"query": None}, "'query' property is required"),
                          ({"query": ["AppRequests"]}, "'query' property must be a string"),
                          ({"query": "AppRequests", "timespan": 300},
                           "'timespan' property must be a string"),
                          ({"query": "AppRequests", "workspaces": "w1"},
                           "'workspaces' property must be an array of strings")):
        answer = post(body)
        assert answer.status_code == 400, body
        error = answer.json()["error"]
        # Log Analytics' envelope: message and code outside, the property's problem inside.
        assert (error["code"], error["message"]) == ("BadArgumentError",
                                                     "The request had some invalid properties")
        assert error["correlationId"]
        assert error["innererror"] == {"code": "QueryValidationError", "message": message}
    # A null optional property is an absent one; an undeclared one is ignored, not refused.
    answer = post({"query": "AppRequests | summarize count()", "timespan": None,
                   "options": {}})
    assert answer.status_code == 200, answer.text


# -- the validator says no --------------------------------------------------------------------


def test_a_container_group_with_an_unknown_field_or_a_bad_enum_is_refused(
        double: ArmDouble) -> None:
    settings = parse_azure_settings(azure_section(double))
    body = build_group(settings, "blue", "v1", {}, environment_name="production").serialize()
    body["properties"]["restartPolicy"] = "Sometimes"
    body["properties"]["ipAddress"]["dnsLabel"] = "qlp"
    body["identity"]["type"] = "Managed"
    assert validate(body, "ContainerGroup", spec=ACI) == [
        "$.identity.type: 'Managed' is not one of SystemAssigned, UserAssigned, "
        "SystemAssigned, UserAssigned, None",
        "$.properties.restartPolicy: 'Sometimes' is not one of Always, OnFailure, Never",
        "$.properties.ipAddress.dnsLabel: unknown property",
    ]


def test_a_route_patch_with_an_unknown_field_or_a_bad_enum_is_refused() -> None:
    body = {"properties": {"originGroup": {"id": "/x", "name": "qlp-blue-og"},
                           "forwardingProtocol": "HttpsPlease", "endpointName": "e"}}
    assert validate(body, "RouteUpdateParameters", spec=CDN) == [
        "$.properties.originGroup.name: unknown property",
        "$.properties.forwardingProtocol: 'HttpsPlease' is not one of HttpOnly, HttpsOnly, "
        "MatchRequest",
        "$.properties.endpointName: read-only property, not accepted in a request",
    ]


def test_an_origin_patch_with_a_bad_value_is_refused() -> None:
    body = {"properties": {"enabledState": "On", "weight": 0, "httpPort": 70000,
                           "priority": "1", "colour": "blue"}}
    assert validate(body, "AFDOriginUpdateParameters", spec=CDN) == [
        "$.properties.enabledState: 'On' is not one of Enabled, Disabled",
        "$.properties.weight: 0 is below the minimum 1",
        "$.properties.httpPort: 70000 is above the maximum 65535",
        "$.properties.priority: expected an integer, got a string",
        "$.properties.colour: unknown property",
    ]
    assert validate({"properties": {"enabledState": "enabled"}}, "AFDOriginUpdateParameters",
                    spec=CDN) == []  # ARM compares enum values case-insensitively


def test_a_classic_front_door_with_a_bad_route_configuration_is_refused() -> None:
    rule = {"name": "default-routing-rule", "type": "Microsoft.Network/Frontdoors/RoutingRules",
            "properties": {"acceptedProtocols": ["Https", "Ftp"], "resourceState": "Enabled",
                           "routeConfiguration": {"@odata.type": FORWARDING,
                                                  "redirectType": "Moved",
                                                  "backendPool": {"id": "/x"}}}}
    backend = {"address": "a.example.net", "httpPort": 0, "weight": 1001}
    body = {"location": "Global", "properties": {
        "routingRules": [rule, {"name": "r2", "properties": {"routeConfiguration": {
            "redirectType": "Found"}}}],
        "backendPools": [{"name": "p", "properties": {"backends": [backend]}}]}}
    assert validate(body, "FrontDoor", spec=FRONT_DOOR) == [
        "$.properties.routingRules[0].type: read-only property, not accepted in a request",
        "$.properties.routingRules[0].properties.acceptedProtocols[1]: 'Ftp' is not one of "
        "Http, Https",
        "$.properties.routingRules[0].properties.resourceState: read-only property, not "
        "accepted in a request",
        # A forwarding configuration has no redirectType: the subtype decides what is known.
        "$.properties.routingRules[0].properties.routeConfiguration.redirectType: unknown "
        "property",
        "$.properties.routingRules[1].properties.routeConfiguration.@odata.type: required "
        "property missing",
        "$.properties.routingRules[1].properties.routeConfiguration.redirectType: unknown "
        "property",
        "$.properties.backendPools[0].properties.backends[0].httpPort: 0 is below the minimum 1",
        "$.properties.backendPools[0].properties.backends[0].weight: 1001 is above the maximum "
        "1000",
    ]
    redirect = {"@odata.type": "#Microsoft.Azure.FrontDoor.Models.FrontdoorRedirectConfiguration",
                "redirectType": "Moved", "redirectProtocol": "HttpsOnly"}
    assert validate({"properties": {"routingRules": [{"properties": {
        "routeConfiguration": redirect}}]}}, "FrontDoor", spec=FRONT_DOOR) == []


def test_read_only_fields_fail_the_strict_check_and_are_what_the_double_strips() -> None:
    fd_id = (f"/subscriptions/{SUBSCRIPTION}/resourceGroups/{RG}/providers/"
             "Microsoft.Network/frontdoors/fd")
    answered = {  # a classic Front Door as a GET answers it (abridged)
        "id": fd_id, "name": "fd", "type": "Microsoft.Network/frontdoors", "location": "Global",
        "properties": {
            "cname": "fd.azurefd.net", "provisioningState": "Succeeded",
            "resourceState": "Enabled", "friendlyName": "qlp",
            "routingRules": [{"id": f"{fd_id}/routingRules/r", "name": "r",
                              "type": "Microsoft.Network/Frontdoors/RoutingRules",
                              "properties": {"resourceState": "Enabled",
                                             "routeConfiguration": {
                                                 "@odata.type": FORWARDING,
                                                 "backendPool": {"id": f"{fd_id}/p"}}}}]}}
    assert validate(answered, "FrontDoor", spec=FRONT_DOOR) == [
        "$.id: read-only property, not accepted in a request",
        "$.name: read-only property, not accepted in a request",
        "$.type: read-only property, not accepted in a request",
        "$.properties.cname: read-only property, not accepted in a request",
        "$.properties.provisioningState: read-only property, not accepted in a request",
        "$.properties.resourceState: read-only property, not accepted in a request",
        "$.properties.routingRules[0].type: read-only property, not accepted in a request",
        "$.properties.routingRules[0].properties.resourceState: read-only property, not "
        "accepted in a request",
    ]
    assert validate(answered, "FrontDoor", spec=FRONT_DOOR, allow_read_only=True) == []
    # Unknown properties stay refused when read-only ones are allowed.
    answered["properties"]["colour"] = "blue"
    assert validate(answered, "FrontDoor", spec=FRONT_DOOR, allow_read_only=True) == [
        "$.properties.colour: unknown property"]
    del answered["properties"]["colour"]
    kept = strip_read_only(answered, "FrontDoor", spec=FRONT_DOOR)
    assert kept == {"location": "Global", "properties": {
        "friendlyName": "qlp",
        "routingRules": [{"id": f"{fd_id}/routingRules/r", "name": "r", "properties": {
            "routeConfiguration": {"@odata.type": FORWARDING,
                                   "backendPool": {"id": f"{fd_id}/p"}}}}]}}
    assert validate(kept, "FrontDoor", spec=FRONT_DOOR) == []


def test_a_logs_query_body_with_a_wrong_type_or_an_unknown_field_is_refused() -> None:
    assert validate({"query": 5, "timespan": ["PT5M"], "workspaces": ["w1", 2],
                     "workspace": "w1"}, "queryBody", spec=LOGS) == [
        "$.query: expected a string, got a number",
        "$.timespan: expected a string, got an array",
        "$.workspaces[1]: expected a string, got a number",
        "$.workspace: unknown property",
    ]
    assert validate({"timespan": "PT5M"}, "queryBody", spec=LOGS) == [
        "$.query: required property missing"]
