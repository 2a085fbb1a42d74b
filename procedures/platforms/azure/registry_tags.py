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

import json
from collections.abc import Mapping

from azure.containerregistry import ArtifactTagOrder
from azure.core.exceptions import AzureError, HttpResponseError

from procedures.errors import ExternalServiceError
from procedures.platforms.azure.clients import AzureClients
from procedures.platforms.azure.errors import AzureCalls, translate
from procedures.platforms.azure.settings import AzureSettings

__all__ = ["REGISTRY_SERVICE", "acr_error", "registry_tags"]

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
        # Counted and traced like every Azure call (qlp_azure_calls_total{service=...,
        # operation="list"}); its errors are ACR's own, answered below.
        with AzureCalls(REGISTRY_SERVICE).observed(what):
            client = clients.registry(settings.registry)
            for tag in client.list_tag_properties(
                    settings.image, order_by=ArtifactTagOrder.LAST_UPDATED_ON_DESCENDING,
                    results_per_page=min(limit, _PAGE)):
                names.append(str(tag.name))
                if len(names) >= limit:
                    break
    except HttpResponseError as exc:
        code, message = acr_error(exc)
        if code is None:
            raise translate(exc, service=REGISTRY_SERVICE, what=what) from exc
        status = exc.status_code
        raise ExternalServiceError(
            REGISTRY_SERVICE, f"{what}: {code} (HTTP {status}): {message}",
            retryable=status == 429 or (status or 0) >= 500, code=code) from exc
    except AzureError as exc:
        raise translate(exc, service=REGISTRY_SERVICE, what=what) from exc
    return names


def acr_error(exc: HttpResponseError) -> tuple[str | None, str]:
    """ACR's own error body, ``{"errors": [{"code": ..., "message": ...}]}``: code and message
    of the first error (the SDK's message is only the HTTP status for it)."""
    try:
        body = json.loads(exc.response.text()) if exc.response is not None else None
    except (ValueError, TypeError):  # not JSON: a proxy's page
        body = None
    errors = body.get("errors") if isinstance(body, Mapping) else None
    if isinstance(errors, list) and errors and isinstance(errors[0], Mapping):
        return (str(errors[0].get("code") or "") or None,
                str(errors[0].get("message") or exc.reason or ""))
    return None, str(exc.reason or exc.message)
