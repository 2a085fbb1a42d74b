"""A fresh environment, as a new user has it before the first deployment: a Front Door profile
whose two origin groups (or one group with both colours' origins) already point at the FQDNs
the colours' container groups WILL get, a route pointing at blue, and no container group.

The user can set the origins up before any group exists because ACI's FQDN is deterministic
for a DNS label with the ``TenantReuse`` scope (``<label>.<hash>.<region>.azurecontainer.io``);
:func:`fqdn_for` is the one place the double computes it (the ACI part of the double uses it
when a group is created).

Nothing here imports the double's package at module level, so ``arm_double.aci`` can import
:func:`fqdn_for` from this module without an import cycle.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tests.azure.arm_double import ArmDouble

COLOURS = ("blue", "green")


def fqdn_for(dns_label: str, location: str) -> str:
    """The FQDN the double gives a container group created with ``dnsNameLabel`` ``dns_label``
    in ``location`` (for example ``fqdn_for("qlp-prod-blue", "eastus")``)."""
    from tests.azure.arm_double.core import SUBSCRIPTION

    digest = hashlib.sha256(f"{SUBSCRIPTION}/{dns_label}".encode()).hexdigest()[:12]
    return f"{dns_label}.{digest}.{location}.azurecontainer.io"


def colour_fqdns(label: str, location: str) -> dict[str, str]:
    """Each colour's future FQDN for the policy's ``dns_name_label`` ``label``."""
    return {colour: fqdn_for(f"{label}-{colour}", location) for colour in COLOURS}


def fresh_front_door(double: ArmDouble, rg: str = "prod-qlp-rg",
                     profile: str = "qlp-frontdoor", endpoint: str = "qlp-endpoint",
                     route: str = "default-route", *, location: str = "eastus",
                     label: str = "qlp-prod", port: int = 8080) -> dict[str, str]:
    """``switch_by: route``: origin groups ``qlp-blue-og`` and ``qlp-green-og``, each with one
    enabled origin (``qlp-blue``, ``qlp-green``) at its colour's future FQDN and ``port``, and
    the route pointing at ``qlp-blue-og``. The profile is strict (see the Front Door part of
    the double). Returns each colour's FQDN."""
    fqdns = colour_fqdns(label, location)
    for colour, host in fqdns.items():
        group = f"qlp-{colour}-og"
        double.add_origin_group(rg, profile, group)
        double.add_origin(rg, profile, group, f"qlp-{colour}", host=host, enabled=True,
                          http_port=port)
    double.add_route(rg, profile, endpoint, route, "qlp-blue-og")
    return fqdns


def fresh_origins_front_door(double: ArmDouble, rg: str = "prod-qlp-rg",
                             profile: str = "qlp-frontdoor", endpoint: str = "qlp-endpoint",
                             route: str = "default-route", *, location: str = "eastus",
                             label: str = "qlp-prod", port: int = 8080) -> dict[str, str]:
    """``switch_by: origins``: one origin group ``qlp-og`` with origins ``qlp-blue`` (enabled)
    and ``qlp-green`` (disabled) at the colours' future FQDNs and ``port``, the route pointing
    at ``qlp-og``. Returns each colour's FQDN."""
    fqdns = colour_fqdns(label, location)
    double.add_origin_group(rg, profile, "qlp-og")
    for colour, host in fqdns.items():
        double.add_origin(rg, profile, "qlp-og", f"qlp-{colour}", host=host,
                          enabled=colour == "blue", http_port=port)
    double.add_route(rg, profile, endpoint, route, "qlp-og")
    return fqdns


def fresh_classic_front_door(double: ArmDouble, rg: str = "prod-qlp-rg",
                             name: str = "qlp-classic-fd", rule: str = "default-routing-rule",
                             *, location: str = "eastus", label: str = "qlp-prod",
                             port: int = 8080) -> dict[str, str]:
    """Classic Front Door: backend pools ``qlp-blue-pool`` and ``qlp-green-pool``, each with one
    backend at its colour's future FQDN and ``port``, the rule forwarding to blue. Returns each
    colour's FQDN."""
    fqdns = colour_fqdns(label, location)
    double.add_classic_front_door(rg, name, rule=rule,
                                  pools={c: f"qlp-{c}-pool" for c in COLOURS}, live="blue",
                                  hosts=fqdns, http_port=port)
    return fqdns
