"""``LockReminders``: remind a person who has held a manual lock longer than the policy allows.

A manual lock (``/qlp lock <env>``: no deployment holds it) older than ``lock_max_age`` gets its
holder a direct message, and another one each further ``lock_max_age`` while it is still held:
reminder *n* falls due at ``locked_since + n * lock_max_age``. Each goes through the outbox with
a ``dedup_key`` naming the lock (environment and since when) and *n*, so however many ticks,
replicas or restarts see it due, it is sent once. A tick that finds several reminders overdue
(the bot was down) sends only the latest.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from bot.formatting import escape, local_time
from procedures.durations import format_duration
from procedures.policy import Policy
from storage.environments import EnvironmentStateRepository
from storage.models import EnvironmentStateRow
from storage.outbox import Outbox


def reminder_number(locked_since: datetime, now: datetime, max_age: timedelta) -> int:
    """How many reminders have fallen due by ``now`` (0: the lock is not too old yet)."""
    if now < locked_since:
        return 0
    return int((now - locked_since) // max_age)


def reminder_text(row: EnvironmentStateRow, now: datetime, policy: Policy, number: int) -> str:
    """The DM: which environment, since when, why, and how to release it."""
    env = row.environment
    since = row.locked_since
    assert since is not None
    again = "" if number == 1 else f" (reminder {number})"
    reason = f" Reason: {escape(row.lock_reason)}." if row.lock_reason else ""
    return (f":hourglass: You have held the lock on *{env}* since "
            f"{local_time(since, policy.zone)} ({format_duration(now - since)}), longer than "
            f"the {format_duration(policy.lock_max_age)} the policy allows{again}.{reason} "
            f"Deployments to {env} are refused while it is held. When you are done, release it "
            f"with `/qlp unlock {env}`.")


class LockReminders:
    """``DueWork``: reminders to holders of manual locks older than ``policy.lock_max_age``."""

    name = "lock-reminders"

    def __init__(self, environments: EnvironmentStateRepository, outbox: Outbox,
                 policy: Policy) -> None:
        self._environments = environments
        self._outbox = outbox
        self._policy = policy

    def _manual_locks(self) -> list[EnvironmentStateRow]:
        return [row for row in self._environments.all()
                if row.lock_holder and row.lock_deployment_id is None
                and row.locked_since is not None]

    @staticmethod
    def dedup_key(row: EnvironmentStateRow, number: int) -> str:
        """The outbox key of reminder ``number`` about this lock (one lock = env + since)."""
        assert row.locked_since is not None
        return f"lock-reminder:{row.environment}:{row.locked_since.isoformat()}:{number}"

    def run_due(self, now: datetime) -> int:
        """Queue the reminder due now for each lock held too long; returns how many are due."""
        max_age = self._policy.lock_max_age
        due = 0
        for row in self._manual_locks():
            assert row.locked_since is not None and row.lock_holder is not None
            number = reminder_number(row.locked_since, now, max_age)
            if number < 1:
                continue
            due += 1
            # channel = the holder's user id: chat.postMessage delivers it as a DM from the bot.
            self._outbox.enqueue(
                row.lock_holder, "post",
                {"text": reminder_text(row, now, self._policy, number)},
                dedup_key=self.dedup_key(row, number))
        return due

    def upcoming(self, now: datetime, horizon: timedelta) -> list[datetime]:
        """When the next reminder of each held manual lock falls due, within ``horizon``."""
        max_age = self._policy.lock_max_age
        moments = []
        for row in self._manual_locks():
            assert row.locked_since is not None
            following = row.locked_since + (reminder_number(row.locked_since, now, max_age) + 1) \
                * max_age
            if now < following <= now + horizon:
                moments.append(following)
        return sorted(moments)
