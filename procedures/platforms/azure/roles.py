"""Which role the bot's identity needs for an Azure action, in one place.

A 403 from ARM names the action that was refused and the scope:
``AuthorizationFailed`` ("... does not have authorization to perform action
'Microsoft.ContainerInstance/containerGroups/write' over scope '/subscriptions/...'") and
``LinkedAuthorizationFailed`` ("... does not have permission to perform action(s)
'Microsoft.ManagedIdentity/userAssignedIdentities/assign/action' on the linked scope(s)
'/subscriptions/...'"); Key Vault's ``Forbidden`` says "Action: '...' Resource: '...'".
:func:`denied_actions` reads those pairs out of the message and :func:`role_hint` says which
built-in role to grant at which scope (the role table of the README, from
``research/azure-first-run.md`` section 7.1). ``errors.translate`` adds that hint to every 403;
``qlp-bot doctor`` reuses :data:`ROLE_TABLE` and :func:`role_hint`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["ROLE_TABLE", "RoleNeed", "denied_actions", "role_for", "role_hint", "role_scope"]


@dataclass(frozen=True)
class RoleNeed:
    """The role an action needs: ``role`` (built-in), at ``scope_kind`` (what :func:`role_scope`
    cuts the refused scope down to), ``alternative`` (a narrower custom role), ``note``."""

    prefix: str  # an action prefix, compared case-insensitively
    role: str
    scope_kind: str  # resource_group | resource | identity | subnet | vault | workspace
    alternative: str = ""
    note: str = ""
    assignee: str = ""  # who gets it, for the az command (default: by role, see role_hint)


# The most specific prefix first: the first match wins.
ROLE_TABLE: tuple[RoleNeed, ...] = (
    RoleNeed("Microsoft.ManagedIdentity/userAssignedIdentities/", "Managed Identity Operator",
             "identity", note="needed to attach the user-assigned identity to a container "
             "group (Contributor on the identity's resource group also covers it)"),
    RoleNeed("Microsoft.Network/virtualNetworks/subnets/join/action", "Network Contributor",
             "subnet", alternative="a custom role with "
             "Microsoft.Network/virtualNetworks/subnets/join/action"),
    RoleNeed("Microsoft.ContainerInstance/", "Contributor", "resource_group",
             alternative="a custom role with Microsoft.ContainerInstance/containerGroups/"
             "read, write, delete and Microsoft.ContainerInstance/locations/operations/read"),
    RoleNeed("Microsoft.Cdn/", "CDN Profile Contributor", "resource",
             note="on the Front Door profile: routes and origins are read and written"),
    RoleNeed("Microsoft.Network/frontDoors/", "Network Contributor", "resource",
             alternative="a custom role with Microsoft.Network/frontDoors/*"),
    RoleNeed("Microsoft.KeyVault/vaults/secrets/", "Key Vault Secrets User", "vault",
             note="or, on a vault that uses access policies, an access policy with secret "
             "get"),
    RoleNeed("Microsoft.OperationalInsights/", "Log Analytics Reader", "workspace"),
    RoleNeed("Microsoft.Insights/components/", "Reader", "resource",
             note="on the Application Insights component, with resource-context access"),
    RoleNeed("Microsoft.Insights/metrics/", "Monitoring Reader", "resource_group"),
    RoleNeed("Microsoft.DBforPostgreSQL/flexibleServers/backups/write", "Contributor",
             "resource", alternative="a custom role with Microsoft.DBforPostgreSQL/"
             "flexibleServers/backups/write and backups/read", note="on the PostgreSQL "
             "flexible server: the pre-deployment and emergency backups are on-demand backups"),
    RoleNeed("Microsoft.DBforPostgreSQL/", "Reader", "resource"),
    RoleNeed("Microsoft.ContainerRegistry/registries/repositories/metadata/read", "AcrPull",
             "resource", alternative="Container Registry Repository Reader, on a registry in "
             "ABAC repository permissions mode", note="the bot's own identity lists the image's "
             "tags (qlp-bot doctor); Reader on the registry grants it as well and also lets "
             "doctor read the registry and its role assignments",
             assignee="<the bot's principal id>"),
    RoleNeed("Microsoft.ContainerRegistry/", "AcrPull", "resource",
             note="granted to the container groups' user-assigned identity, not to the bot; "
             "a new assignment can take minutes to apply"),
)

# "perform action 'X' over scope 'Y'"; "perform action(s) 'X' on the linked scope(s) 'Y'";
# Key Vault: "Action: 'X' Resource: 'Y'".
_PATTERNS = (
    re.compile(r"action\(s\)\s+'(?P<action>[^']+)'\s+on the linked scope\(s\)\s+"
               r"'(?P<scope>[^']+)'", re.IGNORECASE),
    re.compile(r"perform action\s+'(?P<action>[^']+)'\s+over scope\s+'(?P<scope>[^']+)'",
               re.IGNORECASE),
    re.compile(r"Action:\s*'(?P<action>[^']+)'\s*Resource:\s*'(?P<scope>[^']+)'",
               re.IGNORECASE),
)
_SEGMENTS = {
    "resource_group": 4,  # /subscriptions/<s>/resourceGroups/<rg>
    "resource": 8,  # .../providers/<namespace>/<type>/<name>
    "identity": 8,
    "vault": 8,
    "workspace": 8,
    "subnet": 10,  # .../virtualNetworks/<vnet>/subnets/<subnet>
}


def denied_actions(message: str) -> list[tuple[str, str]]:
    """The (action, scope) pairs a 403 message names, linked scopes first (those are the
    ones a ``LinkedAuthorizationFailed`` is about); several comma-separated scopes split."""
    found: list[tuple[str, str]] = []
    for pattern in _PATTERNS:
        for match in pattern.finditer(message or ""):
            actions = [a.strip() for a in match["action"].split(",") if a.strip()]
            scopes = [s.strip() for s in match["scope"].split(",") if s.strip()]
            for index, action in enumerate(actions):
                scope = scopes[min(index, len(scopes) - 1)] if scopes else ""
                if (action, scope) not in found:
                    found.append((action, scope))
        if found:
            return found
    return found


def role_for(action: str) -> RoleNeed | None:
    """The table's row for ``action`` (None: an action the bot does not expect)."""
    wanted = action.lower()
    for need in ROLE_TABLE:
        if wanted.startswith(need.prefix.lower()):
            return need
    return None


def role_scope(scope: str, kind: str) -> str:
    """``scope`` cut down to what the role should be assigned at (a resource group, a
    resource...); unchanged when it is shorter or not an ARM resource ID."""
    if not scope.startswith("/subscriptions/"):
        return scope
    parts = scope.rstrip("/").split("/")
    keep = _SEGMENTS.get(kind)
    if keep is None:
        return scope
    # parts[0] is "" (the leading slash): keep the first ``keep`` segments after it.
    return "/".join(parts[:keep + 1]) if len(parts) > keep + 1 else scope.rstrip("/")


def role_hint(action: str, scope: str) -> str:
    """One sentence: which role to grant the bot's identity, where, and the ``az`` command."""
    need = role_for(action)
    if need is None:
        where = f" at {scope}" if scope else ""
        return (f"grant the bot's identity a role that allows {action}{where} (see the role "
                "table in the README, section Azure)")
    target = role_scope(scope, need.scope_kind) if scope else "<scope>"
    text = f"{action} needs the {need.role} role on {target}"
    if need.alternative:
        text += f" (or {need.alternative})"
    if need.note:
        text += f"; {need.note}"
    assignee = need.assignee or ("<the identity's principal id>" if need.role == "AcrPull"
                                 else "<the bot's principal id>")
    return (f"{text}: az role assignment create --assignee {assignee} "
            f"--role \"{need.role}\" --scope {target}")
