"""``/qlp deploy <version> at YYYY-MM-DD HH:MM [zone]``: a standard deployment for later.

The request is judged on the window *at the scheduled moment* (refused with the next slot if
that moment is outside it), written as PENDING_APPROVAL with ``scheduled_at`` set, and its card
posted now, so approvers can decide ahead of time. An approval completed before the moment
makes it SCHEDULED; the scheduler (``bot.schedule.scheduled_deployments``) does the rest:
T-24h notice, T-2h validation, T-0 start, T+30 summary, expiry when the window closes unapproved.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from bot.commands.requesting import open_request
from bot.context import HandlerContext
from bot.flows import Moment
from bot.formatting import escape, local_time, relative
from bot.grammar import Command
from bot.membership import describe_rule
from procedures.errors import PolicyRefusal, UserError
from procedures.model import ProcedureKind

MIN_LEAD = timedelta(minutes=5)
ALLOWED_GRACE = timedelta(hours=1)
"""How long a deployment scheduled outside the preferred window may wait for its start."""
"""A scheduled moment must be at least this far ahead (sooner: deploy now instead)."""
MAX_LEAD = timedelta(days=90)
"""And at most this far: a plan approved months ahead approves a world that will not exist."""

SCHEDULE_OPTION = "schedule"
"""``options["schedule"]``: ``{"at", "zone", "closes_at"}`` (ISO instants, zone name)."""


def scheduled_moment(command: Command, default_zone: ZoneInfo) -> tuple[datetime, ZoneInfo]:
    """The command's ``at`` as an aware instant, in its own zone or the policy's."""
    assert command.at is not None
    zone = default_zone
    if command.at_zone:
        try:
            zone = ZoneInfo(command.at_zone)
        except (ZoneInfoNotFoundError, ValueError):
            raise UserError(f"`{command.at_zone}` is not a time zone I know.",
                            hint="Use an IANA name such as `UTC`, `Europe/Berlin` or "
                                 "`America/New_York`, or leave it out for the policy's "
                                 f"zone ({default_zone.key}).") from None
    return command.at.replace(tzinfo=zone), zone


def schedule_text(ctx: HandlerContext, command: Command, env: str) -> str:
    """Validate the moment with the gate (window and freeze then), then write the request
    through the one writer and post its card."""
    services = ctx.services
    policy = services.policy
    now = services.clock.now()
    moment, zone = scheduled_moment(command, policy.zone)
    shown = local_time(moment, policy.zone)
    if command.override:
        raise PolicyRefusal("An override is for deploying now, not for a scheduled deployment.",
                            rule="override-scheduled",
                            hint="Schedule it inside the window, or deploy now with "
                                 "`--override`.")
    if moment < now + MIN_LEAD:
        raise UserError(f"{shown} is {relative(moment, now)}; a scheduled deployment must be "
                        f"at least {int(MIN_LEAD.total_seconds() // 60)} minutes ahead.",
                        hint=f"Deploy now with `/qlp deploy {command.version}`, or pick a "
                             "later time.")
    if moment > now + MAX_LEAD:
        raise UserError(f"{shown} is more than {MAX_LEAD.days} days ahead.",
                        hint="Schedule it closer to the day.")
    user = ctx.request.user_id
    decision = services.flows.gate.judge(ProcedureKind.STANDARD, user, env, Moment.SCHEDULE,
                                         at=moment)
    windows = services.flows.gate.windows_for(env)
    verdict = windows.verdict(moment)
    if not decision.allowed:
        following = windows.next_open(moment)
        slot = (f" The next preferred slot opens {local_time(following, policy.zone)}."
                if following else " No preferred slot opens in the next months.")
        services.audit.append(user, "deployment.refused", environment=env,
                              detail={"version": command.version, "rule": decision.rule,
                                      "reason": decision.reason, "at": moment.isoformat()})
        raise PolicyRefusal(f"{shown} is outside the deployment window: "
                            f"{escape(verdict.reason)}."
                            f"{slot}", rule=decision.rule,
                            hint=f"`/qlp deploy {command.version} at YYYY-MM-DD HH:MM` "
                                 "inside a preferred slot (`/qlp window`).")
    # At a preferred time it may start until the window closes; at an "allowed" time (neither
    # preferred nor avoided) it waits at most ALLOWED_GRACE for its start.
    closes_at = verdict.closes_at or moment + ALLOWED_GRACE
    rule = policy.approval_rule(ProcedureKind.STANDARD, env)
    options: dict[str, Any] = {
        "maintenance": command.maintenance,
        SCHEDULE_OPTION: {"at": moment.isoformat(), "zone": zone.key,
                          "closes_at": closes_at.isoformat()},
    }
    needed = f"{rule.required} approval{'s' if rule.required > 1 else ''}"
    deployment, created = open_request(
        ctx, kind=ProcedureKind.STANDARD, version=command.version, environment=env,
        reason=None, options=options, scheduled_at=moment, action="deployment.scheduled",
        announce=lambda _: (
            f"<@{user}> scheduled {command.version} to {env} for {shown}. Waiting for "
            f"{needed} from {describe_rule(rule)}; unapproved by "
            f"{local_time(closes_at, policy.zone)} (the window's close), it expires."))
    if not created:
        return f"This request was already received: it is deployment #{deployment.id}."
    return (f"Deployment #{deployment.id} scheduled: {command.version} to {env} at {shown} "
            f"({relative(moment, now)}). It needs {needed} from {describe_rule(rule)} (not "
            f"you) before then. Notices go out 24 h ahead, final validation runs 2 h ahead; "
            f"`/qlp cancel {deployment.id}` cancels it. The card is in <#{policy.channel}>.")


def schedule_of(options: dict[str, Any]) -> dict[str, Any]:
    """The ``schedule`` option of a deployment (empty for one that was never scheduled)."""
    value = options.get(SCHEDULE_OPTION)
    return value if isinstance(value, dict) else {}
