"""``manifest.yml`` is a valid Slack app manifest and agrees with what the bot registers.

The schema is Slack's official v1 app manifest schema (``slackapi/manifest-schema`` tag v0.5.0,
``schemas/manifest.schema.1.0.0.json``, draft-07). It is looked up in this order:

1. ``$QLP_SCHEMA_PATH``, if set (it must then name an existing file);
2. ``<repo>/../shared/research/slack-manifest.schema.json``, the project's research copy;
3. ``tests/data/slack-manifest.schema.json``, the copy vendored here so the test always runs.

A missing schema is a failure, never a skip: a manifest nobody validated is what this file is
here to prevent.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft7Validator

from bot.actions import ALL_ACTIONS, COMMAND

REPO = Path(__file__).resolve().parents[1]
MANIFEST = REPO / "manifest.yml"
SHARED_SCHEMA = REPO.parent / "shared" / "research" / "slack-manifest.schema.json"
VENDORED_SCHEMA = REPO / "tests" / "data" / "slack-manifest.schema.json"
# sha256 of manifest.schema.1.0.0.json at slackapi/manifest-schema v0.5.0
# (commit 2f71e79ad3a4e55b76788b7772e271838e2ea782).
VENDORED_SCHEMA_SHA256 = "f2adf9f9800230e2fe44bab0762796492871edaab817e9160fdcdf0eb4642e58"

# What the bot calls: the slash command, chat.postMessage / chat.update (also in public
# channels it was never invited to), usergroups.users.list for approver groups, users.info,
# conversations.info (qlp-bot doctor: is the bot in the deployment channel).
REQUIRED_BOT_SCOPES = {
    "commands",
    "chat:write",
    "chat:write.public",
    "usergroups:read",
    "users:read",
    "channels:read",
    "groups:read",
    "channels:history",  # the outbox looks up a post whose answer was lost
    "groups:history",
    "channels:join",  # and rejoins a public channel after not_in_channel
}


def schema_path() -> Path:
    """The schema to validate against; fails the test (not skips) when there is none."""
    override = os.environ.get("QLP_SCHEMA_PATH")
    if override:
        path = Path(override)
        if not path.is_file():
            pytest.fail(f"QLP_SCHEMA_PATH={override!r} does not name a file")
        return path
    for path in (SHARED_SCHEMA, VENDORED_SCHEMA):
        if path.is_file():
            return path
    pytest.fail(
        "Slack manifest schema not found: looked for "
        f"{SHARED_SCHEMA} and {VENDORED_SCHEMA}; set QLP_SCHEMA_PATH to its location"
    )


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(schema_path().read_text(encoding="utf-8"))
    Draft7Validator.check_schema(loaded)
    return loaded


@pytest.fixture(scope="module")
def manifest() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(MANIFEST.read_text(encoding="utf-8"))
    return loaded


def validation_errors(schema: dict[str, Any], document: dict[str, Any]) -> list[str]:
    """Every schema violation in ``document``, one readable line each."""
    validator = Draft7Validator(schema)
    errors = sorted(validator.iter_errors(document), key=lambda e: list(e.absolute_path))
    return [f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in errors]


def test_vendored_schema_is_the_official_one() -> None:
    digest = hashlib.sha256(VENDORED_SCHEMA.read_bytes()).hexdigest()
    assert digest == VENDORED_SCHEMA_SHA256, (
        f"{VENDORED_SCHEMA} changed (sha256 {digest}); re-copy it from slackapi/manifest-schema "
        "and update VENDORED_SCHEMA_SHA256 on purpose"
    )


def test_manifest_is_valid(schema: dict[str, Any], manifest: dict[str, Any]) -> None:
    errors = validation_errors(schema, manifest)
    assert not errors, "manifest.yml is not a valid Slack app manifest:\n" + "\n".join(errors)


def test_validator_rejects_a_command_without_its_slash(
    schema: dict[str, Any], manifest: dict[str, Any]
) -> None:
    broken = copy.deepcopy(manifest)
    broken["features"]["slash_commands"][0]["command"] = COMMAND.lstrip("/")
    errors = validation_errors(schema, broken)
    assert any(e.startswith("features/slash_commands/0/command:") for e in errors), errors


def test_background_color_matches_the_schema_regex(
    schema: dict[str, Any], manifest: dict[str, Any]
) -> None:
    # The schema writes this rule under a non-standard "regex" keyword that validators ignore.
    rule = schema["definitions"]["app-manifests.v1.display_information.schema"]
    pattern = rule["properties"]["background_color"]["regex"]
    color = manifest["display_information"]["background_color"]
    assert re.fullmatch(pattern, color), f"background_color {color!r} does not match {pattern}"


def test_manifest_is_version_1(manifest: dict[str, Any]) -> None:
    assert manifest["_metadata"]["major_version"] == 1


def test_slash_command_is_the_one_the_bot_handles(manifest: dict[str, Any]) -> None:
    commands = [c["command"] for c in manifest["features"]["slash_commands"]]
    assert commands == [COMMAND]


def test_bot_scopes_cover_what_the_bot_calls(manifest: dict[str, Any]) -> None:
    scopes = set(manifest["oauth_config"]["scopes"]["bot"])
    missing = REQUIRED_BOT_SCOPES - scopes
    assert not missing, f"manifest.yml lacks bot scopes {sorted(missing)}"


def test_interactivity_is_enabled_for_the_buttons(manifest: dict[str, Any]) -> None:
    assert manifest["settings"]["interactivity"]["is_enabled"] is True


def test_http_mode_has_request_urls(manifest: dict[str, Any]) -> None:
    """Without Socket Mode, Slack needs somewhere to send commands and button clicks."""
    settings = manifest["settings"]
    if settings.get("socket_mode_enabled"):
        return
    assert settings["interactivity"].get("request_url"), "HTTP mode needs interactivity.request_url"
    for command in manifest["features"]["slash_commands"]:
        assert command.get("url"), f"HTTP mode needs a url for {command['command']}"


def test_action_ids_are_unique() -> None:
    assert len(set(ALL_ACTIONS)) == len(ALL_ACTIONS)


def test_registered_actions_match_constants() -> None:
    from bot.listeners import registered_action_ids

    assert registered_action_ids() == set(ALL_ACTIONS)
