"""``WindowReminders``: the channel hears when the standard window opens, closes, and what
missed it, in the policy's time zone; on a holiday week or in a freeze, why there is none.

For each preferred-window occurrence (``WindowPolicy.occurrences``) that is *allowed*, three
posts go to ``policy.channel`` through the outbox:

========  =====================  ===============================  ==========================
kind      falls due              sent while (later: stale, left)  says
========  =====================  ===============================  ==========================
opens     opens - 30 min         until the window opens           the release queue and locks
closes    closes - 30 min        until the window closes          what is still waiting
digest    closes                 for an hour after it closed      what missed the window
========  =====================  ===============================  ==========================

Allowed windows that follow one another without a gap (``00:00-24:00`` on consecutive days)
are one window: nothing is said at the midnights in between, and an all-day, every-day window
(the demo policy's) is never announced at all.

A bot that was down through a moment sends a reminder late only while it is still true ("opens
in 12 minutes"); once the window has opened, its opens reminder is skipped, and so on. (The
closes reminder of a window shorter than the lead time falls due when the window opens.)

An occurrence blocked by a **holiday week** or a **freeze** gets no reminders; instead one
message says why there is no window and when the next allowed one opens. It is said once per
holiday week and once per freeze (not once per skipped window), at the first blocked
occurrence's opens-reminder moment; if the bot was down then, the next blocked occurrence of
the same week or freeze says it (so it is never silently dropped while it still matters).
An occurrence on an **avoided day** is routine and stays silent.

Dedup keys (the outbox posts each once, whoever runs the tick, however often):

* ``window:opens:<opens UTC>``, ``window:closes:<opens UTC>``, ``window:digest:<opens UTC>``
  (``<opens UTC>`` like ``2026-12-01T10:00Z``: the occurrence);
* ``window:blocked:holiday-week:<Monday>`` and ``window:blocked:freeze:<start>:<end>``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING

from bot.formatting import escape, local_time
from procedures.model import DeploymentState, ProcedureKind
from procedures.windows import WindowOccurrence, WindowPolicy, WindowRule

if TYPE_CHECKING:
    from zoneinfo import ZoneInfo

    from bot.ports import WindowReminderServices
    from storage.deployments import DeploymentRepository
    from storage.environments import EnvironmentStateRepository
    from storage.models import Deployment, EnvironmentStateRow
    from storage.outbox import Outbox

REMIND_BEFORE = timedelta(minutes=30)
"""How long before a window opens (and before it closes) the channel is reminded."""

DIGEST_GRACE = timedelta(hours=1)
"""How long after a window closed its digest is still sent (a bot that was down longer skips it)."""

MAX_LINES = 15
"""Deployments listed per section of a message; the rest are counted."""

_EN_DASH = "\N{EN DASH}"
_INSTANT = timedelta(microseconds=1)
_RETAIN = timedelta(days=400)  # how long run_due remembers what it sent (freezes can be long)
_USER_ID = re.compile(r"^[UW][A-Z0-9]{2,}$")


class ReminderKind(StrEnum):
    """What a window reminder says."""

    OPENS = "opens"
    CLOSES = "closes"
    DIGEST = "digest"
    BLOCKED = "blocked"


@dataclass(frozen=True)
class WindowReminder:
    """One reminder of one occurrence: due at ``at``, stale from ``until``, posted as ``key``."""

    kind: ReminderKind
    occurrence: WindowOccurrence
    at: datetime
    until: datetime
    key: str


def _stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%MZ")


def occurrence_label(occurrence: WindowOccurrence) -> str:
    """``Tue 10:00\u201314:00 UTC`` (wall clock in the policy zone, an en dash between; an end
    at midnight reads 24:00)."""
    opens, closes = occurrence.opens, occurrence.closes
    end = closes.strftime("%H:%M")
    if closes.date() != opens.date() and end == "00:00":
        end = "24:00"
    return f"{opens:%a %H:%M}{_EN_DASH}{end} {opens.tzname()}"


def blocked_key(occurrence: WindowOccurrence) -> str | None:
    """The dedup key of the "no window" message for a holiday week or freeze; else None."""
    verdict = occurrence.verdict
    if verdict.rule is WindowRule.FREEZE and verdict.freeze is not None:
        freeze = verdict.freeze
        return f"window:blocked:freeze:{freeze.start.isoformat()}:{freeze.end.isoformat()}"
    if verdict.rule is WindowRule.HOLIDAY_WEEK:
        day: date = occurrence.opens.date()
        monday = day - timedelta(days=day.weekday())
        return f"window:blocked:holiday-week:{monday.isoformat()}"
    return None


def reminders_for(occurrence: WindowOccurrence, *, lead: timedelta = REMIND_BEFORE,
                  digest_grace: timedelta = DIGEST_GRACE, open_before: bool = False,
                  open_after: bool = False) -> list[WindowReminder]:
    """The reminders one occurrence gets (none on an avoided day), in time order.

    ``open_before`` / ``open_after``: the standard window is open right before it opens /
    right after it closes (a 00:00-24:00 window on consecutive days). Then it does not really
    open / close there, and the opens reminder / the closes reminder and digest are left out.
    """
    opens, closes = occurrence.opens, occurrence.closes
    if not occurrence.allowed:
        key = blocked_key(occurrence)
        if key is None:
            return []
        return [WindowReminder(ReminderKind.BLOCKED, occurrence, opens - lead, closes, key)]
    stamp = _stamp(opens)
    found: list[WindowReminder] = []
    if not open_before:
        found.append(WindowReminder(ReminderKind.OPENS, occurrence, opens - lead, opens,
                                    f"window:opens:{stamp}"))
    if not open_after:
        found += [
            WindowReminder(ReminderKind.CLOSES, occurrence, max(closes - lead, opens), closes,
                           f"window:closes:{stamp}"),
            WindowReminder(ReminderKind.DIGEST, occurrence, closes, closes + digest_grace,
                           f"window:digest:{stamp}"),
        ]
    return found


def _in(delta: timedelta) -> str:
    minutes = max(1, math.ceil(delta.total_seconds() / 60))
    return f"in {minutes} minute{'s' if minutes != 1 else ''}"


@dataclass(frozen=True)
class ReleaseQueue:
    """What waits for a window: approved (scheduled or queued), pending approval, and locks."""

    waiting: list[Deployment]
    pending: list[Deployment]
    locks: list[EnvironmentStateRow]


class WindowReminders:
    """Window opens / closes / digest reminders and "no window" notices (see the module doc).

    A ``DueWork``: ``run_due(now)`` posts what is due at ``now`` and not stale, once;
    ``upcoming`` lists the moments reminders fall due. It remembers the keys it posted, so a
    tick every minute does not rebuild a message the outbox would drop as a duplicate anyway;
    after a restart the outbox's dedup key is what keeps a message to one post.
    """

    name = "window-reminders"

    def __init__(self, *, channel: str, windows: WindowPolicy, outbox: Outbox,
                 deployments: DeploymentRepository, environments: EnvironmentStateRepository,
                 lead: timedelta = REMIND_BEFORE, digest_grace: timedelta = DIGEST_GRACE) -> None:
        self._channel = channel
        self._windows = windows
        self._outbox = outbox
        self._deployments = deployments
        self._environments = environments
        self._lead = lead
        self._digest_grace = digest_grace
        self._sent: dict[str, datetime] = {}

    @classmethod
    def from_services(cls, services: WindowReminderServices) -> WindowReminders:
        """The reminders for the bot's policy channel, windows and storage."""
        return cls(channel=services.policy.channel, windows=services.windows,
                   outbox=services.outbox, deployments=services.deployments,
                   environments=services.environments)

    @property
    def zone(self) -> ZoneInfo:
        return self._windows.zone

    # -- DueWork ------------------------------------------------------------------------------

    def reminders(self, start: datetime, end: datetime) -> list[WindowReminder]:
        """Every reminder of the occurrences near ``[start, end)``, in time order."""
        occurrences = self._windows.occurrences(
            start - self._digest_grace, end + self._lead + timedelta(minutes=1))
        found: list[WindowReminder] = []
        for occurrence in occurrences:
            open_before = open_after = False
            if occurrence.allowed:
                open_before = self._windows.verdict(occurrence.opens - _INSTANT).open
                open_after = self._windows.verdict(occurrence.closes).open
            found += reminders_for(occurrence, lead=self._lead, digest_grace=self._digest_grace,
                                   open_before=open_before, open_after=open_after)
        return sorted(found, key=lambda reminder: reminder.at)

    def run_due(self, now: datetime) -> int:
        """Post the reminders due at ``now`` (not stale, not posted); how many were posted."""
        self._forget(now)
        posted = 0
        for reminder in self.reminders(now, now):
            if not reminder.at <= now < reminder.until or reminder.key in self._sent:
                continue
            text = self.render(reminder, now)
            self._outbox.enqueue(self._channel, "post", {"text": text},
                                 dedup_key=reminder.key)
            self._sent[reminder.key] = now
            posted += 1
        return posted

    def upcoming(self, now: datetime, horizon: timedelta) -> list[datetime]:
        """The moments after ``now`` (within ``horizon``) at which a reminder falls due."""
        moments = {
            reminder.at for reminder in self.reminders(now, now + horizon)
            if now < reminder.at <= now + horizon and reminder.key not in self._sent
        }
        return sorted(moments)

    def _forget(self, now: datetime) -> None:
        for key, at in list(self._sent.items()):
            if at < now - _RETAIN:
                del self._sent[key]

    # -- the messages -------------------------------------------------------------------------

    def render(self, reminder: WindowReminder, now: datetime) -> str:
        """The text of ``reminder`` as posted at ``now``."""
        occurrence = reminder.occurrence
        label = occurrence_label(occurrence)
        if reminder.kind is ReminderKind.BLOCKED:
            return self._blocked_text(occurrence)
        queue = self.queue()
        if reminder.kind is ReminderKind.OPENS:
            head = (f":calendar: The standard window opens {_in(occurrence.opens - now)} "
                    f"({label}).")
            return "\n".join([head, *self._queue_lines(queue)])
        if reminder.kind is ReminderKind.CLOSES:
            head = (f":hourglass_flowing_sand: The standard window closes "
                    f"{_in(occurrence.closes - now)} ({label}).")
            return "\n".join([head, *self._queue_lines(queue, still=True)])
        return self._digest_text(occurrence, label, queue)

    def queue(self) -> ReleaseQueue:
        """The release queue now: approved and waiting, pending approval, held locks."""
        waiting = self._deployments.list_in_states(
            [DeploymentState.SCHEDULED, DeploymentState.QUEUED])
        pending = self._deployments.list_in_states([DeploymentState.PENDING_APPROVAL])
        locks = [row for row in self._environments.all() if row.lock_holder]
        return ReleaseQueue(waiting, pending, locks)

    def _queue_lines(self, queue: ReleaseQueue, *, still: bool = False) -> list[str]:
        lines: list[str] = []
        if not queue.waiting and not queue.pending:
            lines.append("Nothing is waiting." if still else "The release queue is empty.")
        else:
            prefix = "Still approved and waiting" if still else "Approved and waiting"
            lines += self._section(prefix, queue.waiting)
            prefix = "Still pending approval" if still else "Pending approval"
            lines += self._section(prefix, queue.pending)
        if queue.locks:
            lines.append(f"*Locked environments* ({len(queue.locks)}):")
            lines += [f"• {self._lock_line(row)}" for row in queue.locks]
        else:
            lines.append("No environment is locked.")
        return lines

    def _section(self, title: str, deployments: Sequence[Deployment]) -> list[str]:
        if not deployments:
            return [f"*{title}*: none."]
        lines = [f"*{title}* ({len(deployments)}):"]
        lines += [f"• {self._deployment_line(d)}" for d in deployments[:MAX_LINES]]
        if len(deployments) > MAX_LINES:
            lines.append(f"• … and {len(deployments) - MAX_LINES} more (`/qlp status`)")
        return lines

    def _deployment_line(self, deployment: Deployment, state_note: str | None = None) -> str:
        what = escape(deployment.version or "(no version)")
        kind = "" if deployment.kind is ProcedureKind.STANDARD else f"{deployment.kind} "
        line = (f"#{deployment.id} {kind}{what} to {deployment.environment} by "
                f"{_who(deployment.requester)}")
        note = state_note if state_note is not None else self._state_note(deployment)
        return f"{line}{note}"

    def _state_note(self, deployment: Deployment) -> str:
        if deployment.state is DeploymentState.SCHEDULED:
            if deployment.scheduled_at is None:
                return " (scheduled)"
            return f" (scheduled for {local_time(deployment.scheduled_at, self.zone)})"
        if deployment.state is DeploymentState.QUEUED:
            return " (queued)"
        return ""

    def _lock_line(self, row: EnvironmentStateRow) -> str:
        line = f"{row.environment}: locked by {_who(row.lock_holder or '')}"
        if row.locked_since is not None:
            line += f" since {local_time(row.locked_since, self.zone)}"
        if row.lock_deployment_id is not None:
            line += f" for #{row.lock_deployment_id}"
        elif row.lock_reason:
            line += f": {escape(row.lock_reason)}"
        return line

    def _missed(self, occurrence: WindowOccurrence, queue: ReleaseQueue) -> list[Deployment]:
        """Standard deployments that waited during the window and did not start within it.

        Pending approval or queued, requested before the window closed; scheduled for a time
        before it closed (one scheduled for a later window is not late).
        """
        closes = occurrence.closes
        missed: list[Deployment] = []
        for deployment in sorted([*queue.waiting, *queue.pending], key=lambda d: d.id or 0):
            if deployment.kind is not ProcedureKind.STANDARD or deployment.created_at >= closes:
                continue
            if deployment.started_at is not None and deployment.started_at < closes:
                continue
            if (deployment.state is DeploymentState.SCHEDULED
                    and deployment.scheduled_at is not None
                    and deployment.scheduled_at >= closes):
                continue
            missed.append(deployment)
        return missed

    def _digest_text(self, occurrence: WindowOccurrence, label: str, queue: ReleaseQueue) -> str:
        missed = self._missed(occurrence, queue)
        after = self._next_window(occurrence.closes)
        if not missed:
            return (f":checkered_flag: The standard window closed ({label}): nothing missed "
                    f"it. {after}")
        lines = [f":checkered_flag: The standard window closed ({label}). "
                 f"Missed it ({len(missed)}):"]
        notes = {
            DeploymentState.PENDING_APPROVAL: ": still pending approval",
            DeploymentState.QUEUED: ": queued, not started",
        }
        for deployment in missed[:MAX_LINES]:
            note = notes.get(deployment.state)
            if note is None:
                note = self._state_note(deployment) + ", not started"
            lines.append(f"• {self._deployment_line(deployment, note)}")
        if len(missed) > MAX_LINES:
            lines.append(f"• … and {len(missed) - MAX_LINES} more (`/qlp status`)")
        lines.append(after)
        return "\n".join(lines)

    def _next_window(self, after: datetime) -> str:
        opens = self._windows.next_open(after)
        if opens is None:
            return "No standard window opens within a year."
        return f"The next standard window opens {local_time(opens, self.zone)}."

    def _blocked_text(self, occurrence: WindowOccurrence) -> str:
        verdict = occurrence.verdict
        opens = verdict.next_open
        after = ("No standard window opens within a year." if opens is None
                 else f"The next standard window opens {local_time(opens, self.zone)}.")
        freeze = verdict.freeze
        if verdict.rule is WindowRule.FREEZE and freeze is not None:
            return (f":snowflake: No standard deployment window until the freeze ends: "
                    f"{escape(freeze.reason)}, {freeze.start:%a %Y-%m-%d} through "
                    f"{freeze.end:%a %Y-%m-%d}. {after}")
        return (f":palm_tree: No standard deployment window this week: "
                f"{escape(verdict.reason)}. {after}")


def _who(holder: str) -> str:
    """A Slack mention for a user id; anything else as escaped text."""
    return f"<@{holder}>" if _USER_ID.match(holder) else escape(holder)
