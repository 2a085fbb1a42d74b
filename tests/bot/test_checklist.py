"""``/qlp checklist <id>`` and its checkboxes, through signed requests to the real app."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from bot import actions
from bot.slack_requests import checkboxes_body
from procedures.clock import FixedClock
from procedures.model import DeploymentState, ProcedureKind, StepState
from procedures.playbooks.emergency import checklist_items
from tests.fakes.bot_harness import BotHarness

CHANNEL = "C0DEPLOY"
STEP_DONE = datetime(2026, 12, 1, 10, 50, tzinfo=UTC)


def _deployment(bot: BotHarness, *, kind: ProcedureKind = ProcedureKind.STANDARD,
                state: DeploymentState = DeploymentState.SUCCEEDED,
                options: dict[str, Any] | None = None) -> int:
    deployments = bot.services.deployments
    record = deployments.create(kind, "v1.2.3", "production", "U0DEV", state=state,
                                options=options or {}, channel=CHANNEL)
    assert record.id is not None
    return record.id


def _steps(bot: BotHarness, deployment_id: int) -> None:
    upsert = bot.services.deployments.upsert_step
    upsert(deployment_id, "snapshot", 1, StepState.SUCCEEDED, finished_at=STEP_DONE)
    upsert(deployment_id, "wait_healthy", 4, StepState.SUCCEEDED,
           finished_at=STEP_DONE + timedelta(minutes=2))
    upsert(deployment_id, "smoke_tests", 5, StepState.FAILED, finished_at=STEP_DONE)


def _checklist_message(bot: BotHarness, deployment_id: int, user: str = "U0DEV") -> Any:
    before = len([m for m in bot.slack.ephemerals(user) if m.blocks])
    response = bot.command(f"checklist {deployment_id}", user=user)
    assert response.status_code == 200
    assert f"Checklist for #{deployment_id}" in response.text
    # The boxes are posted after the ack (no Slack call before it).
    return bot.slack.wait_for(
        lambda: [m for m in bot.slack.ephemerals(user) if m.blocks][before:])[-1]


def _element(blocks: list[dict[str, Any]], first_option: str) -> tuple[str, dict[str, Any]]:
    for block in blocks:
        if block["type"] != "actions":
            continue
        element = block["elements"][0]
        if element["options"][0]["value"] == first_option:
            return block["block_id"], element
    raise AssertionError(f"no checkboxes starting with {first_option}")


def _press(bot: BotHarness, block_id: str, values: list[str], *, user: str) -> str:
    name = f"tick-{user}-{len(bot.slack.ephemerals(user))}"
    url = bot.slack.response_url(name, channel=CHANNEL, user=user)
    body = checkboxes_body(action_id=actions.CHECKLIST_TICK, block_id=block_id,
                           selected=[(value, value) for value in values], user_id=user,
                           channel_id=CHANNEL, response_url=url)
    before = len(bot.slack.ephemerals(user))
    assert bot.post(body).status_code == 200
    bot.wait_for(lambda: len(bot.slack.ephemerals(user)) > before, what="the answer")
    return str(bot.slack.ephemerals(user)[-1].text)


def _actions(bot: BotHarness, prefix: str) -> list[tuple[str, str, Any]]:
    """Audit events whose action starts with ``prefix``, oldest first."""
    return [(e.actor, e.action, e.detail.get("item"))
            for e in reversed(bot.services.audit.recent(1000)) if e.action.startswith(prefix)]


def test_checklist_shows_what_the_procedure_ticked(bot: BotHarness) -> None:
    deployment_id = _deployment(bot)
    _steps(bot, deployment_id)
    message = _checklist_message(bot, deployment_id)
    text = message.text
    assert "Standard checklist for #1" in text
    assert "1 of 21 done" in text  # the health checks (a snapshot is no database backup)
    assert "☑ Pre-deployment backup created" not in text
    assert "☑ Health checks passing: by the bot (`wait_healthy` at Tue 2026-12-01 10:52" in text
    assert "☐ Smoke tests completed _(ticked by the bot when `smoke_tests` succeeds)_" in text
    assert "☐ Code reviewed and approved" in text
    block_id, element = _element(message.blocks, "code-reviewed-and-approved")
    assert block_id == f"qlp_checklist:{deployment_id}:0"
    assert element["action_id"] == actions.CHECKLIST_TICK
    # The pre-deployment boxes a person ticks: 7 ("Database migration tested" is the bot's: the
    # rehearsal of the version's migration ticks it, procedures.checklists).
    assert len(element["options"]) == 7 and "initial_options" not in element
    # The procedure's items are text, never boxes a person could tick.
    values = {o["value"] for b in message.blocks if b["type"] == "actions"
              for o in b["elements"][0]["options"]}
    assert "health-checks-passing" not in values and "smoke-tests-completed" not in values


def test_a_press_ticks_with_who_and_when_and_unticking_works(bot: BotHarness,
                                                             clock: FixedClock) -> None:
    deployment_id = _deployment(bot)
    finished = bot.services.deployments.get(deployment_id)
    assert finished is not None
    message = _checklist_message(bot, deployment_id)
    block_id, _ = _element(message.blocks, "code-reviewed-and-approved")

    said = _press(bot, block_id, ["code-reviewed-and-approved", "rollback-plan-prepared"],
                  user="U0DEV")
    assert "You ticked “Code reviewed and approved”, ticked “Rollback plan prepared”." in said
    assert "☑ Code reviewed and approved: <@U0DEV> at Tue 2026-12-01 11:00 UTC" in said
    record = bot.services.deployments.get(deployment_id)
    assert record is not None
    assert record.options["checklist"] == {
        "code-reviewed-and-approved": {"done_by": "U0DEV", "at": clock.now().isoformat()},
        "rollback-plan-prepared": {"done_by": "U0DEV", "at": clock.now().isoformat()}}
    assert record.finished_at == finished.finished_at  # the guarded write kept it
    assert record.state is DeploymentState.SUCCEEDED

    # An approver (by group) unticks one; the initial options now show what is ticked.
    clock.advance(timedelta(minutes=5))
    message = _checklist_message(bot, deployment_id, user="U0LEAD2")
    _, element = _element(message.blocks, "code-reviewed-and-approved")
    assert [o["value"] for o in element["initial_options"]] == [
        "code-reviewed-and-approved", "rollback-plan-prepared"]
    assert "2 of 21 done" in message.text
    said = _press(bot, block_id, ["rollback-plan-prepared"], user="U0LEAD2")
    assert "You unticked “Code reviewed and approved”." in said
    assert "☐ Code reviewed and approved" in said
    record = bot.services.deployments.get(deployment_id)
    assert record is not None
    assert list(record.options["checklist"]) == ["rollback-plan-prepared"]
    assert _actions(bot, "checklist.") == [
        ("U0DEV", "checklist.ticked", "code-reviewed-and-approved"),
        ("U0DEV", "checklist.ticked", "rollback-plan-prepared"),
        ("U0LEAD2", "checklist.unticked", "code-reviewed-and-approved"),
    ]

    # An override approver may tick too; the same selection again changes nothing.
    said = _press(bot, block_id, ["rollback-plan-prepared", "team-notification-sent"],
                  user="U0HEAD1")
    assert "You ticked “Team notification sent”." in said
    assert "Nothing changed." in _press(bot, block_id,
                                        ["rollback-plan-prepared", "team-notification-sent"],
                                        user="U0HEAD1")


def test_a_stranger_is_refused_and_nothing_changes(bot: BotHarness) -> None:
    deployment_id = _deployment(bot, state=DeploymentState.RUNNING)
    message = _checklist_message(bot, deployment_id)
    block_id, _ = _element(message.blocks, "code-reviewed-and-approved")
    said = _press(bot, block_id, ["code-reviewed-and-approved"], user="U0STRANGER")
    assert "You may not tick the checklist of #1." in said
    assert "rule: checklist-tickers" in said and "<@U0DEV>" in said
    record = bot.services.deployments.get(deployment_id)
    assert record is not None and "checklist" not in record.options
    assert _actions(bot, "checklist.") == [("U0STRANGER", "checklist.refused", None)]


def test_the_emergency_list_keeps_its_format(bot: BotHarness) -> None:
    deployment_id = _deployment(bot, kind=ProcedureKind.EMERGENCY,
                                options={"category": "outage", "checklist": checklist_items()})
    bot.services.deployments.upsert_step(deployment_id, "verify", 6, StepState.SUCCEEDED,
                                         finished_at=STEP_DONE)
    message = _checklist_message(bot, deployment_id)
    assert "Emergency checklist for #1" in message.text
    assert "☑ Critical functionality verified: by the bot (`verify`" in message.text
    block_id, element = _element(message.blocks, "emergency-approval-obtained")
    assert len(element["options"]) == 4
    said = _press(bot, block_id, ["business-impact-assessed"], user="U0LEAD1")
    assert "You ticked “Business impact assessed”." in said
    record = bot.services.deployments.get(deployment_id)
    assert record is not None
    stored = record.options["checklist"]
    assert isinstance(stored, list) and len(stored) == 14
    assert stored[1]["done_by"] == "U0LEAD1" and stored[1]["at"]
    assert all(entry["done_by"] is None for i, entry in enumerate(stored) if i != 1)


def test_unknown_ids_and_stale_boxes_get_clear_answers(bot: BotHarness) -> None:
    text = bot.command("checklist 99").text
    assert "Deployment #99 does not exist." in text and "/qlp history" in text
    said = _press(bot, "actions", ["x"], user="U0DEV")
    assert "do not name a deployment's checklist" in said
