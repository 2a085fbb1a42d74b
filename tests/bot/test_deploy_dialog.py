"""The deploy dialog through signed requests into the real Bolt app and the Slack double: the
shortcut opens the modal with its trigger, the version menu offers what exists, a submission
is judged by the commands' own gate and refusals land on the field they concern, a valid one
creates exactly one card however often it is submitted."""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime
from typing import Any

import pytest
import yaml

from bot.deploy_dialog import equivalent_text
from bot.deploy_dialog_view import CALLBACK_ID, VERSION_ACTION, read_state
from bot.dialog_versions import semver_key
from bot.grammar import parse
from bot.shell.slack_standin import OpenedView, view_problems
from bot.slack_requests import (
    block_suggestion_body,
    new_trigger_id,
    shortcut_body,
    view_submission_body,
)
from procedures.clock import FixedClock
from procedures.model import DeploymentState, ProcedureKind
from tests.fakes.bot_harness import BotHarness
from tests.fakes.slack_views import CHANNEL
from tests.test_manifest import MANIFEST

FRIDAY = datetime(2026, 12, 4, 11, 0, tzinfo=UTC)
NEXT_TUESDAY_10 = datetime(2026, 12, 8, 10, 0, tzinfo=UTC)


# -- driving the dialog -------------------------------------------------------------------------


def open_dialog(bot: BotHarness, user: str = "U0DEV") -> OpenedView:
    """Use the global shortcut as ``user``; the modal the double was asked to open."""
    trigger = new_trigger_id()
    response = bot.post(shortcut_body(callback_id=CALLBACK_ID, user_id=user,
                                      trigger_id=trigger))
    assert response.status_code == 200 and response.text == ""  # acked, nothing shown
    found: Any = bot.wait_for(lambda: [v for v in bot.slack.views() if v.trigger_id == trigger],
                              timeout=5, what="views.open with the shortcut's trigger")
    return found[0]


def _selected(kind: str, value: str | None) -> dict[str, Any]:
    option = None if value is None else {
        "text": {"type": "plain_text", "text": value, "emoji": True}, "value": value}
    return {"type": kind, "selected_option": option}


def state(*, environment: str = "production", kind: str = "standard",
          version: str | None = "v1.2.3", reason: str | None = None, when: int | None = None,
          category: str | None = None, flags: tuple[str, ...] = ()) -> dict[str, Any]:
    """``view.state.values`` as Slack sends it: every input block, empty ones included."""
    return {
        "environment": {"environment": _selected("static_select", environment)},
        "kind": {"kind": _selected("static_select", kind)},
        "category": {"category": _selected("static_select", category)},
        "version": {VERSION_ACTION: _selected("external_select", version)},
        "reason": {"reason": {"type": "plain_text_input", "value": reason}},
        "when": {"when": {"type": "datetimepicker", "selected_date_time": when}},
        "options": {"options": {"type": "checkboxes", "selected_options": [
            {"text": {"type": "plain_text", "text": f}, "value": f} for f in flags]}},
    }


def submit(bot: BotHarness, view: OpenedView, user: str = "U0DEV",
           **fields: Any) -> dict[str, Any]:
    """Submit ``view`` with ``fields`` (see :func:`state`); the ack's JSON."""
    body = view_submission_body(view=view.view, view_id=view.id, values=state(**fields),
                                user_id=user)
    response = bot.post(body)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    if answer.get("response_action") == "errors":
        # Slack shows an error only under an input block of the view; the rest is lost.
        inputs = {b["block_id"] for b in view.view["blocks"] if b["type"] == "input"}
        assert set(answer["errors"]) <= inputs, answer
        assert all(0 < len(text) <= 500 for text in answer["errors"].values()), answer
    elif answer.get("response_action") == "update":
        assert view_problems(answer["view"]) == [], answer["view"]
    return answer


def shown(answer: dict[str, Any]) -> str:
    """The text of the view an ``update`` answer shows."""
    assert answer["response_action"] == "update", answer
    return "\n".join(b["text"]["text"] for b in answer["view"]["blocks"])


def cards_queued(bot: BotHarness) -> list[int]:
    return [n.payload["card_for"] for n in bot.services.outbox.undelivered(1000)
            if n.payload.get("card_for") is not None and n.kind == "post"]


# -- opening ------------------------------------------------------------------------------------


def test_the_shortcut_opens_the_dialog_with_its_trigger(bot: BotHarness) -> None:
    started = time.time()
    opened = open_dialog(bot)
    [call] = [c for c in bot.slack.calls() if c.method == "views.open"]
    assert call.ok and call.args["trigger_id"] == opened.trigger_id
    issued = int(opened.trigger_id.split(".")[0]) / 1e9
    print(f"\nviews.open {1000 * (call.at - issued):.0f} ms after the trigger was issued "
          f"({1000 * (call.at - started):.0f} ms after the shortcut was sent; Slack allows "
          "3000 ms)")
    view = opened.view
    assert view["callback_id"] == CALLBACK_ID and view_problems(view) == []
    blocks = {b.get("block_id"): b for b in view["blocks"]}
    assert [o["value"] for o in blocks["environment"]["element"]["options"]] == \
        ["production", "staging"]
    assert blocks["environment"]["element"]["initial_option"]["value"] == "production"
    assert [o["value"] for o in blocks["kind"]["element"]["options"]] == \
        ["standard", "hotfix", "emergency"]
    version = blocks["version"]["element"]
    assert version["type"] == "external_select" and version["min_query_length"] == 0
    assert blocks["when"]["element"]["type"] == "datetimepicker"
    assert [o["value"] for o in blocks["options"]["element"]["options"]] == \
        ["maintenance", "dry-run"]


def test_the_dialog_fits_block_kit_with_twenty_environments() -> None:
    from bot.deploy_dialog_view import dialog_view
    from tests.fakes.policies import BASE, make_policy

    local = BASE["environments"]["staging"]
    policy = make_policy(environments={f"env-{i:02d}": local for i in range(20)})
    view = dialog_view(policy, environment="env-07", origin="home")
    assert view_problems(view) == []
    [environments] = [b for b in view["blocks"] if b.get("block_id") == "environment"]
    assert len(environments["element"]["options"]) == 20
    assert environments["element"]["initial_option"]["value"] == "env-07"
    assert json.loads(view["private_metadata"]) == {"origin": "home", "environment": "env-07"}


def test_the_double_refuses_an_expired_or_reused_trigger(bot: BotHarness) -> None:
    """Slack's rules the opener lives by: 3 seconds, once."""
    from slack_sdk.errors import SlackApiError

    view = open_dialog(bot).view
    old = new_trigger_id(issued_at=time.time() - 4)
    with pytest.raises(SlackApiError) as expired:
        bot.services.slack.views_open(trigger_id=old, view=view)
    assert expired.value.response["error"] == "expired_trigger_id"
    fresh = new_trigger_id()
    bot.services.slack.views_open(trigger_id=fresh, view=view)
    with pytest.raises(SlackApiError) as reused:
        bot.services.slack.views_open(trigger_id=fresh, view=view)
    assert reused.value.response["error"] == "exchanged_trigger_id"
    long_title = {**view, "title": {"type": "plain_text", "text": "A title longer than 24 chars"}}
    with pytest.raises(SlackApiError) as invalid:
        bot.services.slack.views_open(trigger_id=new_trigger_id(), view=long_title)
    assert invalid.value.response["error"] == "invalid_arguments"


def test_the_manifest_declares_the_global_shortcut() -> None:
    manifest = yaml.safe_load(MANIFEST.read_text(encoding="utf-8"))
    shortcuts = manifest["features"]["shortcuts"]
    assert {"type": "global", "callback_id": CALLBACK_ID} in [
        {"type": s["type"], "callback_id": s["callback_id"]} for s in shortcuts]


# -- submission: refusals on their field --------------------------------------------------------


def test_a_friday_standard_deployment_shows_the_window_refusal_on_the_date_field(
        bot: BotHarness, clock: FixedClock) -> None:
    clock.set(FRIDAY)
    answer = submit(bot, open_dialog(bot))
    assert answer["response_action"] == "errors", answer
    assert list(answer["errors"]) == ["when"]
    error = answer["errors"]["when"]
    assert "Friday is an avoided day" in error and "(rule: avoided-day)" in error, error
    assert "The next preferred slot opens Tue 2026-12-08 10:00 UTC" in error, error
    assert "`" not in error and ":no_entry:" not in error  # plain text, as Slack shows it
    assert bot.services.deployments.list_recent() == []
    assert cards_queued(bot) == []


def test_a_scheduled_moment_in_the_window_is_taken_on_friday(
        bot: BotHarness, clock: FixedClock) -> None:
    """The refusal said when: picking that moment on the date field schedules it."""
    clock.set(FRIDAY)
    answer = submit(bot, open_dialog(bot), when=int(NEXT_TUESDAY_10.timestamp()))
    assert "Deployment #1 scheduled: v1.2.3 to production at Tue 2026-12-08 10:00 UTC" in \
        shown(answer), answer
    assert "/qlp deploy v1.2.3 to production at 2026-12-08 10:00 UTC" in shown(answer)
    deployment = bot.services.deployments.get(1)
    assert deployment is not None and deployment.scheduled_at is not None
    assert deployment.scheduled_at.replace(tzinfo=UTC) == NEXT_TUESDAY_10


def test_a_version_that_is_not_ascii_semver_is_refused_on_the_version_field(
        bot: BotHarness) -> None:
    answer = submit(bot, open_dialog(bot), version="v\uff11.2.3")  # a fullwidth digit one
    assert answer["response_action"] == "errors"
    error = answer["errors"]["version"]
    assert "not a version" in error and "U+FF11 FULLWIDTH DIGIT ONE" in error, error
    answer = submit(bot, open_dialog(bot), version="1.2")
    assert "is not a version" in answer["errors"]["version"]
    assert bot.services.deployments.list_recent() == []


def test_a_hotfix_without_a_reason_is_refused_on_the_reason_field(bot: BotHarness) -> None:
    answer = submit(bot, open_dialog(bot), kind="hotfix")
    assert answer == {"response_action": "errors",
                      "errors": {"reason": "A hotfix needs a reason: say why it cannot wait."}}
    answer = submit(bot, open_dialog(bot), kind="emergency", reason="API down")
    assert list(answer["errors"]) == ["category"]
    answer = submit(bot, open_dialog(bot), kind="hotfix", reason="500s",
                    when=int(NEXT_TUESDAY_10.timestamp()))
    assert "Only a standard deployment can be scheduled" in answer["errors"]["when"]
    assert bot.services.deployments.list_recent() == []


def test_a_lock_is_refused_on_the_environment_field(bot: BotHarness) -> None:
    assert "locked" in bot.command('lock production --reason "incident 42"', user="U0OPS").text
    answer = submit(bot, open_dialog(bot))
    assert list(answer["errors"]) == ["environment"], answer
    assert "incident 42" in answer["errors"]["environment"]
    assert bot.services.deployments.list_recent() == []


# -- submission: what it creates ----------------------------------------------------------------


def test_a_valid_submission_creates_one_card(bot: BotHarness) -> None:
    answer = submit(bot, open_dialog(bot))
    text = shown(answer)
    assert "Deployment #1 requested: v1.2.3 to production." in text, text
    assert "As `/qlp deploy v1.2.3 to production`" in text
    deployment = bot.services.deployments.get(1)
    assert deployment is not None and deployment.state is DeploymentState.PENDING_APPROVAL
    assert (deployment.kind, deployment.version, deployment.requester) == \
        (ProcedureKind.STANDARD, "v1.2.3", "U0DEV")
    assert cards_queued(bot) == [1]
    # The card reaches Slack, once.
    bot.services.start_worker()
    bot.wait_for(lambda: [m for m in bot.slack.messages(CHANNEL) if "#1:" in m.text],
                 what="the card in the channel")
    assert len([m for m in bot.slack.messages(CHANNEL) if "#1:" in m.text]) == 1
    # Audited as the command it stands for, then as the request the command writes.
    bot.services.audit.flush()
    events = {e.action: e for e in bot.services.audit.recent(50)}
    assert events["command.deploy"].detail == {
        "text": "deploy v1.2.3 to production", "channel": CHANNEL, "via": "dialog",
        "origin": "shortcut"}
    assert events["deployment.requested"].deployment_id == 1


def test_a_double_submission_creates_one(bot: BotHarness) -> None:
    view = open_dialog(bot)
    first = shown(submit(bot, view))
    again = shown(submit(bot, view))
    assert "Deployment #1 requested" in first
    assert again.startswith("This dialog was already submitted. Deployment #1 requested"), again
    # Two at once (a double click racing itself): still one request.
    other = open_dialog(bot, user="U0LEAD2")
    answers: list[dict[str, Any]] = []
    threads = [threading.Thread(target=lambda: answers.append(
        submit(bot, other, user="U0LEAD2", kind="emergency", category="outage",
               reason="API down"))) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(answers) == 2
    assert [d.id for d in bot.services.deployments.list_recent()] == [2, 1]
    assert sorted(cards_queued(bot)) == [1, 2]


def test_a_dry_run_creates_nothing(bot: BotHarness) -> None:
    text = shown(submit(bot, open_dialog(bot), flags=("dry-run",)))
    assert text.startswith("*Dry run: v1.2.3 to production* (nothing was changed)"), text
    assert bot.services.deployments.list_recent() == []


# -- the version menu ---------------------------------------------------------------------------


def menu(bot: BotHarness, view: OpenedView, typed: str,
         environment: str = "production") -> dict[str, Any]:
    body = block_suggestion_body(view=view.view, view_id=view.id, action_id=VERSION_ACTION,
                                 block_id="version", value=typed, user_id="U0DEV",
                                 values=state(environment=environment, version=None))
    response = bot.post(body)
    assert response.status_code == 200, response.text
    options: dict[str, Any] = response.json()
    return options


def test_the_local_version_menu_offers_known_versions_highest_first(bot: BotHarness) -> None:
    view = open_dialog(bot)
    assert menu(bot, view, "") == {"options": []}  # a new user's bot knows no version yet
    for version in ("v1.2.3", "v1.10.0", "v1.10.0-rc.2"):
        # Requests that were cancelled still name versions that exist.
        shown(submit(bot, open_dialog(bot), version=version))
        deployment = bot.services.deployments.list_recent(limit=1)[0]
        assert deployment.id is not None
        bot.services.deployments.transition(deployment.id, [DeploymentState.PENDING_APPROVAL],
                                            DeploymentState.CANCELLED)
    values = [o["value"] for o in menu(bot, view, "")["options"]]
    assert values == ["v1.10.0", "v1.10.0-rc.2", "v1.2.3"]
    typed = menu(bot, view, "v2.0.0")["options"]
    assert [(o["text"]["text"], o["value"]) for o in typed] == [("v2.0.0 (typed)", "v2.0.0")]
    assert [o["value"] for o in menu(bot, view, "1.10")["options"]] == \
        ["v1.10.0", "v1.10.0-rc.2"]  # "1.10" is no version, but it filters
    assert [o["text"]["text"] for o in menu(bot, view, "v1.2.3")["options"]] == ["v1.2.3"]
    assert [(o["text"]["text"], o["value"]) for o in menu(bot, view, "banana")["options"]] == \
        [("banana (not a version)", "banana")]  # refused on submission, with the reason
    assert menu(bot, view, "", environment="staging") == {"options": []}


# -- pure parts ---------------------------------------------------------------------------------


@pytest.mark.parametrize("fields", [
    {"kind": "standard", "flags": ("maintenance",)},
    {"kind": "standard", "when": int(NEXT_TUESDAY_10.timestamp()), "flags": ("dry-run",)},
    {"kind": "hotfix", "reason": 'checkout "500s" since 10:02; it\'s bad'},
    {"kind": "emergency", "category": "critical-bug", "reason": "data loss",
     "environment": "staging"},
])
def test_the_equivalent_command_parses_back_to_the_same_command(fields: dict[str, Any]) -> None:
    from bot.deploy_dialog import _command
    from tests.fakes.policies import make_policy

    policy = make_policy()
    command = _command(policy, read_state({"state": {"values": state(**fields)}}))
    assert parse(equivalent_text(command, policy)) == command


def test_semver_precedence() -> None:
    ordered = ["v0.9.0", "v1.0.0-alpha", "v1.0.0-alpha.1", "v1.0.0-beta.2", "v1.0.0-beta.11",
               "v1.0.0-rc.1", "v1.0.0", "v1.2.0", "v1.10.0"]
    assert sorted(reversed(ordered), key=semver_key) == ordered


def test_state_reading_survives_odd_payloads() -> None:
    fields = read_state({"state": {"values": {"when": {"when": {"selected_date_time": True}}}},
                         "private_metadata": "not json"})
    assert (fields.environment, fields.when, fields.origin) == (None, None, "shortcut")
    assert json.loads(json.dumps(state()))  # the helper builds plain JSON
