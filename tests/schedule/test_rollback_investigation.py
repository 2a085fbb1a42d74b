"""Post-rollback investigation reminders (the seed's "Post-rollback investigation required"),
chased like the post-emergency review: right after the rollback, every 4 h, overdue 24 h after
it, until "Deployment retrospective scheduled" is ticked (through the real ``/qlp checklist``
boxes). Time comes from a FixedClock; nothing waits for wall time.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from bot import actions
from bot.schedule.review_reminders import INVESTIGATION_ITEM, ReviewReminders
from bot.slack_requests import checkboxes_body
from procedures.clock import FixedClock
from procedures.model import DeploymentState, ProcedureKind
from storage.models import Notification
from tests.fakes.bot_harness import BotHarness

CHANNEL = "C0DEPLOY"
STARTED = datetime(2026, 12, 1, 11, 0, tzinfo=UTC)
ROLLED_BACK_AT = STARTED + timedelta(minutes=40)
S = DeploymentState


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(STARTED)


def rolled_back(bot: BotHarness, clock: FixedClock, *, error: str = "Monitor the new version "
                "failed: health checks failed", kind: ProcedureKind = ProcedureKind.STANDARD,
                at: datetime = ROLLED_BACK_AT) -> int:
    deployments = bot.services.deployments
    clock.set(at - timedelta(minutes=40))
    record = deployments.create(kind, "v1.1.0", "production", "U0DEV", channel=CHANNEL)
    assert record.id is not None
    assert deployments.transition(record.id, [S.PENDING_APPROVAL], S.QUEUED)
    assert deployments.transition(record.id, [S.QUEUED], S.RUNNING)
    clock.set(at - timedelta(minutes=5))
    assert deployments.transition(record.id, [S.RUNNING], S.ROLLING_BACK, error=error)
    clock.set(at)
    assert deployments.transition(record.id, [S.ROLLING_BACK], S.ROLLED_BACK)
    return record.id


def notes(bot: BotHarness) -> list[Notification]:
    return [n for n in bot.services.outbox.undelivered()
            if n.dedup_key and n.dedup_key.startswith("investigation:")]


def tick(bot: BotHarness, deployment_id: int, user: str = "U0DEV") -> str:
    """Tick "Deployment retrospective scheduled" (the Post-Deployment group, the third)."""
    url = bot.slack.response_url(f"tick-{deployment_id}", channel=CHANNEL, user=user)
    body = checkboxes_body(action_id=actions.CHECKLIST_TICK,
                           block_id=f"qlp_checklist:{deployment_id}:2",
                           selected=[(INVESTIGATION_ITEM, INVESTIGATION_ITEM)], user_id=user,
                           channel_id=CHANNEL, response_url=url)
    before = len(bot.slack.ephemerals(user))
    assert bot.post(body).status_code == 200
    bot.wait_for(lambda: len(bot.slack.ephemerals(user)) > before, what="the answer")
    return str(bot.slack.ephemerals(user)[-1].text)


def test_an_automatic_rollback_is_chased_until_the_retrospective_is_ticked(
        bot: BotHarness, clock: FixedClock) -> None:
    deployment_id = rolled_back(bot, clock)
    work = ReviewReminders.from_services(bot.services)
    assert [d.id for d, _ in work.investigations(clock.now())] == [deployment_id]

    # Right after the rollback: in the thread and to the requester, once.
    assert work.run_due(ROLLED_BACK_AT) == 2
    assert work.run_due(ROLLED_BACK_AT) == 0
    thread, dm = notes(bot)
    assert (thread.channel, thread.thread_of) == (CHANNEL, deployment_id)
    assert (dm.channel, dm.thread_of) == ("U0DEV", None)
    text = thread.payload["text"]
    assert text.startswith(f":mag: Post-rollback investigation required for the rolled-back "
                           f"deployment #{deployment_id} (v1.1.0 to production): due by "
                           "Wed 2026-12-02 11:40 UTC")
    assert f"`/qlp checklist {deployment_id}`" in text and "Deployment retrospective" in text
    assert dm.payload["text"] == text
    assert thread.dedup_key == f"investigation:{deployment_id}:2026-12-01T11:40Z:thread"
    assert work.upcoming(ROLLED_BACK_AT, timedelta(hours=5)) == [
        ROLLED_BACK_AT + timedelta(hours=4)]

    # Overdue at the due time.
    due = ROLLED_BACK_AT + timedelta(hours=24)
    clock.set(due)
    assert work.run_due(due) == 2
    assert ":warning: The post-rollback investigation" in notes(bot)[-1].payload["text"]
    assert "*overdue*" in notes(bot)[-1].payload["text"]

    # Ticked: no more.
    assert "Deployment retrospective scheduled" in tick(bot, deployment_id)
    later = due + timedelta(hours=4)
    clock.set(later)
    assert work.investigations(later) == []
    assert work.run_due(later) == 0


def test_who_owes_no_investigation(bot: BotHarness, clock: FixedClock) -> None:
    cancelled = rolled_back(bot, clock, error="cancelled by <@U0DEV>")
    old = rolled_back(bot, clock, at=ROLLED_BACK_AT - timedelta(days=8))
    emergency = rolled_back(bot, clock, kind=ProcedureKind.EMERGENCY)
    owed = rolled_back(bot, clock)
    work = ReviewReminders.from_services(bot.services)
    ids = [d.id for d, _ in work.investigations(ROLLED_BACK_AT)]
    assert ids == [owed]
    assert cancelled not in ids and old not in ids and emergency not in ids
    assert [d.id for d, _ in work.owing()] == [emergency]  # its post-emergency review instead
