"""Post-emergency review reminders: every 4 h after the emergency ran, overdue at the due time
and every 4 h after, until "Post-emergency review scheduled" is ticked (through the real
``/qlp checklist`` boxes). Time comes from a FixedClock; nothing waits for wall time.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import islice
from pathlib import Path
from typing import Any

import pytest

from bot import actions
from bot.outbox_sender import SlackOutboxSender
from bot.schedule.registry import build_due_works
from bot.schedule.review_reminders import (
    REVIEW_ITEM,
    ReviewMoment,
    ReviewReminders,
    review_moments,
)
from bot.slack_requests import checkboxes_body
from procedures.clock import FixedClock
from procedures.model import DeploymentState, ProcedureKind
from procedures.playbooks.emergency import checklist_items
from storage.db import Database
from storage.models import Notification
from tests.fakes.bot_harness import BotHarness
from tests.fakes.policies import make_policy
from tests.fakes.slack_double import SlackDouble

CHANNEL = "C0DEPLOY"
REQUESTED = datetime(2026, 12, 1, 11, 0, tzinfo=UTC)  # Tue; the review is due Wed 11:00
STARTED = REQUESTED + timedelta(minutes=10)


def utc(day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2026, 12, day, hour, minute, tzinfo=UTC)


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(REQUESTED)


def emergency(bot: BotHarness, clock: FixedClock, *,
              end: DeploymentState | None = DeploymentState.SUCCEEDED,
              options: dict[str, Any] | None = None) -> int:
    """An emergency requested at REQUESTED as ``/qlp emergency`` stores it; it starts at STARTED
    (RUNNING sets ``started_at``) and ends in ``end`` (None: it never starts)."""
    deployments = bot.services.deployments
    clock.set(REQUESTED)
    if options is None:
        options = {"category": "security", "fast_track": True,
                   "review_due": (REQUESTED + timedelta(hours=24)).isoformat(),
                   "checklist": checklist_items()}
    record = deployments.create(ProcedureKind.EMERGENCY, "v1.2.5", "production", "U0DEV",
                                options=options, channel=CHANNEL)
    assert record.id is not None
    if end is None:
        return record.id
    if end in (DeploymentState.REJECTED, DeploymentState.CANCELLED):
        assert deployments.transition(record.id, [DeploymentState.PENDING_APPROVAL], end)
        return record.id
    assert deployments.transition(record.id, [DeploymentState.PENDING_APPROVAL],
                                  DeploymentState.QUEUED)
    clock.set(STARTED)
    assert deployments.transition(record.id, [DeploymentState.QUEUED], DeploymentState.RUNNING)
    clock.set(STARTED + timedelta(minutes=10))
    assert deployments.transition(record.id, [DeploymentState.RUNNING], end)
    return record.id


def reminders(bot: BotHarness) -> list[Notification]:
    return [n for n in bot.services.outbox.undelivered()
            if n.dedup_key and n.dedup_key.startswith("review:")]


def run_at(work: ReviewReminders, clock: FixedClock, moment: datetime) -> int:
    clock.set(moment)
    return work.run_due(moment)


def tick_review(bot: BotHarness, deployment_id: int, user: str = "U0DEV") -> str:
    """Tick "Post-emergency review scheduled" with the checklist's boxes, as a person does."""
    url = bot.slack.response_url(f"tick-{deployment_id}", channel=CHANNEL, user=user)
    # The Post-Emergency group is the third of the emergency checklist.
    body = checkboxes_body(action_id=actions.CHECKLIST_TICK,
                           block_id=f"qlp_checklist:{deployment_id}:2",
                           selected=[(REVIEW_ITEM, REVIEW_ITEM)], user_id=user,
                           channel_id=CHANNEL, response_url=url)
    before = len(bot.slack.ephemerals(user))
    assert bot.post(body).status_code == 200
    bot.wait_for(lambda: len(bot.slack.ephemerals(user)) > before, what="the answer")
    return str(bot.slack.ephemerals(user)[-1].text)


# -- the sequence ------------------------------------------------------------------------------


def test_reminders_repeat_until_the_review_is_ticked(bot: BotHarness, clock: FixedClock) -> None:
    deployment_id = emergency(bot, clock)
    work = ReviewReminders.from_services(bot.services)
    assert work.run_due(clock.now()) == 0
    assert work.upcoming(clock.now(), timedelta(hours=24)) == [
        utc(1, 15, 10), utc(1, 19, 10), utc(1, 23, 10), utc(2, 3, 10), utc(2, 7, 10),
        utc(2, 11, 0)]

    assert run_at(work, clock, utc(1, 15, 10)) == 2
    assert work.run_due(clock.now()) == 0  # the same moment again: nothing twice
    thread, dm = reminders(bot)
    text = (f":memo: Reminder: the post-emergency review of emergency deployment "
            f"#{deployment_id} (security, v1.2.5 to production) is due by Wed 2026-12-02 "
            f"11:00 UTC (in 19h 50m). Tick “Post-emergency review scheduled” with "
            f"`/qlp checklist {deployment_id}` once it is scheduled.")
    assert (thread.channel, thread.thread_of, thread.payload["text"]) == \
        (CHANNEL, deployment_id, text)
    assert (dm.channel, dm.thread_of, dm.payload["text"]) == ("U0DEV", None, text)
    assert [thread.dedup_key, dm.dedup_key] == [
        f"review:{deployment_id}:2026-12-01T15:10Z:thread",
        f"review:{deployment_id}:2026-12-01T15:10Z:dm"]

    # Down from 15:30 to 09:00: only the latest repetition (07:10) is sent, not the 3 missed.
    assert ReviewReminders.from_services(bot.services).run_due(utc(2, 9, 0)) == 2
    assert [n.dedup_key for n in reminders(bot)][2:] == [
        f"review:{deployment_id}:2026-12-02T07:10Z:thread",
        f"review:{deployment_id}:2026-12-02T07:10Z:dm"]

    assert run_at(work, clock, utc(2, 11, 0)) == 2
    assert reminders(bot)[-1].payload["text"] == (
        f":warning: The post-emergency review of emergency deployment #{deployment_id} "
        "(security, v1.2.5 to production) is *overdue*: it was due by Wed 2026-12-02 11:00 UTC. "
        f"Tick “Post-emergency review scheduled” with `/qlp checklist {deployment_id}` once it "
        "is scheduled.")
    assert run_at(work, clock, utc(2, 15, 0)) == 2
    assert "it was due by Wed 2026-12-02 11:00 UTC, 4h ago." in reminders(bot)[-1].payload["text"]
    assert work.upcoming(clock.now(), timedelta(hours=8)) == [utc(2, 19, 0), utc(2, 23, 0)]

    clock.set(utc(2, 16, 0))
    said = tick_review(bot, deployment_id)
    assert "You ticked “Post-emergency review scheduled”." in said
    assert work.upcoming(clock.now(), timedelta(days=7)) == []
    assert run_at(work, clock, utc(2, 19, 0)) == 0
    assert run_at(work, clock, utc(5, 19, 0)) == 0
    assert len(reminders(bot)) == 8


# -- which emergencies owe a review ------------------------------------------------------------


@pytest.mark.parametrize("end", [None, DeploymentState.REJECTED, DeploymentState.CANCELLED])
def test_an_emergency_that_never_ran_owes_no_review(sqlite_database: Database, tmp_path: Path,
                                                    slack: SlackDouble,
                                                    end: DeploymentState | None) -> None:
    clock = FixedClock(REQUESTED)
    harness = BotHarness(database=sqlite_database, policy=make_policy(), clock=clock,
                         home=tmp_path / "home", slack=slack)
    try:
        emergency(harness, clock, end=end)
        harness.services.deployments.create(ProcedureKind.STANDARD, "v1.2.4", "production",
                                            "U0DEV", state=DeploymentState.SUCCEEDED)
        work = ReviewReminders.from_services(harness.services)
        assert work.owing() == []
        assert work.upcoming(REQUESTED, timedelta(days=3)) == []
        assert run_at(work, clock, utc(3, 12, 0)) == 0
        assert reminders(harness) == []
    finally:
        harness.close()


def test_a_rolled_back_emergency_still_owes_its_review_due_a_day_after_it_started(
        sqlite_database: Database, tmp_path: Path, slack: SlackDouble) -> None:
    clock = FixedClock(REQUESTED)
    harness = BotHarness(database=sqlite_database, policy=make_policy(), clock=clock,
                         home=tmp_path / "home", slack=slack)
    try:
        # No review_due stored (an older request): due 24 h after the run started.
        deployment_id = emergency(harness, clock, end=DeploymentState.ROLLED_BACK,
                                  options={"category": "outage"})
        work = ReviewReminders.from_services(harness.services)
        assert work.upcoming(clock.now(), timedelta(hours=25))[-1] == STARTED + timedelta(hours=24)
        assert run_at(work, clock, STARTED + timedelta(hours=24)) == 2
        text = reminders(harness)[-1].payload["text"]
        assert text.startswith(f":warning: The post-emergency review of emergency deployment "
                               f"#{deployment_id} (outage, v1.2.5 to production) is *overdue*")
    finally:
        harness.close()


# -- delivery ----------------------------------------------------------------------------------


def test_the_reminder_lands_in_the_card_thread_and_in_a_dm(bot: BotHarness, clock: FixedClock,
                                                           slack: SlackDouble) -> None:
    deployment_id = emergency(bot, clock)
    services = bot.services
    card = services.slack.chat_postMessage(channel=CHANNEL, text=f"#{deployment_id}: card")
    services.deployments.update_fields(deployment_id, card_ts=str(card["ts"]), channel=CHANNEL)
    work = ReviewReminders.from_services(services)
    assert run_at(work, clock, utc(1, 15, 10)) == 2
    sender = SlackOutboxSender(services.outbox, services.deployments, services.slack, clock,
                               per_channel_interval=0)
    for _ in range(5):
        sender.run_once()
    [reply] = slack.thread(CHANNEL, str(card["ts"]))
    assert reply.text.startswith(":memo: Reminder: the post-emergency review of emergency "
                                 f"deployment #{deployment_id}")
    [dm] = slack.messages("U0DEV")
    assert dm.text == reply.text
    assert services.outbox.undelivered() == []


# -- the schedule ------------------------------------------------------------------------------


def test_the_schedule_before_and_after_the_due_time() -> None:
    moments = list(islice(review_moments(STARTED, REQUESTED + timedelta(hours=24)), 8))
    assert moments == [
        ReviewMoment(utc(1, 15, 10), False), ReviewMoment(utc(1, 19, 10), False),
        ReviewMoment(utc(1, 23, 10), False), ReviewMoment(utc(2, 3, 10), False),
        ReviewMoment(utc(2, 7, 10), False), ReviewMoment(utc(2, 11, 0), True),
        ReviewMoment(utc(2, 15, 0), True), ReviewMoment(utc(2, 19, 0), True)]


def test_a_run_started_near_the_due_time_is_first_reminded_four_hours_in() -> None:
    # Approved 22 h after the request: the review is due 2 h after the start; the first
    # reminder still waits 4 h, and it is already an overdue one.
    started = REQUESTED + timedelta(hours=22)
    moments = list(islice(review_moments(started, REQUESTED + timedelta(hours=24)), 2))
    assert moments == [ReviewMoment(utc(2, 15, 0), True), ReviewMoment(utc(2, 19, 0), True)]


# -- the registry ------------------------------------------------------------------------------


def test_both_reminders_are_registered_with_the_bots_services(bot: BotHarness,
                                                              clock: FixedClock) -> None:
    works = {work.name: work for work in build_due_works(bot.services)}
    assert {"window-reminders", "review-reminders"} <= set(works)
    # The registered window reminders use the bot's policy channel, windows and outbox.
    clock.set(datetime(2026, 12, 1, 9, 30, tzinfo=UTC))
    assert works["window-reminders"].run_due(clock.now()) == 1
    [notice] = [n for n in bot.services.outbox.undelivered() if n.channel == CHANNEL]
    assert notice.dedup_key == "window:opens:2026-12-01T10:00Z"
