"""``ReviewReminders``: an emergency deployment's post-emergency review is chased until it is
ticked on the emergency checklist.

``/qlp emergency`` promises a post-emergency review within 24 hours and stores its due time
(``options["review_due"]``); the emergency checklist (``procedures.checklists``) holds the
item "Post-emergency review scheduled", ticked by a person with ``/qlp checklist <id>``.
Until that item is ticked, reminders go to the deployment card's thread and, as a direct
message, to the requester:

* every 4 hours after the run started (4 h, 8 h, ... while before the due time);
* at the due time, saying it is overdue; then every 4 hours after it, without end.

Only emergencies that actually ran get reminders: the run started (``started_at`` is set),
whatever its outcome, since an emergency that failed or rolled back needs its review as much.
One rejected, cancelled or expired before it started owes no review. The due time is the
stored ``review_due`` (what people were told), else 24 hours after the start.

The post-rollback investigation (the seed's ``automatic-rollback.sh`` ends with "Post-rollback
investigation required") is chased the same way: a deployment that ended ROLLED_BACK (any kind
but an emergency, which has its review; not one a person cancelled) owes an investigation due
24 hours after its rollback ended. The first note goes right after the rollback, then every 4
hours, at the due time (overdue) and every 4 hours after it, until its checklist item
"Deployment retrospective scheduled" is ticked with ``/qlp checklist <id>``. Rollbacks older than
``INVESTIGATION_NAG_FOR`` (7 days) are not chased any more, so years of history never wake up.

A bot that was down over several repetitions sends only the latest one (a repetition is
stale once the next is due). Dedup keys: ``review:<id>:<moment UTC>:thread`` and
``review:<id>:<moment UTC>:dm`` (``investigation:...`` for an investigation), ``<moment UTC>``
like ``2026-12-01T15:00Z``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from bot.formatting import escape, local_time
from bot.slack_reporter import channel_key
from procedures.checklists import EMERGENCY_ITEMS, STANDARD_ITEMS, item_key, manual_ticks
from procedures.durations import format_duration
from procedures.model import DeploymentState, ProcedureKind
from procedures.playbooks.emergency import REVIEW_WITHIN

if TYPE_CHECKING:
    from zoneinfo import ZoneInfo

    from bot.ports import ReminderServices
    from storage.deployments import DeploymentRepository
    from storage.models import Deployment
    from storage.outbox import Outbox

REVIEW_ITEM_TEXT = "Post-emergency review scheduled"
REVIEW_ITEM = item_key(REVIEW_ITEM_TEXT)
"""The key of the emergency checklist item whose tick stops the reminders."""
assert any(item.key == REVIEW_ITEM and item.manual for item in EMERGENCY_ITEMS), REVIEW_ITEM

INVESTIGATION_ITEM_TEXT = "Deployment retrospective scheduled"
INVESTIGATION_ITEM = item_key(INVESTIGATION_ITEM_TEXT)
"""The key of the (standard) checklist item whose tick ends a post-rollback investigation."""
assert any(item.key == INVESTIGATION_ITEM and item.manual for item in STANDARD_ITEMS)

INVESTIGATION_WITHIN = timedelta(hours=24)
"""A rolled-back deployment's investigation is due this long after the rollback ended."""

INVESTIGATION_NAG_FOR = timedelta(days=7)
"""Rollbacks that ended longer ago than this are not chased any more."""

_CANCELLED_BY = "cancelled by "  # procedures.engine.CANCELLED_BY: a person stopped the run

FIRST_AFTER = timedelta(hours=4)
"""The first reminder comes this long after the emergency run started."""

EVERY = timedelta(hours=4)
"""Then one every this long, before and after the due time."""

_NEVER_STARTED = frozenset({
    DeploymentState.PENDING_APPROVAL, DeploymentState.SCHEDULED, DeploymentState.REJECTED,
    DeploymentState.EXPIRED, DeploymentState.CANCELLED,
})
_MAYBE_STARTED = [state for state in DeploymentState if state not in _NEVER_STARTED]
_RETAIN = timedelta(days=2)


@dataclass(frozen=True)
class ReviewMoment:
    """One repetition: due ``at``; ``overdue`` once the review's due time has passed."""

    at: datetime
    overdue: bool


def review_moments(started: datetime, due: datetime, *, first_after: timedelta = FIRST_AFTER,
                   every: timedelta = EVERY) -> Iterator[ReviewMoment]:
    """The reminder moments of an emergency that started at ``started``, review due ``due``.

    ``started + first_after``, then every ``every`` while before ``due``; then ``due`` itself
    (overdue) and every ``every`` after it, without end. None before ``started + first_after``.
    """
    earliest = started + first_after
    moment = earliest
    while moment < due:
        yield ReviewMoment(moment, overdue=False)
        moment += every
    moment = due
    while True:
        if moment >= earliest:
            yield ReviewMoment(moment, overdue=True)
        moment += every


def _parse(value: object) -> datetime | None:
    if isinstance(value, datetime):
        return value
    if isinstance(value, str) and value:
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            return None
        return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)
    return None


def review_due(deployment: Deployment) -> datetime | None:
    """When the review is due; None if the deployment never started (it owes no review)."""
    if deployment.started_at is None:
        return None
    return _parse(deployment.options.get("review_due")) or deployment.started_at + REVIEW_WITHIN


def review_ticked(deployment: Deployment) -> bool:
    """Whether the checklist's "Post-emergency review scheduled" item is ticked."""
    return REVIEW_ITEM in manual_ticks(deployment.options.get("checklist"), EMERGENCY_ITEMS)


def investigation_due(deployment: Deployment) -> datetime | None:
    """When a rolled-back deployment's investigation is due; None if it owes none (not rolled
    back, an emergency, cancelled by a person, or no end time)."""
    if (deployment.state is not DeploymentState.ROLLED_BACK
            or deployment.kind is ProcedureKind.EMERGENCY
            or deployment.finished_at is None
            or (deployment.error or "").startswith(_CANCELLED_BY)):
        return None
    return deployment.finished_at + INVESTIGATION_WITHIN


def investigation_ticked(deployment: Deployment) -> bool:
    """Whether the checklist's "Deployment retrospective scheduled" item is ticked."""
    return INVESTIGATION_ITEM in manual_ticks(deployment.options.get("checklist"), STANDARD_ITEMS)


@dataclass(frozen=True)
class _Owed:
    """One follow-up owed: an emergency's review or a rollback's investigation."""

    deployment: Deployment
    due: datetime
    what: str  # "review" or "investigation" (the dedup key's prefix)
    since: datetime  # the moments count from here


def _stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%MZ")


class ReviewReminders:
    """Post-emergency review reminders, in the card's thread and to the requester (a ``DueWork``).

    ``run_due(now)`` sends, for each emergency that ran and whose review item is not ticked,
    the latest repetition due at ``now`` (once; see the module doc); ``upcoming`` lists the
    next repetitions.
    """

    name = "review-reminders"

    def __init__(self, *, channel: str, zone: ZoneInfo, outbox: Outbox,
                 deployments: DeploymentRepository, first_after: timedelta = FIRST_AFTER,
                 every: timedelta = EVERY) -> None:
        self._channel = channel
        self._zone = zone
        self._outbox = outbox
        self._deployments = deployments
        self._first_after = first_after
        self._every = every
        self._sent: dict[str, datetime] = {}

    @classmethod
    def from_services(cls, services: ReminderServices) -> ReviewReminders:
        """The reminders for the bot's policy channel and zone, outbox and deployments."""
        return cls(channel=services.policy.channel, zone=services.policy.zone,
                   outbox=services.outbox, deployments=services.deployments)

    def owing(self) -> list[tuple[Deployment, datetime]]:
        """Emergencies that ran and whose review is not ticked, with their due time."""
        return [(owed.deployment, owed.due) for owed in self._owing(None)
                if owed.what == "review"]

    def investigations(self, now: datetime) -> list[tuple[Deployment, datetime]]:
        """Rolled-back deployments (of the last ``INVESTIGATION_NAG_FOR`` before ``now``)
        whose investigation is not ticked, with its due time."""
        return [(owed.deployment, owed.due) for owed in self._owing(now)
                if owed.what == "investigation"]

    def _owing(self, now: datetime | None) -> list[_Owed]:
        found: list[_Owed] = []
        for deployment in self._deployments.list_in_states(_MAYBE_STARTED,
                                                           kind=ProcedureKind.EMERGENCY):
            if review_ticked(deployment):
                continue
            due = review_due(deployment)
            if due is not None:
                assert deployment.started_at is not None
                found.append(_Owed(deployment, due, "review", deployment.started_at))
        if now is None:
            return found
        for deployment in self._deployments.list_in_states([DeploymentState.ROLLED_BACK]):
            due = investigation_due(deployment)
            if (due is None or investigation_ticked(deployment)
                    or due - INVESTIGATION_WITHIN < now - INVESTIGATION_NAG_FOR):
                continue
            found.append(_Owed(deployment, due, "investigation", due - INVESTIGATION_WITHIN))
        return found

    def _moments(self, owed: _Owed) -> Iterator[ReviewMoment]:
        first_after = self._first_after if owed.what == "review" else timedelta(0)
        return review_moments(owed.since, owed.due, first_after=first_after, every=self._every)

    # -- DueWork ------------------------------------------------------------------------------

    def run_due(self, now: datetime) -> int:
        """Send the current repetition of each owed review (once); how many messages."""
        self._forget(now)
        sent = 0
        for owed in self._owing(now):
            current: ReviewMoment | None = None
            for moment in self._moments(owed):
                if moment.at > now:
                    break
                current = moment
            if current is None:
                continue
            sent += self._send(owed, current, now)
        return sent

    def upcoming(self, now: datetime, horizon: timedelta) -> list[datetime]:
        """The next repetition of each owed review after ``now``, within ``horizon``."""
        moments: set[datetime] = set()
        for owed in self._owing(now):
            for moment in self._moments(owed):
                if moment.at > now + horizon:
                    break
                if moment.at > now:
                    moments.add(moment.at)
        return sorted(moments)

    def _send(self, owed: _Owed, moment: ReviewMoment, now: datetime) -> int:
        deployment, due = owed.deployment, owed.due
        assert deployment.id is not None
        base = f"{owed.what}:{deployment.id}:{_stamp(moment.at)}"
        text = (self.render(deployment, due, moment) if owed.what == "review"
                else self.render_investigation(deployment, due, moment))
        channel = deployment.channel or self._channel
        sent = 0
        targets = (
            (f"{base}:thread", channel, deployment.id),
            (f"{base}:dm", deployment.requester, None),
        )
        for key, to, thread_of in targets:
            if key in self._sent:
                continue
            self._outbox.enqueue(to, "post", {"text": text}, deployment_id=deployment.id,
                                 thread_of=thread_of, ordering_key=channel_key(to),
                                 dedup_key=key)
            self._sent[key] = now
            sent += 1
        return sent

    def _forget(self, now: datetime) -> None:
        for key, at in list(self._sent.items()):
            if at < now - _RETAIN:
                del self._sent[key]

    # -- the message --------------------------------------------------------------------------

    def render(self, deployment: Deployment, due: datetime, moment: ReviewMoment) -> str:
        """The reminder's text for repetition ``moment`` (the same in the thread and the DM)."""
        category = deployment.options.get("category")
        what = ", ".join(part for part in (
            escape(str(category)) if category else "",
            f"{escape(deployment.version or '(no version)')} to {deployment.environment}",
        ) if part)
        subject = f"emergency deployment #{deployment.id} ({what})"
        how = (f"Tick “{REVIEW_ITEM_TEXT}” with `/qlp checklist {deployment.id}` once it is "
               "scheduled.")
        when = local_time(due, self._zone)
        if moment.overdue:
            late = moment.at - due
            ago = f", {format_duration(late)} ago" if late > timedelta(0) else ""
            return (f":warning: The post-emergency review of {subject} is *overdue*: it was "
                    f"due by {when}{ago}. {how}")
        left = format_duration(due - moment.at)
        return (f":memo: Reminder: the post-emergency review of {subject} is due by {when} "
                f"(in {left}). {how}")

    def render_investigation(self, deployment: Deployment, due: datetime,
                             moment: ReviewMoment) -> str:
        """The text of a post-rollback investigation's repetition ``moment``."""
        subject = (f"the rolled-back deployment #{deployment.id} "
                   f"({escape(deployment.version or '(no version)')} to "
                   f"{deployment.environment})")
        how = (f"Tick “{INVESTIGATION_ITEM_TEXT}” with `/qlp checklist {deployment.id}` once it "
               "is scheduled.")
        when = local_time(due, self._zone)
        if moment.overdue:
            late = moment.at - due
            ago = f", {format_duration(late)} ago" if late > timedelta(0) else ""
            return (f":warning: The post-rollback investigation of {subject} is *overdue*: it "
                    f"was due by {when}{ago}. {how}")
        left = format_duration(due - moment.at)
        return (f":mag: Post-rollback investigation required for {subject}: due by {when} "
                f"(in {left}). {how}")
