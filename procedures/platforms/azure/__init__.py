"""Azure: blue-green on Azure Container Instances (a container group per colour) behind Front
Door (Standard/Premium or classic), secrets from Key Vault.

The only package of the project that imports ``azure.*`` (an import-linter contract keeps it
so). ``AzurePlatform`` implements ``procedures.platforms.base.Platform``; the environment's
``azure:`` policy section is validated by ``parse_azure_settings``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from procedures.platforms.azure.settings import AzureSettings, parse_azure_settings

if TYPE_CHECKING:
    from procedures.platforms.azure.clients import AzureClients
    from procedures.platforms.azure.platform import AzurePlatform

__all__ = ["AzureClients", "AzurePlatform", "AzureSettings", "parse_azure_settings"]


def __getattr__(name: str) -> Any:
    # The Azure SDKs are heavy (tens of MB): load them only when an Azure environment is used,
    # so validating an `azure:` policy section or running locally does not pay for them.
    if name == "AzureClients":
        from procedures.platforms.azure.clients import AzureClients

        return AzureClients
    if name == "AzurePlatform":
        from procedures.platforms.azure.platform import AzurePlatform

        return AzurePlatform
    raise AttributeError(name)
