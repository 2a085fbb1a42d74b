"""The App Home dashboard as a Block Kit ``home`` view: one compact section per environment.

:func:`home_view` turns :class:`EnvironmentHome` facts (read and judged by
``bot.home_publisher``) into the view ``views.publish`` takes. Per environment: the window (open,
or closed with its rule and the next preferred slot), the live version and colour and the
previous one, the lock with its holder and age, the running deployment and its current step,
the scheduled and pending deployments with their approvers, the last five deployments with
their outcome and duration, and the buttons the viewer may use (Deploy..., Roll back...,
Unlock): the publisher shows a button only when the gate would allow that person.

Block Kit's limits are held whatever the policy: a view has at most :data:`MAX_BLOCKS` blocks
(each environment takes at most :data:`BLOCKS_PER_ENVIRONMENT`; past what fits, one line names
the rest), and a text at most :data:`TEXT_LIMIT` characters (whole lines are dropped, never cut
inside an entity or a mention). Every piece of person- or service-supplied text (lock reasons,
versions, freeze reasons, notices) is escaped once, here, where it becomes mrkdwn.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from bot import actions
from bot.cards import STATE_EMOJI
from bot.formatting import escape, local_time, relative
from procedures.durations import format_duration
from procedures.store import DeploymentRecord, EnvironmentRecord
from procedures.windows import WindowVerdict

__all__ = [
    "BLOCKS_PER_ENVIRONMENT",
    "MAX_BLOCKS",
    "TEXT_LIMIT",
    "Buttons",
    "EnvironmentHome",
    "Waiting",
    "home_view",
]

MAX_BLOCKS = 100
"""Slack's limit of blocks in a Home tab view."""
TEXT_LIMIT = 3000
"""Slack's limit of a section's (and a context element's) text."""
BLOCKS_PER_ENVIRONMENT = 4  # section, context (history), actions, divider
_FIXED_BLOCKS = 4  # header, notice, footer, "N more environments"
HISTORY = 5
_PERSON_TEXT = 200
"""Characters of a person's or service's text (a lock reason) shown before it is escaped."""
CALLBACK_ID = "qlp_home"


@dataclass(frozen=True)
class Waiting:
    """A deployment waiting for approval or for its scheduled moment, with its approvals."""

    deployment: DeploymentRecord
    approved_by: tuple[str, ...] = ()
    needs: str = ""  # "1 approval from <@U1> or a member of <!subteam^S1>" (mrkdwn)


@dataclass(frozen=True)
class Buttons:
    """Which buttons the viewer gets: each is shown only when the gate would allow them."""

    deploy: bool = False
    rollback_to: str | None = None  # the version a rollback would return to
    unlock: bool = False


@dataclass(frozen=True)
class EnvironmentHome:
    """What one environment's section shows."""

    name: str
    state: EnvironmentRecord | None
    window: WindowVerdict
    running: Sequence[DeploymentRecord] = ()
    waiting: Sequence[Waiting] = ()
    recent: Sequence[DeploymentRecord] = ()  # finished deployments, newest first
    buttons: Buttons = field(default_factory=Buttons)


def home_view(environments: Sequence[EnvironmentHome], *, now: datetime, zone: ZoneInfo,
              notice: str | None = None, notice_at: datetime | None = None) -> dict[str, Any]:
    """The ``home`` view for one viewer. ``notice`` is the answer to their last click
    (mrkdwn already: the bot's own reply text)."""
    blocks: list[dict[str, Any]] = [
        {"type": "header", "block_id": "home-header",
         "text": {"type": "plain_text", "text": "QLP deployments", "emoji": True}},
    ]
    if notice:
        when = f" ({relative(notice_at, now)})" if notice_at is not None else ""
        blocks.append(_section("home-notice", [f"*Your last action*{when}:", notice]))
    room = (MAX_BLOCKS - _FIXED_BLOCKS) // BLOCKS_PER_ENVIRONMENT
    shown = list(environments)[:room]
    for env in shown:
        blocks.extend(_environment_blocks(env, now=now, zone=zone))
    hidden = len(environments) - len(shown)
    if hidden:
        names = ", ".join(escape(e.name) for e in list(environments)[len(shown):])
        blocks.append(_context("home-more", [f"{hidden} more environment"
                                             f"{'s' if hidden > 1 else ''} not shown here: "
                                             f"{names}. `/qlp status <env>` shows one."]))
    blocks.append(_context("home-footer", [f"Updated {local_time(now, zone)}. Type "
                                           "`/qlp help` for every command."]))
    return {"type": "home", "callback_id": CALLBACK_ID, "blocks": blocks}


# -- one environment ---------------------------------------------------------------------------


def _environment_blocks(env: EnvironmentHome, *, now: datetime,
                        zone: ZoneInfo) -> list[dict[str, Any]]:
    key = _block_key(env.name)
    blocks = [_section(f"env-{key}", _summary(env, now=now, zone=zone)),
              _context(f"hist-{key}", [_history(env)])]
    buttons = _buttons(env)
    if buttons:
        blocks.append({"type": "actions", "block_id": f"act-{key}", "elements": buttons})
    blocks.append({"type": "divider", "block_id": f"div-{key}"})
    return blocks


def _summary(env: EnvironmentHome, *, now: datetime, zone: ZoneInfo) -> list[str]:
    lines = [f"*{escape(env.name)}*  {_window(env.window, now=now, zone=zone)}"]
    state = env.state
    if state is None or state.live_version is None:
        lines.append("Live: nothing deployed by the bot yet")
    else:
        colour = f" on {state.live_slot}" if state.live_slot else ""
        previous = (f"; previous {escape(state.previous_version)}"
                    + (f" on {state.previous_slot}" if state.previous_slot else "")
                    if state.previous_version else "; no previous version")
        lines.append(f"Live: *{escape(state.live_version)}*{colour}{previous}")
    if state is not None and state.lock_holder:
        age = f" for {format_duration(now - state.locked_since)}" \
            if state.locked_since is not None and now > state.locked_since else ""
        held_by = (f"deployment #{state.lock_deployment_id}"
                   if state.lock_deployment_id is not None else f"<@{state.lock_holder}>")
        lines.append(f":lock: Locked by {held_by}{age}: "
                     f"{_person_text(state.lock_reason or 'no reason given')}")
    else:
        lines.append(":unlock: Not locked")
    for run in env.running:
        step = f", step `{escape(run.current_step)}`" if run.current_step else ""
        lines.append(f"{STATE_EMOJI[run.state]} Running: #{run.id} {run.kind.value} "
                     f"{escape(run.version or '')} by <@{run.requester}>, "
                     f"{run.state.value.replace('_', ' ')}{step}")
    if not env.running:
        lines.append("No deployment running")
    for waiting in env.waiting:
        lines.append(_waiting(waiting, now=now, zone=zone))
    return lines


def _window(verdict: WindowVerdict, *, now: datetime, zone: ZoneInfo) -> str:
    if verdict.open:
        closes = f", closes {local_time(verdict.closes_at, zone)}" if verdict.closes_at else ""
        return f":large_green_circle: window open{closes}"
    slot = (f"; next preferred slot {local_time(verdict.next_open, zone)} "
            f"({relative(verdict.next_open, now)})" if verdict.next_open
            else "; no preferred slot within a year")
    return (f":red_circle: window closed: {_person_text(verdict.reason)} "
            f"_({verdict.rule.value})_{slot}")


def _waiting(waiting: Waiting, *, now: datetime, zone: ZoneInfo) -> str:
    deployment = waiting.deployment
    approved = ("approved by " + ", ".join(f"<@{a}>" for a in waiting.approved_by)
                if waiting.approved_by else "")
    needs = f"waiting for {waiting.needs}" if waiting.needs else ""
    approvals = "; ".join(part for part in (approved, needs) if part) or "approved"
    what = (f"#{deployment.id} {deployment.kind.value} {escape(deployment.version or '')} by "
            f"<@{deployment.requester}>")
    if deployment.scheduled_at is not None:
        return (f":calendar: Scheduled: {what} at {local_time(deployment.scheduled_at, zone)} "
                f"({relative(deployment.scheduled_at, now)}): {approvals}")
    return f"{STATE_EMOJI[deployment.state]} Pending: {what}: {approvals}"


def _history(env: EnvironmentHome) -> str:
    if not env.recent:
        return "No finished deployments yet."
    parts = []
    for deployment in list(env.recent)[:HISTORY]:
        took = (f" in {format_duration(deployment.finished_at - deployment.started_at)}"
                if deployment.finished_at is not None and deployment.started_at is not None
                else "")
        parts.append(f"{STATE_EMOJI[deployment.state]} #{deployment.id} "
                     f"{escape(deployment.version or deployment.kind.value)} "
                     f"{deployment.state.value.replace('_', ' ')}{took}")
    return "Last: " + " · ".join(parts)


def _buttons(env: EnvironmentHome) -> list[dict[str, Any]]:
    buttons = env.buttons
    name = env.name
    elements: list[dict[str, Any]] = []
    if buttons.deploy:
        elements.append(_button(actions.HOME_DEPLOY, "Deploy…", name, style="primary"))
    if buttons.rollback_to is not None:
        live = env.state.live_version if env.state is not None else None
        elements.append(_button(
            actions.HOME_ROLLBACK, "Roll back…", name, style="danger", confirm=_confirm(
                f"Roll back {name}?",
                f"Request a rollback of *{escape(name)}* from {escape(live or '?')} to "
                f"{escape(buttons.rollback_to)}? It needs an approval before it runs.",
                "Request rollback")))
    if buttons.unlock:
        elements.append(_button(actions.HOME_UNLOCK, "Unlock", name, confirm=_confirm(
            f"Unlock {name}?", f"Lift the lock on *{escape(name)}*? Deployments to it may run "
                               "again.", "Unlock")))
    return elements


# -- Block Kit pieces ------------------------------------------------------------------------


def _button(action_id: str, text: str, value: str, *, style: str | None = None,
            confirm: dict[str, Any] | None = None) -> dict[str, Any]:
    button: dict[str, Any] = {"type": "button", "action_id": action_id, "value": value,
                              "text": {"type": "plain_text", "text": text, "emoji": True}}
    if style is not None:
        button["style"] = style
    if confirm is not None:
        button["confirm"] = confirm
    return button


def _confirm(title: str, text: str, yes: str) -> dict[str, Any]:
    return {"title": {"type": "plain_text", "text": title[:100]},
            "text": {"type": "mrkdwn", "text": _fit([text], 300)},
            "confirm": {"type": "plain_text", "text": yes[:30]},
            "deny": {"type": "plain_text", "text": "Cancel"}}


def _section(block_id: str, lines: list[str]) -> dict[str, Any]:
    return {"type": "section", "block_id": block_id,
            "text": {"type": "mrkdwn", "text": _fit(lines, TEXT_LIMIT)}}


def _context(block_id: str, texts: list[str]) -> dict[str, Any]:
    return {"type": "context", "block_id": block_id,
            "elements": [{"type": "mrkdwn", "text": _fit([t], TEXT_LIMIT)} for t in texts]}


def _fit(lines: list[str], limit: int) -> str:
    """``lines`` joined, whole lines dropped from the end until it fits ``limit`` (one line too
    long on its own is cut at a space, with no entity or mention left open)."""
    text = "\n".join(lines)
    if len(text) <= limit:
        return text
    more = "\n…"
    kept: list[str] = []
    used = 0
    for line in lines:
        if used + len(line) + 1 + len(more) > limit:
            break
        kept.append(line)
        used += len(line) + 1
    if kept:
        return "\n".join(kept) + more
    return _cut(lines[0], limit - 1) + "…"


def _cut(line: str, limit: int) -> str:
    """``line`` cut to at most ``limit`` characters, before any ``&``-entity or ``<...>`` that
    the cut would break."""
    cut = line[:limit]
    for opener, closer in (("&", ";"), ("<", ">")):
        start = cut.rfind(opener)
        if start != -1 and cut.find(closer, start) == -1:
            cut = cut[:start]
    return cut


def _person_text(text: str) -> str:
    """A person's or service's text, shortened, then escaped."""
    short = text if len(text) <= _PERSON_TEXT else text[:_PERSON_TEXT - 1] + "…"
    return escape(short)


def _block_key(name: str) -> str:
    """A block id part for an environment (block ids are at most 255 characters)."""
    return name[:200]
