"""AzurePlatform with the real SDK clients against the local ARM double (HTTPS, self-signed).

The clients trust the double's certificate (``connection_verify=<its PEM>``) instead of turning
verification off, get their token from a static credential, and poll long-running operations
without waiting (``polling_interval=0`` and ``Retry-After: 0``). A small plain-HTTP server stands
in for the application behind each group's FQDN and behind the public URL (Front Door's edge):
it answers with the version of the group that the double says is there. Time is a fixed clock
that the injected ``sleep`` advances, so no test waits for the wall clock.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from azure.core.credentials import AccessToken
from azure.core.exceptions import (
    HttpResponseError,
    ResourceNotFoundError,
    ServiceResponseTimeoutError,
)

from procedures.clock import FixedClock
from procedures.errors import ConfigError, ExternalServiceError, StepFailure
from procedures.model import Slot
from procedures.platforms.azure import AzureClients, AzurePlatform, parse_azure_settings
from procedures.platforms.azure.clients import LazyCredential
from procedures.platforms.azure.container_groups import build_group
from procedures.platforms.azure.errors import AzureCalls, translate
from procedures.platforms.azure.settings import parse_secret_ref
from procedures.platforms.base import Platform
from procedures.policy import Environment
from tests.azure.arm_double import SUBSCRIPTION, TOKEN, ArmDouble
from tests.azure.fresh_world import colour_fqdns

pytestmark = pytest.mark.slow  # starts HTTPS and HTTP servers

RG = "prod-qlp-rg"
DB_URL = "postgresql://qlp:s3cr3t-db-password@db.internal:5432/qlp"
OPENAI_KEY = "sk-openai-0123456789abcdef"
INACCESSIBLE = ("The image 'prodqlpacr.azurecr.io/qlp:v9.9.9' in container group 'qlp-green' is "
                "not accessible. Please check the image and registry credential.")


# -- fixtures ---------------------------------------------------------------------------------


class StaticTokenCredential:
    """A token credential that hands out one fixed token and records the scopes asked for."""

    def __init__(self) -> None:
        self.scopes: list[tuple[str, ...]] = []

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        self.scopes.append(scopes)
        return AccessToken(TOKEN, int(time.time()) + 3600)


class FakeTime:
    """A clock that ``sleep`` advances; every sleep is recorded."""

    def __init__(self) -> None:
        self.clock = FixedClock(datetime(2026, 12, 1, 11, 0, tzinfo=UTC))
        self.sleeps: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.clock.advance(timedelta(seconds=seconds))


class AppStandIn:
    """The application as seen through a group's FQDN (``/hosts/<fqdn>/...``) and through Front
    Door's public URL (``/public/...``), answering ``{"version": ...}`` of the group found in the
    double. ``stale_public`` answers of the public URL still come from the previous colour
    (Front Door propagating); ``broken_hosts`` answer 503."""

    def __init__(self, double: ArmDouble, live_colour: Callable[[], str]) -> None:
        self.double = double
        self.live_colour = live_colour
        self.stale_public = 0
        self.previous: str | None = None
        self.broken_hosts: set[str] = set()
        self.requests: list[str] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def answer(self, path: str) -> tuple[int, dict[str, Any]]:
        self.requests.append(path)
        with self.double.lock:
            if path.startswith("/hosts/"):
                host = path.split("/")[2]
                if host in self.broken_hosts:
                    return 503, {"status": "starting"}
                group = next((g for g in self.double.groups.values()
                              if g["properties"].get("ipAddress", {}).get("fqdn") == host), None)
            elif path.startswith("/public/"):
                colour = self.live_colour()
                if self.stale_public > 0 and self.previous:
                    self.stale_public -= 1
                    colour = self.previous
                group = self.double.groups.get(f"qlp-{colour}")
            else:
                return 404, {}
            if group is None or group["properties"].get("provisioningState") != "Succeeded":
                return 502, {"error": "no backend"}
            return 200, {"status": "ok", "version": group["tags"].get("qlp-version")}

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                status, body = stand_in.answer(self.path)
                payload = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler



@pytest.fixture
def double(certificate: tuple[Path, Path]) -> Iterator[ArmDouble]:
    arm = ArmDouble(*certificate).start()
    arm.add_secret("database-url", DB_URL)
    arm.add_secret("openai-key", "an-old-key", version="00000000000000000000000000000001")
    arm.add_secret("openai-key", OPENAI_KEY, version="00000000000000000000000000000002")
    # The origins point at the FQDNs the colours' groups get (port 8080), as a user sets them
    # up; the route points at green, where nothing runs yet.
    fqdns = colour_fqdns("qlp-prod", "eastus")
    for colour, host in fqdns.items():
        arm.add_origin(RG, "qlp-frontdoor", f"qlp-{colour}-og", f"qlp-{colour}", host=host,
                       enabled=True)
    arm.add_route(RG, "qlp-frontdoor", "qlp-endpoint", "default-route", "qlp-green-og")
    arm.add_classic_front_door(RG, "qlp-classic-fd", rule="default-routing-rule",
                               pools={"blue": "qlp-blue-pool", "green": "qlp-green-pool"},
                               live="blue", hosts=fqdns, http_port=8080)
    yield arm
    arm.stop()


@pytest.fixture
def fake_time() -> FakeTime:
    return FakeTime()


FRONT_DOORS: dict[str, dict[str, Any]] = {
    "route": {"kind": "standard", "profile": "qlp-frontdoor", "endpoint": "qlp-endpoint",
              "route": "default-route",
              "origin_groups": {"blue": "qlp-blue-og", "green": "qlp-green-og"}},
    "origins": {"kind": "standard", "profile": "qlp-frontdoor", "endpoint": "qlp-endpoint",
                "route": "default-route", "switch_by": "origins", "origin_group": "qlp-og",
                "origins": {"blue": "qlp-blue", "green": "qlp-green"}},
    "classic": {"kind": "classic", "name": "qlp-classic-fd",
                "routing_rule": "default-routing-rule",
                "backend_pools": {"blue": "qlp-blue-pool", "green": "qlp-green-pool"}},
}


def azure_section(double: ArmDouble, kind: str = "route", **changes: Any) -> dict[str, Any]:
    """The seed's settings (prod-qlp-rg, prodqlpacr, 2 CPU, 8 GB, port 8080), secrets in the
    double's vault."""
    section: dict[str, Any] = {
        "subscription_id": SUBSCRIPTION,
        "resource_group": RG,
        "location": "eastus",
        "container_group_prefix": "qlp",
        "registry": "prodqlpacr",
        "image": "qlp",
        "identity": "qlp-acr-pull",
        "cpu": 2,
        "memory_gb": 8,
        "ports": [8080],
        "restart_policy": "Always",
        "dns_name_label": "qlp-prod",
        "environment": {"QLP_MODE": "production"},
        "secrets": {
            "DATABASE_URL": f"@Microsoft.KeyVault(SecretUri={double.url}/secrets/database-url)",
            "AZURE_OPENAI_API_KEY": f"{double.url}/secrets/openai-key",
        },
        "front_door": FRONT_DOORS[kind],
        "poll_interval": "2s",
        "switch_confirm_timeout": "1m",
    }
    section.update(changes)
    return section


Harness = tuple[AzurePlatform, AppStandIn, StaticTokenCredential]


@pytest.fixture
def make_platform(double: ArmDouble, certificate: tuple[Path, Path],
                  fake_time: FakeTime) -> Iterator[Callable[..., Harness]]:
    made: list[tuple[AzurePlatform, AppStandIn]] = []

    def make(front_door: str = "route", **changes: Any) -> Harness:
        fd = FRONT_DOORS[front_door]

        def live_colour() -> str:
            if fd["kind"] == "classic":
                pool = double.classic_pool(fd["name"], fd["routing_rule"])
            elif fd.get("switch_by") == "origins":
                enabled = [c for c in ("blue", "green")
                           if double.origin(fd["profile"], fd["origin_group"], f"qlp-{c}")
                           ["properties"]["enabledState"] == "Enabled"]
                pool = f"qlp-{enabled[-1]}-og"
            else:
                pool = double.route_origin_group(fd["profile"], fd["endpoint"], fd["route"])
            return "blue" if "blue" in pool else "green"

        app = AppStandIn(double, live_colour)
        env = Environment.model_validate({
            "platform": "azure", "url": "https://api.qlp-hq.com", "health": ["/health"],
            "azure": azure_section(double, front_door, **changes)})
        credential = StaticTokenCredential()
        clients = AzureClients(
            credential, SUBSCRIPTION, base_url=double.url,
            client_kwargs={"connection_verify": str(certificate[0]), "polling_interval": 0,
                           "retry_total": 0},
            keyvault_kwargs={"verify_challenge_resource": False})
        platform = AzurePlatform(
            "production", env, clients=clients,
            slot_base=lambda slot, host: f"{app.url}/hosts/{host}",
            public_url=f"{app.url}/public", clock=fake_time.clock, sleep=fake_time.sleep)
        made.append((platform, app))
        return platform, app, credential

    yield make
    for platform, app in made:
        platform.close()
        app.stop()


def group_body(double: ArmDouble, name: str) -> dict[str, Any]:
    puts = [c for c in double.calls_to("group", "PUT") if c.path.endswith(f"/{name}")]
    assert puts, f"no PUT of {name}"
    body: dict[str, Any] = puts[-1].body
    return body


def env_vars(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    container = body["properties"]["containers"][0]["properties"]
    return {v["name"]: v for v in container["environmentVariables"]}


# -- the blue-green cycle ---------------------------------------------------------------------


def test_blue_green_cycle_on_front_door_standard(make_platform: Callable[..., Harness],
                                                 double: ArmDouble, fake_time: FakeTime) -> None:
    platform, app, credential = make_platform("route")
    typed: Platform = platform  # AzurePlatform satisfies the Platform protocol
    assert typed is platform

    # The route points at green's origin group, where nothing runs yet: nothing is live.
    state = platform.traffic()
    assert state.live is None
    assert not state.slots[Slot.BLUE].running and not state.slots[Slot.GREEN].running
    assert state.slots[Slot.BLUE].detail == "no container group qlp-blue"
    assert "routes here, but nothing serves yet" in state.slots[Slot.GREEN].detail

    # Create blue: a PUT, then the Azure-AsyncOperation polled (InProgress twice), a final GET.
    status = platform.deploy(Slot.BLUE, "v1.2.2")
    assert status.running and status.version == "v1.2.2"
    ops = [c for c in double.calls_to("operation") if "ContainerInstance" in c.path]
    assert len(ops) == 3  # InProgress, InProgress, Succeeded
    body = group_body(double, "qlp-blue")
    props = body["properties"]
    container = props["containers"][0]["properties"]
    assert container["image"] == "prodqlpacr.azurecr.io/qlp:v1.2.2"
    assert container["resources"]["requests"] == {"cpu": 2.0, "memoryInGB": 8.0}
    assert container["ports"] == [{"port": 8080, "protocol": "TCP"}]
    assert props["restartPolicy"] == "Always" and props["osType"] == "Linux"
    assert props["ipAddress"]["type"] == "Public"
    assert props["ipAddress"]["dnsNameLabel"] == "qlp-prod-blue"
    assert props["ipAddress"]["autoGeneratedDomainNameLabelScope"] == "TenantReuse"
    uami = (f"/subscriptions/{SUBSCRIPTION}/resourceGroups/{RG}/providers/"
            "Microsoft.ManagedIdentity/userAssignedIdentities/qlp-acr-pull")
    assert body["identity"] == {"type": "UserAssigned", "userAssignedIdentities": {uami: {}}}
    assert props["imageRegistryCredentials"] == [{"server": "prodqlpacr.azurecr.io",
                                                  "identity": uami}]
    assert body["tags"]["qlp-colour"] == "blue" and body["tags"]["qlp-version"] == "v1.2.2"
    variables = env_vars(body)
    assert variables["QLP_MODE"] == {"name": "QLP_MODE", "value": "production"}
    assert variables["SLOT_NAME"]["value"] == "blue"
    assert variables["QLP_VERSION"]["value"] == "v1.2.2"
    assert variables["OTEL_SERVICE_NAME"]["value"] == "qlp-blue"  # the colour's role name
    assert variables["APPLICATIONINSIGHTS_ROLE_NAME"]["value"] == "qlp-blue"

    # Ready: running, and the health path answers 200 with v1.2.2 through the group's FQDN.
    ready = platform.wait_ready(Slot.BLUE, timedelta(minutes=5))
    fqdn = double.groups["qlp-blue"]["properties"]["ipAddress"]["fqdn"]
    assert fqdn.startswith("qlp-prod-blue.") and fqdn.endswith(".eastus.azurecontainer.io")
    assert f"/hosts/{fqdn}/health" in app.requests
    assert ready.version == "v1.2.2" and ready.url == f"{app.url}/hosts/{fqdn}"
    assert platform.slot_url(Slot.BLUE) == ready.url

    # Switch to blue: route PATCHed, polled, read back, then confirmed through the public URL.
    app.previous, app.stale_public = "green", 2
    platform.switch(Slot.BLUE)
    patch = double.calls_to("route", "PATCH")[-1]
    assert patch.body == {"properties": {"originGroup": {"id": (
        f"/subscriptions/{SUBSCRIPTION}/resourceGroups/{RG}/providers/Microsoft.Cdn/profiles/"
        "qlp-frontdoor/originGroups/qlp-blue-og")}}}
    assert double.route_origin_group("qlp-frontdoor", "qlp-endpoint", "default-route") == \
        "qlp-blue-og"
    public = [p for p in app.requests if p.startswith("/public/")]
    assert len(public) == 8  # two stale answers from green, then six from blue in a row
    state = platform.traffic()
    assert state.live is Slot.BLUE and state.live_version == "v1.2.2"

    # The next release goes to green; blue is live, so it cannot be deployed over or stopped.
    with pytest.raises(StepFailure, match="live slot"):
        platform.deploy(Slot.BLUE, "v1.2.3")
    with pytest.raises(StepFailure, match="live slot"):
        platform.stop(Slot.BLUE)
    platform.deploy(Slot.GREEN, "v1.2.3")
    platform.wait_ready(Slot.GREEN, timedelta(minutes=5))
    app.previous = "blue"
    platform.switch(Slot.GREEN)
    state = platform.traffic()
    assert state.live is Slot.GREEN and state.live_version == "v1.2.3"
    assert state.slots[Slot.BLUE].running and state.slots[Slot.BLUE].version == "v1.2.2"

    # Delete the old colour: DELETE answered 202 + Location, polled until 204.
    platform.stop(Slot.BLUE)
    assert "qlp-blue" not in double.groups
    assert double.calls_to("group", "DELETE")
    assert any(c.path.endswith("/operationResults/" + c.path.rsplit("/", 1)[-1])
               for c in double.calls_to("operation"))
    assert platform.traffic().slots[Slot.BLUE].detail == "no container group qlp-blue"
    platform.stop(Slot.BLUE)  # stopping a stopped slot is fine

    # Every ARM request carried the token; the credential was asked for ARM's scope.
    assert all(c.authorized for c in double.calls if c.kind != "secret")
    assert ("https://management.azure.com/.default",) in credential.scopes
    # Waits: polls (poll_interval 2 s) and the confirmation window's gaps: half the 1 minute
    # switch_confirm_timeout over six answers, 6 s apart.
    assert set(fake_time.sleeps) <= {2, 6}


def test_deploying_the_same_version_again_changes_nothing(
        make_platform: Callable[..., Harness], double: ArmDouble) -> None:
    platform, _, _ = make_platform("route")
    platform.deploy(Slot.BLUE, "v1.2.2")
    puts = len(double.calls_to("group", "PUT"))
    again = platform.deploy(Slot.BLUE, "v1.2.2")
    assert "already runs v1.2.2" in again.detail
    assert len(double.calls_to("group", "PUT")) == puts
    assert not double.calls_to("group", "DELETE")

    # An earlier attempt's creation still going on in Azure is followed, not restarted.
    double.groups["qlp-blue"]["properties"]["provisioningState"] = "Creating"
    pending = platform.deploy(Slot.BLUE, "v1.2.2")
    assert not pending.running and "still being provisioned" in pending.detail
    assert len(double.calls_to("group", "PUT")) == puts
    double.groups["qlp-blue"]["properties"]["provisioningState"] = "Succeeded"
    assert platform.wait_ready(Slot.BLUE, timedelta(minutes=1)).version == "v1.2.2"

    # Another version replaces the group: deleted first, then created.
    platform.deploy(Slot.BLUE, "v1.2.3")
    assert len(double.calls_to("group", "DELETE")) == 1
    assert double.groups["qlp-blue"]["tags"]["qlp-version"] == "v1.2.3"


def test_classic_front_door_switch_writes_the_whole_object(
        make_platform: Callable[..., Harness], double: ArmDouble) -> None:
    platform, app, _ = make_platform("classic")
    # The rule forwards to qlp-blue-pool, where nothing runs: nothing is live yet.
    assert platform.traffic().live is None
    platform.deploy(Slot.GREEN, "v1.2.3")
    platform.wait_ready(Slot.GREEN, timedelta(minutes=5))
    before = json.loads(json.dumps(double.front_doors["qlp-classic-fd"]))

    platform.switch(Slot.GREEN)

    put = double.calls_to("frontdoor", "PUT")[-1]
    assert put.query["api-version"] == "2025-10-01"
    props = put.body["properties"]
    rule = props["routingRules"][0]["properties"]
    assert rule["routeConfiguration"]["backendPool"]["id"].endswith("/backendPools/qlp-green-pool")
    assert rule["routeConfiguration"]["@odata.type"].endswith("FrontdoorForwardingConfiguration")
    # Everything else went back unchanged: pools, endpoints, probes, tags.
    for key in ("backendPools", "frontendEndpoints", "loadBalancingSettings",
                "healthProbeSettings"):
        assert [p["name"] for p in props[key]] == [p["name"] for p in before["properties"][key]]
    assert put.body["tags"] == {"team": "qlp"}
    assert double.classic_pool("qlp-classic-fd", "default-routing-rule") == "qlp-green-pool"
    assert [c for c in double.calls_to("operation") if "Microsoft.Network" in c.path]
    assert platform.traffic().live is Slot.GREEN
    assert app.requests[-1].startswith("/public/")


def test_standard_front_door_switch_by_origins(make_platform: Callable[..., Harness],
                                               double: ArmDouble) -> None:
    fqdns = colour_fqdns("qlp-prod", "eastus")
    double.add_origin(RG, "qlp-frontdoor", "qlp-og", "qlp-blue", host=fqdns["blue"],
                      enabled=True)
    double.add_origin(RG, "qlp-frontdoor", "qlp-og", "qlp-green", host=fqdns["green"],
                      enabled=False, weight=1)
    platform, _, _ = make_platform("origins")
    assert platform.traffic().live is None  # blue's origin is enabled, but no group runs
    platform.deploy(Slot.GREEN, "v1.2.3")
    platform.wait_ready(Slot.GREEN, timedelta(minutes=5))

    platform.switch(Slot.GREEN)

    patches = double.calls_to("origin", "PATCH")
    assert [(c.path.rsplit("/", 1)[-1], c.body) for c in patches] == [
        ("qlp-green", {"properties": {"enabledState": "Enabled", "weight": 1000}}),
        ("qlp-blue", {"properties": {"enabledState": "Disabled"}}),
    ]  # the new colour is enabled before the old one is disabled
    assert platform.traffic().live is Slot.GREEN


# -- failures ---------------------------------------------------------------------------------


def test_failed_create_fails_with_azures_code_and_removes_the_group(
        make_platform: Callable[..., Harness], double: ArmDouble) -> None:
    platform, _, _ = make_platform("route")
    double.fail_next_create("InaccessibleImage", INACCESSIBLE)
    with pytest.raises(ExternalServiceError) as caught:
        platform.deploy(Slot.BLUE, "v9.9.9")
    error = caught.value
    assert error.code == "InaccessibleImage"
    assert not error.retryable
    assert INACCESSIBLE in error.message
    assert error.message.startswith("Azure Container Instances: create container group qlp-blue")
    assert error.hint is not None and INACCESSIBLE in error.hint  # the group's events
    assert "qlp-blue" not in double.groups  # a Failed group stays in Azure unless deleted
    assert len(double.calls_to("group", "PUT")) == 1  # not retried


def test_throttling_is_retried_after_retry_after(make_platform: Callable[..., Harness],
                                                 double: ArmDouble,
                                                 fake_time: FakeTime) -> None:
    platform, _, _ = make_platform("route")
    double.throttle("PUT", "/containerGroups/qlp-blue", times=1, retry_after="7")
    status = platform.deploy(Slot.BLUE, "v1.2.2")
    assert status.running
    assert len(double.calls_to("group", "PUT")) == 2
    assert fake_time.sleeps == [7.0]

    # Throttled past the attempts: a retryable error that carries Retry-After for the engine.
    double.throttle("GET", "/routes/default-route", times=10, retry_after="30")
    with pytest.raises(ExternalServiceError) as caught:
        platform.traffic()
    assert caught.value.retryable and caught.value.retry_after == 30.0
    assert caught.value.code == "TooManyRequests"
    assert fake_time.sleeps == [7.0, 30.0, 30.0, 30.0]  # 4 attempts, 3 waits


def test_wait_ready_fails_fast_on_a_restart_loop(make_platform: Callable[..., Harness],
                                                 double: ArmDouble) -> None:
    platform, _, _ = make_platform("route")
    double.set_container("qlp-blue", state="Waiting", restart_count=5,
                         detail="CrashLoopBackOff")
    platform.deploy(Slot.BLUE, "v1.2.2")
    with pytest.raises(StepFailure, match="restart-looping") as caught:
        platform.wait_ready(Slot.BLUE, timedelta(minutes=5))
    assert "CrashLoopBackOff" in caught.value.message
    assert not caught.value.retryable


def test_wait_ready_times_out_on_the_injected_clock(make_platform: Callable[..., Harness],
                                                    double: ArmDouble,
                                                    fake_time: FakeTime) -> None:
    platform, app, _ = make_platform("route")
    platform.deploy(Slot.BLUE, "v1.2.2")
    app.broken_hosts.add(double.groups["qlp-blue"]["properties"]["ipAddress"]["fqdn"])
    with pytest.raises(StepFailure, match="not ready within 10 s") as caught:
        platform.wait_ready(Slot.BLUE, timedelta(seconds=10))
    assert "HTTP 503" in caught.value.message
    assert sum(fake_time.sleeps) == 10


def test_switch_is_not_done_until_the_public_url_serves_the_new_version(
        make_platform: Callable[..., Harness], double: ArmDouble, fake_time: FakeTime) -> None:
    platform, app, _ = make_platform("route")
    platform.deploy(Slot.BLUE, "v1.2.2")
    platform.wait_ready(Slot.BLUE, timedelta(minutes=5))
    app.previous, app.stale_public = "green", 10**6  # Front Door never propagates
    double.groups["qlp-green"] = json.loads(json.dumps(double.groups["qlp-blue"]))
    double.groups["qlp-green"]["tags"]["qlp-version"] = "v1.2.1"
    with pytest.raises(StepFailure, match=r"did not answer from v1\.2\.2") as caught:
        platform.switch(Slot.BLUE)
    assert caught.value.retryable
    assert "answered by version v1.2.1" in caught.value.message
    assert sum(fake_time.sleeps) == 60  # switch_confirm_timeout


def test_switch_refuses_a_colour_that_does_not_run(make_platform: Callable[..., Harness],
                                                   double: ArmDouble) -> None:
    platform, _, _ = make_platform("route")
    with pytest.raises(StepFailure, match="no container group qlp-blue"):
        platform.switch(Slot.BLUE)
    assert not double.calls_to("route", "PATCH")


# -- Key Vault --------------------------------------------------------------------------------


def test_key_vault_secrets_become_secure_values_and_are_never_logged(
        make_platform: Callable[..., Harness], double: ArmDouble,
        caplog: pytest.LogCaptureFixture) -> None:
    platform, _, credential = make_platform("route")
    caplog.set_level(logging.DEBUG)
    status = platform.deploy(Slot.BLUE, "v1.2.3")
    platform.wait_ready(Slot.BLUE, timedelta(minutes=5))

    variables = env_vars(group_body(double, "qlp-blue"))
    assert variables["DATABASE_URL"] == {"name": "DATABASE_URL", "secureValue": DB_URL}
    assert variables["AZURE_OPENAI_API_KEY"] == {"name": "AZURE_OPENAI_API_KEY",
                                                 "secureValue": OPENAI_KEY}  # the latest
    reads = double.calls_to("secret")
    assert [c.path for c in reads if c.authorized] == ["/secrets/database-url/",
                                                       "/secrets/openai-key/"]
    assert not reads[0].authorized  # the vault's 401 challenge came first
    assert ("https://vault.azure.net/.default",) in credential.scopes

    # Azure never returns secure values, and nothing the bot logs or reports holds them.
    shown = json.dumps(platform.groups._clients.container_instances.container_groups
                       .get(RG, "qlp-blue").as_dict())
    everything = caplog.text + shown + status.detail + repr(platform.traffic())
    for secret in (DB_URL, OPENAI_KEY, "s3cr3t-db-password"):
        assert secret not in everything
    assert "DATABASE_URL" in caplog.text  # the log says what was resolved, not the value


def test_a_missing_secret_stops_the_deploy_before_any_create(
        make_platform: Callable[..., Harness], double: ArmDouble) -> None:
    platform, _, _ = make_platform(
        "route", secrets={"DATABASE_URL": f"{double.url}/secrets/no-such-secret/abc123"})
    with pytest.raises(ExternalServiceError) as caught:
        platform.deploy(Slot.BLUE, "v1.2.3")
    assert caught.value.code == "SecretNotFound"
    assert caught.value.message.startswith("Azure Key Vault: read secret no-such-secret for "
                                           "DATABASE_URL")
    assert not caught.value.retryable
    assert not double.calls_to("group", "PUT")


# -- settings, errors, credentials ------------------------------------------------------------


def test_settings_accept_the_seed_values(double: ArmDouble) -> None:
    settings = parse_azure_settings(azure_section(double, "classic", registry="prodqlpacr"))
    assert settings.registry == "prodqlpacr.azurecr.io"
    assert settings.group_name("green") == "qlp-green"
    assert settings.image_for("v1.2.3") == "prodqlpacr.azurecr.io/qlp:v1.2.3"
    assert settings.secrets["DATABASE_URL"].name == "database-url"
    assert settings.front_door.kind == "classic"


@pytest.mark.parametrize(("change", "key", "words"), [
    ({"front_door": {"profile": "p"}}, "environments.production.azure.front_door",
     "needs kind"),
    ({"front_door": {**FRONT_DOORS["route"], "rout": "x"}},
     "environments.production.azure.front_door.rout", "did you mean route"),
    ({"front_door": {k: v for k, v in FRONT_DOORS["route"].items() if k != "origin_groups"}},
     "environments.production.azure.front_door", "needs origin_groups"),
    ({"dns_label_scope": "Unsecure"}, "environments.production.azure.dns_label_scope",
     "subdomain takeover"),
    ({"secrets": {"DB": "http://kv.example/secrets/x"}},
     "environments.production.azure.secrets.DB", "https only"),
    ({"subnet_id": "/subscriptions/s/resourceGroups/r/providers/Microsoft.Network/"
                   "virtualNetworks/v/subnets/aci"},
     "environments.production.azure.subnet_id", "Front Door cannot reach"),
    ({"dns_name_label": None}, "environments.production.azure", "dns_name_label is required"),
    ({"dns_label_scope": "Noreuse"}, "environments.production.azure.dns_label_scope",
     "new random FQDN at every creation"),
    ({"environment": {"OTEL_SERVICE_NAME": "qlp"}},
     "environments.production.azure.environment", "cloud role name"),
    ({"secrets": {"APPLICATIONINSIGHTS_ROLE_NAME": "https://kv.vault.azure.net/secrets/x"}},
     "environments.production.azure.secrets", "role_name_prefix"),
    ({"cpu": 0}, "environments.production.azure.cpu", "greater than 0"),
    ({"subscription_id": "prod"}, "environments.production.azure.subscription_id", "GUID"),
    ({"environment": {"QLP_SLOT": "x"}}, "environments.production.azure.environment",
     "set by the bot"),
    ({"memory": 8}, "environments.production.azure.memory", "did you mean memory_gb"),
])
def test_bad_settings_name_the_key(double: ArmDouble, change: dict[str, Any], key: str,
                                   words: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_azure_settings(azure_section(double, **change),
                             where="environments.production.azure")
    assert caught.value.key == key
    assert words in caught.value.message


def test_secret_reference_forms() -> None:
    ref = parse_secret_ref("@Microsoft.KeyVault(VaultName=prod-qlp-kv;SecretName=db-url)")
    assert ref.uri == "https://prod-qlp-kv.vault.azure.net/secrets/db-url"
    ref = parse_secret_ref("@Microsoft.KeyVault(SecretUri=https://prod-qlp-kv.vault.azure.net/"
                           "secrets/db-url/0123abcd)")
    assert (ref.vault_url, ref.name, ref.version) == (
        "https://prod-qlp-kv.vault.azure.net", "db-url", "0123abcd")
    with pytest.raises(ValueError, match="names no secret"):
        parse_secret_ref("@Microsoft.KeyVault(VaultName=prod-qlp-kv)")


def test_the_group_carries_each_colours_telemetry_identity(double: ArmDouble) -> None:
    settings = parse_azure_settings(azure_section(
        double, app_insights={"workspace_id": "11111111-2222-3333-4444-555555555555"}))
    body = build_group(settings, "green", "v1.2.3", {}, environment_name="production"
                       ).serialize()
    variables = env_vars(body)
    assert variables["OTEL_SERVICE_NAME"]["value"] == settings.role_name("green")
    assert variables["APPLICATIONINSIGHTS_ROLE_NAME"]["value"] == settings.role_name("green")
    assert variables["QLP_SLOT"]["value"] == "green"
    address = body["properties"]["ipAddress"]
    assert address["type"] == "Public" and "subnetIds" not in body["properties"]
    assert address["autoGeneratedDomainNameLabelScope"] == "TenantReuse"


def test_azure_errors_are_translated() -> None:
    throttled = HttpResponseError(message="slow down")
    throttled.status_code = 429
    assert translate(throttled, service="s", what="w").retryable
    server = HttpResponseError(message="boom")
    server.status_code = 503
    assert translate(server, service="s", what="w").retryable
    missing = ResourceNotFoundError(message="gone")
    missing.status_code = 404
    assert not translate(missing, service="s", what="w").retryable
    forbidden = HttpResponseError(message="AuthorizationFailed")
    forbidden.status_code = 403
    assert not translate(forbidden, service="s", what="w").retryable
    timeout = translate(ServiceResponseTimeoutError("read timed out"), service="s", what="w")
    assert timeout.retryable and "timed out" in timeout.message

    sleeps: list[float] = []
    attempts = iter([ServiceResponseTimeoutError("t"), ServiceResponseTimeoutError("t")])

    def flaky() -> str:
        error = next(attempts, None)
        if error is not None:
            raise error
        return "ok"

    calls = AzureCalls("s", attempts=3, backoff=0.5, sleep=sleeps.append)
    assert calls.call("w", flaky) == "ok"
    assert sleeps == [0.5, 1.0]


def test_the_default_credential_is_built_only_when_a_token_is_needed(double: ArmDouble) -> None:
    env = Environment.model_validate({
        "platform": "azure", "url": "https://api.qlp-hq.com", "azure": azure_section(double)})
    platform = AzurePlatform("production", env)
    try:
        credential = platform.groups._clients.credential
        assert isinstance(credential, LazyCredential)
        assert credential._credential is None  # nothing built: no Azure call was made
    finally:
        platform.close()
