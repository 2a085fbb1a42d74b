"""Azure Container Registry in the double: the registry resource (ARM), the role assignments at
its scope, and the registry's own data plane as ``azure-containerregistry`` speaks it.

Control plane (api-version 2025-11-01, ``Microsoft.ContainerRegistry/stable/2025-11-01`` of
Azure/azure-rest-api-specs):

- ``GET {rg}/providers/Microsoft.ContainerRegistry/registries/{name}`` (Registries - Get): 403
  ``AuthorizationFailed`` without ``Microsoft.ContainerRegistry/registries/read``, 404
  ``ResourceGroupNotFound`` / ``ResourceNotFound``, else the registry as the RegistryGet
  example shows it (``properties.loginServer``, ``roleAssignmentMode``...).
- ``GET /subscriptions/{s}/providers/Microsoft.ContainerRegistry/registries`` (Registries -
  List): 200 ``{"value": [...]}`` with the registries the caller may read (ARM filters a
  collection by the caller's read access).

Role assignments: ``GET {registry id}/providers/Microsoft.Authorization/roleAssignments
?api-version=2022-04-01`` (Role Assignments - List For Scope) needs
``Microsoft.Authorization/roleAssignments/read``. ``$filter=atScope()`` lists the assignments at
the registry or above it; ``principalId eq '{id}'`` (or ``assignedTo('{id}')``) that
principal's at, above or below it; both may be joined with ``and``. The bot's assignments
(``authz``: ``double.assignments``, principal ``BOT_OBJECT_ID``) and the other principals' ones
kept here (``principal_assignments``, starting with ``authz.IDENTITY_ROLES`` for the groups'
identity) are listed, each with its built-in ``roleDefinitionId``.

Data plane: a registry's host is emulated by a path prefix, ``{double.url}/_acr/{login
server}`` (the clients' ``acr_endpoint`` template). As ACR does:

- a request without a registry access token answers 401 ``UNAUTHORIZED`` with
  ``WWW-Authenticate: Bearer realm="https://{login}/oauth2/token",service="{login}",
  scope="repository:{repo}:metadata_read"``;
- ``POST /oauth2/exchange`` (form: ``grant_type=access_token``, ``service``, ``access_token`` an
  AAD token of the tenant) answers ``{"refresh_token": ...}``; ``POST /oauth2/token`` (form:
  ``grant_type=refresh_token``, ``service``, ``scope``, ``refresh_token``) answers
  ``{"access_token": ...}`` granting only the scope's actions the caller holds: on a registry in
  ``LegacyRegistryPermissions`` mode ``Microsoft.ContainerRegistry/registries/pull/read``
  (AcrPull, Reader...), in ``AbacRepositoryPermissions`` mode the data action
  ``.../repositories/metadata/read`` (Container Registry Repository Reader);
- ``GET /acr/v1/{repository}/_tags`` (``orderby`` ``timedesc``/``timeasc``, ``n``, ``last``)
  lists the tags pushed with ``push_image`` (``aci`` keeps which images exist; this module only
  records when each was pushed, on the model clock), paged with a ``Link: <...>; rel="next"``
  header; a token without the action answers 401 ``UNAUTHORIZED``; a repository the registry
  does not know answers 404 ``NAME_UNKNOWN`` "repository name not known to registry";
  ``add_repository`` makes a repository that exists with no tags.
"""

from __future__ import annotations

import base64
import datetime as dt
import itertools
import json
import re
import secrets
import uuid
from typing import Any
from urllib.parse import parse_qs, quote

from tests.azure.arm_double.authz import (
    BOT_OBJECT_ID,
    IDENTITY_ROLES,
    REGISTRY_ID,
    ROLE_DEFINITION_IDS,
    SHARED_RESOURCE_GROUP,
    covers,
)
from tests.azure.arm_double.core import (
    RG_PATTERN,
    SUBSCRIPTION,
    TOKEN,
    Answer,
    Request,
    Route,
    _error,
)
from tests.azure.arm_double.resources import (
    IDENTITY_PRINCIPAL_ID,
    ResourcesMixin,
    resource_not_found,
)

__all__ = ["REGISTRY_API_VERSION", "ROLE_ASSIGNMENTS_API_VERSION", "AcrMixin"]

REGISTRY_API_VERSION = "2025-11-01"
ROLE_ASSIGNMENTS_API_VERSION = "2022-04-01"
REGISTRY_TYPE = "Microsoft.ContainerRegistry/registries"
LEGACY = "LegacyRegistryPermissions"
ABAC = "AbacRepositoryPermissions"
PULL = "Microsoft.ContainerRegistry/registries/pull/read"
METADATA_READ = "Microsoft.ContainerRegistry/registries/repositories/metadata/read"
BASE_TIME = dt.datetime(2026, 11, 1, 9, 0, tzinfo=dt.UTC)
PAGE_SIZE = 100
_AUTH_REQUIRED = ("authentication required, visit https://aka.ms/acr/authorization for more "
                  "information.")


def _jwt(claims: dict[str, Any]) -> str:
    """A JWT-shaped token (header.payload.signature). The SDK reads ``exp`` from the payload
    with plain base64 and adds ``len % 4`` padding characters, so the payload is made a
    multiple of 4 long."""
    for filler in range(4):
        payload = json.dumps({**claims, "jti": "x" * filler}, separators=(",", ":")).encode()
        encoded = base64.b64encode(payload).decode().rstrip("=")
        if len(encoded) % 4 == 0:
            break
    header = base64.b64encode(b'{"alg":"RS256","typ":"JWT"}').decode().rstrip("=")
    return f"{header}.{encoded}.{secrets.token_hex(16)}"


def _acr_error(status: int, code: str, message: str, detail: Any = None,
               **headers: str) -> Answer:
    """ACR's data-plane error body (not ARM's envelope)."""
    error: dict[str, Any] = {"code": code, "message": message}
    if detail is not None:
        error["detail"] = detail
    return Answer(status, {"errors": [error]}, dict(headers))


class AcrMixin(ResourcesMixin):
    """Container registries, the role assignments at their scope, and their data plane."""

    ROUTES: tuple[Route, ...] = (
        Route("registry", re.compile(
            RG_PATTERN + r"Microsoft\.ContainerRegistry/registries/(?P<name>[^/]+)$", re.I),
            REGISTRY_API_VERSION),
        Route("registries", re.compile(
            r"^/subscriptions/(?P<sub>[^/]+)/providers/Microsoft\.ContainerRegistry/registries$",
            re.I), REGISTRY_API_VERSION),
        Route("roleassignments", re.compile(
            r"^(?P<scope>/subscriptions/[^/]+/resourceGroups/(?P<rg>[^/]+)/providers/"
            r"Microsoft\.ContainerRegistry/registries/[^/]+)"
            r"/providers/Microsoft\.Authorization/roleAssignments$", re.I)),
        Route("acr", re.compile(r"^/_acr/(?P<login>[^/]+)(?P<rest>/.*)$")),
    )

    def _setup(self) -> None:
        super()._setup()
        # Registry resource ID (lower case) -> its record.
        self.acr_registries: dict[str, dict[str, str]] = {}
        self.add_resource_group(SHARED_RESOURCE_GROUP)
        self.add_registry("prodqlpacr", SHARED_RESOURCE_GROUP)
        # Other principals' role assignments: (principal ID, scope, role).
        self.principal_assignments: list[tuple[str, str, str]] = [
            (IDENTITY_PRINCIPAL_ID, scope, role) for scope, role in IDENTITY_ROLES]
        self.pushed_at: dict[tuple[str, str], tuple[float, int]] = {}
        self.empty_repositories: set[tuple[str, str]] = set()
        self._push_order = itertools.count()
        self._acr_tokens: dict[str, dict[str, Any]] = {}

    # -- seeding ---------------------------------------------------------------------------

    def add_registry(self, name: str, rg: str, *, mode: str = LEGACY,
                     location: str = "eastus") -> str:
        """A registry ``name`` (login server ``<name>.azurecr.io``) in ``rg``; its ID."""
        registry_id = (f"/subscriptions/{SUBSCRIPTION}/resourceGroups/{rg}/providers/"
                       f"{REGISTRY_TYPE}/{name}")
        with self.lock:
            self.acr_registries[registry_id.lower()] = {
                "id": registry_id, "name": name, "rg": rg, "location": location, "mode": mode,
                "login": f"{name.lower()}.azurecr.io"}
        return registry_id

    def remove_registry(self, registry_id: str = REGISTRY_ID) -> None:
        with self.lock:
            del self.acr_registries[registry_id.lower()]

    def set_registry_mode(self, mode: str, registry_id: str = REGISTRY_ID) -> None:
        """``LegacyRegistryPermissions`` or ``AbacRepositoryPermissions``."""
        if mode not in (LEGACY, ABAC):
            raise ValueError(mode)
        with self.lock:
            self.acr_registries[registry_id.lower()]["mode"] = mode

    def grant_principal(self, principal_id: str, scope: str, role: str) -> None:
        with self.lock:
            if (principal_id, scope, role) not in self.principal_assignments:
                self.principal_assignments.append((principal_id, scope, role))

    def revoke_principal(self, principal_id: str, scope: str, role: str) -> None:
        with self.lock:
            for index, (who, assigned, name) in enumerate(self.principal_assignments):
                if who == principal_id and assigned.lower() == scope.lower() and name == role:
                    del self.principal_assignments[index]
                    return
        raise KeyError(f"no assignment of {role!r} to {principal_id} at {scope}")

    def push_image(self, image: str) -> None:
        """As ``aci``'s (which keeps what can be pulled), plus when it was pushed."""
        super().push_image(image)  # type: ignore[misc]
        from tests.azure.arm_double.aci import _split_image

        registry, rest = _split_image(image)
        with self.lock:
            self.pushed_at[(registry, rest)] = (self.clock(), next(self._push_order))

    def add_repository(self, login_server: str, repository: str) -> None:
        """A repository that exists with no tags (its images untagged or deleted)."""
        with self.lock:
            self.empty_repositories.add((login_server.lower(), repository))

    # -- control plane ---------------------------------------------------------------------

    def _registry_body(self, record: dict[str, str]) -> dict[str, Any]:
        return {
            "id": record["id"], "name": record["name"], "type": REGISTRY_TYPE,
            "location": record["location"], "tags": {},
            "sku": {"name": "Standard", "tier": "Standard"},
            "properties": {
                "loginServer": record["login"], "creationDate": "2026-01-15T21:38:26.1537861Z",
                "provisioningState": "Succeeded", "adminUserEnabled": False,
                "publicNetworkAccess": "Enabled", "anonymousPullEnabled": False,
                "roleAssignmentMode": record["mode"]}}

    def _registry_get(self, match: re.Match[str], body: Any) -> Answer:
        registry_id = match.group(0)
        denied = self.check_access(f"{REGISTRY_TYPE}/read", registry_id)
        if denied is not None:
            return denied
        missing = self.missing_resource_group(match["rg"])
        if missing is not None:
            return missing
        with self.lock:
            record = self.acr_registries.get(registry_id.lower())
        if record is None:
            return resource_not_found(REGISTRY_TYPE, match["name"], match["rg"])
        return Answer(200, self._registry_body(record))

    def _registries_get(self, match: re.Match[str], body: Any) -> Answer:
        with self.lock:
            records = list(self.acr_registries.values())
        return Answer(200, {"value": [
            self._registry_body(r) for r in records
            if self.check_access(f"{REGISTRY_TYPE}/read", r["id"]) is None]})

    # -- role assignments ------------------------------------------------------------------

    def _roleassignments_request(self, request: Request) -> Answer:
        if request.method != "GET":
            return _error(405, "MethodNotAllowed", f"{request.method} roleAssignments")
        if not request.authorized:
            return _error(401, "AuthenticationFailed", "missing or wrong bearer token")
        version = request.query.get("api-version")
        if version != ROLE_ASSIGNMENTS_API_VERSION:
            return _error(400, "InvalidApiVersionParameter",
                          f"api-version {version} is not {ROLE_ASSIGNMENTS_API_VERSION}")
        scope = request.match["scope"]
        denied = self.check_access("Microsoft.Authorization/roleAssignments/read", scope)
        if denied is not None:
            return denied
        missing = self.missing_resource_group(request.match["rg"])
        if missing is not None:
            return missing
        with self.lock:
            known = scope.lower() in self.acr_registries
        if not known:
            return resource_not_found(REGISTRY_TYPE, scope.rsplit("/", 1)[-1],
                                      request.match["rg"])
        text = request.query.get("$filter", "").strip()
        at_scope = False
        principal: str | None = None
        for clause in filter(None, (c.strip() for c in re.split(r"\s+and\s+", text))):
            found = re.fullmatch(r"principalId\s+eq\s+'([^']+)'|assignedTo\('([^']+)'\)",
                                 clause, re.I)
            if clause.lower() == "atscope()":
                at_scope = True
            elif found:
                principal = found.group(1) or found.group(2)
            else:
                # [code plausible, not verified]
                return _error(400, "UnsupportedQuery", f"The filter '{text}' is not supported.")
        with self.lock:
            every = [(BOT_OBJECT_ID, s, r) for s, r in self.assignments]
            every += list(self.principal_assignments)
        value = []
        for who, assigned, role in every:
            above = covers(assigned, scope)
            below = covers(scope, assigned)
            if not (above or (below and not at_scope)):
                continue
            if principal is not None and who.lower() != principal.lower():
                continue
            name = str(uuid.uuid5(uuid.NAMESPACE_URL, f"{who}|{assigned.lower()}|{role}"))
            value.append({
                "id": f"{assigned}/providers/Microsoft.Authorization/roleAssignments/{name}",
                "name": name, "type": "Microsoft.Authorization/roleAssignments",
                "properties": {
                    "roleDefinitionId": f"/subscriptions/{SUBSCRIPTION}/providers/"
                                        f"Microsoft.Authorization/roleDefinitions/"
                                        f"{ROLE_DEFINITION_IDS[role]}",
                    "principalId": who, "principalType": "ServicePrincipal",
                    "scope": assigned}})
        return Answer(200, {"value": value})

    # -- data plane ------------------------------------------------------------------------

    def _acr_record(self, login: str) -> dict[str, str] | None:
        with self.lock:
            for record in self.acr_registries.values():
                if record["login"] == login.lower():
                    return record
        return None

    def _acr_request(self, request: Request) -> Answer:
        login, rest = request.match["login"].lower(), request.match["rest"]
        record = self._acr_record(login)
        if record is None:
            return _acr_error(404, "NOT_FOUND", f"registry {login} not found")
        form = {k: v[-1] for k, v in parse_qs(request.body if isinstance(request.body, str)
                                               else "").items()}
        if rest == "/oauth2/exchange" and request.method == "POST":
            return self._acr_exchange(login, form)
        if rest == "/oauth2/token" and request.method == "POST":
            return self._acr_token(record, form)
        tags = re.fullmatch(r"/acr/v1/(?P<repo>.+)/_tags", rest)
        if tags and request.method == "GET":
            return self._acr_tags(record, tags["repo"], request)
        return _acr_error(404, "NOT_FOUND", f"no route for {request.method} {rest}")

    def _acr_exchange(self, login: str, form: dict[str, str]) -> Answer:
        if form.get("grant_type") != "access_token" or form.get("service") != login:
            return _acr_error(400, "UNSUPPORTED", "grant_type must be access_token and service "
                              "the registry's login server")
        if form.get("access_token") != TOKEN:
            return _acr_error(401, "UNAUTHORIZED", "invalid AAD access token")
        token = _jwt({"iss": "Azure Container Registry", "aud": login,
                      "exp": 4_102_444_800, "grant_type": "refresh_token"})
        with self.lock:
            self._acr_tokens[token] = {"kind": "refresh", "service": login}
        return Answer(200, {"refresh_token": token})

    def _acr_token(self, record: dict[str, str], form: dict[str, str]) -> Answer:
        with self.lock:
            refresh = self._acr_tokens.get(form.get("refresh_token", ""))
        if (form.get("grant_type") != "refresh_token" or refresh is None
                or refresh["kind"] != "refresh" or refresh["service"] != record["login"]):
            return _acr_error(401, "UNAUTHORIZED", _AUTH_REQUIRED)
        granted: set[tuple[str, str]] = set()
        for scope in form.get("scope", "").split():
            parts = scope.split(":")
            if len(parts) != 3 or parts[0] != "repository":
                continue
            for action in parts[2].split(","):
                if self._may(record, action):
                    granted.add((parts[1], action))
        token = _jwt({"iss": "Azure Container Registry", "aud": record["login"],
                      "exp": 4_102_444_800,
                      "access": [{"type": "repository", "name": n, "actions": [a]}
                                 for n, a in sorted(granted)]})
        with self.lock:
            self._acr_tokens[token] = {"kind": "access", "service": record["login"],
                                       "granted": granted}
        return Answer(200, {"access_token": token})

    def _may(self, record: dict[str, str], action: str) -> bool:
        """Whether the bot may do a data-plane ``action`` (``metadata_read``, ``pull``...)
        on the registry, per its role assignment mode."""
        if action not in ("metadata_read", "pull"):
            return False
        if record["mode"] == ABAC:
            data_action = (METADATA_READ if action == "metadata_read"
                           else "Microsoft.ContainerRegistry/registries/repositories/content/read")
            return self.allowed(data_action, record["id"], data=True)  # type: ignore[attr-defined]
        return self.allowed(PULL, record["id"], data=False)  # type: ignore[attr-defined]

    def _acr_tags(self, record: dict[str, str], repository: str, request: Request) -> Answer:
        login = record["login"]
        challenge = (f'Bearer realm="https://{login}/oauth2/token",service="{login}",'
                     f'scope="repository:{repository}:metadata_read"')
        detail = [{"Type": "repository", "Name": repository, "Action": "metadata_read"}]
        bearer = request.headers.get("authorization", "").removeprefix("Bearer ")
        with self.lock:
            token = self._acr_tokens.get(bearer)
        if token is None or token["kind"] != "access" or token["service"] != login \
                or (repository, "metadata_read") not in token["granted"]:
            return _acr_error(401, "UNAUTHORIZED", _AUTH_REQUIRED, detail,
                              **{"WWW-Authenticate": challenge})
        with self.lock:
            pushed = [(tag, self.pushed_at.get((login, f"{repository}:{tag}"), (0.0, -1)))
                      for repo, _, tag in (p.rpartition(":")
                                           for p in getattr(self, "registries", {}).get(login, ()))
                      if repo == repository]
            exists = pushed or (login, repository) in self.empty_repositories
        if not exists:
            return _acr_error(404, "NAME_UNKNOWN", "repository name not known to registry",
                              {"name": repository})
        order = request.query.get("orderby", "none")
        if order == "timeasc":
            pushed.sort(key=lambda item: item[1])
        elif order == "timedesc":
            pushed.sort(key=lambda item: item[1], reverse=True)
        else:
            pushed.sort(key=lambda item: item[0])
        last = request.query.get("last")
        if last is not None:
            names = [tag for tag, _ in pushed]
            pushed = pushed[names.index(last) + 1:] if last in names else []
        size = int(request.query.get("n") or PAGE_SIZE)
        page, more = pushed[:size], len(pushed) > size
        tags = []
        for tag, (seconds, _) in page:
            when = (BASE_TIME + dt.timedelta(seconds=seconds)).isoformat().replace("+00:00", "Z")
            digest = "sha256:" + uuid.uuid5(uuid.NAMESPACE_URL, f"{login}/{repository}:{tag}"
                                            ).hex * 2
            tags.append({"name": tag, "digest": digest, "createdTime": when,
                         "lastUpdateTime": when, "signed": False,
                         "changeableAttributes": {"deleteEnabled": True, "writeEnabled": True,
                                                  "readEnabled": True, "listEnabled": True}})
        headers = {}
        if more:
            headers["Link"] = (f"</acr/v1/{quote(repository)}/_tags?last={quote(page[-1][0])}"
                               f"&n={size}&orderby={order}>; rel=\"next\"")
        return Answer(200, {"registry": login, "imageName": repository, "tags": tags}, headers)
