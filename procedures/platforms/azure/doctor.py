"""``qlp-bot doctor`` for an Azure environment: everything a deployment touches, read only.

:func:`azure_checks` returns the checks (``procedures.doctor.Check``) of one environment, in the
order a deployment needs them:

1. a token for ARM from the environment's credential (nothing else runs without one);
2. the resource group;
3. both colours' container group names (valid ACI names) and whether the groups exist ("not
   yet created" is fine: the first deployment creates them);
4. the user-assigned identity the groups pull their image with;
5. the image repository: the registry (found by its login server, in the resource group or
   anywhere in the subscription), its tags newest first through the registry's data plane
   (``azure-containerregistry``: the bot's identity needs AcrPull, or Container Registry
   Repository Reader on an ABAC-mode registry), and the groups' identity's pull role on it
   (the role assignments at the registry's scope);
6. Front Door: the profile, the route and the colours' origin groups (Standard/Premium) or the
   routing rule and backend pools (classic), and each colour's origins against its container
   group's FQDN and first port when that group exists;
7. every Key Vault secret read (the value is dropped at once; only names are printed);
8. the Logs query the monitors run (:func:`request_counts_query`): no rows is fine, a 403 or a
   KQL error fails with Azure's code;
9. the container groups' platform metrics;
10. the PostgreSQL flexible server's backups, when ``postgres_server`` is set;
11. the bot's effective permissions at each scope it writes or reads
    (``GET {scope}/providers/Microsoft.Authorization/permissions``, matched with Azure's
    wildcard rules), naming the missing role and the scope.

Nothing is changed anywhere. Azure's answers are reported with their code (``AuthorizationFailed``,
``ForbiddenByRbac``, ``SemanticError``...).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from azure.containerregistry import ArtifactTagOrder
from azure.core.exceptions import AzureError, HttpResponseError, ResourceNotFoundError
from azure.core.rest import HttpRequest

from procedures.doctor import Check, CheckResult, fail, ok, skipped, warn
from procedures.errors import ExternalServiceError
from procedures.platforms.azure.backups import FlexibleServerBackups, arm_pipeline
from procedures.platforms.azure.container_groups import GroupState
from procedures.platforms.azure.errors import AzureCalls, azure_error_code, translate
from procedures.platforms.azure.monitoring import logs_failure, request_counts_query
from procedures.platforms.azure.platform_metrics import ContainerGroupMetrics, monitor_client
from procedures.platforms.azure.registry_tags import acr_error as _acr_error
from procedures.platforms.azure.roles import role_for, role_hint
from procedures.platforms.azure.settings import (
    COLOURS,
    AzureSettings,
    ClassicFrontDoorSettings,
    StandardFrontDoorSettings,
)

if TYPE_CHECKING:
    from azure.mgmt.core import ARMPipelineClient

    from procedures.platforms.azure.monitoring import AzureMetrics
    from procedures.platforms.azure.platform import AzurePlatform

__all__ = [
    "PERMISSIONS_API_VERSION",
    "RequiredAccess",
    "allowed",
    "azure_checks",
    "required_access",
]

RESOURCE_GROUP_API_VERSION = "2021-04-01"
IDENTITY_API_VERSION = "2023-01-31"
PERMISSIONS_API_VERSION = "2022-04-01"
REGISTRY_API_VERSION = "2025-11-01"
ROLE_ASSIGNMENTS_API_VERSION = "2022-04-01"
MAX_PAGES = 20
MAX_TAGS = 1000  # counted, newest first; a repository with more says "1000+"
# The registry's role assignment modes (Registry.properties.roleAssignmentMode).
ABAC_MODE = "AbacRepositoryPermissions"
# Built-in role definition IDs that let an identity pull (the same GUIDs in every tenant). On a
# registry in LegacyRegistryPermissions mode: AcrPull, and the roles holding
# registries/pull/read (AcrPush, Reader, Contributor, Owner); in ABAC mode only the repository
# roles count, of which Container Registry Repository Reader is the reading one.
ACR_PULL_ROLE_ID = "7f951dda-4ed3-4680-a7ca-43fe172d538d"
REPOSITORY_READER_ROLE_ID = "b93aa761-3e63-49ed-ac28-beffa264f7ac"
LEGACY_PULL_ROLES = {
    ACR_PULL_ROLE_ID: "AcrPull",
    "8311e382-0749-4cb8-b61a-304f252e45ec": "AcrPush",
    "acdd72a7-3385-48ef-bd42-f606fba81ae7": "Reader",
    "b24988ac-6180-42a0-ab88-20f7382dd24c": "Contributor",
    "8e3af657-a8ff-443c-a75c-2fe8c4bcb635": "Owner",
}
ABAC_PULL_ROLES = {REPOSITORY_READER_ROLE_ID: "Container Registry Repository Reader"}
TAGS_ACTION = "Microsoft.ContainerRegistry/registries/repositories/metadata/read"
# ACI container group names: 1-63 lowercase letters, digits and single hyphens, not at the ends.
_GROUP_NAME = re.compile(r"^[a-z0-9](?:[a-z0-9]|-(?!-)){0,61}[a-z0-9]$|^[a-z0-9]$")


# -- the role table (shared/research/azure-first-run.md §7.1) ----------------------------------


@dataclass(frozen=True)
class RequiredAccess:
    """An action the bot performs at ``scope``, and the built-in role that grants it."""

    scope: str
    action: str
    role: str
    what: str  # what the bot does with it, for the message
    data_action: bool = False


def _role(action: str) -> str:
    need = role_for(action)
    return need.role if need is not None else f"a role that grants {action}"


def required_access(settings: AzureSettings) -> list[RequiredAccess]:
    """Every action the bot needs, at its scope, for these settings."""
    s = settings
    rg = f"/subscriptions/{s.subscription_id}/resourceGroups/{s.resource_group}"
    needs: list[RequiredAccess] = []

    def need(scope: str, action: str, what: str) -> None:
        needs.append(RequiredAccess(scope, action, _role(action), what))

    for verb in ("read", "write", "delete"):
        need(rg, f"Microsoft.ContainerInstance/containerGroups/{verb}",
             f"{verb} the colours' container groups")
    need(s.identity_id, "Microsoft.ManagedIdentity/userAssignedIdentities/assign/action",
         "give the container groups their identity")
    if s.subnet_id:
        need(s.subnet_id, "Microsoft.Network/virtualNetworks/subnets/join/action",
             "put the container groups in the subnet")
    fd = s.front_door
    if isinstance(fd, StandardFrontDoorSettings):
        profile = f"{rg}/providers/Microsoft.Cdn/profiles/{fd.profile}"
        if fd.switch_by == "route":
            need(profile, "Microsoft.Cdn/profiles/afdEndpoints/routes/read", "read the route")
            need(profile, "Microsoft.Cdn/profiles/afdEndpoints/routes/write",
                 "point the route at a colour")
        else:
            need(profile, "Microsoft.Cdn/profiles/originGroups/origins/read",
                 "read the colours' origins")
            need(profile, "Microsoft.Cdn/profiles/originGroups/origins/write",
                 "enable and disable the colours' origins")
    else:
        front_door = f"{rg}/providers/Microsoft.Network/frontDoors/{fd.name}"
        need(front_door, "Microsoft.Network/frontDoors/read", "read the Front Door")
        need(front_door, "Microsoft.Network/frontDoors/write", "repoint the routing rule")
    need(rg, "Microsoft.Insights/metrics/read", "read the container groups' CPU and memory")
    insights = s.app_insights
    if insights is not None and insights.resource_id:
        need(insights.resource_id, "Microsoft.Insights/components/query/read",
             "query the request telemetry")
    if s.postgres_server:
        need(f"{rg}/providers/Microsoft.DBforPostgreSQL/flexibleServers/{s.postgres_server}",
             "Microsoft.DBforPostgreSQL/flexibleServers/backups/read",
             "read the database backups")
    return needs


def _pattern(action: str) -> re.Pattern[str]:
    # Azure's wildcards: ``*`` matches any run of characters, and a ``/*/`` segment may also
    # match nothing (``userAssignedIdentities/*/assign/action`` grants
    # ``userAssignedIdentities/assign/action``). Case-insensitive, like ARM.
    parts = [re.escape(part) for part in action.split("*")]
    text = ".*".join(parts).replace("/.*/", "/(?:.*/)?")
    return re.compile(f"^{text}$", re.IGNORECASE)


def _matches(patterns: Iterable[str], action: str) -> bool:
    return any(_pattern(str(p)).match(action) for p in patterns)


def allowed(permissions: Iterable[Mapping[str, Any]], action: str, *,
            data_action: bool = False) -> bool:
    """Whether the permission list Azure returned grants ``action``: some entry's actions
    match it and that same entry's notActions do not (notActions subtract only within the
    role that declares them)."""
    grant, deny = ("dataActions", "notDataActions") if data_action else ("actions", "notActions")
    for entry in permissions:
        if _matches(entry.get(grant) or (), action) and \
                not _matches(entry.get(deny) or (), action):
            return True
    return False


# -- talking to ARM ------------------------------------------------------------------------------


ARM_CALLS = AzureCalls("Azure Resource Manager")
"""Counts and traces the doctor's plain ARM reads (``AzureCalls.observed``)."""


class _Arm:
    """GETs of plain ARM resources through one pipeline with the environment's credential."""

    def __init__(self, client: ARMPipelineClient[Any, Any]) -> None:
        self._client = client

    def get(self, path: str, api_version: str) -> Mapping[str, Any] | None:
        """The resource, or None for a 404; raises HttpResponseError for other failures."""
        request = HttpRequest("GET", self._client.format_url(path),
                              params={"api-version": api_version})
        with ARM_CALLS.observed("read resource"):
            response = self._client.send_request(request)
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            from azure.mgmt.core.exceptions import ARMErrorFormat

            raise HttpResponseError(response=response, error_format=ARMErrorFormat)
        body = response.json()
        return body if isinstance(body, Mapping) else {}

    def list(self, path: str, api_version: str,
             params: Mapping[str, str] | None = None) -> Iterator[Mapping[str, Any]]:
        request = HttpRequest("GET", self._client.format_url(path),
                              params={"api-version": api_version, **(params or {})})
        for _ in range(MAX_PAGES):
            with ARM_CALLS.observed("list resources"):
                response = self._client.send_request(request)
            if response.status_code != 200:
                from azure.mgmt.core.exceptions import ARMErrorFormat

                raise HttpResponseError(response=response, error_format=ARMErrorFormat)
            body = response.json()
            for item in (body.get("value") if isinstance(body, Mapping) else None) or []:
                if isinstance(item, Mapping):
                    yield item
            next_link = body.get("nextLink") if isinstance(body, Mapping) else None
            if not next_link:
                return
            request = HttpRequest("GET", str(next_link))

    def close(self) -> None:
        self._client.close()


def _azure_detail(exc: BaseException, what: str, service: str = "Azure") -> str:
    if isinstance(exc, AzureError):
        return translate(exc, service=service, what=what).message
    if isinstance(exc, ExternalServiceError):
        return exc.message
    return f"{what}: {type(exc).__name__}: {exc}"


def _forbidden(exc: BaseException) -> bool:
    code = (azure_error_code(exc) or getattr(exc, "code", None) or "")
    status = getattr(exc, "status_code", None)
    return status == 403 or code in ("AuthorizationFailed", "LinkedAuthorizationFailed",
                                     "Forbidden", "ForbiddenByRbac", "InsufficientAccessError")


# -- the checks ----------------------------------------------------------------------------------


class _AzureDoctor:
    """The checks of one Azure environment; state shared between them (the groups read)."""

    def __init__(self, name: str, platform: AzurePlatform, metrics: AzureMetrics | None,
                 now: Callable[[], datetime]) -> None:
        self.area = name
        self.platform = platform
        self.settings: AzureSettings = platform.settings
        self.clients = platform._clients  # same package: the platform's own clients
        self.metrics = metrics
        self.now = now
        self.credential_ok = False
        self.resource_group_missing = False  # checks inside it then say so, not "not created"
        self.groups: dict[str, GroupState | None] = {}
        self.identity_principal_id: str | None = None  # the groups' identity, once read
        self._arm: _Arm | None = None

    @property
    def arm(self) -> _Arm:
        if self._arm is None:
            self._arm = _Arm(arm_pipeline(self.clients))
        return self._arm

    def close(self) -> None:
        if self._arm is not None:
            self._arm.close()

    def checks(self) -> list[Check]:
        def check(name: str, run: Callable[[], Any]) -> Check:
            return Check(self.area, name, self._needs_credential(name, run))

        return [
            Check(self.area, "Azure credential", self.credential),
            check("resource group", self.resource_group),
            check("container groups", self.container_groups),
            check("user-assigned identity", self.identity),
            check("image", self.image),
            check("Front Door", self.front_door),
            check("Key Vault secrets", self.key_vault),
            check("Logs query", self.logs),
            check("platform metrics", self.platform_metrics),
            check("database backups", self.backups),
            check("permissions", self.permissions),
        ]

    def _needs_credential(self, name: str, run: Callable[[], Any]) -> Callable[[], Any]:
        def guarded() -> Any:
            if not self.credential_ok:
                return skipped(self.area, name, "not checked: no Azure credential")
            return run()

        return guarded

    # 1. credential -----------------------------------------------------------------------

    def credential(self) -> CheckResult:
        scope = f"{self.settings.arm_endpoint}/.default"
        try:
            token = self.clients.credential.get_token(scope)
        except Exception as exc:  # every credential type raises its own errors
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
            return fail(self.area, "Azure credential", f"no token for {scope}: {first}",
                        "run the bot with a managed identity (set managed_identity_client_id "
                        "for a user-assigned one), workload identity, AZURE_CLIENT_ID/"
                        "AZURE_TENANT_ID/AZURE_CLIENT_SECRET, or `az login`")
        self.credential_ok = bool(getattr(token, "token", None))
        if not self.credential_ok:
            return fail(self.area, "Azure credential", f"the credential gave an empty token "
                        f"for {scope}")
        return ok(self.area, "Azure credential", f"a token for {scope}")

    # 2. resource group --------------------------------------------------------------------

    def resource_group(self) -> CheckResult:
        s = self.settings
        path = f"/subscriptions/{s.subscription_id}/resourcegroups/{s.resource_group}"
        try:
            found = self.arm.get(path, RESOURCE_GROUP_API_VERSION)
        except AzureError as exc:
            return self._azure_failure("resource group", exc, f"read resource group "
                                       f"{s.resource_group}", path, "Reader")
        if found is None:
            self.resource_group_missing = True
            return fail(self.area, "resource group",
                        f"{s.resource_group} does not exist in subscription {s.subscription_id}",
                        f"create it (az group create -n {s.resource_group} -l {s.location}) "
                        "or fix azure.resource_group")
        return ok(self.area, "resource group",
                  f"{s.resource_group} ({found.get('location', s.location)})")

    # 3. container groups ------------------------------------------------------------------

    def container_groups(self) -> list[CheckResult]:
        results = []
        for colour in COLOURS:
            name = self.settings.group_name(colour)
            label = f"container group {colour}"
            if not _GROUP_NAME.match(name) or len(name) > 63:
                results.append(fail(self.area, label, f"{name!r} is not a valid container "
                                    "group name (1-63 lowercase letters, digits, hyphens)",
                                    "shorten or fix azure.container_group_prefix"))
                continue
            if self.resource_group_missing:
                self.groups[colour] = None
                results.append(skipped(self.area, label, f"not checked: resource group "
                                       f"{self.settings.resource_group} does not exist"))
                continue
            try:
                state = self.platform.groups.get(name)
            except ExternalServiceError as exc:
                self.groups[colour] = None
                results.append(fail(self.area, label, exc.message,
                                    self._hint_for(exc, "Microsoft.ContainerInstance/"
                                                   "containerGroups/read")))
                continue
            self.groups[colour] = state
            if state is None:
                results.append(ok(self.area, label, f"{name}: not yet created: created by the "
                                  "first deployment"))
            else:
                results.append(ok(self.area, label, f"{name} exists ({state.describe()}"
                                  + (f", {state.fqdn}" if state.fqdn else "") + ")"))
        return results

    # 4. identity --------------------------------------------------------------------------

    def identity(self) -> CheckResult:
        identity = self.settings.identity_id
        try:
            found = self.arm.get(identity, IDENTITY_API_VERSION)
        except AzureError as exc:
            return self._azure_failure("user-assigned identity", exc, "read the identity",
                                       identity, "Managed Identity Operator")
        if found is None:
            return fail(self.area, "user-assigned identity", f"{identity} does not exist",
                        f"create it (az identity create -g {_resource_group_of(identity)} -n "
                        f"{identity.rsplit('/', 1)[-1]}) and give it AcrPull on the registry, "
                        "or fix azure.identity")
        client_id = (found.get("properties") or {}).get("clientId")
        self.identity_principal_id = (found.get("properties") or {}).get("principalId")
        return ok(self.area, "user-assigned identity",
                  f"{identity.rsplit('/', 1)[-1]} exists"
                  + (f" (client ID {client_id})" if client_id else ""))

    # 5. image -----------------------------------------------------------------------------

    def image(self) -> list[CheckResult]:
        s = self.settings
        repository = f"{s.registry}/{s.image}"
        running = sorted({c.image for g in self.groups.values() if g is not None
                          for c in g.containers if c.image})
        results = [ok(self.area, "image", f"repository {repository}; each version is a tag "
                      f"({s.image_for('v1.2.3')})"
                      + (f"; running now: {', '.join(running)}" if running else ""))]
        results += self._registry()
        return results

    def _registry(self) -> list[CheckResult]:
        s = self.settings
        login = s.registry
        label = f"registry {login}"
        found, problem = self._find_registry(login, label)
        if found is None:
            return [problem] if problem is not None else []
        registry_id = str(found.get("id") or "")
        mode = str((found.get("properties") or {}).get("roleAssignmentMode") or "")
        return [self._tags(login, label, registry_id, mode),
                self._pull_role(registry_id, str(found.get("name") or login), mode)]

    def _find_registry(self, login: str, label: str
                       ) -> tuple[Mapping[str, Any] | None, CheckResult | None]:
        """The registry resource whose login server is ``login``: first where the settings'
        resource group would hold it, then anywhere in the subscription (shared registries
        often live elsewhere)."""
        s = self.settings
        name = login.split(".", 1)[0]
        path = (f"/subscriptions/{s.subscription_id}/resourceGroups/{s.resource_group}/providers/"
                f"Microsoft.ContainerRegistry/registries/{name}")
        found: Mapping[str, Any] | None = None
        try:
            found = self.arm.get(path, REGISTRY_API_VERSION)
        except AzureError as exc:
            if not _forbidden(exc):
                return None, fail(self.area, label, _azure_detail(exc, f"read registry {name}"))
        if found is not None:
            return found, None
        listing = (f"/subscriptions/{s.subscription_id}/providers/"
                   "Microsoft.ContainerRegistry/registries")
        try:
            for registry in self.arm.list(listing, REGISTRY_API_VERSION):
                server = str((registry.get("properties") or {}).get("loginServer") or "")
                if server.lower() == login:
                    return registry, None
        except AzureError as exc:
            return None, self._azure_failure(label, exc, "list the container registries",
                                             f"/subscriptions/{s.subscription_id}", "Reader")
        return None, fail(self.area, label, f"no registry with login server {login} that the "
                          f"bot can read in subscription {s.subscription_id}",
                          f"create it (az acr create -n {name} -g <resource group> --sku "
                          "Standard), fix azure.registry, or grant the bot's identity Reader on "
                          "the registry")

    def _tags(self, login: str, label: str, registry_id: str, mode: str) -> CheckResult:
        """The image repository's tags, newest first, read as the bot (its own identity)."""
        s = self.settings
        names: list[str] = []
        try:
            client = self.clients.registry(login)
            for tag in client.list_tag_properties(
                    s.image, order_by=ArtifactTagOrder.LAST_UPDATED_ON_DESCENDING,
                    results_per_page=100):
                names.append(tag.name)
                if len(names) >= MAX_TAGS:
                    break
        except HttpResponseError as exc:
            status = exc.status_code
            code, message = _acr_error(exc)
            where = f"{code} (HTTP {status}): {message}" if code else f"HTTP {status}: {exc}"
            if status in (401, 403):
                return fail(self.area, label, f"{where} listing the tags of {s.image}",
                            role_hint(TAGS_ACTION, registry_id)
                            + ("" if mode != ABAC_MODE else " (this registry is in ABAC "
                               "mode: grant Container Registry Repository Reader)"))
            if status == 404 and code == "NAME_UNKNOWN":
                return fail(self.area, label, f"repository {s.image} does not exist in {login} "
                            f"({code})", f"push the first version (docker push "
                            f"{s.image_for('<version>')}) or fix azure.image")
            return fail(self.area, label, f"{where} listing the tags of {s.image}")
        except AzureError as exc:
            return fail(self.area, label, _azure_detail(exc, f"list the tags of {s.image}",
                                                        "Azure Container Registry"))
        if not names:
            return fail(self.area, label, f"repository {s.image} has no tags",
                        f"push a version (docker push {s.image_for('<version>')})")
        count = f"{MAX_TAGS}+" if len(names) >= MAX_TAGS else str(len(names))
        return ok(self.area, label, f"repository {s.image} has {count} "
                  f"tag{'' if len(names) == 1 else 's'}, newest {names[0]}")

    def _pull_role(self, registry_id: str, registry: str, mode: str) -> CheckResult:
        """Whether the groups' identity holds a role that pulls from the registry."""
        identity = self.settings.identity_id
        identity_name = identity.rsplit("/", 1)[-1]
        label = "registry pull role"
        principal = self.identity_principal_id
        if not principal:
            return skipped(self.area, label, f"not checked: identity {identity_name} was not "
                           "read (see the user-assigned identity line)")
        try:
            assignments = list(self.arm.list(
                f"{registry_id}/providers/Microsoft.Authorization/roleAssignments",
                ROLE_ASSIGNMENTS_API_VERSION, {"$filter": f"principalId eq '{principal}'"}))
        except AzureError as exc:
            return self._azure_failure(label, exc, f"list the role assignments of {registry}",
                                       registry_id, "Reader")
        pulling = ABAC_PULL_ROLES if mode == ABAC_MODE else LEGACY_PULL_ROLES
        held = []
        for assignment in assignments:
            props = assignment.get("properties") or {}
            scope = str(props.get("scope") or "").rstrip("/").lower()
            if not scope or not (registry_id.lower() == scope
                                 or registry_id.lower().startswith(scope + "/")):
                continue  # below the registry: does not apply to it
            role_id = str(props.get("roleDefinitionId") or "").rsplit("/", 1)[-1].lower()
            if role_id in pulling:
                held.append(f"{pulling[role_id]} at {props.get('scope')}")
        if held:
            return ok(self.area, label, f"{identity_name} can pull from {registry}: "
                      + "; ".join(held))
        role = "Container Registry Repository Reader" if mode == ABAC_MODE else "AcrPull"
        why = " (the registry is in ABAC repository permissions mode)" if mode == ABAC_MODE else ""
        return fail(self.area, label, f"{identity_name} (principal {principal}) has no {role} on "
                    f"registry {registry}{why}: the container groups cannot pull "
                    f"{self.settings.image}",
                    f"az role assignment create --assignee-object-id {principal} "
                    f"--assignee-principal-type ServicePrincipal --role \"{role}\" "
                    f"--scope {registry_id} (a new assignment can take minutes to apply)")

    # 6. Front Door ------------------------------------------------------------------------

    def front_door(self) -> list[CheckResult]:
        fd = self.settings.front_door
        if isinstance(fd, StandardFrontDoorSettings):
            return self._standard(fd)
        return self._classic(fd)

    def _cdn_call(self, what: str, call: Callable[[], Any]) -> Any:
        try:
            with AzureCalls("Azure Front Door").observed(what):
                return call()
        except ResourceNotFoundError:
            return None
        except AzureError as exc:
            raise translate(exc, service="Azure Front Door", what=what) from exc

    def _standard(self, fd: StandardFrontDoorSettings) -> list[CheckResult]:
        rg = self.settings.resource_group
        cdn = self.clients.cdn
        area = self.area
        profile = self._cdn_call(f"read Front Door profile {fd.profile}",
                                 lambda: cdn.profiles.get(rg, fd.profile))
        if profile is None:
            return [fail(area, "Front Door profile", f"{fd.profile} does not exist in {rg}",
                         "create the Front Door Standard/Premium profile, or fix "
                         "front_door.profile")]
        results = [ok(area, "Front Door profile", f"{fd.profile}")]
        route = self._cdn_call(f"read route {fd.route}",
                               lambda: cdn.routes.get(rg, fd.profile, fd.endpoint, fd.route))
        if route is None:
            results.append(fail(area, "Front Door route", f"route {fd.route} of endpoint "
                                f"{fd.endpoint} does not exist", "create it, or fix "
                                "front_door.endpoint and front_door.route"))
        else:
            target = route.origin_group.id.rsplit("/", 1)[-1] if route.origin_group else None
            if fd.switch_by == "route":
                assert fd.origin_groups is not None
                colour = fd.origin_groups.colour_of(target) if target else None
                if target is not None and colour is None:
                    results.append(fail(
                        area, "Front Door route", f"{fd.route} sends traffic to origin group "
                        f"{target}, which is neither blue ({fd.origin_groups.blue}) nor green "
                        f"({fd.origin_groups.green})", "fix front_door.origin_groups, or point "
                        "the route at one of them"))
                else:
                    results.append(ok(area, "Front Door route", f"{fd.route} -> "
                                      f"{target or 'no origin group'}"
                                      + (f" ({colour})" if colour else "")))
            else:
                results.append(ok(area, "Front Door route", f"{fd.route} -> {target}"))
        if fd.switch_by == "route":
            assert fd.origin_groups is not None
            for colour in COLOURS:
                group = fd.origin_groups.name_of(colour)
                results += self._origin_group(colour, group, origin_names=None)
        else:
            assert fd.origin_group is not None and fd.origins is not None
            for colour in COLOURS:
                results += self._origin_group(colour, fd.origin_group,
                                              origin_names=[fd.origins.name_of(colour)])
        return results

    def _origin_group(self, colour: str, group: str,
                      origin_names: Sequence[str] | None) -> list[CheckResult]:
        rg = self.settings.resource_group
        fd = self.settings.front_door
        assert isinstance(fd, StandardFrontDoorSettings)
        cdn = self.clients.cdn
        label = f"origin group {colour}"
        found = self._cdn_call(f"read origin group {group}",
                               lambda: cdn.afd_origin_groups.get(rg, fd.profile, group))
        if found is None:
            return [fail(self.area, label, f"origin group {group} does not exist in Front Door "
                         f"{fd.profile}", f"create origin group {group} with an origin for the "
                         f"{colour} container group, or fix front_door.origin_group"
                         f"{'s.' + colour if origin_names is None else ''}")]
        origins = self._cdn_call(f"list the origins of origin group {group}", lambda: list(
            cdn.afd_origins.list_by_origin_group(rg, fd.profile, group))) or []
        if origin_names is not None:
            wanted = {name.lower() for name in origin_names}
            picked = [o for o in origins if (o.name or "").lower() in wanted]
            if not picked:
                return [fail(self.area, label, f"origin {', '.join(origin_names)} does not exist "
                             f"in origin group {group}", "create it, or fix front_door.origins")]
            origins = picked
        elif not origins:
            return [fail(self.area, label, f"origin group {group} has no origins",
                         f"add an origin pointing at the {colour} container group's FQDN")]
        return [ok(self.area, label, f"{group} ({len(origins)} origin"
                   f"{'s' if len(origins) != 1 else ''})"),
                *self._compare_origins(colour, [(o.name or "?", o.host_name, o.http_port)
                                                for o in origins], f"origin group {group}")]

    def _compare_origins(self, colour: str, origins: list[tuple[str, str | None, int | None]],
                         where: str) -> list[CheckResult]:
        label = f"origins {colour}"
        state = self.groups.get(colour)
        name = self.settings.group_name(colour)
        port = self.settings.ports[0]
        if state is None or not state.host:
            return [ok(self.area, label, f"not compared: {name} not yet created (after the "
                       f"first deployment, point the origins of {where} at its FQDN, HTTP "
                       f"port {port})")]
        wrong = []
        for origin, host, http_port in origins:
            problems = []
            if (host or "").lower() != state.host.lower():
                problems.append(f"host {host} (the group answers at {state.host})")
            if http_port != port:
                problems.append(f"HTTP port {http_port} (the group listens on {port})")
            if problems:
                wrong.append(f"origin {origin} has " + " and ".join(problems))
        if wrong:
            return [fail(self.area, label, f"{where}: " + "; ".join(wrong),
                         f"set the origins' host name to {state.host} and HTTP port to {port} "
                         f"(az afd origin update ... --host-name {state.host} --http-port "
                         f"{port}), forwarding HTTP only")]
        return [ok(self.area, label, f"{where} -> {state.host}:{port}")]

    def _classic(self, fd: ClassicFrontDoorSettings) -> list[CheckResult]:
        rg = self.settings.resource_group
        front_doors = self.clients.frontdoor.front_doors
        found = self._cdn_call(f"read Front Door {fd.name}", lambda: front_doors.get(rg, fd.name))
        if found is None:
            return [fail(self.area, "Front Door", f"classic Front Door {fd.name} does not exist "
                         f"in {rg}", "fix front_door.name")]
        results = [ok(self.area, "Front Door", f"classic {fd.name}")]
        rules = {(r.name or "").lower(): r for r in found.routing_rules or []}
        if fd.routing_rule.lower() not in rules:
            results.append(fail(self.area, "routing rule", f"{fd.routing_rule} does not exist "
                                f"(it has: {', '.join(sorted(rules)) or 'none'})",
                                "fix front_door.routing_rule"))
        else:
            results.append(ok(self.area, "routing rule", fd.routing_rule))
        pools = {(p.name or "").lower(): p for p in found.backend_pools or []}
        for colour in COLOURS:
            name = fd.backend_pools.name_of(colour)
            pool = pools.get(name.lower())
            if pool is None:
                results.append(fail(self.area, f"backend pool {colour}", f"{name} does not "
                                    f"exist in {fd.name}", "create it, or fix "
                                    f"front_door.backend_pools.{colour}"))
                continue
            results.append(ok(self.area, f"backend pool {colour}", name))
            results += self._compare_origins(
                colour, [(b.address or "?", b.address, b.http_port) for b in pool.backends or []],
                f"backend pool {name}")
        return results

    # 7. Key Vault -------------------------------------------------------------------------

    def key_vault(self) -> list[CheckResult]:
        refs = self.settings.secrets
        if not refs:
            return [ok(self.area, "Key Vault secrets", "none configured")]
        results = []
        for env_name, ref in refs.items():
            label = f"secret {env_name}"
            client = self.clients.secrets(ref.vault_url)
            try:
                secret = client.get_secret(ref.name, ref.version)
                has_value = secret.value is not None
                del secret  # the value is never kept, printed or logged
            except AzureError as exc:
                detail = _azure_detail(exc, f"read {ref.name} from {ref.vault_url}",
                                       "Azure Key Vault")
                inner = _inner_code(exc)
                if inner and inner not in detail:
                    detail = f"{inner}: {detail}"
                fix = (f"grant the bot's identity Key Vault Secrets User on the vault "
                       f"{ref.vault_url} (or an access policy with get)" if _forbidden(exc)
                       else f"create secret {ref.name} in {ref.vault_url}, or fix "
                            f"azure.secrets.{env_name}")
                results.append(fail(self.area, label, detail, fix))
                continue
            if not has_value:
                results.append(fail(self.area, label, f"{ref.name} has no value",
                                    f"set a value for {ref.name}"))
            else:
                results.append(ok(self.area, label, f"{ref.name} readable "
                                  f"({ref.version or 'latest'} version; value not shown)"))
        return results

    # 8. Logs ------------------------------------------------------------------------------

    def logs(self) -> CheckResult:
        insights = self.settings.app_insights
        if insights is None:
            return warn(self.area, "Logs query", "no app_insights section: error rates cannot "
                        "be read, so pre-deploy checks and monitors are inconclusive",
                        "set azure.app_insights.workspace_id (or resource_id)")
        if self.metrics is None:
            return skipped(self.area, "Logs query", "not checked: no metrics source")
        role = self.settings.role_name("blue")
        query = request_counts_query(insights, role)
        end = self.now()
        try:
            client = self.metrics._logs()  # same package: the monitors' own Logs client
            if insights.workspace_id is not None:
                result = client.query_workspace(insights.workspace_id, query,
                                                timespan=(end - timedelta(hours=1), end))
            else:
                result = client.query_resource(insights.resource_id or "", query,
                                               timespan=(end - timedelta(hours=1), end))
        except AzureError as exc:
            failure = logs_failure(exc, insights, role)
            status = getattr(exc, "status_code", None)
            where = f" (HTTP {status})" if status else ""
            return fail(self.area, "Logs query", f"{failure.code}{where}: {failure.detail}",
                        failure.fix)
        outcome = str(getattr(result, "status", ""))
        if "PARTIAL" in outcome.upper():
            error = getattr(result, "partial_error", None)
            code = getattr(error, "code", None) or "PartialError"
            return fail(self.area, "Logs query", f"partial result: {code}: "
                        f"{getattr(error, 'message', error)}", "fix the query or its scope")
        target = insights.workspace_id or insights.resource_id
        total = _total_of(result)
        seen = (f"{total} requests of {role} in the last hour" if total
                else f"no requests of {role} in the last hour yet, which is fine")
        return ok(self.area, "Logs query", f"runs on {target} ({seen})")

    # 9. metrics ---------------------------------------------------------------------------

    def platform_metrics(self) -> list[CheckResult]:
        existing = [colour for colour in COLOURS if self.groups.get(colour) is not None]
        if not existing:
            return [ok(self.area, "platform metrics", "not checked: no container group yet "
                       "(read after the first deployment)")]
        client = monitor_client(self.clients)
        try:
            reader = ContainerGroupMetrics(self.settings, client)
            results = []
            for colour in existing:
                try:
                    usage = reader.usage(colour, self.now())
                except ExternalServiceError as exc:
                    results.append(fail(self.area, f"platform metrics {colour}", exc.message,
                                        self._hint_for(exc, "Microsoft.Insights/metrics/read")))
                    continue
                results.append(ok(self.area, f"platform metrics {colour}",
                                  f"readable ({usage.points} points in the last "
                                  f"{int(usage.window.total_seconds() // 60)} min)"))
            return results
        finally:
            client.close()

    # 10. backups --------------------------------------------------------------------------

    def backups(self) -> CheckResult:
        server = self.settings.postgres_server
        if not server:
            return ok(self.area, "database backups", "no postgres_server: not read")
        try:
            age = FlexibleServerBackups(self.settings, self.arm._client).age(self.now())
        except ExternalServiceError as exc:
            return fail(self.area, "database backups", exc.message, self._hint_for(
                exc, "Microsoft.DBforPostgreSQL/flexibleServers/backups/read"))
        if age.latest is None:
            return warn(self.area, "database backups", f"{server} has no completed backup",
                        "check the server's backup settings")
        if not age.fresh:
            return warn(self.area, "database backups", age.describe(),
                        "check the server's automated backups")
        return ok(self.area, "database backups", age.describe())

    # 11. permissions ----------------------------------------------------------------------

    def permissions(self) -> list[CheckResult]:
        results = []
        by_scope: dict[str, list[RequiredAccess]] = {}
        for need in required_access(self.settings):
            by_scope.setdefault(need.scope, []).append(need)
        for scope, needs in by_scope.items():
            short = _short_scope(scope)
            label = f"permissions on {short}"
            try:
                granted = list(self.arm.list(
                    f"{scope}/providers/Microsoft.Authorization/permissions",
                    PERMISSIONS_API_VERSION))
            except AzureError as exc:
                if azure_error_code(exc) == "ResourceGroupNotFound":
                    fix = (f"create resource group {self.settings.resource_group} first (see "
                           "the resource group line)")
                else:
                    fix = (f"grant the bot's identity at least Reader on {scope} so its "
                           "permissions can be read")
                results.append(fail(self.area, label, _azure_detail(
                    exc, f"list the permissions at {scope}"), fix))
                continue
            missing = [need for need in needs
                       if not allowed(granted, need.action, data_action=need.data_action)]
            if not missing:
                results.append(ok(self.area, label, "granted: " + "; ".join(
                    need.what for need in needs)))
                continue
            roles = sorted({need.role for need in missing})
            actions = "; ".join(f"{need.action} ({need.what})" for need in missing)
            results.append(fail(self.area, label, f"missing {', '.join(roles)} at {scope}: "
                                f"not allowed: {actions}",
                                role_hint(missing[0].action, scope)))
        return results

    # -- helpers ---------------------------------------------------------------------------

    def _azure_failure(self, name: str, exc: AzureError, what: str, scope: str,
                       role: str) -> CheckResult:
        detail = _azure_detail(exc, what)
        fix = (f"grant the bot's identity {role} (or Reader) on {scope}" if _forbidden(exc)
               else None)
        return fail(self.area, name, detail, fix)

    def _hint_for(self, exc: ExternalServiceError, action: str) -> str | None:
        if not _forbidden(exc):
            return exc.hint
        for need in required_access(self.settings):
            if need.action == action:
                return role_hint(action, need.scope)
        return exc.hint


def _total_of(result: Any) -> int:
    """The ``total`` column of the request counts query's one row (0 when empty or null)."""
    tables = list(getattr(result, "tables", None) or [])
    if not tables or not tables[0].rows:
        return 0
    columns = [getattr(c, "name", c) for c in (tables[0].columns or [])]
    value = dict(zip(columns, list(tables[0].rows[0]), strict=False)).get("total")
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        return 0


def _inner_code(exc: BaseException) -> str | None:
    """Key Vault's ``innererror.code`` (``ForbiddenByRbac``) when the answer has one."""
    inner = getattr(getattr(exc, "error", None), "innererror", None)
    if isinstance(inner, Mapping) and inner.get("code"):
        return str(inner["code"])
    return None


def _short_scope(scope: str) -> str:
    """``resource group prod-qlp-rg`` or ``userAssignedIdentities/qlp-acr-pull``."""
    parts = scope.strip("/").split("/")
    if len(parts) == 4:
        return f"resource group {parts[3]}"
    return "/".join(parts[-2:])


def azure_checks(name: str, platform: AzurePlatform, metrics: AzureMetrics | None, *,
                 now: Callable[[], datetime]) -> tuple[list[Check], Callable[[], None]]:
    """The checks of Azure environment ``name`` and a function that closes what they opened."""
    doctor = _AzureDoctor(name, platform, metrics, now)
    return doctor.checks(), doctor.close


def _resource_group_of(resource_id: str) -> str:
    """The resource group named in an ARM resource ID."""
    parts = resource_id.split("/")
    lowered = [part.lower() for part in parts]
    if "resourcegroups" in lowered:
        index = lowered.index("resourcegroups") + 1
        if index < len(parts):
            return parts[index]
    return "<resource group>"
