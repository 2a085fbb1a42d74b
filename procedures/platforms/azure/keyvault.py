"""Key Vault secrets named in the policy, resolved for a deployment.

ACI does not resolve ``@Microsoft.KeyVault(SecretUri=...)`` (that is App Service and Functions):
a container would receive the literal text. So the bot reads each secret with
``azure-keyvault-secrets`` and passes the value as a *secure* environment variable, which Azure
never returns on a read. Values live only in the returned mapping: they are never logged, put
into an error message or stored.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from functools import partial

from procedures.errors import ExternalServiceError
from procedures.platforms.azure.clients import AzureClients
from procedures.platforms.azure.errors import AzureCalls
from procedures.platforms.azure.settings import SecretRef

__all__ = ["SecretResolver"]

log = logging.getLogger(__name__)

SERVICE = "Azure Key Vault"


class SecretResolver:
    """Reads the secrets an environment names: ``{ENV: SecretRef}`` -> ``{ENV: value}``."""

    def __init__(self, clients: AzureClients, calls: AzureCalls) -> None:
        self._clients = clients
        self._calls = calls

    def resolve(self, refs: Mapping[str, SecretRef]) -> dict[str, str]:
        """Every secret's current (or pinned) value; ExternalServiceError names the one that
        failed (never a value)."""
        values: dict[str, str] = {}
        for env_name, ref in refs.items():
            client = self._clients.secrets(ref.vault_url)
            what = f"read secret {ref.name} for {env_name} from {ref.vault_url}"
            secret = self._calls.call(what, partial(client.get_secret, ref.name, ref.version))
            if secret.value is None:
                raise ExternalServiceError(SERVICE, f"{what}: the secret has no value",
                                           code="SecretHasNoValue")
            values[env_name] = secret.value
            log.info("resolved %s from Key Vault secret %s (version %s)", env_name, ref.name,
                     secret.properties.version or "latest")
        return values
