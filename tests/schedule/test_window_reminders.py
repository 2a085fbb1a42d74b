"""Window reminders: opens / closes / digest over a real policy, holiday weeks and freezes, on
an injected clock (nothing waits for wall time).

The base test policy (``tests.fakes.policies``): Tue/Wed 10:00-14:00 UTC, Mondays and Fridays
avoided, US holiday weeks avoided, a year-end freeze 2026-12-21..2027-01-04. Tue 2026-12-01 is
an ordinary week; Thanksgiving is Thu 2026-11-26; Europe/Berlin leaves summer time on Sun
2026-10-25.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from bot.schedule.window_reminders import (
    DIGEST_GRACE,
    REMIND_BEFORE,
    WindowReminders,
    reminders_for,
)
from procedures.clock import FixedClock
from procedures.model import DeploymentState, ProcedureKind
from procedures.policy import Policy
from procedures.windows import WindowPolicy
from storage.db import Database
from storage.deployments import DeploymentRepository
from storage.environments import EnvironmentStateRepository
from storage.models import Deployment
from storage.outbox import Outbox
from tests.fakes.policies import BASE, make_policy

CHANNEL = "C0DEPLOY"


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


@dataclass
class Rig:
    """The repositories a WindowReminders needs, on one database and one fixed clock."""

    database: Database
    clock: FixedClock
    policy: Policy
    outbox: Outbox
    deployments: DeploymentRepository
    environments: EnvironmentStateRepository

    def reminders(self) -> WindowReminders:
        """A fresh instance (as after a restart): it remembers nothing it sent."""
        return WindowReminders(channel=self.policy.channel,
                               windows=WindowPolicy.from_policy(self.policy),
                               outbox=self.outbox, deployments=self.deployments,
                               environments=self.environments)

    def posts(self) -> list[str]:
        """The texts queued for the channel, in order."""
        return [n.payload["text"] for n in self.outbox.undelivered()
                if n.kind == "post" and n.channel == CHANNEL]

    def keys(self) -> list[str | None]:
        return [n.dedup_key for n in self.outbox.undelivered()]

    def deployment(self, version: str, state: DeploymentState, *, env: str = "production",
                   kind: ProcedureKind = ProcedureKind.STANDARD,
                   scheduled_at: datetime | None = None) -> Deployment:
        return self.deployments.create(kind, version, env, "U0DEV", state=state,
                                       scheduled_at=scheduled_at)


def make_rig(database: Database, start: datetime, **policy: Any) -> Rig:
    clock = FixedClock(start)
    return Rig(database, clock, make_policy(**policy), Outbox(database, clock),
               DeploymentRepository(database, clock),
               EnvironmentStateRepository(database, clock))


def tick_through(rig: Rig, work: WindowReminders, until: datetime) -> list[datetime]:
    """Act as the scheduler: jump to each moment ``upcoming`` announces and run what is due."""
    ran: list[datetime] = []
    while True:
        now = rig.clock.now()
        ahead = work.upcoming(now, until - now)
        if not ahead:
            return ran
        assert ahead == sorted(ahead) and ahead[0] > now
        rig.clock.set(ahead[0])
        work.run_due(ahead[0])
        ran.append(ahead[0])


# -- the ordinary window -----------------------------------------------------------------------


def test_opens_closes_and_digest_with_the_release_queue(database: Database) -> None:
    rig = make_rig(database, utc(2026, 12, 1, 8, 0))
    pending = rig.deployment("v1.0.1", DeploymentState.PENDING_APPROVAL)
    queued = rig.deployment("v1.0.2", DeploymentState.QUEUED, env="staging")
    scheduled = rig.deployment("v1.0.3", DeploymentState.SCHEDULED,
                               scheduled_at=utc(2026, 12, 1, 10, 30))
    later = rig.deployment("v1.0.4", DeploymentState.SCHEDULED,
                           scheduled_at=utc(2026, 12, 2, 10, 30))
    hotfix = rig.deployment("v1.0.5", DeploymentState.PENDING_APPROVAL,
                            kind=ProcedureKind.HOTFIX)
    assert rig.environments.acquire_lock("production", "U0OPS", "db maintenance", None, None)
    work = rig.reminders()

    assert work.run_due(rig.clock.now()) == 0
    assert work.upcoming(rig.clock.now(), timedelta(hours=7)) == [
        utc(2026, 12, 1, 9, 30), utc(2026, 12, 1, 13, 30), utc(2026, 12, 1, 14, 0)]

    rig.clock.set(utc(2026, 12, 1, 9, 30))
    assert work.run_due(rig.clock.now()) == 1
    [opens] = rig.posts()
    assert opens.splitlines() == [
        ":calendar: The standard window opens in 30 minutes (Tue 10:00\u201314:00 UTC).",
        "*Approved and waiting* (3):",
        f"• #{queued.id} v1.0.2 to staging by <@U0DEV> (queued)",
        f"• #{scheduled.id} v1.0.3 to production by <@U0DEV> "
        "(scheduled for Tue 2026-12-01 10:30 UTC)",
        f"• #{later.id} v1.0.4 to production by <@U0DEV> (scheduled for Wed 2026-12-02 10:30 UTC)",
        "*Pending approval* (2):",
        f"• #{pending.id} v1.0.1 to production by <@U0DEV>",
        f"• #{hotfix.id} hotfix v1.0.5 to production by <@U0DEV>",
        "*Locked environments* (1):",
        "• production: locked by <@U0OPS> since Tue 2026-12-01 08:00 UTC: db maintenance",
    ]

    # The queued one starts inside the window; the lock is released.
    rig.clock.set(utc(2026, 12, 1, 11, 0))
    assert queued.id is not None
    assert rig.deployments.transition(queued.id, [DeploymentState.QUEUED],
                                      DeploymentState.RUNNING)
    assert rig.environments.release_lock("production", None)
    assert work.run_due(rig.clock.now()) == 0

    rig.clock.set(utc(2026, 12, 1, 13, 30))
    assert work.run_due(rig.clock.now()) == 1
    closes = rig.posts()[1]
    assert closes.splitlines()[0] == (
        ":hourglass_flowing_sand: The standard window closes in 30 minutes "
        "(Tue 10:00\u201314:00 UTC).")
    assert "*Still approved and waiting* (2):" in closes
    assert "*Still pending approval* (2):" in closes
    assert "v1.0.2" not in closes
    assert closes.splitlines()[-1] == "No environment is locked."

    rig.clock.set(utc(2026, 12, 1, 14, 0))
    assert work.run_due(rig.clock.now()) == 1
    digest = rig.posts()[2]
    # Standard deployments only; the one scheduled for Wednesday is not late.
    assert digest.splitlines() == [
        ":checkered_flag: The standard window closed (Tue 10:00\u201314:00 UTC). Missed it (2):",
        f"• #{pending.id} v1.0.1 to production by <@U0DEV>: still pending approval",
        f"• #{scheduled.id} v1.0.3 to production by <@U0DEV> "
        "(scheduled for Tue 2026-12-01 10:30 UTC), not started",
        "The next standard window opens Wed 2026-12-02 10:00 UTC.",
    ]
    assert rig.keys() == ["window:opens:2026-12-01T10:00Z", "window:closes:2026-12-01T10:00Z",
                          "window:digest:2026-12-01T10:00Z"]


def test_the_scheduler_walk_posts_each_reminder_once(database: Database) -> None:
    rig = make_rig(database, utc(2026, 12, 1, 0, 0))
    work = rig.reminders()
    ran = tick_through(rig, work, utc(2026, 12, 3, 0, 0))
    assert ran == [utc(2026, 12, 1, 9, 30), utc(2026, 12, 1, 13, 30), utc(2026, 12, 1, 14, 0),
                   utc(2026, 12, 2, 9, 30), utc(2026, 12, 2, 13, 30), utc(2026, 12, 2, 14, 0)]
    posts = rig.posts()
    assert len(posts) == 6
    assert posts[0].splitlines() == [
        ":calendar: The standard window opens in 30 minutes (Tue 10:00\u201314:00 UTC).",
        "The release queue is empty.", "No environment is locked."]
    assert posts[1].splitlines()[1] == "Nothing is waiting."
    assert posts[2] == (":checkered_flag: The standard window closed (Tue 10:00\u201314:00 UTC): "
                        "nothing missed it. The next standard window opens Wed 2026-12-02 "
                        "10:00 UTC.")
    # Wednesday's digest: next is the following Tuesday (Thu-Mon have no window).
    assert posts[5].endswith("The next standard window opens Tue 2026-12-08 10:00 UTC.")


def test_run_due_twice_and_after_a_restart_posts_once(database: Database) -> None:
    rig = make_rig(database, utc(2026, 12, 1, 9, 30))
    work = rig.reminders()
    assert work.run_due(rig.clock.now()) == 1
    assert work.run_due(rig.clock.now()) == 0
    # A restarted bot does not remember; the outbox's dedup key keeps it to one post.
    rig.clock.advance(timedelta(minutes=5))
    rig.reminders().run_due(rig.clock.now())
    assert len(rig.posts()) == 1
    # What was sent is not announced again.
    assert utc(2026, 12, 1, 9, 30) not in work.upcoming(utc(2026, 12, 1, 9, 29), timedelta(1))


# -- late starts -------------------------------------------------------------------------------


def test_a_bot_down_through_the_whole_window_posts_nothing_stale(sqlite_database: Database
                                                                 ) -> None:
    rig = make_rig(sqlite_database, utc(2026, 12, 1, 14, 0) + DIGEST_GRACE)
    work = rig.reminders()
    assert work.run_due(rig.clock.now()) == 0
    assert rig.posts() == []
    # Next due: Wednesday's opens reminder.
    assert work.upcoming(rig.clock.now(), timedelta(days=1))[0] == utc(2026, 12, 2, 9, 30)


def test_a_late_start_sends_only_what_is_still_true(sqlite_database: Database) -> None:
    rig = make_rig(sqlite_database, utc(2026, 12, 1, 9, 48))
    work = rig.reminders()
    assert work.run_due(rig.clock.now()) == 1
    assert rig.posts()[0].startswith(":calendar: The standard window opens in 12 minutes ")
    # Up from 10:05 to 13:45: the opens reminder is stale, the closes one still true.
    rig = make_rig(sqlite_database, utc(2026, 12, 1, 13, 45))
    rig.outbox = Outbox(sqlite_database, rig.clock)
    work = rig.reminders()
    assert work.run_due(rig.clock.now()) == 1
    assert rig.posts()[-1].startswith(":hourglass_flowing_sand: The standard window closes in "
                                      "15 minutes ")
    # Up at 14:40 only: the digest is still sent within its grace.
    rig.clock.set(utc(2026, 12, 1, 14, 40))
    assert rig.reminders().run_due(rig.clock.now()) == 1
    assert rig.posts()[-1].startswith(":checkered_flag: The standard window closed")
    assert rig.keys() == ["window:opens:2026-12-01T10:00Z", "window:closes:2026-12-01T10:00Z",
                          "window:digest:2026-12-01T10:00Z"]


def test_inside_the_window_nothing_is_due_until_the_closes_reminder(sqlite_database: Database
                                                                    ) -> None:
    rig = make_rig(sqlite_database, utc(2026, 12, 1, 11, 0))
    work = rig.reminders()
    assert work.run_due(rig.clock.now()) == 0
    assert work.upcoming(rig.clock.now(), timedelta(hours=3)) == [
        utc(2026, 12, 1, 13, 30), utc(2026, 12, 1, 14, 0)]


# -- holiday weeks and freezes -----------------------------------------------------------------


def test_a_holiday_week_gets_one_message_that_says_why(database: Database) -> None:
    rig = make_rig(database, utc(2026, 11, 23, 0, 0))
    work = rig.reminders()
    ran = tick_through(rig, work, utc(2026, 11, 28, 0, 0))
    assert ran == [utc(2026, 11, 24, 9, 30)]  # Wednesday's would say the same: not announced
    assert rig.posts() == [
        ":palm_tree: No standard deployment window this week: the week of 2026-11-23 holds a "
        "public holiday: Thanksgiving Day (Thu 2026-11-26). The next standard window opens "
        "Tue 2026-12-01 10:00 UTC."]
    assert rig.keys() == ["window:blocked:holiday-week:2026-11-23"]


def test_a_holiday_message_missed_on_tuesday_comes_on_wednesday(sqlite_database: Database
                                                                ) -> None:
    rig = make_rig(sqlite_database, utc(2026, 11, 25, 9, 45))  # down all Tuesday
    assert rig.reminders().run_due(rig.clock.now()) == 1
    rig.clock.set(utc(2026, 11, 25, 12, 0))
    rig.reminders().run_due(rig.clock.now())
    assert len(rig.posts()) == 1
    assert rig.posts()[0].startswith(":palm_tree: No standard deployment window this week")


def test_a_freeze_is_announced_once_with_its_reason_and_end(sqlite_database: Database) -> None:
    rig = make_rig(sqlite_database, utc(2026, 12, 14, 0, 0))
    work = rig.reminders()
    tick_through(rig, work, utc(2027, 1, 7, 0, 0))
    posts = rig.posts()
    freeze = [p for p in posts if p.startswith(":snowflake:")]
    assert freeze == [
        ":snowflake: No standard deployment window until the freeze ends: year-end freeze, "
        "Mon 2026-12-21 through Mon 2027-01-04. The next standard window opens "
        "Tue 2027-01-05 10:00 UTC."]
    # The week of 2026-12-14 and the one after the freeze have their windows; none in between
    # (the holiday weeks inside the freeze say nothing of their own: the freeze wins).
    opened = [p.splitlines()[0] for p in posts if p.startswith(":calendar:")]
    assert len(opened) == 4
    assert posts.index(freeze[0]) == 6
    assert rig.keys()[6] == "window:blocked:freeze:2026-12-21:2027-01-04"


def test_a_freeze_without_a_reason_and_an_avoided_day(sqlite_database: Database) -> None:
    windows = {**BASE["windows"], "preferred": [{"days": ["mon", "tue"], "start": "10:00",
                                                 "end": "14:00"}],
               "freezes": [{"start": "2026-12-08", "end": "2026-12-08"}]}
    rig = make_rig(sqlite_database, utc(2026, 12, 7, 0, 0), windows=windows)
    work = rig.reminders()
    assert tick_through(rig, work, utc(2026, 12, 9, 0, 0)) == [utc(2026, 12, 8, 9, 30)]
    # Monday is avoided: silent. Tuesday is frozen: one message.
    assert rig.posts() == [
        ":snowflake: No standard deployment window until the freeze ends: deployment freeze, "
        "Tue 2026-12-08 through Tue 2026-12-08. The next standard window opens "
        "Tue 2026-12-15 10:00 UTC."]


# -- time zones --------------------------------------------------------------------------------


def test_berlin_reminders_follow_the_wall_clock_across_the_dst_change(sqlite_database: Database
                                                                      ) -> None:
    rig = make_rig(sqlite_database, utc(2026, 10, 19, 0, 0), timezone="Europe/Berlin")
    work = rig.reminders()
    ran = tick_through(rig, work, utc(2026, 10, 28, 0, 0))
    # Summer time (UTC+2) on the 20th and 21st, winter time (UTC+1) from the 25th.
    assert ran == [
        utc(2026, 10, 20, 7, 30), utc(2026, 10, 20, 11, 30), utc(2026, 10, 20, 12, 0),
        utc(2026, 10, 21, 7, 30), utc(2026, 10, 21, 11, 30), utc(2026, 10, 21, 12, 0),
        utc(2026, 10, 27, 8, 30), utc(2026, 10, 27, 12, 30), utc(2026, 10, 27, 13, 0),
    ]
    posts = rig.posts()
    assert posts[0].splitlines()[0] == (
        ":calendar: The standard window opens in 30 minutes (Tue 10:00\u201314:00 CEST).")
    assert posts[6].splitlines()[0] == (
        ":calendar: The standard window opens in 30 minutes (Tue 10:00\u201314:00 CET).")
    assert posts[5].endswith("The next standard window opens Tue 2026-10-27 10:00 CET.")


# -- the pieces --------------------------------------------------------------------------------


def test_a_window_shorter_than_the_lead_is_reminded_of_its_close_when_it_opens() -> None:
    policy = make_policy(windows={"preferred": [{"days": ["tue"], "start": "10:00",
                                                 "end": "10:20"}]})
    [occurrence] = WindowPolicy.from_policy(policy).occurrences(utc(2026, 12, 1),
                                                                utc(2026, 12, 2))
    found = reminders_for(occurrence)
    assert [(r.kind.value, r.at, r.until) for r in found] == [
        ("opens", utc(2026, 12, 1, 10, 0) - REMIND_BEFORE, utc(2026, 12, 1, 10, 0)),
        ("closes", utc(2026, 12, 1, 10, 0), utc(2026, 12, 1, 10, 20)),
        ("digest", utc(2026, 12, 1, 10, 20), utc(2026, 12, 1, 10, 20) + DIGEST_GRACE),
    ]


def test_long_queues_are_cut_with_a_count(sqlite_database: Database) -> None:
    rig = make_rig(sqlite_database, utc(2026, 12, 1, 9, 30))
    for number in range(20):
        rig.deployment(f"v2.0.{number}", DeploymentState.PENDING_APPROVAL)
    rig.reminders().run_due(rig.clock.now())
    lines = rig.posts()[0].splitlines()
    assert "*Pending approval* (20):" in lines
    assert "• … and 5 more (`/qlp status`)" in lines
    assert sum(1 for line in lines if line.startswith("• #")) == 15


@pytest.mark.parametrize(("holder", "shown"),
                         [("U0OPS", "<@U0OPS>"), ("ops <team>", "ops &lt;team&gt;")])
def test_lock_holders_are_mentioned_or_escaped(sqlite_database: Database, holder: str,
                                               shown: str) -> None:
    rig = make_rig(sqlite_database, utc(2026, 12, 1, 9, 30))
    assert rig.environments.acquire_lock("staging", holder, None, None, None)
    rig.reminders().run_due(rig.clock.now())
    assert f"• staging: locked by {shown} since Tue 2026-12-01 09:30 UTC" in rig.posts()[0]


def test_back_to_back_windows_are_one_window(sqlite_database: Database) -> None:
    # Mon-Fri all day: announced Sunday 23:30, closing Friday 23:30; silent at the midnights.
    weekdays = {"preferred": [{"days": ["mon", "tue", "wed", "thu", "fri"]}]}
    rig = make_rig(sqlite_database, utc(2026, 12, 5, 0, 0), windows=weekdays)
    work = rig.reminders()
    assert tick_through(rig, work, utc(2026, 12, 13, 0, 0)) == [
        utc(2026, 12, 6, 23, 30), utc(2026, 12, 11, 23, 30), utc(2026, 12, 12, 0, 0)]
    assert rig.posts()[0].splitlines()[0] == (
        ":calendar: The standard window opens in 30 minutes (Mon 00:00\u201324:00 UTC).")


def test_an_always_open_window_is_never_announced(sqlite_database: Database) -> None:
    always = {"preferred": [{"days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"],
                             "start": "00:00", "end": "24:00"}]}
    rig = make_rig(sqlite_database, utc(2026, 12, 1, 0, 0), windows=always)
    work = rig.reminders()
    assert work.upcoming(rig.clock.now(), timedelta(days=14)) == []
    rig.clock.set(utc(2026, 12, 1, 23, 45))
    assert work.run_due(rig.clock.now()) == 0
    assert rig.posts() == []
