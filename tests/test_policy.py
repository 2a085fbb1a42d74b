"""The policy file: the example and the demo load; each kind of mistake names its key."""

from __future__ import annotations

import copy
import re
from datetime import timedelta
from pathlib import Path

import pytest
import yaml

from bot.policy_source import demo_policy
from procedures.errors import ConfigError
from procedures.policy import load_policy, parse_policy

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = yaml.safe_load((ROOT / "qlp.example.yml").read_text())


def test_example_and_demo_load() -> None:
    policy = load_policy(ROOT / "qlp.example.yml")
    assert policy.monitoring.duration == timedelta(minutes=30)
    assert policy.windows.preferred[0].days == [1, 2]
    assert policy.approval_rule("migration") == policy.approvals["standard"]
    assert policy.environment_name(None) == "production"
    assert demo_policy().environments["production"].platform == "local"


def _broken(change: dict[str, object]) -> dict[str, object]:
    data = copy.deepcopy(EXAMPLE)
    for dotted, value in change.items():
        *parents, last = dotted.split(".")
        node = data
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        if value is DELETE:
            del node[last]
        else:
            node[last] = value
    return data


DELETE = object()


@pytest.mark.parametrize(("change", "key", "words"), [
    ({"timezone": "Mars/Olympus"}, "timezone", "IANA"),
    ({"channel": "#deploys"}, "channel", "channel ID"),
    ({"channel": DELETE}, "channel", "missing"),
    ({"monitoring.duration": "forever"}, "monitoring.duration", "not a duration"),
    ({"monitoring.interval": "2h"}, "monitoring", "longer than duration"),
    ({"monitoring.health_failure_ratio": 3}, "monitoring.health_failure_ratio", "less than"),
    ({"windows.preferred": []}, "windows.preferred", "at least 1"),
    ({"windows.avoid_days": ["funday"]}, "windows.avoid_days[0]", "not a day"),
    ({"windows.holidays": {"country": "ZZ"}}, "windows.holidays.country", "country"),
    ({"windows.freezes": [{"start": "2026-12-21", "end": "2026-12-01"}]},
     "windows.freezes[0]", "end is before start"),
    ({"approvals.standard.users": ["bob"]}, "approvals.standard.users", "Slack user ID"),
    ({"approvals.standard.required": 0}, "approvals.standard.required", "greater than"),
    ({"approvals.stnadard": {"users": ["U0LEAD1"]}}, "approvals", "did you mean standard"),
    ({"environments.production.platform": "k8s"}, "environments.production.platform", "local"),
    ({"environments.production.local.slots": {"blue": 1}},
     "environments.production.local.slots", "both colours"),
    ({"environments.production.url": "ftp://x"}, "environments.production.url", "http"),
    ({"environments.production.helth": ["/h"]}, "environments.production.helth",
     "did you mean health"),
    ({"environments.production.local": DELETE}, "environments.production", "local:"),
])
def test_a_bad_key_is_named(change: dict[str, object], key: str, words: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_policy(_broken(change), source="qlp.yml")
    message = caught.value.message
    assert f"qlp.yml: {key}" in message, message
    assert words.lower() in message.lower(), message


def test_yaml_syntax_error_names_the_line(tmp_path: Path) -> None:
    bad = tmp_path / "qlp.yml"
    bad.write_text("timezone: UTC\nchannel: [C0DEPLOY\n")
    with pytest.raises(ConfigError) as caught:
        load_policy(bad)
    assert "line" in caught.value.message


def test_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_policy(tmp_path / "nope.yml")
    assert "does not exist" in caught.value.message
    assert caught.value.key == "QLP_CONFIG"


def test_top_level_must_be_a_mapping(tmp_path: Path) -> None:
    bad = tmp_path / "qlp.yml"
    bad.write_text("- just\n- a list\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_policy(bad)


def test_unquoted_times_are_read_as_clock_times() -> None:
    data = _broken({"windows.preferred": [{"days": ["tue"], "start": 600, "end": 840}]})
    policy = parse_policy(data)
    assert policy.windows.preferred[0].start.hour == 10
    assert policy.windows.preferred[0].end.hour == 14


# -- notifications ------------------------------------------------------------------------------

PAGERDUTY = {"routing_key": "R0123456789ABCDEF0123456789ABCDE"}
EMAIL = {"host": "smtp.example.com", "from": "qlp-bot@example.com", "to": ["ops@example.com"],
         "audiences": {"leadership": ["cto@example.com"]}}


def test_the_commented_notification_routes_of_the_example_are_valid() -> None:
    """Uncomment the example's pagerduty and email blocks: they must load as documented."""
    lines = (ROOT / "qlp.example.yml").read_text().splitlines()
    start = lines.index("notifications:")
    end = next(i for i in range(start + 1, len(lines)) if lines[i] and lines[i][0] != " ")
    # A commented key ("  #   port: 587") loses its "# "; prose comments stay comments.
    block = [re.sub(r"^  # (?=\s*[a-z_]+:(\s|$))", "  ", line) for line in lines[start:end]]
    data = copy.deepcopy(EXAMPLE)
    data["notifications"] = yaml.safe_load("\n".join(block))["notifications"]
    notifications = parse_policy(data).notifications
    assert notifications.pagerduty is not None
    assert notifications.pagerduty.events_url == "https://events.pagerduty.com/v2/enqueue"
    email = notifications.email
    assert email is not None and email.from_ == "qlp-bot@example.com" and email.port == 587
    assert email.starttls and email.username == "qlp-bot"
    assert email.audiences == {"leadership": ["cto@example.com", "vp-eng@example.com"]}


@pytest.mark.parametrize(("change", "key", "words"), [
    ({"notifications.pagerduty": {"routing_key": "short"}}, "notifications.pagerduty.routing_key",
     "not an Events API v2 integration key (5 characters); it is 32 letters and digits"),
    ({"notifications.pagerduty": {**PAGERDUTY, "events_url": "events.pagerduty.com"}},
     "notifications.pagerduty.events_url", "not an http(s) URL"),
    ({"notifications.pagerduty": {}}, "notifications.pagerduty.routing_key", "missing"),
    ({"notifications.pagerduty_routing_key": PAGERDUTY["routing_key"]},
     "notifications", "pagerduty_routing_key is now written pagerduty: {routing_key: ...}"),
    ({"notifications.email": {**EMAIL, "from": "bot"}}, "notifications.email.from",
     "'bot' is not an e-mail address"),
    ({"notifications.email": {**EMAIL, "to": ["ops@example.com", "Ops Team"]}},
     "notifications.email.to", "'Ops Team' is not an e-mail address"),
    ({"notifications.email": {**EMAIL, "audiences": {"leadership": ["cto"]}}},
     "notifications.email.audiences", "leadership: 'cto' is not an e-mail address"),
    ({"notifications.email": {**EMAIL, "audiences": {"leadership": []}}},
     "notifications.email.audiences", "leadership: list at least one address"),
    ({"notifications.email": {**EMAIL, "host": "smtp example.com"}},
     "notifications.email.host", "not a host name"),
    ({"notifications.email": {**EMAIL, "port": 70000}}, "notifications.email.port",
     "less than or equal to 65535"),
    ({"notifications.email": {**EMAIL, "password": "hunter2"}},
     "notifications.email.password", "unknown key"),
    ({"notifications.email": {**EMAIL, "username": "bot", "starttls": False}},
     "notifications.email", "username needs starttls: true"),
    ({"notifications.email": {k: v for k, v in EMAIL.items() if k != "from"}},
     "notifications.email.from", "missing"),
])
def test_a_bad_notification_route_is_named(change: dict[str, object], key: str,
                                           words: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_policy(_broken(change), source="qlp.yml")
    message = caught.value.message
    assert f"qlp.yml: {key}" in message, message
    assert words.lower() in message.lower(), message
    assert "hunter2" not in message and "R0123456789" not in message


def test_notification_routes_load() -> None:
    policy = parse_policy(_broken({"notifications.pagerduty": PAGERDUTY,
                                   "notifications.email": {**EMAIL, "port": 25,
                                                           "starttls": False}}))
    assert policy.notifications.pagerduty is not None
    assert policy.notifications.pagerduty.routing_key == PAGERDUTY["routing_key"]
    assert policy.notifications.email is not None
    assert (policy.notifications.email.port, policy.notifications.email.starttls) == (25, False)


def test_the_commented_azure_environment_of_the_example_is_valid() -> None:
    """Uncomment the example's production-azure block: it must load, and its documented
    values are the settings' own defaults (no key documented that does not exist)."""
    from procedures.platforms.azure.settings import parse_azure_settings

    lines = (ROOT / "qlp.example.yml").read_text().splitlines()
    start = lines.index("  # production-azure:")
    end = next(i for i in range(start + 1, len(lines)) if not lines[i].startswith("  #"))
    # "  #   platform: azure" -> "    platform: azure"; prose ("  #     # Classic ...") stays.
    block = [re.sub(r"^  # ", "  ", line) for line in lines[start:end]
             if re.match(r"^  # ( *)[A-Za-z_-]+:", line)]
    environment = yaml.safe_load("\n".join(block))["production-azure"]
    settings = parse_azure_settings(environment["azure"])
    assert settings.switch_confirm == "status"
    assert settings.switch_confirm_timeout.total_seconds() == 30 * 60
    assert settings.switch_confirm_answers == 6
    assert settings.switch_confirm_window.total_seconds() == 60
    assert settings.dns_label_scope == "TenantReuse" and settings.subnet_id is None
    insights = settings.app_insights
    assert insights is not None and insights.workspace_id and insights.resource_id
    assert settings.role_name("green") == "qlp-green"
