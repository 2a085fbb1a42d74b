"""Resolving what a person typed against the policy, with a did-you-mean."""

from __future__ import annotations

from bot.grammar import did_you_mean
from procedures.errors import UserError
from procedures.policy import Policy


def environment_of(policy: Policy, requested: str | None) -> str:
    """The environment name, checked against the policy."""
    name = policy.environment_name(requested)
    if name not in policy.environments:
        known = list(policy.environments)
        raise UserError(
            f"There is no environment `{name[:40]}`." + did_you_mean(name, known),
            hint="Environments: " + ", ".join(f"`{k}`" for k in known) + ".",
        )
    return name
