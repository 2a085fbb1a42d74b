"""The pre-deployment snapshot and the emergency's "backup first" take a database backup through
the platform's ``SupportsBackup`` (seed 3.1 step 1, ``create-snapshot.sh``), and the checklist
ticks "Pre-deployment backup created" / "Emergency backup created" from that evidence only.

The steps run by hand (``StepRunner``) on the in-memory ``FakePlatform`` given the capability;
the local platform's pg_dump and the Azure on-demand backup have their own tests
(``tests/platforms/test_local_backup.py``, ``tests/azure/test_on_demand_backup.py``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from procedures.checklists import (
    EMERGENCY_ITEMS,
    STANDARD_ITEMS,
    StepFact,
    item_key,
    states,
)
from procedures.checks.http import HttpChecker
from procedures.clock import FixedClock
from procedures.errors import ExternalServiceError, StepFailure
from procedures.model import ProcedureKind, StepState
from procedures.platforms.base import DatabaseBackup, SupportsBackup
from procedures.playbooks.emergency import emergency_playbook
from procedures.playbooks.standard import NO_DATABASE, standard_playbook
from tests.fakes.platform import FakePlatform
from tests.fakes.policies import make_policy
from tests.playbooks.test_standard_steps import StepRunner

NOW = datetime(2026, 12, 2, 10, 30, tzinfo=UTC)
PRE = item_key("Pre-deployment backup created")
EMERGENCY = item_key("Emergency backup created")


class BackupPlatform(FakePlatform):
    """A FakePlatform with the SupportsBackup capability: ``target`` None means no database;
    ``outcome`` is what ``take_backup`` does (a DatabaseBackup to return, or an error)."""

    def __init__(self, target: str | None, outcome: DatabaseBackup | Exception | None = None,
                 *, clock: FixedClock | None = None, takes: float = 12.0) -> None:
        super().__init__()
        self.target = target
        self.outcome = outcome
        self.clock = clock
        self.takes = takes
        self.taken: list[str] = []

    def backup_target(self) -> str | None:
        return self.target

    def take_backup(self, name: str, *, report: Any, sleep: Any) -> DatabaseBackup:
        self.taken.append(name)
        sleep(self.takes)  # a backup takes (model) time, through the step's sleep
        if isinstance(self.outcome, Exception):
            raise self.outcome
        if self.outcome is not None:
            return self.outcome
        return DatabaseBackup(True, name=f"{name}.dump", location=f"/backups/{name}.dump",
                              size_bytes=3 * 1024 * 1024 + 200,
                              duration=timedelta(seconds=self.takes),
                              restore_hint="pg_restore ...")


@dataclass
class Runner(StepRunner):
    broadcasts: list[str] = field(default_factory=list)

    def report(self, text: str, *, broadcast: bool = False) -> None:
        super().report(text, broadcast=broadcast)
        if broadcast:
            self.broadcasts.append(text)


def _http() -> HttpChecker:
    return HttpChecker(transport=httpx.MockTransport(lambda request: httpx.Response(200)))


def _run(platform: FakePlatform, *, kind: ProcedureKind = ProcedureKind.STANDARD
         ) -> tuple[dict[str, Any], Runner]:
    http = _http()
    options = {"category": "outage"} if kind is ProcedureKind.EMERGENCY else {}
    runner = Runner(platform=platform, metrics=None, policy=make_policy(),  # type: ignore[arg-type]
                    clock=FixedClock(NOW), version="1.3.0", kind=kind, options=options,
                    deployment_id=42)
    playbook = (emergency_playbook(http=http) if kind is ProcedureKind.EMERGENCY
                else standard_playbook(http=http))
    try:
        result = runner.run(playbook, "snapshot")
    finally:
        http.close()
    assert result is not None
    return dict(result), runner


def _checklist(result: dict[str, Any] | None, state: StepState = StepState.SUCCEEDED,
               items: tuple[Any, ...] = STANDARD_ITEMS) -> dict[str, Any]:
    facts = [StepFact("snapshot", state, NOW, result)]
    return {s.item.key: s for s in states(items, {}, facts)}


def test_the_snapshot_takes_a_backup_and_reports_name_size_and_duration() -> None:
    platform = BackupPlatform("postgresql://qlp@127.0.0.1:5432/qlp")
    assert isinstance(platform, SupportsBackup)
    result, runner = _run(platform)
    assert platform.taken == ["pre-deploy-42-20261202T103000Z"]
    backup = result["database_backup"]
    assert backup == {"taken": True, "name": "pre-deploy-42-20261202T103000Z.dump",
                      "location": "/backups/pre-deploy-42-20261202T103000Z.dump",
                      "size_bytes": 3 * 1024 * 1024 + 200, "duration_s": 12.0}
    said = "\n".join(runner.reports)
    assert "pre-deploy-42-20261202T103000Z.dump completed" in said
    assert "3.0 MiB" in said and "took 12s" in said
    # The live colour's configuration is still recorded, and nothing was switched.
    assert (result["live_slot"], result["target_slot"]) == ("blue", "green")
    assert set(result["slots"]) == {"blue", "green"}
    assert runner.switches == [] and not any(c.operation == "switch" for c in platform.calls)
    assert runner.slept == 12.0
    tick = _checklist(result)[PRE].tick
    assert tick is not None and tick.step == "snapshot"


def test_no_database_says_so_and_the_item_stays_unticked_with_the_reason() -> None:
    result, runner = _run(BackupPlatform(None))
    assert result["database_backup"] == {"taken": False, "reason": NO_DATABASE}
    assert f"Database backup: {NO_DATABASE}." in runner.reports
    state = _checklist(result)[PRE]
    assert state.tick is None and state.reason == NO_DATABASE
    assert result["target_slot"] == "green"


def test_a_database_that_cannot_take_one_by_design_is_said_plainly_and_broadcast() -> None:
    reason = ("PostgreSQL server qlp-prod-db cannot take an on-demand backup (its tier or "
              "state does not allow it): ...")
    platform = BackupPlatform("PostgreSQL server qlp-prod-db",
                              DatabaseBackup(False, name="x", location="PostgreSQL server "
                                             "qlp-prod-db", reason=reason))
    result, runner = _run(platform)
    assert result["database_backup"]["taken"] is False
    assert runner.broadcasts == [f"Database backup NOT taken: {reason}."]
    state = _checklist(result)[PRE]
    assert state.tick is None and state.reason == reason


@pytest.mark.parametrize("error", [
    StepFailure("pg_dump failed (exit 1): connection refused"),
    ExternalServiceError("Azure Database for PostgreSQL", "AuthorizationFailed: no write"),
])
def test_a_failing_backup_fails_the_step_before_anything_is_switched(error: Exception) -> None:
    platform = BackupPlatform("db", error)
    with pytest.raises(type(error)):
        _run(platform)
    assert not any(c.operation in ("deploy", "switch") for c in platform.calls)
    # A failed snapshot ticks nothing.
    assert _checklist(None, StepState.FAILED)[PRE].tick is None


def test_a_platform_without_the_capability_says_so() -> None:
    platform = FakePlatform()
    assert not isinstance(platform, SupportsBackup)
    result, _ = _run(platform)
    assert result["database_backup"]["taken"] is False
    assert "cannot take a database backup" in result["database_backup"]["reason"]
    assert _checklist(result)[PRE].tick is None


def test_the_migration_backup_step_still_ticks_without_evidence() -> None:
    facts = [StepFact("backup", StepState.SUCCEEDED, NOW, {"path": "/b/x.dump"})]
    ticked = {s.item.key: s for s in states(STANDARD_ITEMS, {}, facts)}[PRE].tick
    assert ticked is not None and ticked.step == "backup"


def test_the_emergency_backs_up_first_and_ticks_its_item() -> None:
    platform = BackupPlatform("postgresql://qlp@127.0.0.1:5432/qlp")
    result, runner = _run(platform, kind=ProcedureKind.EMERGENCY)
    assert platform.taken == ["emergency-backup-42-20261202-103000"]
    assert result["database_backup"]["taken"] is True
    assert result["target_slot"] == "green"
    assert any("emergency-backup-42-20261202-103000.dump completed" in r for r in runner.reports)
    tick = _checklist(result, items=EMERGENCY_ITEMS)[EMERGENCY].tick
    assert tick is not None and tick.step == "snapshot"


def test_an_emergency_whose_backup_fails_stops_before_deploying() -> None:
    platform = BackupPlatform("db", StepFailure("pg_dump failed (exit 1): disk full"))
    with pytest.raises(StepFailure, match="disk full"):
        _run(platform, kind=ProcedureKind.EMERGENCY)
    assert not any(c.operation in ("deploy", "switch") for c in platform.calls)


def test_an_emergency_without_a_database_reports_the_newest_backup_it_can_read() -> None:
    @dataclass(frozen=True)
    class Newest:
        fresh: bool
        line: str

        def describe(self) -> str:
            return self.line

    class Reading(BackupPlatform):
        def newest_backup(self, now: datetime) -> Newest:
            return Newest(False, "db: no completed backup at all")

    result, runner = _run(Reading(None), kind=ProcedureKind.EMERGENCY)
    backup = result["database_backup"]
    assert backup["taken"] is False and backup["reason"] == NO_DATABASE
    assert backup["newest"] == {"checked": True, "fresh": False,
                                "detail": "db: no completed backup at all"}
    assert "Newest database backup: db: no completed backup at all." in runner.broadcasts
    state = _checklist(result, items=EMERGENCY_ITEMS)[EMERGENCY]
    assert state.tick is None and state.reason == NO_DATABASE
