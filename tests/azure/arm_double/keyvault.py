"""Key Vault in the double: ``GET /secrets/{name}/[{version}]``, with the 401 challenge a real
vault sends to a request without a token, and Azure RBAC: reading a secret is the data action
``Microsoft.KeyVault/vaults/secrets/getSecret/action`` on ``<vault_id>/secrets/<name>`` (the vault
is ``double.vault_id``, a fixed resource ID), refused with 403 ``Forbidden`` /
``ForbiddenByRbac`` without Key Vault Secrets User (see ``authz``)."""

from __future__ import annotations

import re

from tests.azure.arm_double.core import TOKEN, Answer, ArmCore, Request, Route, _error


class KeyVaultMixin(ArmCore):
    """Secrets of one vault (the double's own URL)."""

    ROUTES: tuple[Route, ...] = (
        Route("secret", re.compile(r"^/secrets/(?P<name>[^/]+)/?(?P<version>[^/]*)$")),)

    def _setup(self) -> None:
        super()._setup()
        self.secrets: dict[str, dict[str, str]] = {}  # name -> {version: value}, last = latest

    def add_secret(self, name: str, value: str, version: str = "0a1b2c3d") -> None:
        self.secrets.setdefault(name, {})[version] = value


    def _secret_request(self, request: Request) -> Answer:
        method, match, headers, query = (request.method, request.match, request.headers,
                                         request.query)
        if "authorization" not in headers:
            return Answer(401, {"error": {"code": "Unauthorized",
                                          "message": "AKV10000: Request is missing a Bearer "
                                                     "or PoP token."}},
                          {"WWW-Authenticate": 'Bearer authorization="https://login.'
                                               'microsoftonline.com/00000000-0000-0000-0000-'
                                               '0000000000bb", resource="https://vault.azure.net"'})
        if headers["authorization"] != f"Bearer {TOKEN}":
            return _error(401, "Unauthorized", "wrong token")
        if method != "GET" or not query.get("api-version"):
            return _error(400, "BadParameter", "GET with an api-version only")
        vault_id: str = getattr(self, "vault_id", "")
        denied = self.data_access("Microsoft.KeyVault/vaults/secrets/getSecret/action",
                                  f"{vault_id}/secrets/{match['name']}",
                                  vault=vault_id.rsplit("/", 1)[-1])
        if denied is not None:
            return denied
        versions = self.secrets.get(match["name"])
        if not versions:
            return _error(404, "SecretNotFound",
                          f"A secret with (name/id) {match['name']} was not found in this "
                          "key vault.")
        version = match["version"] or list(versions)[-1]
        if version not in versions:
            return _error(404, "SecretNotFound", f"{match['name']}/{version} was not found")
        return Answer(200, {"value": versions[version],
                            "id": f"{self.url}/secrets/{match['name']}/{version}",
                            "attributes": {"enabled": True}})


