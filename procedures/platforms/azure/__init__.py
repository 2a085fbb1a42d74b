"""Azure: blue-green on Azure Container Instances (a container group per colour) behind Front
Door (Standard/Premium or classic), secrets from Key Vault.

The only package of the project that imports ``azure.*`` (an import-linter contract keeps it
so). ``AzurePlatform`` implements ``procedures.platforms.base.Platform``; the environment's
``azure:`` policy section is validated by ``parse_azure_settings``.
"""

from procedures.platforms.azure.clients import AzureClients
from procedures.platforms.azure.platform import AzurePlatform
from procedures.platforms.azure.settings import AzureSettings, parse_azure_settings

__all__ = ["AzureClients", "AzurePlatform", "AzureSettings", "parse_azure_settings"]
