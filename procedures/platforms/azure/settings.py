"""The ``azure:`` section of an environment in the policy file, validated.

``procedures.policy`` keeps that section as a plain mapping (so the policy never imports this
package); :func:`parse_azure_settings` turns it into :class:`AzureSettings` and raises
:class:`ConfigError` naming the key (``environments.production.azure.front_door.route``) and what
is accepted. Every key is documented on the model; ``qlp.example.yml`` shows them with the
seed's values.

Secrets are *references* here, never values: ``secrets: {DATABASE_URL: <Key Vault secret URI>}``.
The platform resolves them with ``azure-keyvault-secrets`` at deploy time and hands them to ACI
as secure environment values (ACI does not resolve ``@Microsoft.KeyVault(...)`` itself).
"""

from __future__ import annotations

import difflib
import re
from datetime import timedelta
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from procedures.errors import ConfigError
from procedures.policy import Duration

__all__ = [
    "AppInsightsSettings",
    "AzureSettings",
    "ClassicFrontDoorSettings",
    "SecretRef",
    "StandardFrontDoorSettings",
    "parse_azure_settings",
    "parse_secret_ref",
]

COLOURS = ("blue", "green")
# Set by the bot for each colour (build_group): the colour, the version, and the colour's
# telemetry identity (its cloud role name, which the Logs queries filter on).
RESERVED_ENV = frozenset({"QLP_SLOT", "QLP_VERSION", "SLOT_NAME", "OTEL_SERVICE_NAME",
                          "APPLICATIONINSIGHTS_ROLE_NAME"})
TELEMETRY_ENV = frozenset({"OTEL_SERVICE_NAME", "APPLICATIONINSIGHTS_ROLE_NAME"})
# Noreuse is refused: the group is re-created at every deployment and would get a new FQDN
# each time, while Front Door's origin keeps the old one.
DNS_LABEL_SCOPES = ("TenantReuse", "SubscriptionReuse", "ResourceGroupReuse")

_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_RESOURCE_GROUP = re.compile(r"^[-\w.()]{1,89}[-\w()]$")
_LOCATION = re.compile(r"^[a-z][a-z0-9]{1,40}$")
# Container group names: lowercase letters, digits and single hyphens, 1-63 characters.
_GROUP_PREFIX = re.compile(r"^[a-z0-9](?:[a-z0-9]|-(?!-)){0,50}$")
_DNS_LABEL = re.compile(r"^[a-z][a-z0-9-]{1,50}[a-z0-9]$")
_ACR_NAME = re.compile(r"^[a-zA-Z0-9]{5,50}$")
_LOGIN_SERVER = re.compile(r"^[a-z0-9][a-z0-9.-]{3,250}[a-z0-9]$")
_REPOSITORY = re.compile(r"^[a-z0-9]+(?:[._/-][a-z0-9]+)*$")
_ARM_NAME = re.compile(r"^[A-Za-z0-9][-A-Za-z0-9_.]{0,88}[A-Za-z0-9_]?$")
_PG_SERVER = re.compile(r"^(?=.{3,63}$)[a-z0-9]+(?:-[a-z0-9]+)*$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,254}$")
_IDENTITY_ID = re.compile(
    r"^/subscriptions/[^/]+/resourceGroups/[^/]+/providers/"
    r"Microsoft\.ManagedIdentity/userAssignedIdentities/[^/]+$", re.IGNORECASE)
_SUBNET_ID = re.compile(
    r"^/subscriptions/[^/]+/resourceGroups/[^/]+/providers/Microsoft\.Network/"
    r"virtualNetworks/[^/]+/subnets/[^/]+$", re.IGNORECASE)
_INSIGHTS_ID = re.compile(
    r"^/subscriptions/[^/]+/resourceGroups/[^/]+/providers/Microsoft\.Insights/"
    r"components/[^/]+$", re.IGNORECASE)
_KV_REFERENCE = re.compile(r"^@Microsoft\.KeyVault\((?P<body>.*)\)$", re.IGNORECASE)
_SECRET_NAME = re.compile(r"^[0-9a-zA-Z-]{1,127}$")
_SECRET_VERSION = re.compile(r"^[0-9a-zA-Z]{1,64}$")


class SecretRef(BaseModel):
    """One Key Vault secret: the vault's URL, the secret's name and, optionally, its version."""

    model_config = ConfigDict(frozen=True)

    vault_url: str
    name: str
    version: str | None = None

    @property
    def uri(self) -> str:
        """The secret identifier, as Key Vault writes it."""
        tail = f"/{self.version}" if self.version else ""
        return f"{self.vault_url}/secrets/{self.name}{tail}"


def parse_secret_ref(text: str) -> SecretRef:
    """Read a secret reference; raise ValueError saying which forms are accepted.

    Accepted: a secret URI ``https://<vault>.vault.azure.net/secrets/<name>[/<version>]``, the
    App Service form ``@Microsoft.KeyVault(SecretUri=<that URI>)`` and
    ``@Microsoft.KeyVault(VaultName=<vault>;SecretName=<name>[;SecretVersion=<version>])``.
    """
    accepted = ("write https://<vault>.vault.azure.net/secrets/<name>[/<version>], "
                "@Microsoft.KeyVault(SecretUri=...) or "
                "@Microsoft.KeyVault(VaultName=...;SecretName=...)")
    value = str(text).strip()
    match = _KV_REFERENCE.match(value)
    if match:
        fields: dict[str, str] = {}
        for part in match["body"].split(";"):
            key, sep, item = part.partition("=")
            if not sep or not item.strip():
                raise ValueError(f"{value!r} is not a Key Vault reference; {accepted}")
            fields[key.strip().lower()] = item.strip()
        if "secreturi" in fields:
            value = fields["secreturi"]
        elif "vaultname" in fields and "secretname" in fields:
            vault = fields["vaultname"]
            if not re.fullmatch(r"[a-zA-Z][a-zA-Z0-9-]{1,22}[a-zA-Z0-9]", vault):
                raise ValueError(f"{vault!r} is not a Key Vault name")
            return _secret(f"https://{vault.lower()}.vault.azure.net", fields["secretname"],
                           fields.get("secretversion"))
        else:
            raise ValueError(f"{value!r} names no secret; {accepted}")
    parts = urlsplit(value)
    if parts.scheme != "https" or not parts.hostname or parts.query or parts.fragment:
        raise ValueError(f"{value!r} is not a Key Vault secret URI (https only); {accepted}")
    segments = [segment for segment in parts.path.split("/") if segment]
    if len(segments) not in (2, 3) or segments[0] != "secrets":
        raise ValueError(f"{value!r} is not a secret URI (path /secrets/<name>[/<version>]); "
                         f"{accepted}")
    vault_url = f"https://{parts.netloc}"
    return _secret(vault_url, segments[1], segments[2] if len(segments) == 3 else None)


def _secret(vault_url: str, name: str, version: str | None) -> SecretRef:
    if not _SECRET_NAME.match(name):
        raise ValueError(f"{name!r} is not a Key Vault secret name (letters, digits, -)")
    if version is not None and not _SECRET_VERSION.match(version):
        raise ValueError(f"{version!r} is not a Key Vault secret version")
    return SecretRef(vault_url=vault_url.rstrip("/"), name=name, version=version)


def _secret_ref(value: Any) -> SecretRef:
    if isinstance(value, SecretRef):
        return value
    if not isinstance(value, str):
        raise ValueError("a secret reference is a string (a Key Vault secret URI)")
    return parse_secret_ref(value)


SecretReference = Annotated[SecretRef, BeforeValidator(_secret_ref)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Colours(_Strict):
    """A name per colour."""

    blue: str
    green: str

    @field_validator("blue", "green")
    @classmethod
    def _arm_name(cls, name: str) -> str:
        if not _ARM_NAME.match(name):
            raise ValueError(f"{name!r} is not an Azure resource name")
        return name

    @model_validator(mode="after")
    def _different(self) -> _Colours:
        if self.blue == self.green:
            raise ValueError("blue and green must name different resources")
        return self

    def name_of(self, colour: str) -> str:
        return self.blue if colour == "blue" else self.green

    def colour_of(self, name: str) -> str | None:
        """The colour whose resource is ``name`` (ARM names compare case-insensitively)."""
        for colour in COLOURS:
            if self.name_of(colour).lower() == name.lower():
                return colour
        return None


class StandardFrontDoorSettings(_Strict):
    """Front Door Standard/Premium (``Microsoft.Cdn``; the package azure-mgmt-cdn).

    ``switch_by: route`` (default) repoints the route at the colour's origin group
    (``origin_groups``), an atomic 0/100 switch. ``switch_by: origins`` keeps one origin group
    (``origin_group``) holding one origin per colour (``origins``) and enables the target
    origin (at ``weight``) before disabling the other.
    """

    kind: Literal["standard"]
    profile: str
    endpoint: str
    route: str
    switch_by: Literal["route", "origins"] = "route"
    origin_groups: _Colours | None = None
    origin_group: str | None = None
    origins: _Colours | None = None
    weight: int = Field(default=1000, ge=1, le=1000)

    @field_validator("profile", "endpoint", "route", "origin_group")
    @classmethod
    def _arm_name(cls, name: str | None) -> str | None:
        if name is not None and not _ARM_NAME.match(name):
            raise ValueError(f"{name!r} is not an Azure resource name")
        return name

    @model_validator(mode="after")
    def _mode_keys(self) -> StandardFrontDoorSettings:
        if self.switch_by == "route":
            if self.origin_groups is None:
                raise ValueError("switch_by route needs origin_groups: {blue: ..., green: ...}")
            if self.origin_group is not None or self.origins is not None:
                raise ValueError("origin_group and origins belong to switch_by origins; "
                                 "switch_by route uses origin_groups")
        else:
            if self.origin_group is None or self.origins is None:
                raise ValueError("switch_by origins needs origin_group and "
                                 "origins: {blue: ..., green: ...}")
            if self.origin_groups is not None:
                raise ValueError("origin_groups belongs to switch_by route")
        return self


class ClassicFrontDoorSettings(_Strict):
    """Classic Front Door (``Microsoft.Network/frontDoors``; azure-mgmt-frontdoor).

    Retires 2027-03-31 (no new classic profiles since 2025-04-01): migrate to Standard/Premium.
    The switch repoints ``routing_rule`` at the colour's backend pool by writing the whole Front
    Door back, as ``az network front-door routing-rule update`` does.
    """

    kind: Literal["classic"]
    name: str
    routing_rule: str
    backend_pools: _Colours

    @field_validator("name", "routing_rule")
    @classmethod
    def _arm_name(cls, name: str) -> str:
        if not _ARM_NAME.match(name):
            raise ValueError(f"{name!r} is not an Azure resource name")
        return name


class AppInsightsSettings(_Strict):
    """Where the application's request telemetry is read (``azure-monitor-query`` Logs).

    Three forms:

    - **both** ``workspace_id`` and ``resource_id`` (recommended): the workspace-based
      component's Log Analytics workspace GUID is queried (table ``AppRequests``, column
      ``AppRoleName``) and the rows are kept to that component (``_ResourceId =~
      "<resource_id>"``), so another environment or application sending to the same
      workspace is never counted;
    - ``workspace_id`` only: the workspace is queried without that filter. Accepted, but a
      workspace shared by several components (one per subscription is common) mixes their
      requests: staging's ``qlp-green`` counts with production's;
    - ``resource_id`` only: a resource-centric query of the component (its classic
      ``requests`` table, column ``cloud_RoleName``, where ``success`` is a string read with
      ``tobool()``).

    Each colour reports its own cloud role name, ``AzureSettings.role_name(colour)``:
    ``<role_name_prefix>-<colour>`` (the prefix defaults to ``container_group_prefix``).
    The bot injects it into each colour's container group as ``OTEL_SERVICE_NAME``, so that
    green is measured apart from blue. An OpenTelemetry ``service.namespace`` resource
    attribute makes the role name ``<namespace>.<name>``: leave it unset (or set
    ``role_name_prefix`` to match).

    The identity the bot runs as needs Log Analytics Reader on the workspace (or Reader on the
    component for a ``resource_id``-only setting); without it every reading fails with
    ``AuthorizationFailed``, which the checks show as such, never as "no data".
    """

    workspace_id: str | None = None
    resource_id: str | None = None
    role_name_prefix: str | None = None
    endpoint: str = "https://api.loganalytics.io"

    @field_validator("workspace_id")
    @classmethod
    def _workspace(cls, value: str | None) -> str | None:
        if value is not None and not _UUID.match(value):
            raise ValueError(f"{value!r} is not a Log Analytics workspace ID (a GUID)")
        return value

    @field_validator("resource_id")
    @classmethod
    def _component(cls, value: str | None) -> str | None:
        if value is not None and not _INSIGHTS_ID.match(value):
            raise ValueError(f"{value!r} is not an Application Insights resource ID "
                             "(/subscriptions/.../providers/Microsoft.Insights/components/"
                             "<name>)")
        return value

    @field_validator("role_name_prefix")
    @classmethod
    def _role_prefix(cls, value: str | None) -> str | None:
        if value is not None and not _GROUP_PREFIX.match(value):
            raise ValueError(f"{value!r} is not a role name prefix (lowercase letters, digits, "
                             "single hyphens)")
        return value

    @field_validator("endpoint")
    @classmethod
    def _endpoint(cls, value: str) -> str:
        if not re.match(r"^https://[^\s/]+/?$", value):
            raise ValueError(f"{value!r} is not an https base URL "
                             "(e.g. https://api.loganalytics.io)")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _one_target(self) -> AppInsightsSettings:
        if self.workspace_id is None and self.resource_id is None:
            raise ValueError("set workspace_id (Log Analytics workspace GUID) and resource_id "
                             "(Application Insights component resource ID), or one of them")
        return self


class AzureSettings(_Strict):
    """Blue-green on Azure Container Instances behind Front Door, for one environment.

    One container group per colour, ``<container_group_prefix>-blue`` and ``-green``, pulling
    ``<registry>.azurecr.io/<image>:<version>`` with a user-assigned identity. Front Door picks
    the live colour.

    Each colour gets a public IP whose DNS name is ``<dns_name_label>-<colour>`` (scope
    ``dns_label_scope``, never ``Unsecure`` or ``Noreuse``); a subnet (``subnet_id``) is
    refused, since Front Door cannot reach a private IP. The bot sets ``QLP_SLOT``,
    ``SLOT_NAME``, ``QLP_VERSION``, ``OTEL_SERVICE_NAME`` and ``APPLICATIONINSIGHTS_ROLE_NAME``
    (the colour's cloud role name, :meth:`role_name`) in each group; ``environment`` may not.

    After a switch the bot waits for Front Door's ``deploymentStatus`` to be ``Succeeded``,
    then for ``switch_confirm_answers`` (6) good answers in a row from the public URL spanning
    ``switch_confirm_window`` (60 s; at most half of ``switch_confirm_timeout``), all within
    ``switch_confirm_timeout`` (30 minutes). ``switch_confirm``: ``status`` (default) counts
    any 2xx answer whose JSON ``version``, when it has one, is the deployed version (a leading
    ``v`` ignored); ``version`` requires the answer to name it; ``off`` skips the wait.
    ``operation_timeout`` bounds each wait for a delete or a Front Door change.
    """

    subscription_id: str
    resource_group: str
    location: str
    container_group_prefix: str
    registry: str
    image: str
    identity: str
    container_name: str | None = None
    # The seed sizes a slot at 2 CPU and 8 GB (deployment-config.sh).
    cpu: float = Field(default=2.0, gt=0, le=32)
    memory_gb: float = Field(default=8.0, gt=0, le=256)
    ports: list[int] = Field(default_factory=lambda: [8080], min_length=1, max_length=16)
    os_type: Literal["Linux", "Windows"] = "Linux"
    restart_policy: Literal["Always", "OnFailure", "Never"] = "Always"
    command: list[str] | None = None
    dns_name_label: str | None = None
    dns_label_scope: str = "TenantReuse"
    subnet_id: str | None = None
    environment: dict[str, str] = Field(default_factory=dict)
    secrets: dict[str, SecretReference] = Field(default_factory=dict)
    tags: dict[str, str] = Field(default_factory=dict)
    front_door: Annotated[StandardFrontDoorSettings | ClassicFrontDoorSettings,
                          Field(discriminator="kind")]
    poll_interval: Duration = timedelta(seconds=5)
    provisioning_timeout: Duration = timedelta(minutes=30)
    ready_timeout: Duration = timedelta(minutes=10)
    max_restarts: int = Field(default=3, ge=0, le=100)
    switch_confirm: Literal["version", "status", "off"] = "status"
    switch_confirm_timeout: Duration = timedelta(minutes=30)
    switch_confirm_answers: int = Field(default=6, ge=1, le=100)
    switch_confirm_window: Duration = timedelta(seconds=60)
    operation_timeout: Duration = timedelta(minutes=5)
    arm_endpoint: str = "https://management.azure.com"
    managed_identity_client_id: str | None = None
    app_insights: AppInsightsSettings | None = None
    postgres_server: str | None = None
    max_backup_age: Duration = timedelta(hours=26)

    @field_validator("subscription_id")
    @classmethod
    def _subscription(cls, value: str) -> str:
        if not _UUID.match(value):
            raise ValueError(f"{value!r} is not a subscription ID (a GUID)")
        return value.lower()

    @field_validator("resource_group")
    @classmethod
    def _resource_group(cls, value: str) -> str:
        if not _RESOURCE_GROUP.match(value):
            raise ValueError(f"{value!r} is not a resource group name (1-90 letters, digits, "
                             "_ - . ( ), not ending in .)")
        return value

    @field_validator("location")
    @classmethod
    def _location(cls, value: str) -> str:
        name = value.replace(" ", "").lower()
        if not _LOCATION.match(name):
            raise ValueError(f"{value!r} is not an Azure region name (e.g. eastus, westeurope)")
        return name

    @field_validator("container_group_prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        if not _GROUP_PREFIX.match(value) or value.endswith("-"):
            raise ValueError(f"{value!r}: container group names are lowercase letters, digits "
                             "and single hyphens (the prefix at most 51 characters)")
        return value

    @field_validator("registry")
    @classmethod
    def _registry(cls, value: str) -> str:
        if "." not in value:
            if not _ACR_NAME.match(value):
                raise ValueError(f"{value!r} is not a container registry name (5-50 letters "
                                 "and digits) or login server (name.azurecr.io)")
            return f"{value.lower()}.azurecr.io"
        if not _LOGIN_SERVER.match(value.lower()):
            raise ValueError(f"{value!r} is not a registry login server (name.azurecr.io)")
        return value.lower()

    @field_validator("image")
    @classmethod
    def _image(cls, value: str) -> str:
        if not _REPOSITORY.match(value) or len(value) > 200:
            raise ValueError(f"{value!r} is not an image repository (lowercase, e.g. qlp or "
                             "team/qlp; no tag: the version is the tag)")
        return value

    @field_validator("container_name")
    @classmethod
    def _container_name(cls, value: str | None) -> str | None:
        if value is not None and not _GROUP_PREFIX.match(value):
            raise ValueError(f"{value!r} is not a container name (lowercase letters, digits, -)")
        return value

    @field_validator("ports")
    @classmethod
    def _ports(cls, ports: list[int]) -> list[int]:
        for port in ports:
            if not 1 <= port <= 65535:
                raise ValueError(f"{port} is not a TCP port (1-65535)")
        if len(set(ports)) != len(ports):
            raise ValueError("a port is listed twice")
        return ports

    @field_validator("dns_name_label")
    @classmethod
    def _dns_label(cls, value: str | None) -> str | None:
        if value is not None and not _DNS_LABEL.match(value):
            raise ValueError(f"{value!r} is not a DNS name label (lowercase letters, digits, -; "
                             "3-52 characters; the colour is appended)")
        return value

    @field_validator("dns_label_scope")
    @classmethod
    def _scope(cls, value: str) -> str:
        for scope in DNS_LABEL_SCOPES:
            if value.lower() == scope.lower():
                return scope
        if value.lower() == "unsecure":
            raise ValueError("Unsecure lets anyone take the DNS name once a group is deleted "
                             f"(subdomain takeover); use one of {', '.join(DNS_LABEL_SCOPES)}")
        if value.lower() == "noreuse":
            raise ValueError("Noreuse gives the group a new random FQDN at every creation, and "
                             "the bot re-creates the group at every deployment, so Front "
                             "Door's origin would keep pointing at a host that no longer "
                             f"exists; use one of {', '.join(DNS_LABEL_SCOPES)} (the FQDN "
                             "stays the same across re-creations)")
        raise ValueError(f"{value!r} is not a DNS label scope; use one of "
                         f"{', '.join(DNS_LABEL_SCOPES)}")

    @field_validator("identity")
    @classmethod
    def _identity(cls, value: str) -> str:
        if "/" in value:
            if not _IDENTITY_ID.match(value):
                raise ValueError(f"{value!r} is not a user-assigned identity resource ID "
                                 "(/subscriptions/.../providers/Microsoft.ManagedIdentity/"
                                 "userAssignedIdentities/<name>)")
        elif not _ARM_NAME.match(value):
            raise ValueError(f"{value!r} is not a user-assigned identity name")
        return value

    @field_validator("subnet_id")
    @classmethod
    def _subnet(cls, value: str | None) -> str | None:
        if value is None:
            return value
        if not _SUBNET_ID.match(value):
            raise ValueError(f"{value!r} is not a subnet resource ID (/subscriptions/.../"
                             "providers/Microsoft.Network/virtualNetworks/<vnet>/subnets/<name>)")
        # Every environment sits behind front_door, and Front Door cannot route to a private
        # IP in a virtual network; an ACI private IP also changes at every re-creation, and
        # nothing here would update the origin.
        raise ValueError("a container group in a subnet gets a private IP, which Front Door "
                         "cannot reach (it routes only to public origins) and which changes "
                         "at every re-creation; remove subnet_id and set dns_name_label (a "
                         "public IP with a stable DNS name that the origins point at)")

    @field_validator("environment", "secrets")
    @classmethod
    def _env_names(cls, values: dict[str, Any]) -> dict[str, Any]:
        for name in values:
            if not _ENV_NAME.match(name):
                raise ValueError(f"{name!r} is not an environment variable name")
            if name in TELEMETRY_ENV:
                raise ValueError(f"{name} is set by the bot to each colour's cloud role name "
                                 "(<role_name_prefix>-<colour>, the name the Logs queries "
                                 "filter on); change app_insights.role_name_prefix instead")
            if name in RESERVED_ENV:
                raise ValueError(f"{name} is set by the bot for each colour; "
                                 f"do not set {', '.join(sorted(RESERVED_ENV))}")
        return values

    @field_validator("postgres_server")
    @classmethod
    def _postgres_server(cls, value: str | None) -> str | None:
        if value is not None and not _PG_SERVER.match(value):
            raise ValueError(f"{value!r} is not a PostgreSQL flexible server name (3-63 "
                             "lowercase letters, digits and single hyphens)")
        return value

    @field_validator("arm_endpoint")
    @classmethod
    def _arm_endpoint(cls, value: str) -> str:
        if not re.match(r"^https://[^\s/]+/?$", value):
            raise ValueError(f"{value!r} is not an https base URL "
                             "(e.g. https://management.azure.com)")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _consistent(self) -> AzureSettings:
        if self.dns_name_label is None:
            raise ValueError("dns_name_label is required: each colour gets a public IP with the "
                             "DNS name <dns_name_label>-<colour>, which Front Door's origins "
                             "point at")
        both = set(self.environment) & set(self.secrets)
        if both:
            raise ValueError(f"{', '.join(sorted(both))} is in both environment and secrets")
        if self.poll_interval <= timedelta(0):
            raise ValueError("poll_interval must be positive")
        for key in ("switch_confirm_timeout", "operation_timeout"):
            if getattr(self, key) <= timedelta(0):
                raise ValueError(f"{key} must be positive")
        if self.switch_confirm_window < timedelta(0):
            raise ValueError("switch_confirm_window cannot be negative")
        if self.max_backup_age <= timedelta(0):
            raise ValueError("max_backup_age must be positive (e.g. 26h)")
        return self

    # -- derived names ---------------------------------------------------------------------

    def group_name(self, colour: str) -> str:
        """The container group of a colour: ``<prefix>-blue`` or ``<prefix>-green``."""
        return f"{self.container_group_prefix}-{colour}"

    def dns_label(self, colour: str) -> str | None:
        return f"{self.dns_name_label}-{colour}" if self.dns_name_label else None

    @property
    def container(self) -> str:
        """The container's name inside each group."""
        return self.container_name or self.image.rsplit("/", 1)[-1].replace(".", "-").replace(
            "_", "-")

    @property
    def identity_id(self) -> str:
        """The user-assigned identity's resource ID (a bare name lives in resource_group)."""
        if "/" in self.identity:
            return self.identity
        return (f"/subscriptions/{self.subscription_id}/resourceGroups/{self.resource_group}"
                "/providers/Microsoft.ManagedIdentity/userAssignedIdentities/" + self.identity)

    def image_for(self, version: str) -> str:
        return f"{self.registry}/{self.image}:{version}"

    def role_name(self, colour: str) -> str:
        """The cloud role name a colour reports telemetry under: ``<prefix>-<colour>``.

        The one owner of that name: the Logs queries filter on it, and the bot injects it into
        the colour's container group as ``OTEL_SERVICE_NAME`` (a reserved variable), which the
        OpenTelemetry exporters report as the cloud role name."""
        insights = self.app_insights
        prefix = (insights.role_name_prefix if insights is not None else None) \
            or self.container_group_prefix
        return f"{prefix}-{colour}"


_KNOWN_KEYS = sorted({*AzureSettings.model_fields, *StandardFrontDoorSettings.model_fields,
                      *ClassicFrontDoorSettings.model_fields,
                      *AppInsightsSettings.model_fields})


def parse_azure_settings(data: Any, *, where: str = "azure") -> AzureSettings:
    """Validate an environment's ``azure:`` mapping; ConfigError names the first bad key.

    ``where`` is the key path of the section, e.g. ``environments.production.azure``.
    """
    if isinstance(data, AzureSettings):
        return data
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: must be a mapping of keys", key=where)
    try:
        return AzureSettings.model_validate(data)
    except ValidationError as exc:
        error = exc.errors()[0]
        loc = tuple(error.get("loc", ()))
        key = ".".join([where, *(_loc_part(part) for part in loc if not _noise(part))])
        key = key.replace(".[", "[")
        kind = error.get("type", "")
        message = str(error.get("msg", "invalid")).removeprefix("Value error, ")
        if kind == "extra_forbidden":
            near = difflib.get_close_matches(str(loc[-1]), _KNOWN_KEYS, n=1, cutoff=0.6)
            message = "unknown key" + (f" (did you mean {near[0]}?)" if near else "")
        elif kind == "missing":
            message = "required key is missing"
        elif kind == "union_tag_invalid":
            message = "kind must be standard (Front Door Standard/Premium) or classic"
        elif kind == "union_tag_not_found":
            message = "needs kind: standard (Front Door Standard/Premium) or classic"
        extra = len(exc.errors()) - 1
        more = f" (and {extra} more problem{'s' if extra > 1 else ''})" if extra else ""
        raise ConfigError(f"{key}: {message}{more}", key=key) from None


def _noise(part: int | str) -> bool:
    # Pydantic puts the union member's tag (``standard``) and validator names into the location.
    return isinstance(part, str) and (part in ("standard", "classic")
                                      or part.startswith(("function-", "literal[")))


def _loc_part(part: int | str) -> str:
    return f"[{part}]" if isinstance(part, int) else str(part)
