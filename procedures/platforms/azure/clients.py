"""One place that builds the Azure SDK clients of an environment.

Production: ``AzureClients.for_settings(settings)`` uses ``DefaultAzureCredential`` (managed
identity, workload identity, environment variables, ``az login``...), built lazily the first
time a client needs a token, so an environment that never touches Azure never builds one.

Tests: pass a static token ``credential``, ``base_url`` (the local ARM double), and
``client_kwargs`` such as ``connection_verify=<the double's self-signed certificate>`` and
``polling_interval=0``; ``keyvault_kwargs`` reach only the Key Vault client
(``verify_challenge_resource=False`` for a vault on 127.0.0.1); ``acr_endpoint`` is where a
registry's data plane answers instead of ``https://<login server>`` (a template with
``{login_server}``, for a double on 127.0.0.1).

HTTP-status retries are left to :class:`procedures.platforms.azure.errors.AzureCalls`
(``retry_status=0`` here), so ``Retry-After`` is honoured in one layer with an injected sleep;
the SDK still retries connection and read errors itself. Every client connects within 10 s
and waits at most 60 s for an answer (:data:`TIMEOUTS`; ``client_kwargs`` may change them).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from procedures.platforms.azure.settings import AzureSettings

if TYPE_CHECKING:
    from azure.containerregistry import ContainerRegistryClient
    from azure.core.credentials import AccessToken, TokenCredential
    from azure.keyvault.secrets import SecretClient
    from azure.mgmt.cdn import CdnManagementClient
    from azure.mgmt.containerinstance import ContainerInstanceManagementClient
    from azure.mgmt.frontdoor import FrontDoorManagementClient

__all__ = ["ACR_AUDIENCE", "TIMEOUTS", "AzureClients", "LazyCredential"]

# Per request: 10 s to connect, 60 s for an answer (the SDK's default read timeout is 300 s,
# far past most steps' limits; a worker thread cannot be interrupted while it waits).
TIMEOUTS: Mapping[str, float] = {"connection_timeout": 10, "read_timeout": 60}
# The AAD audience of a registry's data plane in the public cloud: the token the SDK exchanges
# for an ACR refresh token (the ARM audience works only when the registry allows it).
ACR_AUDIENCE = "https://containerregistry.azure.net"


class LazyCredential:
    """A token credential that builds the real one (``DefaultAzureCredential``) on first use."""

    def __init__(self, factory: Callable[[], TokenCredential]) -> None:
        self._factory = factory
        self._credential: TokenCredential | None = None
        self._lock = threading.Lock()

    @property
    def credential(self) -> TokenCredential:
        with self._lock:
            if self._credential is None:
                self._credential = self._factory()
            return self._credential

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        return self.credential.get_token(*scopes, **kwargs)

    def close(self) -> None:
        with self._lock:
            credential, self._credential = self._credential, None
        close = getattr(credential, "close", None)
        if callable(close):
            close()


class AzureClients:
    """The SDK clients of one subscription, built on demand and kept.

    ``credential`` is any ``azure.core`` token credential; ``base_url`` the ARM endpoint;
    ``client_kwargs`` go to every client (``connection_verify``, ``polling_interval``,
    ``transport``...); ``keyvault_kwargs`` only to Key Vault clients.
    """

    def __init__(
        self,
        credential: TokenCredential,
        subscription_id: str,
        *,
        base_url: str = "https://management.azure.com",
        credential_scope: str | None = None,
        client_kwargs: Mapping[str, Any] | None = None,
        keyvault_kwargs: Mapping[str, Any] | None = None,
        acr_endpoint: str | None = None,
        acr_audience: str = ACR_AUDIENCE,
    ) -> None:
        self.credential = credential
        self.subscription_id = subscription_id
        self.base_url = base_url.rstrip("/")
        self._scope = credential_scope
        self._kwargs: dict[str, Any] = {"retry_status": 0, **TIMEOUTS, **(client_kwargs or {})}
        self._kv_kwargs = dict(keyvault_kwargs or {})
        self._lock = threading.Lock()
        self._aci: ContainerInstanceManagementClient | None = None
        self._cdn: CdnManagementClient | None = None
        self._frontdoor: FrontDoorManagementClient | None = None
        self._vaults: dict[str, SecretClient] = {}
        self._acr_endpoint = acr_endpoint
        self._acr_audience = acr_audience
        self._registries: dict[str, ContainerRegistryClient] = {}

    @classmethod
    def for_settings(cls, settings: AzureSettings, *, polling_interval: float | None = None
                     ) -> AzureClients:
        """Production clients: DefaultAzureCredential, built only when a token is needed."""
        client_id = settings.managed_identity_client_id

        def default_credential() -> TokenCredential:
            from azure.identity import DefaultAzureCredential

            if client_id:
                return DefaultAzureCredential(managed_identity_client_id=client_id)
            return DefaultAzureCredential()

        interval = (polling_interval if polling_interval is not None
                    else settings.poll_interval.total_seconds())
        return cls(LazyCredential(default_credential), settings.subscription_id,
                   base_url=settings.arm_endpoint,
                   credential_scope=f"{settings.arm_endpoint}/.default",
                   client_kwargs={"polling_interval": interval})

    def _arm_kwargs(self) -> dict[str, Any]:
        kwargs = dict(self._kwargs)
        if self._scope:
            kwargs.setdefault("credential_scopes", [self._scope])
        return kwargs

    @property
    def container_instances(self) -> ContainerInstanceManagementClient:
        from azure.mgmt.containerinstance import ContainerInstanceManagementClient

        with self._lock:
            if self._aci is None:
                self._aci = ContainerInstanceManagementClient(
                    self.credential, self.subscription_id, base_url=self.base_url,
                    **self._arm_kwargs())
            return self._aci

    @property
    def cdn(self) -> CdnManagementClient:
        from azure.mgmt.cdn import CdnManagementClient

        with self._lock:
            if self._cdn is None:
                self._cdn = CdnManagementClient(self.credential, self.subscription_id,
                                                base_url=self.base_url, **self._arm_kwargs())
            return self._cdn

    @property
    def frontdoor(self) -> FrontDoorManagementClient:
        from azure.mgmt.frontdoor import FrontDoorManagementClient

        with self._lock:
            if self._frontdoor is None:
                self._frontdoor = FrontDoorManagementClient(
                    self.credential, self.subscription_id, base_url=self.base_url,
                    **self._arm_kwargs())
            return self._frontdoor

    def secrets(self, vault_url: str) -> SecretClient:
        """The Key Vault client of ``vault_url`` (one per vault)."""
        from azure.keyvault.secrets import SecretClient

        with self._lock:
            client = self._vaults.get(vault_url)
            if client is None:
                kwargs = {**self._kwargs, **self._kv_kwargs}
                kwargs.pop("polling_interval", None)
                client = SecretClient(vault_url, self.credential, **kwargs)
                self._vaults[vault_url] = client
            return client

    def registry(self, login_server: str) -> ContainerRegistryClient:
        """The data-plane client of the registry at ``login_server`` (``name.azurecr.io``),
        one per registry. It exchanges the credential's AAD token for the registry's own
        tokens (``/oauth2/exchange``, ``/oauth2/token``) on the first challenge."""
        from azure.containerregistry import ContainerRegistryClient

        with self._lock:
            client = self._registries.get(login_server)
            if client is None:
                endpoint = (self._acr_endpoint.format(login_server=login_server)
                            if self._acr_endpoint else f"https://{login_server}")
                kwargs = dict(self._kwargs)
                kwargs.pop("polling_interval", None)
                client = ContainerRegistryClient(endpoint, self.credential,
                                                 audience=self._acr_audience, **kwargs)
                self._registries[login_server] = client
            return client

    def close(self) -> None:
        """Close every client built so far (and a lazily built credential)."""
        with self._lock:
            clients: list[Any] = [self._aci, self._cdn, self._frontdoor, *self._vaults.values(),
                                  *self._registries.values()]
            self._aci = self._cdn = self._frontdoor = None
            self._vaults = {}
            self._registries = {}
        for client in clients:
            if client is not None:
                client.close()
        if isinstance(self.credential, LazyCredential):
            self.credential.close()
