"""The emergency's "backup first" step on a platform that can read the age of the database's
newest backup (``SupportsBackupAge``) and on one that cannot: it never claims a backup was
taken, broadcasts a stale, missing or unknown one, and never stops the emergency for it.

The step runs by hand (``StepRunner``) on the in-memory ``FakePlatform``; the Azure platform's
side of the capability is covered end to end in ``tests/azure/test_azure_e2e_other_playbooks``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

import httpx
import pytest

from procedures.checks.http import HttpChecker
from procedures.clock import FixedClock
from procedures.errors import ExternalServiceError
from procedures.model import ProcedureKind
from procedures.platforms.base import BackupReport, SupportsBackupAge
from procedures.playbooks.emergency import emergency_playbook
from tests.fakes.platform import FakePlatform
from tests.fakes.policies import make_policy
from tests.playbooks.test_standard_steps import StepRunner

NOW = datetime(2026, 12, 1, 11, 0, tzinfo=UTC)
NONE_TAKEN = ("No database backup was taken: on production the bot can read the database's "
              "backups but cannot take one.")


@dataclass(frozen=True)
class Newest:
    """A BackupReport."""

    fresh: bool
    line: str

    def describe(self) -> str:
        return self.line


class BackupReadingPlatform(FakePlatform):
    """A FakePlatform that also reports its database's newest backup (or fails to)."""

    def __init__(self, answer: Newest | ExternalServiceError | None) -> None:
        super().__init__()
        self.answer = answer
        self.asked: list[datetime] = []

    def newest_backup(self, now: datetime) -> BackupReport | None:
        self.asked.append(now)
        if isinstance(self.answer, ExternalServiceError):
            raise self.answer
        return self.answer


@dataclass
class Runner(StepRunner):
    """StepRunner that also keeps which reports were broadcast."""

    broadcasts: list[str] = field(default_factory=list)

    def report(self, text: str, *, broadcast: bool = False) -> None:
        super().report(text, broadcast=broadcast)
        if broadcast:
            self.broadcasts.append(text)


def _snapshot(platform: FakePlatform) -> tuple[dict[str, object], Runner]:
    http = HttpChecker(transport=httpx.MockTransport(lambda request: httpx.Response(200)))
    runner = Runner(platform=platform, metrics=None, policy=make_policy(),  # type: ignore[arg-type]
                    clock=FixedClock(NOW), version="1.1.0", kind=ProcedureKind.EMERGENCY,
                    options={"category": "outage"})
    try:
        result = runner.run(emergency_playbook(http=http), "snapshot")
    finally:
        http.close()
    assert result is not None
    return dict(result), runner


def test_a_platform_that_cannot_read_backups_changes_nothing() -> None:
    platform = FakePlatform()
    assert not isinstance(platform, SupportsBackupAge)
    result, runner = _snapshot(platform)
    assert "database_backup" not in result
    assert (result["live_slot"], result["target_slot"]) == ("blue", "green")
    assert not any("backup" in text for text in runner.reports)


def test_a_fresh_backup_is_reported_never_claimed_as_taken() -> None:
    platform = BackupReadingPlatform(Newest(True, "db: latest backup 03:00 UTC (8h old)"))
    assert isinstance(platform, SupportsBackupAge)
    result, runner = _snapshot(platform)
    assert platform.asked == [NOW]
    assert result["database_backup"] == {"taken": False, "checked": True, "fresh": True,
                                         "detail": "db: latest backup 03:00 UTC (8h old)"}
    assert f"{NONE_TAKEN} Newest: db: latest backup 03:00 UTC (8h old)." in runner.reports
    assert runner.broadcasts == []
    assert result["target_slot"] == "green"  # the snapshot itself is unchanged


@pytest.mark.parametrize("answer, said", [
    (Newest(False, "db: no completed backup at all"),
     f"{NONE_TAKEN} Newest: db: no completed backup at all. The emergency goes on without "
     "waiting for a backup."),
    (ExternalServiceError("Azure Database for PostgreSQL", "AuthorizationFailed: no read",
                          retryable=True),
     f"{NONE_TAKEN} Its newest backup is unknown: Azure Database for PostgreSQL: "
     "AuthorizationFailed: no read. The emergency goes on without waiting for a backup."),
])
def test_a_stale_or_unknown_backup_is_broadcast_and_the_emergency_goes_on(
        answer: Newest | ExternalServiceError, said: str) -> None:
    result, runner = _snapshot(BackupReadingPlatform(answer))
    assert runner.broadcasts == [said]
    backup = result["database_backup"]
    assert isinstance(backup, dict) and backup["taken"] is False
    assert result["target_slot"] == "green"


def test_no_database_named_is_said_too() -> None:
    result, runner = _snapshot(BackupReadingPlatform(None))
    assert result["database_backup"] == {"taken": False, "checked": False, "error": None}
    assert ("No database backup was taken or checked: the platform settings of production "
            "name no database whose backups the bot can read.") in runner.reports
    assert runner.broadcasts == []
