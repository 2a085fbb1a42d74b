"""``/qlp checklist <id>`` and its checkboxes: the seed's checklists, ticked by run and people.

What the procedure did is ticked by it (``procedures.checklists``: an item's steps SUCCEEDED);
the rest is ticked in Slack with a ``checkboxes`` element per group (action
``qlp_checklist_tick``, block id ``qlp_checklist:<id>:<group index>``). A press carries the
element's whole selection, which is diffed against the stored ticks. Ticks live in the
deployment's ``options["checklist"]`` and are written with a revision guard, so two people
ticking at once both count. Only the requester, an approver of the deployment's kind or an
override approver may tick; everything is audited.

Nothing here calls Slack before the ack: the command answers with a summary and the boxes are
posted after it (``bot.clicks``' threads); a press is stored and decided after its ack like
every click, so the membership read of ``_may_tick`` happens there.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Collection, Mapping
from typing import Any

from slack_sdk.webhook import WebhookClient

from bot import actions
from bot.clicks import click_task
from bot.context import HandlerContext
from bot.formatting import escape, local_time
from bot.grammar import Command
from bot.membership import describe_rule
from procedures.checklists import (
    BOT,
    ChecklistItem,
    ItemState,
    StepFact,
    Tick,
    apply_selection,
    groups,
    items_for,
    manual_ticks,
    states,
    store_ticks,
)
from procedures.decision import OVERRIDE_KIND
from procedures.errors import ConflictError, PolicyRefusal, UserError
from procedures.store import DeploymentRecord

log = logging.getLogger(__name__)

BLOCK_PREFIX = "qlp_checklist"
WRITE_ATTEMPTS = 5

__all__ = ["BLOCK_PREFIX", "checklist_blocks", "checklist_text", "tick_checklist"]


# -- reading ------------------------------------------------------------------------------------


def _load(ctx: HandlerContext, deployment_id: int) -> DeploymentRecord:
    deployment = ctx.services.deployments.get(deployment_id)
    if deployment is None:
        raise UserError(f"Deployment #{deployment_id} does not exist.",
                        hint="`/qlp history` lists recent deployments with their numbers.")
    return deployment


def _states(ctx: HandlerContext, deployment: DeploymentRecord) -> list[ItemState]:
    assert deployment.id is not None
    steps = [StepFact(step.name, step.state, step.finished_at, step.result)
             for step in ctx.services.deployments.steps(deployment.id)]
    return states(items_for(deployment.kind), deployment.options.get("checklist"), steps)


def _when(ctx: HandlerContext, tick: Tick) -> str:
    return f" at {local_time(tick.at, ctx.services.policy.zone)}" if tick.at else ""


def _line(ctx: HandlerContext, state: ItemState) -> str:
    item, tick = state.item, state.tick
    text = escape(item.text)
    if tick is None:
        if item.manual:
            return f"☐ {text}"
        if state.reason:
            return f"☐ {text} _({escape(state.reason)})_"
        steps = " or ".join(f"`{step}`" for step in item.auto_steps)
        return f"☐ {text} _(ticked by the bot when {steps} succeeds)_"
    if tick.done_by == BOT:
        return f"☑ {text}: by the bot (`{tick.step}`{_when(ctx, tick)})"
    return f"☑ {text}: <@{tick.done_by}>{_when(ctx, tick)}"


def _title(deployment: DeploymentRecord, all_states: list[ItemState]) -> str:
    done = sum(1 for state in all_states if state.tick is not None)
    what = f"{deployment.kind} {escape(deployment.version or '')}".strip()
    which = "Emergency" if deployment.kind == "emergency" else "Standard"
    return (f"*{which} checklist for #{deployment.id}* ({what} to {deployment.environment}, "
            f"{deployment.state.value.replace('_', ' ')}): {done} of {len(all_states)} done")


def _render(ctx: HandlerContext, deployment: DeploymentRecord,
            all_states: list[ItemState]) -> str:
    lines = [_title(deployment, all_states)]
    by_key = {state.item.key: state for state in all_states}
    for group, items in groups(state.item for state in all_states):
        lines.append(f"*{escape(group)}*")
        lines.extend(_line(ctx, by_key[item.key]) for item in items)
    lines.append(f"Tick the rest with the boxes under `/qlp checklist {deployment.id}`.")
    return "\n".join(lines)


def checklist_blocks(ctx: HandlerContext, deployment: DeploymentRecord,
                     all_states: list[ItemState]) -> list[dict[str, Any]]:
    """The checklist as Block Kit: per group, the bot's items as text and a checkboxes element
    for the people's items (ticked ones as ``initial_options``), and who ticked what."""
    blocks: list[dict[str, Any]] = [
        {"type": "section", "text": {"type": "mrkdwn", "text": _title(deployment, all_states)}}]
    by_key = {state.item.key: state for state in all_states}
    for index, (group, items) in enumerate(groups(state.item for state in all_states)):
        auto = [_line(ctx, by_key[item.key]) for item in items if not item.manual]
        blocks.append({"type": "section", "text": {
            "type": "mrkdwn", "text": "\n".join([f"*{escape(group)}*", *auto])}})
        manual = [by_key[item.key] for item in items if item.manual]
        if not manual:
            continue
        options = {state.item.key: {"text": {"type": "plain_text", "text": state.item.text[:75]},
                                    "value": state.item.key} for state in manual}
        element: dict[str, Any] = {"type": "checkboxes", "action_id": actions.CHECKLIST_TICK,
                                   "options": list(options.values())}
        ticked = [options[state.item.key] for state in manual if state.tick is not None]
        if ticked:
            element["initial_options"] = ticked
        blocks.append({"type": "actions", "block_id": f"{BLOCK_PREFIX}:{deployment.id}:{index}",
                       "elements": [element]})
        who = [_line(ctx, state) for state in manual if state.tick is not None]
        if who:
            blocks.append({"type": "context", "elements": [
                {"type": "mrkdwn", "text": "\n".join(who)}]})
    return blocks


def checklist_text(ctx: HandlerContext, command: Command) -> str:
    """``/qlp checklist <id>``: the checklist privately, with boxes to tick where Slack can."""
    if command.number is None:
        raise UserError("Which deployment? Give its number.", hint="`/qlp checklist 12`")
    deployment = _load(ctx, command.number)
    all_states = _states(ctx, deployment)
    text = _render(ctx, deployment, all_states)
    if not ctx.request.response_url:
        return text
    blocks = checklist_blocks(ctx, deployment, all_states)
    # The boxes go out after the ack (bot.clicks' threads): no network call before it.
    click_task(ctx.services).defer(lambda: _send_blocks(ctx, text, blocks))
    done = sum(1 for state in all_states if state.tick is not None)
    return (f"Checklist for #{deployment.id}: {done} of {len(all_states)} done; the list "
            "follows, with boxes to tick.")


def _send_blocks(ctx: HandlerContext, text: str, blocks: list[dict[str, Any]]) -> None:
    """Post the interactive checklist to the command's response_url; through the outbox (an
    ephemeral with the same blocks) if that fails. Runs after the ack."""
    url = ctx.request.response_url
    assert url is not None
    try:
        response = WebhookClient(url, timeout=5).send(
            text=text, blocks=blocks, response_type="ephemeral", replace_original=False)
        if response.status_code == 200:
            return
        log.warning("response_url answered %s to the checklist; sending it through the outbox",
                    response.status_code)
    except Exception:
        log.warning("could not post the checklist to response_url; sending it through the "
                    "outbox", exc_info=True)
    services = ctx.services
    request = ctx.request
    services.outbox.enqueue(request.channel_id, "ephemeral",
                            {"user": request.user_id, "text": text, "blocks": blocks},
                            ordering_key=f"answer:{request.channel_id}:{request.user_id}")
    services.wake_worker()


# -- ticking ------------------------------------------------------------------------------------


def _deployment_of(ctx: HandlerContext, action: Mapping[str, Any]) -> tuple[int, int]:
    parts = str(action.get("block_id") or "").split(":")
    # ASCII digits of a database id's length: isdigit() takes '١٢', int() refuses huge ones.
    if len(parts) != 3 or parts[0] != BLOCK_PREFIX \
            or not all(re.fullmatch(r"[0-9]{1,18}", part) for part in parts[1:]):
        raise UserError("These boxes do not name a deployment's checklist; they may be from an "
                        "older version of the bot.",
                        hint="Ask again with `/qlp checklist <id>`.")
    return int(parts[1]), int(parts[2])


def _may_tick(ctx: HandlerContext, deployment: DeploymentRecord, user: str) -> bool:
    groups_ = ctx.services.groups
    policy = ctx.services.policy
    env = deployment.environment
    return (user == deployment.requester
            or groups_.may_approve(user, policy.approval_rule(deployment.kind, env))
            or groups_.may_approve(user, policy.approval_rule(OVERRIDE_KIND, env)))


def _selected(action: Mapping[str, Any]) -> set[str]:
    return {str(option.get("value")) for option in action.get("selected_options") or []
            if isinstance(option, Mapping)}


def tick_checklist(ctx: HandlerContext, action: Mapping[str, Any]) -> str | None:
    """A press on a checklist's boxes: store what changed, by whom and when; answer the list."""
    services = ctx.services
    user = ctx.request.user_id
    deployment_id, group_index = _deployment_of(ctx, action)
    deployment = _load(ctx, deployment_id)
    if not _may_tick(ctx, deployment, user):
        rule = services.policy.approval_rule(deployment.kind, deployment.environment)
        overriders = services.policy.approval_rule(OVERRIDE_KIND, deployment.environment)
        message = f"You may not tick the checklist of #{deployment_id}."
        services.audit.append(user, "checklist.refused", deployment_id=deployment_id,
                              environment=deployment.environment,
                              detail={"rule": "checklist-tickers", "message": message})
        raise PolicyRefusal(message, rule="checklist-tickers",
                            hint=f"The requester (<@{deployment.requester}>), approvers "
                                 f"({describe_rule(rule)}) or override approvers "
                                 f"({describe_rule(overriders)})"
                                 " may.")
    items = items_for(deployment.kind)
    grouped = groups(items)
    if group_index >= len(grouped):
        raise UserError("These boxes are not part of this deployment's checklist any more.",
                        hint=f"Ask again with `/qlp checklist {deployment_id}`.")
    offered = {item.key for item in grouped[group_index][1] if item.manual}
    ticked, unticked = _write(ctx, deployment, items, offered, _selected(action))
    for keys, verb in ((ticked, "ticked"), (unticked, "unticked")):
        for item_key in keys:
            services.audit.append(user, f"checklist.{verb}", deployment_id=deployment_id,
                                  environment=deployment.environment,
                                  detail={"item": item_key})
    refreshed = _load(ctx, deployment_id)
    text = _render(ctx, refreshed, _states(ctx, refreshed))
    texts = {item.key: item.text for item in items}
    said = [f"ticked “{texts[k]}”" for k in ticked] + [f"unticked “{texts[k]}”" for k in unticked]
    head = f"You {', '.join(said)}." if said else "Nothing changed."
    return f"{head}\n{text}"


def _write(ctx: HandlerContext, deployment: DeploymentRecord,
           items: tuple[ChecklistItem, ...], offered: Collection[str],
           selected: Collection[str]) -> tuple[list[str], list[str]]:
    """Read-modify-write ``options["checklist"]`` under the deployment's revision."""
    services = ctx.services
    assert deployment.id is not None
    current = deployment
    for _ in range(WRITE_ATTEMPTS):
        stored = current.options.get("checklist")
        ticks, ticked, unticked = apply_selection(
            items, offered, selected, manual_ticks(stored, items),
            user=ctx.request.user_id, now=services.clock.now())
        if not ticked and not unticked:
            return [], []
        options = dict(current.options)
        options["checklist"] = store_ticks(stored, items, ticks)
        extra: dict[str, Any] = {}
        if current.state.terminal:
            extra["finished_at"] = current.finished_at  # a transition would set it to now
        if services.deployments.transition(current.id or 0, [current.state], current.state,
                                           expected_revision=current.revision,
                                           options=options, **extra):
            return ticked, unticked
        current = _load(ctx, deployment.id)
    raise ConflictError(f"The checklist of #{deployment.id} is changing too fast; nothing was "
                        "ticked.", hint=f"Try again: `/qlp checklist {deployment.id}`.")
