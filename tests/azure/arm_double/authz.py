"""Authorization in the double: Azure RBAC role assignments, checked the way ARM checks them.

The model
---------
``double.assignments`` is a list of ``(scope, role name)``. A role is a set of action patterns
(``ROLES``: the built-in roles' ``actions`` / ``notActions`` / ``dataActions`` /
``notDataActions``, as Azure publishes them; ``*`` matches anything, and ``/*/`` also matches a
single ``/``, so ``userAssignedIdentities/*/assign/action`` covers
``userAssignedIdentities/assign/action`` as it does in Azure). An assignment at a scope covers
that scope and everything under it (a resource group covers its resources). Scopes and actions
compare case-insensitively.

``check_access(action, scope)`` answers ``None`` when some assignment covering ``scope`` has a
role whose actions match ``action`` and whose notActions do not; otherwise ARM's 403
``AuthorizationFailed`` answer. Key Vault secret operations
(``Microsoft.KeyVault/vaults/secrets/...``) are data actions: only ``dataActions`` grant them.
``linked_access(action, scope, linked_action, linked_scope)`` is the check ARM makes for a
resource a request links to (the identity a container group is assigned): 403
``LinkedAuthorizationFailed``.

By default (``ArmDouble(..., roles="bot")``) the double starts with ``grant_bot_roles()``: exactly
the assignments of azure-first-run.md §7.1 for the test world (resource group ``prod-qlp-rg``):

- ``Container Instances Deployer`` (a custom role: ``Microsoft.ContainerInstance/containerGroups/*``
  and ``Microsoft.ContainerInstance/locations/*/read``) on the resource group. The table allows
  Contributor there, but every resource of the test world lives in that one resource group, and
  Contributor on it would make every other row meaningless;
- Managed Identity Operator on the identity ``qlp-acr-pull``;
- CDN Profile Contributor on the Front Door Standard/Premium profile ``qlp-frontdoor``;
- Network Contributor on the classic Front Door ``qlp-classic-fd``;
- Key Vault Secrets User on the vault (``double.vault_id``);
- Log Analytics Reader on the workspace (``WORKSPACE_ID``) and Reader on the Application
  Insights component (``COMPONENT_ID``);
- Monitoring Reader on the resource group (it holds ``*/read``, so it covers every read in the
  resource group: a test that wants a read refused revokes it too, or starts from
  ``roles="none"`` and grants what it needs);
- Reader on the PostgreSQL flexible server ``qlp-prod-db``, and ``PostgreSQL Backup Operator``
  (a custom role: ``flexibleServers/backups/write`` and ``read``) for its on-demand backups;
- Reader on the container registry ``prodqlpacr`` (``REGISTRY_ID``, in its own resource group
  ``qlp-shared-rg`` as shared registries usually are): ``qlp-bot doctor`` reads the registry and
  its role assignments, and Reader's ``*/read`` holds ``registries/pull/read``, what ACR's data
  plane checks to list tags on a registry in ``LegacyRegistryPermissions`` mode.

Other principals' assignments (``IDENTITY_ROLES``: AcrPull of the groups' identity
``qlp-acr-pull`` on the registry) are kept by the ``acr`` mixin: they grant the bot nothing.

``grant(scope, role)`` and ``revoke(scope, role)`` change them (``revoke`` of an assignment that
is not there raises, so a test cannot revoke nothing by mistake).

The permissions listing (what ``qlp-bot doctor`` reads)
-------------------------------------------------------
``GET {scope}/providers/Microsoft.Authorization/permissions?api-version=2022-04-01`` (Azure's
Permissions - List For Resource Group / List For Resource) answers 200 ``{"value": [...]}`` with
one entry per assignment whose scope covers ``{scope}`` (the assignment's scope equal to it or
above it), in assignment order, each ``{"actions": [...], "notActions": [...],
"dataActions": [...], "notDataActions": [...]}`` of its role. No assignment: ``{"value": []}``.
Assignments below ``{scope}`` (e.g. on one resource when asking for the resource group) are not
listed: they are not effective at that scope. It needs the bearer token (401 without it) and
api-version 2022-04-01 (400 otherwise); ``{scope}`` is a resource group
(``/subscriptions/<sub>/resourceGroups/<rg>``) or a resource under it. Reading one's own
permissions needs no role. A scope in a resource group that does not exist answers ARM's 404
``ResourceGroupNotFound``, as every request routed through a resource group does.
"""

from __future__ import annotations

import re
from typing import Any

from tests.azure.arm_double.core import SUBSCRIPTION, Answer, ArmCore, Route, _error

__all__ = [
    "BOT_CLIENT_ID", "BOT_OBJECT_ID", "COMPONENT_ID", "IDENTITY_ID", "IDENTITY_ROLES",
    "PERMISSIONS_API_VERSION", "REGISTRY_ID", "RESOURCE_GROUP_ID", "ROLES",
    "ROLE_DEFINITION_IDS", "SHARED_RESOURCE_GROUP", "AuthzMixin", "action_matches",
]

PERMISSIONS_API_VERSION = "2022-04-01"
# The bot's service principal as ARM names it in 403 messages.
BOT_CLIENT_ID = "33333333-0000-0000-0000-0000000000cc"
BOT_OBJECT_ID = "44444444-0000-0000-0000-0000000000dd"
TENANT_ID = "00000000-0000-0000-0000-0000000000bb"

RESOURCE_GROUP_ID = f"/subscriptions/{SUBSCRIPTION}/resourceGroups/prod-qlp-rg"
_PROVIDERS = f"{RESOURCE_GROUP_ID}/providers"
IDENTITY_ID = f"{_PROVIDERS}/Microsoft.ManagedIdentity/userAssignedIdentities/qlp-acr-pull"
AFD_PROFILE_ID = f"{_PROVIDERS}/Microsoft.Cdn/profiles/qlp-frontdoor"
CLASSIC_FRONT_DOOR_ID = f"{_PROVIDERS}/Microsoft.Network/frontDoors/qlp-classic-fd"
VAULT_ID = f"{_PROVIDERS}/Microsoft.KeyVault/vaults/qlp-kv"
WORKSPACE_ID = f"{_PROVIDERS}/Microsoft.OperationalInsights/workspaces/qlp-logs"
COMPONENT_ID = f"{_PROVIDERS}/Microsoft.Insights/components/qlp-insights"
POSTGRES_ID = f"{_PROVIDERS}/Microsoft.DBforPostgreSQL/flexibleServers/qlp-prod-db"
SHARED_RESOURCE_GROUP = "qlp-shared-rg"
REGISTRY_ID = (f"/subscriptions/{SUBSCRIPTION}/resourceGroups/{SHARED_RESOURCE_GROUP}/providers/"
               "Microsoft.ContainerRegistry/registries/prodqlpacr")


def _role(actions: list[str], not_actions: list[str] | None = None,
          data_actions: list[str] | None = None) -> dict[str, list[str]]:
    return {"actions": actions, "notActions": not_actions or [],
            "dataActions": data_actions or [], "notDataActions": []}


# Built-in role definitions (their permissions as Azure publishes them; the ones the bot's
# scopes involve), plus the custom deployer role described in the module docstring.
ROLES: dict[str, dict[str, list[str]]] = {
    "Owner": _role(["*"]),
    "Contributor": _role(["*"], [
        "Microsoft.Authorization/*/Delete", "Microsoft.Authorization/*/Write",
        "Microsoft.Authorization/elevateAccess/Action",
        "Microsoft.Blueprint/blueprintAssignments/write",
        "Microsoft.Blueprint/blueprintAssignments/delete",
        "Microsoft.Compute/galleries/share/action"]),
    "Reader": _role(["*/read"]),
    # A custom role for the on-demand backups before a deployment and in an emergency (the
    # table allows Contributor on the server; this is the narrow equivalent).
    "PostgreSQL Backup Operator": _role([
        "Microsoft.DBforPostgreSQL/flexibleServers/backups/write",
        "Microsoft.DBforPostgreSQL/flexibleServers/backups/read",
        "Microsoft.DBforPostgreSQL/locations/azureAsyncOperation/read"]),
    "Container Instances Deployer": _role([
        "Microsoft.ContainerInstance/containerGroups/*",
        "Microsoft.ContainerInstance/locations/*/read"]),
    "Managed Identity Operator": _role([
        "Microsoft.ManagedIdentity/userAssignedIdentities/*/read",
        "Microsoft.ManagedIdentity/userAssignedIdentities/*/assign/action",
        "Microsoft.Authorization/*/read", "Microsoft.Insights/alertRules/*",
        "Microsoft.Resources/subscriptions/resourceGroups/read",
        "Microsoft.Resources/deployments/*", "Microsoft.Support/*"]),
    "CDN Profile Contributor": _role([
        "Microsoft.Authorization/*/read", "Microsoft.Cdn/edgenodes/read",
        "Microsoft.Cdn/operationresults/*", "Microsoft.Cdn/profiles/*",
        "Microsoft.Insights/alertRules/*", "Microsoft.Resources/deployments/*",
        "Microsoft.Resources/subscriptions/resourceGroups/read", "Microsoft.Support/*"]),
    "Network Contributor": _role([
        "Microsoft.Authorization/*/read", "Microsoft.Insights/alertRules/*", "Microsoft.Network/*",
        "Microsoft.ResourceHealth/availabilityStatuses/read", "Microsoft.Resources/deployments/*",
        "Microsoft.Resources/subscriptions/resourceGroups/read", "Microsoft.Support/*"]),
    "Monitoring Reader": _role([
        "*/read", "Microsoft.OperationalInsights/workspaces/search/action",
        "Microsoft.Support/*"]),
    "Log Analytics Reader": _role([
        "*/read", "Microsoft.OperationalInsights/workspaces/analytics/query/action",
        "Microsoft.OperationalInsights/workspaces/search/action", "Microsoft.Support/*"],
        ["Microsoft.OperationalInsights/workspaces/sharedKeys/read"]),
    "Key Vault Secrets User": _role([], data_actions=[
        "Microsoft.KeyVault/vaults/secrets/getSecret/action",
        "Microsoft.KeyVault/vaults/secrets/readMetadata/action"]),
    "AcrPull": _role(["Microsoft.ContainerRegistry/registries/pull/read"]),
    # The data-plane role of a registry in ABAC repository-permissions mode (there AcrPull
    # grants nothing).
    "Container Registry Repository Reader": _role([], data_actions=[
        "Microsoft.ContainerRegistry/registries/repositories/content/read",
        "Microsoft.ContainerRegistry/registries/repositories/metadata/read"]),
}

# The built-in role definitions' IDs (the GUIDs Azure publishes; the same in every tenant), as a
# role assignment names them. The custom deployer role gets an ID of its own.
ROLE_DEFINITION_IDS: dict[str, str] = {
    "Owner": "8e3af657-a8ff-443c-a75c-2fe8c4bcb635",
    "Contributor": "b24988ac-6180-42a0-ab88-20f7382dd24c",
    "Reader": "acdd72a7-3385-48ef-bd42-f606fba81ae7",
    "PostgreSQL Backup Operator": "5c0e5f8e-0000-4000-8000-00000000db0b",
    "Container Instances Deployer": "5c0e5f8e-0000-4000-8000-00000000c1d0",
    "Managed Identity Operator": "f1a07417-d97a-45cb-824c-7a7467783830",
    "CDN Profile Contributor": "ec156ff8-a8d1-4d15-830c-5b80698ca432",
    "Network Contributor": "4d97b98b-1d4f-4787-a291-c67834d212e7",
    "Monitoring Reader": "43d0d8ad-25c7-4714-9337-8ba259a9fe05",
    "Log Analytics Reader": "73c42c96-874c-492b-b04d-ab87d138a893",
    "Key Vault Secrets User": "4633458b-17de-408a-b874-0445c86b69e6",
    "AcrPull": "7f951dda-4ed3-4680-a7ca-43fe172d538d",
    "Container Registry Repository Reader": "b93aa761-3e63-49ed-ac28-beffa264f7ac",
}

BOT_ROLES: tuple[tuple[str, str], ...] = (
    (RESOURCE_GROUP_ID, "Container Instances Deployer"),
    (IDENTITY_ID, "Managed Identity Operator"),
    (AFD_PROFILE_ID, "CDN Profile Contributor"),
    (CLASSIC_FRONT_DOOR_ID, "Network Contributor"),
    (VAULT_ID, "Key Vault Secrets User"),
    (WORKSPACE_ID, "Log Analytics Reader"),
    (COMPONENT_ID, "Reader"),
    (RESOURCE_GROUP_ID, "Monitoring Reader"),
    (POSTGRES_ID, "Reader"),
    (POSTGRES_ID, "PostgreSQL Backup Operator"),
    (REGISTRY_ID, "Reader"),
)

# What the container groups' identity (qlp-acr-pull) is assigned: AcrPull on the registry.
IDENTITY_ROLES: tuple[tuple[str, str], ...] = (
    (REGISTRY_ID, "AcrPull"),
)

DATA_ACTION_PREFIXES = ("microsoft.keyvault/vaults/secrets/",)


def action_matches(pattern: str, action: str) -> bool:
    """Azure's wildcard match of an action pattern (case-insensitive)."""
    regex = re.escape(pattern.lower()).replace(r"/\*/", "(?:/.*)?/").replace(r"\*", ".*")
    return re.fullmatch(regex, action.lower()) is not None


def covers(assignment_scope: str, scope: str) -> bool:
    """Whether an assignment at ``assignment_scope`` applies at ``scope`` (it or below it)."""
    outer, inner = assignment_scope.rstrip("/").lower(), scope.rstrip("/").lower()
    return inner == outer or inner.startswith(outer + "/")


def _allows(role: dict[str, list[str]], action: str, *, data: bool) -> bool:
    granted, refused = ("dataActions", "notDataActions") if data else ("actions", "notActions")
    return (any(action_matches(p, action) for p in role[granted])
            and not any(action_matches(p, action) for p in role[refused]))


class AuthzMixin(ArmCore):
    """Role assignments, ``check_access``/``linked_access`` and the permissions listing."""

    ROUTES: tuple[Route, ...] = (Route("permissions", re.compile(
        r"^(?P<scope>/subscriptions/[^/]+/resourceGroups/[^/]+(?:/providers/.+?)?)"
        r"/providers/Microsoft\.Authorization/permissions$", re.I), PERMISSIONS_API_VERSION),)

    vault_id = VAULT_ID
    workspace_id = WORKSPACE_ID
    component_id = COMPONENT_ID

    def _setup(self) -> None:
        super()._setup()
        self.assignments: list[tuple[str, str]] = []
        if self.roles_preset == "bot":
            self.grant_bot_roles()
        elif self.roles_preset != "none":
            raise ValueError(f"roles={self.roles_preset!r}: 'bot' or 'none'")

    # -- assignments -----------------------------------------------------------------------

    def grant(self, scope: str, role: str) -> None:
        if role not in ROLES:
            raise KeyError(f"no role definition {role!r}")
        with self.lock:
            if (scope, role) not in self.assignments:
                self.assignments.append((scope, role))

    def revoke(self, scope: str, role: str) -> None:
        with self.lock:
            for index, (assigned, name) in enumerate(self.assignments):
                if assigned.lower() == scope.lower() and name == role:
                    del self.assignments[index]
                    return
        raise KeyError(f"no assignment of {role!r} at {scope}")

    def grant_bot_roles(self) -> None:
        """What a correctly set-up bot is assigned (azure-first-run.md §7.1)."""
        for scope, role in BOT_ROLES:
            self.grant(scope, role)

    def allowed(self, action: str, scope: str, *, data: bool | None = None) -> bool:
        if data is None:
            data = action.lower().startswith(DATA_ACTION_PREFIXES)
        with self.lock:
            return any(covers(assigned, scope) and _allows(ROLES[role], action, data=data)
                       for assigned, role in self.assignments)

    # -- the checks the services call ------------------------------------------------------

    def check_access(self, action: str, scope: str) -> Answer | None:
        if self.allowed(action, scope):
            return None
        return _error(403, "AuthorizationFailed",
                      f"The client '{BOT_CLIENT_ID}' with object id '{BOT_OBJECT_ID}' does not "
                      f"have authorization to perform action '{action}' over scope '{scope}' or "
                      "the scope is invalid. If access was recently granted, please refresh your "
                      "credentials.")

    def linked_access(self, action: str, scope: str, linked_action: str,
                      linked_scopes: list[str]) -> Answer | None:
        """ARM's check of the resources a write links to (after ``action`` itself passed)."""
        refused = [s for s in linked_scopes if not self.allowed(linked_action, s)]
        if not refused:
            return None
        return _error(403, "LinkedAuthorizationFailed",
                      f"The client '{BOT_CLIENT_ID}' with object id '{BOT_OBJECT_ID}' has "
                      f"permission to perform action '{action}' on scope '{scope}'; however, it "
                      f"does not have permission to perform action(s) '{linked_action}' on the "
                      f"linked scope(s) '{','.join(refused)}' (respectively) or the linked "
                      "scope(s) are invalid.")

    def data_access(self, action: str, resource: str, *, vault: str) -> Answer | None:
        """Key Vault's RBAC check of a data action: 403 ``Forbidden``/``ForbiddenByRbac``."""
        if self.allowed(action, resource, data=True):
            return None
        message = (
            "Caller is not authorized to perform action on resource.\r\n"
            "If role assignments, deny assignments or role definitions were changed recently, "
            "please observe propagation time.\r\n"
            f"Caller: appid={BOT_CLIENT_ID};oid={BOT_OBJECT_ID};"
            f"iss=https://sts.windows.net/{TENANT_ID}/\r\n"
            f"Action: '{action}'\r\n"
            f"Resource: '{resource.lower()}'\r\n"
            "Assignment: (not found)\r\n"
            "DenyAssignmentId: null\r\n"
            "DecisionReason: null \r\n"
            f"Vault: {vault};location=eastus\r\n")
        return Answer(403, {"error": {"code": "Forbidden", "message": message,
                                      "innererror": {"code": "ForbiddenByRbac"}}})

    # -- GET .../providers/Microsoft.Authorization/permissions -------------------------------

    def _permissions_get(self, match: re.Match[str], body: Any) -> Answer:
        scope = match["scope"]
        missing = self.missing_resource_group(scope.split("/")[4])
        if missing is not None:
            return missing
        with self.lock:
            value = [
                {key: list(entries) for key, entries in ROLES[role].items()}
                for assigned, role in self.assignments if covers(assigned, scope)]
        return Answer(200, {"value": value})
