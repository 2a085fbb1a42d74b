"""Policies for tests, built from a dict so each test can change one key."""

from __future__ import annotations

import copy
import socket
from typing import Any

from procedures.policy import Policy, parse_policy

BASE: dict[str, Any] = {
    "timezone": "UTC",
    "channel": "C0DEPLOY",
    "environments": {
        "production": {
            "platform": "local",
            "url": "http://127.0.0.1:1",
            "local": {"command": ["python", "-m", "procedures.platforms.local.sample_service",
                                  "--port", "{port}", "--version", "{version}",
                                  "--slot", "{slot}"],
                      "slots": {"blue": 2, "green": 3}, "ready_timeout": "10s"},
            "health": ["/health"],
        },
        "staging": {
            "platform": "local",
            "url": "http://127.0.0.1:4",
            "local": {"command": ["python", "-m", "procedures.platforms.local.sample_service",
                                  "--port", "{port}", "--version", "{version}"],
                      "slots": {"blue": 5, "green": 6}},
        },
    },
    "windows": {
        "preferred": [{"days": ["tue", "wed"], "start": "10:00", "end": "14:00"}],
        "avoid_days": ["mon", "fri"],
        "holidays": {"country": "US"},
        "freezes": [{"start": "2026-12-21", "end": "2027-01-04", "reason": "year-end freeze"}],
    },
    "approvals": {
        "standard": {"users": ["U0LEAD1"], "groups": ["S0RELEASE"], "required": 1},
        "rollback": {"users": ["U0LEAD1"], "required": 1},
        "override": {"users": ["U0HEAD1"], "required": 1},
        # The lock tests act as U0DEV; tests/bot/test_lock_rule.py checks the default rule.
        "lock": {"users": ["U0DEV", "U0OPS", "U0LEAD1"], "groups": ["S0RELEASE"]},
    },
    "monitoring": {"duration": "2s", "interval": "1s", "health_failure_ratio": 0.5,
                   "emergency_stability": "2s", "extended_health": "5s",
                   "response_time_ms": 2000, "error_threshold": 10},
}


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def make_policy(*, real_ports: bool = False, **changes: Any) -> Policy:
    """The base policy with top-level keys replaced; ``real_ports`` picks free ports."""
    data = copy.deepcopy(BASE)
    if real_ports:
        for env in data["environments"].values():
            env["url"] = f"http://127.0.0.1:{free_port()}"
            env["local"]["slots"] = {"blue": free_port(), "green": free_port()}
    data.update(changes)
    return parse_policy(data, source="test policy")
