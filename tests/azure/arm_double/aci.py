"""Azure Container Instances in the double: container groups PUT (201 + ``Azure-AsyncOperation``,
polled ``InProgress``, then ``Succeeded`` or ``Failed`` with an ARM error), GET, DELETE (202 +
``Location``, polled). Like ARM, a GET never returns a ``secureValue``."""

from __future__ import annotations

import copy
import hashlib
import re
from typing import Any

from tests.azure.arm_double.core import (
    API_VERSIONS,
    RG_PATTERN,
    SUBSCRIPTION,
    Answer,
    ArmCore,
    Operation,
    Route,
    _error,
)


class AciMixin(ArmCore):
    """Container groups."""

    ROUTES = (Route("group", re.compile(
        RG_PATTERN + r"Microsoft\.ContainerInstance/containerGroups/(?P<name>[^/]+)$", re.I),
        API_VERSIONS["aci"]),)

    def _setup(self) -> None:
        super()._setup()
        self.groups: dict[str, dict[str, Any]] = {}
        self.create_failures: list[tuple[str | None, dict[str, str]]] = []
        self.container_overrides: dict[str, dict[str, Any]] = {}

    def fail_next_create(self, code: str, message: str, *, name: str | None = None) -> None:
        """The next creation (of ``name``, or of any group) ends Failed with this error."""
        with self.lock:
            self.create_failures.append((name, {"code": code, "message": message}))

    def set_container(self, group: str, **view: Any) -> None:
        """Override the containers' instance view once the group runs: ``state``,
        ``restart_count``, ``detail``."""
        with self.lock:
            self.container_overrides[group] = view
            if group in self.groups and self.groups[group]["properties"].get(
                    "provisioningState") == "Succeeded":
                self._apply_running(self.groups[group])


    def _group_get(self, match: re.Match[str], body: Any) -> Answer:
        group = self.groups.get(match["name"])
        if group is None:
            return _error(404, "ResourceNotFound",
                          f"The Resource 'Microsoft.ContainerInstance/containerGroups/"
                          f"{match['name']}' under resource group '{match['rg']}' was not found.")
        return Answer(200, _without_secure_values(group))

    def _group_put(self, match: re.Match[str], body: Any) -> Answer:
        name = match["name"]
        if not isinstance(body, dict) or "properties" not in body:
            return _error(400, "InvalidRequestContent", "no properties")
        props = copy.deepcopy(body["properties"])
        for container in props.get("containers", []):
            for variable in container.get("properties", {}).get("environmentVariables", []):
                if "value" in variable and "secureValue" in variable:
                    return _error(400, "InvalidEnvironmentVariable",
                                  f"{variable['name']} has both value and secureValue")
        identity = copy.deepcopy(body.get("identity") or {})
        for entry in (identity.get("userAssignedIdentities") or {}).values():
            entry.update(principalId="11111111-0000-0000-0000-000000000001",
                         clientId="22222222-0000-0000-0000-000000000002")
        props.update(provisioningState="Pending", sku="Standard")
        group = {
            "id": f"{match.group(0).split('?')[0]}", "name": name,
            "type": "Microsoft.ContainerInstance/containerGroups",
            "location": body.get("location", "eastus"), "tags": body.get("tags") or {},
            "identity": identity, "properties": props,
        }
        self.groups[name] = group
        failure = None
        for index, (only, error) in enumerate(self.create_failures):
            if only in (None, name):
                failure = error
                del self.create_failures[index]
                break
        _, headers = self._new_operation("create", name, "Microsoft.ContainerInstance",
                                         group["location"], error=failure)
        return Answer(201, _without_secure_values(group), headers)

    def _group_delete(self, match: re.Match[str], body: Any) -> Answer:
        name = match["name"]
        group = self.groups.get(name)
        if group is None:
            return Answer(204)
        group["properties"]["provisioningState"] = "Deleting"
        _, headers = self._new_operation("delete", name, "Microsoft.ContainerInstance",
                                         group["location"], header="Location")
        return Answer(202, None, headers)

    def _finish_create(self, op: Operation) -> None:
        group = self.groups.get(op.target)
        if group is None:
            return
        props = group["properties"]
        if op.error is not None:
            props["provisioningState"] = "Failed"
            props["instanceView"] = {"state": "Pending", "events": [
                {"count": 1, "name": "Failed", "type": "Warning",
                 "message": op.error["message"]}]}
            return
        props["provisioningState"] = "Succeeded"
        address = props.get("ipAddress")
        if address is not None:
            if address.get("type") == "Public":
                address["ip"] = "20.1.2.3"
                label = address.get("dnsNameLabel")
                if label:
                    digest = hashlib.sha256(f"{SUBSCRIPTION}/{label}".encode()).hexdigest()[:12]
                    address["fqdn"] = f"{label}.{digest}.{group['location']}.azurecontainer.io"
            else:
                address["ip"] = "10.0.0.4"
        self._apply_running(group)

    def _apply_running(self, group: dict[str, Any]) -> None:
        props = group["properties"]
        override = self.container_overrides.get(group["name"], {})
        props["instanceView"] = {"state": "Running", "events": []}
        for container in props.get("containers", []):
            state = override.get("state", "Running")
            container["properties"]["instanceView"] = {
                "restartCount": override.get("restart_count", 0),
                "currentState": {"state": state, "startTime": "2026-12-01T11:00:00Z",
                                 "detailStatus": override.get("detail", "")},
                "events": [{"count": 1, "name": "Started", "type": "Normal",
                            "message": f"Started container {container['name']}"}],
            }


    def _progress_create(self, op: Operation) -> None:
        if op.target in self.groups:
            self.groups[op.target]["properties"]["provisioningState"] = "Creating"

    def _finish_delete(self, op: Operation) -> None:
        self.groups.pop(op.target, None)


def _without_secure_values(group: dict[str, Any]) -> dict[str, Any]:
    """What ARM returns: the group with every ``secureValue`` dropped."""
    shown = copy.deepcopy(group)
    for container in shown["properties"].get("containers", []):
        for variable in container.get("properties", {}).get("environmentVariables", []):
            variable.pop("secureValue", None)
    return shown


