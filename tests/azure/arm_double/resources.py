"""Plain ARM resources in the double: resource groups and user-assigned managed identities, the
resources ``qlp-bot doctor`` reads and the other services' resources live in.

- ``GET /subscriptions/{s}/resourcegroups/{rg}?api-version=2021-04-01`` (Resource Groups - Get):
  200 with ``id``, ``name``, ``type``, ``location`` and ``properties.provisioningState``, or 404
  ``ResourceGroupNotFound`` ("Resource group '{rg}' could not be found."). Reading it needs
  ``Microsoft.Resources/subscriptions/resourceGroups/read`` on it (``check_access``; ``*/read``
  roles such as Reader and Monitoring Reader hold it).
- ``GET {identity id}?api-version=2023-01-31`` (User Assigned Identities - Get): 200 with
  ``properties.tenantId``/``principalId``/``clientId``, or ARM's 404 ``ResourceNotFound``; it
  needs ``Microsoft.ManagedIdentity/userAssignedIdentities/read``.

A resource under a resource group that does not exist answers 404 ``ResourceGroupNotFound``, as
ARM does before any resource provider sees the request (after authorization: without access
ARM answers 403 whether or not the scope exists). The test world starts with the resource
group ``prod-qlp-rg`` (eastus) and the identity ``qlp-acr-pull`` in it; ``add_resource_group``
/ ``remove_resource_group`` and ``add_identity`` / ``remove_identity`` change that.
"""

from __future__ import annotations

import re
from typing import Any

from tests.azure.arm_double.authz import IDENTITY_ID, TENANT_ID
from tests.azure.arm_double.core import RG_PATTERN, Answer, ArmCore, Route, _error

__all__ = ["IDENTITY_API_VERSION", "IDENTITY_CLIENT_ID", "IDENTITY_PRINCIPAL_ID",
           "RESOURCE_GROUP_API_VERSION", "ResourcesMixin", "resource_not_found"]

# The api-versions ``procedures/platforms/azure/doctor.py`` sends (no SDK: plain ARM GETs).
RESOURCE_GROUP_API_VERSION = "2021-04-01"
IDENTITY_API_VERSION = "2023-01-31"
IDENTITY_TYPE = "Microsoft.ManagedIdentity/userAssignedIdentities"
# The identity's service principal, as ARM shows it on the identity and on a container group
# the identity is assigned to.
IDENTITY_PRINCIPAL_ID = "11111111-0000-0000-0000-000000000001"
IDENTITY_CLIENT_ID = "22222222-0000-0000-0000-000000000002"


def resource_not_found(resource_type: str, name: str, rg: str) -> Answer:
    """ARM's 404 for a resource that does not exist in an existing resource group."""
    return _error(404, "ResourceNotFound",
                  f"The Resource '{resource_type}/{name}' under resource group '{rg}' was not "
                  "found. For more details please go to https://aka.ms/ARMResourceNotFoundFix")


class ResourcesMixin(ArmCore):
    """Resource groups and user-assigned identities."""

    ROUTES: tuple[Route, ...] = (
        Route("resourcegroup", re.compile(
            r"^/subscriptions/(?P<sub>[^/]+)/resourcegroups/(?P<rg>[^/]+)$", re.I),
            RESOURCE_GROUP_API_VERSION),
        Route("identity", re.compile(
            RG_PATTERN + r"Microsoft\.ManagedIdentity/userAssignedIdentities/(?P<name>[^/]+)$",
            re.I), IDENTITY_API_VERSION),
    )

    def _setup(self) -> None:
        super()._setup()
        # Resource group (lower case) -> (name as created, location).
        self.resource_groups: dict[str, tuple[str, str]] = {"prod-qlp-rg": ("prod-qlp-rg",
                                                                             "eastus")}
        self.identities: set[str] = {IDENTITY_ID.lower()}  # resource IDs, lower case

    # -- seeding ---------------------------------------------------------------------------

    def add_resource_group(self, name: str, location: str = "eastus") -> None:
        with self.lock:
            self.resource_groups[name.lower()] = (name, location)

    def remove_resource_group(self, name: str) -> None:
        """The resource group is gone: it and everything under it answer 404
        ``ResourceGroupNotFound`` (what the double keeps of its resources is left alone)."""
        with self.lock:
            del self.resource_groups[name.lower()]

    def add_identity(self, resource_id: str) -> None:
        """A user-assigned managed identity that exists."""
        with self.lock:
            self.identities.add(resource_id.lower())

    def remove_identity(self, resource_id: str) -> None:
        with self.lock:
            self.identities.discard(resource_id.lower())

    def missing_resource_group(self, rg: str) -> Answer | None:
        """ARM's 404 ``ResourceGroupNotFound`` when ``rg`` does not exist, else None."""
        if rg.lower() in self.resource_groups:
            return None
        return _error(404, "ResourceGroupNotFound", f"Resource group '{rg}' could not be found.")

    # -- handlers --------------------------------------------------------------------------

    def _resourcegroup_get(self, match: re.Match[str], body: Any) -> Answer:
        rg_id = f"/subscriptions/{match['sub']}/resourceGroups/{match['rg']}"
        denied = self.check_access("Microsoft.Resources/subscriptions/resourceGroups/read",
                                   rg_id)
        if denied is not None:
            return denied
        missing = self.missing_resource_group(match["rg"])
        if missing is not None:
            return missing
        name, location = self.resource_groups[match["rg"].lower()]
        return Answer(200, {"id": f"/subscriptions/{match['sub']}/resourceGroups/{name}",
                            "name": name, "type": "Microsoft.Resources/resourceGroups",
                            "location": location,
                            "properties": {"provisioningState": "Succeeded"}})

    def _identity_get(self, match: re.Match[str], body: Any) -> Answer:
        identity = match.group(0)
        denied = self.check_access(f"{IDENTITY_TYPE}/read", identity)
        if denied is not None:
            return denied
        missing = self.missing_resource_group(match["rg"])
        if missing is not None:
            return missing
        if identity.lower() not in self.identities:
            return resource_not_found(IDENTITY_TYPE, match["name"], match["rg"])
        return Answer(200, {"id": identity, "name": match["name"], "type": IDENTITY_TYPE,
                            "location": "eastus", "tags": {},
                            "properties": {"tenantId": TENANT_ID,
                                           "principalId": IDENTITY_PRINCIPAL_ID,
                                           "clientId": IDENTITY_CLIENT_ID}})
