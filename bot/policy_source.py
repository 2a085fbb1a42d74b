"""Where the policy comes from: ``QLP_CONFIG``, or the built-in demo policy of the shell."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import yaml

from bot.settings import Settings
from procedures.errors import ConfigError
from procedures.policy import Policy, load_policy, parse_policy


def demo_policy() -> Policy:
    """The built-in policy of the local shell: two local environments of the sample service."""
    text = resources.files("bot").joinpath("demo_policy.yml").read_text(encoding="utf-8")
    return parse_policy(yaml.safe_load(text), source="built-in demo policy")


def load_configured_policy(settings: Settings, *, allow_demo: bool) -> Policy:
    """``QLP_CONFIG`` if set; otherwise the demo policy where that is allowed."""
    if settings.qlp_config is not None:
        return load_policy(Path(settings.qlp_config))
    if allow_demo:
        return demo_policy()
    raise ConfigError("QLP_CONFIG is not set: name the policy file (see qlp.example.yml)",
                      key="QLP_CONFIG")
