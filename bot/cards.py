"""The deployment card: one Block Kit message per deployment, re-rendered on every change.

``render_card`` is a pure function of a :class:`~procedures.reporting.RunSnapshot` (plus the
policy's time zone and the current time): the same snapshot always gives the same card, so
a restarted bot re-renders exactly what it would have shown. The buttons come from the
deployment's state alone, so a button that no longer applies disappears with the next update
(and every click is still checked against the database by its handler).

slack_sdk does not validate raw dict blocks, and Slack rejects a whole message for one
over-long text, so every text here is cut to its Block Kit limit (ending in ``…``) and the
number of blocks is bounded by construction; :func:`card_problems` re-checks a rendered card.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from bot import actions
from bot.formatting import escape, local_time
from procedures.checks.findings import CheckVerdict, Evidence, Finding
from procedures.durations import format_duration
from procedures.model import DeploymentState, ProcedureKind, StepState
from procedures.reporting import RunSnapshot, StepSnapshot

Block = dict[str, Any]

# Block Kit limits (https://docs.slack.dev/reference/block-kit): see research/slack.md §5.
MAX_BLOCKS = 50
HEADER_LIMIT = 150
SECTION_TEXT_LIMIT = 3000
FIELD_LIMIT = 2000
BUTTON_TEXT_LIMIT = 75
CONFIRM_TITLE_LIMIT = 100
CONFIRM_TEXT_LIMIT = 300
CONFIRM_BUTTON_LIMIT = 30
FALLBACK_LIMIT = 3000  # chat.update rejects text over 4,000 (msg_too_long)

# Slack also limits the serialized size of all blocks together (msg_blocks_too_long fired at
# about 13.2k characters in bolt-js #2509), below what the per-block limits allow. The step
# list is the only part that grows with the run, so it gets a budget of its own.
PROGRESS_BUDGET = 4000
STEP_ERROR_LIMIT = 160
ERROR_LIMIT = 1500
NOTES_LIMIT = 1000
REASON_LIMIT = 500
EVIDENCE_LINE_LIMIT = 320  # one finding: verdict, title, time and its evidence line
MAX_FINDINGS = 8  # final validation has six checks; the rest would be noise
ELLIPSIS = "…"

STATE_EMOJI: dict[DeploymentState, str] = {
    DeploymentState.PENDING_APPROVAL: ":hourglass_flowing_sand:",
    DeploymentState.SCHEDULED: ":calendar:",
    DeploymentState.QUEUED: ":inbox_tray:",
    DeploymentState.RUNNING: ":arrows_counterclockwise:",
    DeploymentState.ROLLING_BACK: ":rewind:",
    DeploymentState.SUCCEEDED: ":white_check_mark:",
    DeploymentState.ROLLED_BACK: ":leftwards_arrow_with_hook:",
    DeploymentState.FAILED: ":x:",
    DeploymentState.CANCELLED: ":no_entry_sign:",
    DeploymentState.REJECTED: ":no_entry:",
    DeploymentState.EXPIRED: ":hourglass:",
    DeploymentState.NEEDS_ATTENTION: ":rotating_light:",
}

STATE_LABEL: dict[DeploymentState, str] = {
    DeploymentState.PENDING_APPROVAL: "Waiting for approval",
    DeploymentState.SCHEDULED: "Scheduled",
    DeploymentState.QUEUED: "Queued",
    DeploymentState.RUNNING: "Running",
    DeploymentState.ROLLING_BACK: "Rolling back",
    DeploymentState.SUCCEEDED: "Succeeded",
    DeploymentState.ROLLED_BACK: "Rolled back",
    DeploymentState.FAILED: "Failed",
    DeploymentState.CANCELLED: "Cancelled",
    DeploymentState.REJECTED: "Rejected",
    DeploymentState.EXPIRED: "Expired",
    DeploymentState.NEEDS_ATTENTION: "Needs attention",
}

KIND_LABEL: dict[ProcedureKind, str] = {
    ProcedureKind.STANDARD: "Standard deployment",
    ProcedureKind.HOTFIX: "Hotfix",
    ProcedureKind.EMERGENCY: "Emergency deployment",
    ProcedureKind.ROLLBACK: "Rollback",
    ProcedureKind.MIGRATION: "Database migration",
}

# Only ok is green: inconclusive is never shown as passing.
VERDICT_EMOJI: dict[CheckVerdict, str] = {
    CheckVerdict.OK: ":large_green_circle:",
    CheckVerdict.FAILED: ":red_circle:",
    CheckVerdict.INCONCLUSIVE: ":grey_question:",
    CheckVerdict.SKIPPED: ":white_circle:",
    CheckVerdict.WARNING: ":large_orange_circle:",  # amber: a warning, never blocking
}

STEP_ICON: dict[StepState, str] = {
    StepState.SUCCEEDED: "✓",
    StepState.RUNNING: "▶",
    StepState.FAILED: "✗",
    StepState.UNDOING: "↩",
    StepState.UNDONE: "↩",
    StepState.UNDO_FAILED: "✗",
    StepState.PENDING: "○",
    StepState.SKIPPED: "\u2013",  # en dash
}

# Which buttons each state offers; every other state (terminal, or in between) has none.
_BUTTONS_BY_STATE: dict[DeploymentState, tuple[str, ...]] = {
    DeploymentState.PENDING_APPROVAL: (actions.APPROVE, actions.REJECT),
    DeploymentState.SCHEDULED: (actions.CANCEL,),
    DeploymentState.QUEUED: (actions.CANCEL,),
    DeploymentState.RUNNING: (actions.CANCEL,),
    DeploymentState.SUCCEEDED: (actions.ROLLBACK,),
}


def truncate(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` characters, ending in ``…`` when it was cut."""
    if len(text) <= limit:
        return text
    return text[: max(limit - len(ELLIPSIS), 0)] + ELLIPSIS


def card_title(run: RunSnapshot) -> str:
    """``Deployment #12: v1.2.3 to production`` and its kind-specific variants (plain text)."""
    number = f"#{run.deployment_id}"
    version = run.version or "?"
    env = run.environment
    if run.kind is ProcedureKind.HOTFIX:
        return f"Hotfix {number}: {version} to {env}"
    if run.kind is ProcedureKind.EMERGENCY:
        category = run.options.get("category")
        what = f"Emergency ({category})" if category else "Emergency"
        return f"{what} deployment {number}: {version} to {env}"
    if run.kind is ProcedureKind.ROLLBACK:
        target = run.version or "the previous version"
        return f"Rollback {number}: {env} back to {target}"
    if run.kind is ProcedureKind.MIGRATION:
        name = run.options.get("migration") or run.version or "?"
        return f"Migration {number}: {name} on {env}"
    return f"Deployment {number}: {version} to {env}"


def buttons_for(run: RunSnapshot) -> tuple[str, ...]:
    """The action ids of the buttons the card shows in ``run``'s state (possibly none).

    Roll back is offered on a succeeded run unless ``options["rollback_available"]`` is False
    (the snapshot cannot know whether it is still the live version; the caller can).
    """
    wanted = _BUTTONS_BY_STATE.get(run.state, ())
    if actions.ROLLBACK in wanted and not run.options.get("rollback_available", True):
        return ()
    return wanted


def render_card(run: RunSnapshot, *, zone: ZoneInfo, now: datetime) -> tuple[str, list[Block]]:
    """The card of ``run``: ``(fallback text, blocks)`` for chat.postMessage / chat.update."""
    title = card_title(run)
    state = f"{STATE_EMOJI[run.state]} {STATE_LABEL[run.state]}"
    blocks: list[Block] = [
        {"type": "header", "block_id": "card-header",
         "text": _plain(truncate(title, HEADER_LIMIT))},
        {"type": "section", "block_id": "card-fields", "fields": _fields(run, state, zone, now)},
    ]
    if run.reason:
        blocks.append(_section("card-reason", "*Reason:* " + escape(
            truncate(run.reason, REASON_LIMIT))))
    if run.evidence is not None:
        blocks += _evidence_blocks(run.evidence, zone)
    for index, text in enumerate(_progress_sections(run.steps, now)):
        blocks.append(_section(f"card-steps-{index}", text))
    if run.notes:
        notes = "\n".join(f"• {escape(note)}" for note in run.notes)
        blocks.append({"type": "context", "block_id": "card-notes",
                       "elements": [_mrkdwn(truncate(notes, NOTES_LIMIT))]})
    if run.error:
        blocks.append(_section("card-error", "*Error*\n" + _code(run.error, ERROR_LIMIT)))
    buttons = [_button(action_id, run) for action_id in buttons_for(run)]
    if buttons:
        blocks.append({"type": "actions", "block_id": "card-actions", "elements": buttons})
    blocks.append({"type": "context", "block_id": "card-footer", "elements": [
        _mrkdwn(f"#{run.deployment_id} · updated {local_time(now, zone)}")]})
    fallback = truncate(f"{title}: {STATE_LABEL[run.state]}", FALLBACK_LIMIT)
    return fallback, blocks[:MAX_BLOCKS]


# -- fields -------------------------------------------------------------------------------------


def _fields(run: RunSnapshot, state: str, zone: ZoneInfo, now: datetime) -> list[Block]:
    """At most ten ``*Label*\\nvalue`` fields (Block Kit allows ten per section)."""
    pairs: list[tuple[str, str]] = [
        ("Kind", KIND_LABEL[run.kind]),
        ("Version", f"`{escape(run.version)}`" if run.version else "\u2013"),
        ("Environment", escape(run.environment)),
        ("Requested by", _mention(run.requester)),
        ("Approvals", _approvals(run)),
        ("State", state),
        ("Created", local_time(run.created_at, zone)),
    ]
    scheduled = _scheduled_for(run)
    if scheduled is not None and run.started_at is None:
        pairs.append(("Scheduled for", f"{local_time(scheduled, zone)}"))
    if run.started_at is not None:
        pairs.append(("Started", local_time(run.started_at, zone)))
    if run.finished_at is not None:
        pairs.append(("Finished", local_time(run.finished_at, zone)))
    if run.started_at is not None:
        end = run.finished_at or now
        label = "Duration" if run.finished_at is not None else "Running for"
        pairs.append((label, format_duration(max(end - run.started_at, timedelta(0)))))
    return [_mrkdwn(truncate(f"*{label}*\n{value}", FIELD_LIMIT)) for label, value in pairs[:10]]


def _scheduled_for(run: RunSnapshot) -> datetime | None:
    """A scheduled deployment's moment (``options["schedule"]["at"]``), if it has one."""
    schedule = run.options.get("schedule")
    raw = schedule.get("at") if isinstance(schedule, Mapping) else None
    try:
        return datetime.fromisoformat(raw) if isinstance(raw, str) else None
    except ValueError:
        return None


def _approvals(run: RunSnapshot) -> str:
    given = len(run.approvers)
    if run.approvals_required <= 0 and not given:
        return "not needed"
    who = ", ".join(_mention(user) for user in run.approvers)
    count = f"{given} of {run.approvals_required}"
    return f"{count}: {who}" if who else count


def _mention(user: str) -> str:
    # Slack user ids are [A-Z0-9]; anything else is shown as text, never as markup.
    if user.isalnum() and user.upper() == user:
        return f"<@{user}>"
    return escape(user)


# -- evidence (the preflight's findings) ---------------------------------------------------------


def _evidence_blocks(evidence: Evidence, zone: ZoneInfo) -> list[Block]:
    """The "Evidence" section: each final-validation check with its verdict and evidence line,
    or "checking…" before the checks ran for the present plan; and, when one failed or was
    inconclusive, a note that the run checks again."""
    if evidence.pending:
        why = " (the plan changed since the last check)" if evidence.stale else ""
        return [_section("card-evidence",
                         f"*Evidence*\n:hourglass_flowing_sand: checking…{why}")]
    assert evidence.checked_at is not None
    heading = f"*Evidence* (checked {local_time(evidence.checked_at, zone)})"
    lines = [heading, *(_finding_line(finding, zone)
                        for finding in evidence.findings[:MAX_FINDINGS])]
    if not evidence.findings:
        lines.append("No checks are configured for this environment.")
    blocks = [_section("card-evidence", "\n".join(lines))]
    problems = evidence.problems
    if problems:
        failed = sum(1 for f in problems if f.verdict is CheckVerdict.FAILED)
        unknown = len(problems) - failed
        said = [f"{failed} failed" if failed else "",
                f"{unknown} inconclusive" if unknown else ""]
        blocks.append({"type": "context", "block_id": "card-evidence-note", "elements": [
            _mrkdwn(f":warning: {', '.join(x for x in said if x)}: the run's final "
                    "validation checks again at start.")]})
    return blocks


def _finding_line(finding: Finding, zone: ZoneInfo) -> str:
    """``:red_circle: *CI status* (failed, 11:00:02): CI acme/shop deploy.yml on main: ...``."""
    taken = finding.at.astimezone(zone)
    verdict = finding.verdict
    head = (f"{VERDICT_EMOJI[verdict]} *{escape(truncate(finding.title, 60))}* "
            f"({verdict.value}, {taken:%H:%M:%S}): ")
    # Cut before escaping, so an entity (&amp;) is never cut in half.
    return head + escape(truncate(finding.evidence, max(EVIDENCE_LINE_LIMIT - len(head), 40)))


# -- steps --------------------------------------------------------------------------------------


def _step_line(step: StepSnapshot, now: datetime) -> str:
    icon = STEP_ICON.get(step.state, "•")
    title = escape(truncate(step.title or step.name, 100))
    extra: list[str] = []
    if step.duration is not None:
        extra.append(format_duration(step.duration))
    elif step.state is StepState.RUNNING and step.started_at is not None:
        extra.append(f"{format_duration(max(now - step.started_at, timedelta(0)))} so far")
    if step.attempts > 1:
        extra.append(f"attempt {step.attempts}")
    if step.state is StepState.UNDONE:
        extra.append("undone")
    elif step.state is StepState.UNDOING:
        extra.append("undoing")
    elif step.state is StepState.UNDO_FAILED:
        extra.append("undo failed")
    elif step.state is StepState.SKIPPED:
        extra.append("skipped")
    line = f"{icon} {title}"
    if extra:
        line += f" ({', '.join(extra)})"
    if step.error and step.state in (StepState.FAILED, StepState.UNDO_FAILED):
        first_line = step.error.strip().splitlines()[0] if step.error.strip() else ""
        line += f": _{escape(truncate(first_line, STEP_ERROR_LIMIT))}_"
    return line


def _progress_sections(steps: Sequence[StepSnapshot], now: datetime) -> list[str]:
    """The step list as section texts of at most 3,000 characters, within PROGRESS_BUDGET."""
    if not steps:
        return []
    lines = [_step_line(step, now) for step in steps]
    kept: list[str] = []
    used = 0
    for index, line in enumerate(lines):
        if used + len(line) + 1 > PROGRESS_BUDGET:
            kept.append(f"… and {len(lines) - index} more steps")
            break
        kept.append(line)
        used += len(line) + 1
    return list(_chunks(kept, SECTION_TEXT_LIMIT))


def _chunks(lines: Iterable[str], limit: int) -> Iterable[str]:
    current: list[str] = []
    size = 0
    for line in lines:
        line = truncate(line, limit)
        if current and size + 1 + len(line) > limit:
            yield "\n".join(current)
            current, size = [], 0
        size += len(line) + (1 if current else 0)
        current.append(line)
    if current:
        yield "\n".join(current)


# -- buttons ------------------------------------------------------------------------------------


def _button(action_id: str, run: RunSnapshot) -> Block:
    number = f"#{run.deployment_id}"
    version = run.version or "this version"
    env = run.environment
    if action_id == actions.APPROVE:
        label, style = "Approve", "primary"
        title = f"Approve {number}?"
        text = (f"Approve {card_title(run)}. It runs as soon as the required approvals are in "
                "and the window allows.")
        confirm, deny = "Approve", "Not yet"
    elif action_id == actions.REJECT:
        label, style = "Reject", "danger"
        title = f"Reject {number}?"
        text = f"Reject {card_title(run)}. It will not run; the requester can ask again."
        confirm, deny = "Reject", "Back"
    elif action_id == actions.CANCEL:
        label, style = "Cancel", "danger"
        title = f"Cancel {number}?"
        text = (f"Cancel {card_title(run)}. Steps already done are undone in reverse order "
                "before it stops.")
        confirm, deny = "Cancel it", "Keep it going"
    elif action_id == actions.ROLLBACK:
        label, style = "Roll back", "danger"
        title = f"Roll back {number}?"
        text = (f"Roll {env} back from {version} to the version before it. This starts a "
                "rollback run.")
        confirm, deny = "Roll back", f"Keep {truncate(version, 20)}"
    else:  # pragma: no cover - only the ids above are ever asked for
        raise ValueError(f"no button for {action_id!r}")
    return {
        "type": "button",
        "action_id": action_id,
        "text": _plain(truncate(label, BUTTON_TEXT_LIMIT)),
        "style": style,
        # The deployment id only: the handler reads everything else from the database.
        "value": str(run.deployment_id),
        "confirm": {
            "title": _plain(truncate(title, CONFIRM_TITLE_LIMIT)),
            "text": _plain(truncate(text, CONFIRM_TEXT_LIMIT)),
            "confirm": _plain(truncate(confirm, CONFIRM_BUTTON_LIMIT)),
            "deny": _plain(truncate(deny, CONFIRM_BUTTON_LIMIT)),
            "style": style,
        },
    }


# -- small builders -----------------------------------------------------------------------------


def _plain(text: str) -> Block:
    return {"type": "plain_text", "text": text or " ", "emoji": True}


def _mrkdwn(text: str) -> Block:
    return {"type": "mrkdwn", "text": text or " "}


def _section(block_id: str, text: str) -> Block:
    return {"type": "section", "block_id": block_id,
            "text": _mrkdwn(truncate(text, SECTION_TEXT_LIMIT))}


def _code(text: str, limit: int) -> str:
    # Triple backticks inside would end the code block early.
    body = escape(truncate(text.strip(), limit)).replace("```", "'''")
    return f"```{body}```"


# -- checking -----------------------------------------------------------------------------------


def card_problems(blocks: Sequence[Block]) -> list[str]:
    """Block Kit limit violations in a rendered card (empty when it is fine).

    A second line of defence for tests and for cards built elsewhere: blocks count, unique
    ``block_id``, header/section/field/button/confirm text lengths, and the total size.
    """
    problems: list[str] = []
    if len(blocks) > MAX_BLOCKS:
        problems.append(f"{len(blocks)} blocks (at most {MAX_BLOCKS})")
    seen: set[str] = set()
    for index, block in enumerate(blocks):
        block_id = block.get("block_id")
        if block_id in seen:
            problems.append(f"block {index}: duplicate block_id {block_id!r}")
        if isinstance(block_id, str):
            seen.add(block_id)
        kind = block.get("type")
        if kind == "header":
            problems += _too_long(block["text"]["text"], HEADER_LIMIT, f"block {index} header")
        if kind == "section":
            if "text" in block:
                problems += _too_long(block["text"]["text"], SECTION_TEXT_LIMIT,
                                      f"block {index} text")
            fields = block.get("fields", [])
            if len(fields) > 10:
                problems.append(f"block {index}: {len(fields)} fields (at most 10)")
            for field in fields:
                problems += _too_long(field["text"], FIELD_LIMIT, f"block {index} field")
        for element in block.get("elements", []) if kind == "actions" else []:
            where = f"block {index} button {element.get('action_id')}"
            problems += _too_long(element["text"]["text"], BUTTON_TEXT_LIMIT, where)
            confirm = element.get("confirm")
            if not confirm:
                problems.append(f"{where}: no confirm dialog")
                continue
            for key, limit in (("title", CONFIRM_TITLE_LIMIT), ("text", CONFIRM_TEXT_LIMIT),
                               ("confirm", CONFIRM_BUTTON_LIMIT), ("deny", CONFIRM_BUTTON_LIMIT)):
                problems += _too_long(confirm[key]["text"], limit, f"{where} confirm {key}")
    size = len(json.dumps(list(blocks), ensure_ascii=False))
    if size > 12_000:
        problems.append(f"blocks serialize to {size} characters (keep under 12,000)")
    return problems


def _too_long(text: str, limit: int, where: str) -> list[str]:
    return [f"{where}: {len(text)} characters (at most {limit})"] if len(text) > limit else []
