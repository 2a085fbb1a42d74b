"""A local Azure Resource Manager, Key Vault and Log Analytics double, over HTTPS with a
self-signed certificate.

It implements the endpoints the platform's SDK calls use (paths and api-versions as the
installed SDKs send them, see ``../shared/research/azure.md`` §6.3), one module per service:
``aci`` (container groups), ``frontdoor`` (classic and Standard/Premium), ``keyvault``,
``logs`` (Log Analytics queries), ``metrics`` (Azure Monitor platform metrics), ``backups``
(PostgreSQL flexible server backups), ``resources`` (resource groups and user-assigned
identities) and ``acr`` (container registries, the role assignments at their scope, and their
data plane: token exchange and tag listing); ``authz`` has the role assignments, ``core`` the
server, dispatch and long-running operations.

State is kept per resource, every request is recorded in ``calls`` (method, path, query, JSON
body, whether it carried the expected bearer token), ARM requests without the token get 401,
and failures are injected on demand (``fail_next_create``, ``throttle``, ``set_container``...).
"""

from __future__ import annotations

from tests.azure.arm_double.aci import AciMixin
from tests.azure.arm_double.acr import AcrMixin
from tests.azure.arm_double.authz import ROLES, AuthzMixin
from tests.azure.arm_double.backups import (
    BACKUPS_API_VERSION,
    BACKUPS_PAGE_SIZE,
    BackupsMixin,
    fail_backups,
    set_backups,
)
from tests.azure.arm_double.core import (
    API_VERSIONS,
    SUBSCRIPTION,
    TOKEN,
    Answer,
    ArmCore,
    Call,
    Request,
    Route,
    iter_bodies,
    make_certificate,
)
from tests.azure.arm_double.frontdoor import FrontDoorMixin
from tests.azure.arm_double.keyvault import KeyVaultMixin
from tests.azure.arm_double.logs import LogsMixin
from tests.azure.arm_double.metrics import METRICS_API_VERSION, MetricsMixin, set_metrics
from tests.azure.arm_double.resources import ResourcesMixin

__all__ = [
    "API_VERSIONS", "BACKUPS_API_VERSION", "BACKUPS_PAGE_SIZE", "METRICS_API_VERSION",
    "ROLES", "SUBSCRIPTION", "TOKEN", "Answer", "ArmDouble", "Call", "Request", "Route",
    "fail_backups", "iter_bodies", "make_certificate", "set_backups", "set_metrics",
]


class ArmDouble(AcrMixin, AciMixin, FrontDoorMixin, ResourcesMixin, KeyVaultMixin, LogsMixin,
                MetricsMixin, BackupsMixin, AuthzMixin, ArmCore):
    """The double: ``url`` is its base URL, ``cert_path`` the certificate to trust."""
