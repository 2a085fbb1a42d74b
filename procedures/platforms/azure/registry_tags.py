"""The versions that exist on Azure: the tags of the environment's image repository in its
container registry, newest first, read through the registry's data plane
(``azure-containerregistry``: ``ContainerRegistryClient.list_tag_properties`` with
``order_by=LAST_UPDATED_ON_DESCENDING``, the REST ``GET /acr/v1/{repository}/_tags
?orderby=timedesc``, paged by ``Link`` headers).

The bot's identity needs a data-plane read on the repository: ``AcrPull`` (or Reader) on a
registry in ``LegacyRegistryPermissions`` mode, ``Container Registry Repository Reader`` in
``AbacRepositoryPermissions`` mode (``qlp-bot doctor`` checks it). The deploy dialog offers
these tags; nothing is deployed from here.
"""

from __future__ import annotations

from azure.containerregistry import ArtifactTagOrder
from azure.core.exceptions import AzureError

from procedures.platforms.azure.clients import AzureClients
from procedures.platforms.azure.errors import translate
from procedures.platforms.azure.settings import AzureSettings

__all__ = ["REGISTRY_SERVICE", "registry_tags"]

REGISTRY_SERVICE = "Azure Container Registry"
_PAGE = 100  # ACR's own page size limit for the tags listing


def registry_tags(clients: AzureClients, settings: AzureSettings, limit: int) -> list[str]:
    """At most ``limit`` tags of ``settings.image`` in ``settings.registry``, most recently
    pushed first. Raises ExternalServiceError with ACR's code (``NAME_UNKNOWN`` for a
    repository the registry does not know, ``UNAUTHORIZED`` without the data-plane role)."""
    if limit <= 0:
        return []
    names: list[str] = []
    what = f"list the tags of {settings.image} in {settings.registry}"
    try:
        client = clients.registry(settings.registry)
        for tag in client.list_tag_properties(
                settings.image, order_by=ArtifactTagOrder.LAST_UPDATED_ON_DESCENDING,
                results_per_page=min(limit, _PAGE)):
            names.append(str(tag.name))
            if len(names) >= limit:
                break
    except AzureError as exc:
        raise translate(exc, service=REGISTRY_SERVICE, what=what) from exc
    return names
