"""The seed's checklists: items, stable keys, auto ticks from step states, both stored formats."""

from __future__ import annotations

from datetime import UTC, datetime

from procedures.checklists import (
    BOT,
    EMERGENCY_ITEMS,
    STANDARD_ITEMS,
    StepFact,
    Tick,
    apply_selection,
    auto_ticks,
    groups,
    item_key,
    items_for,
    manual_ticks,
    states,
    store_ticks,
)
from procedures.model import ProcedureKind, StepState
from procedures.playbooks.emergency import checklist_items

T1 = datetime(2026, 12, 1, 11, 5, tzinfo=UTC)
T2 = datetime(2026, 12, 1, 11, 40, tzinfo=UTC)


def test_the_seeds_lists_in_order_with_stable_unique_keys() -> None:
    assert [(g, len(i)) for g, i in groups(STANDARD_ITEMS)] == [
        ("Pre-Deployment", 8), ("During Deployment", 7), ("Post-Deployment", 6)]
    assert [(g, len(i)) for g, i in groups(EMERGENCY_ITEMS)] == [
        ("Emergency Authorization", 4), ("Emergency Deployment", 5), ("Post-Emergency", 5)]
    for items in (STANDARD_ITEMS, EMERGENCY_ITEMS):
        keys = [item.key for item in items]
        assert len(set(keys)) == len(keys)
        # Slack's checkboxes take at most 10 options and 75-character labels.
        assert all(len([i for i in group if i.manual]) <= 10 for _, group in groups(items))
        assert all(len(item.text) <= 75 for item in items)
    assert item_key("Health checks passing") == "health-checks-passing"
    assert item_key("Tests passing (unit, integration, security)") == \
        "tests-passing-unit-integration-security"


def test_which_kind_gets_which_list() -> None:
    assert items_for(ProcedureKind.EMERGENCY) is EMERGENCY_ITEMS
    for kind in ("standard", "hotfix", "rollback", "migration"):
        assert items_for(kind) is STANDARD_ITEMS


def test_auto_items_name_the_steps_that_tick_them() -> None:
    auto = {item.key: item.auto_steps for item in STANDARD_ITEMS if not item.manual}
    assert auto["health-checks-passing"] == ("wait_healthy", "extended_health")
    assert auto["application-deployed-successfully"] == ("switch_traffic",)
    assert auto["extended-monitoring-completed-30-minutes"] == ("monitor",)
    assert auto["performance-baseline-updated"] == ("record_baseline",)
    # A real backup ticks it (the migration's pg_dump), never a deployment's snapshot.
    assert auto["pre-deployment-backup-created"] == ("backup", "snapshot")
    emergency = {item.key: item for item in EMERGENCY_ITEMS}
    assert emergency["post-emergency-review-scheduled"].manual
    assert emergency["emergency-backup-created"].auto_steps == ("snapshot",)  # its backup
    assert emergency["critical-functionality-verified"].auto_steps == ("verify",)


def test_only_succeeded_steps_tick() -> None:
    steps = [StepFact("backup", StepState.SUCCEEDED, T1),
             StepFact("wait_healthy", StepState.FAILED, T1),
             StepFact("extended_health", StepState.SUCCEEDED, T2),
             StepFact("switch_traffic", StepState.UNDONE, T1),
             StepFact("monitor", StepState.RUNNING)]
    ticks = auto_ticks(STANDARD_ITEMS, steps)
    assert ticks == {
        "pre-deployment-backup-created": Tick(BOT, T1, "backup"),
        "health-checks-passing": Tick(BOT, T2, "extended_health"),
    }


def test_manual_ticks_in_the_mapping_format_round_trip() -> None:
    stored = {"code-reviewed-and-approved": {"done_by": "U0DEV", "at": T1.isoformat()},
              "health-checks-passing": {"done_by": "U0DEV", "at": None},  # auto: ignored
              "no-such-item": {"done_by": "U0DEV"}}
    ticks = manual_ticks(stored, STANDARD_ITEMS)
    assert ticks == {"code-reviewed-and-approved": Tick("U0DEV", T1)}
    assert store_ticks(stored, STANDARD_ITEMS, ticks) == {
        "code-reviewed-and-approved": {"done_by": "U0DEV", "at": T1.isoformat()}}
    assert manual_ticks(None, STANDARD_ITEMS) == {}


def test_the_emergency_commands_list_is_read_and_written_as_a_list() -> None:
    stored = checklist_items()
    assert manual_ticks(stored, EMERGENCY_ITEMS) == {}
    ticks = {"business-impact-assessed": Tick("U0LEAD1", T1)}
    written = store_ticks(stored, EMERGENCY_ITEMS, ticks)
    assert isinstance(written, list) and len(written) == len(stored) == 14
    assert written[1] == {"section": "Emergency Authorization",
                          "item": "Business impact assessed", "done_by": "U0LEAD1",
                          "at": T1.isoformat()}
    assert written[0]["done_by"] is None and "at" not in written[0]
    assert manual_ticks(written, EMERGENCY_ITEMS) == ticks
    assert manual_ticks(store_ticks(written, EMERGENCY_ITEMS, {}), EMERGENCY_ITEMS) == {}


def test_a_selection_is_diffed_within_its_element_only() -> None:
    pre = [item for group, items in groups(STANDARD_ITEMS) if group == "Pre-Deployment"
           for item in items]
    offered = {item.key for item in pre}
    old = {"code-reviewed-and-approved": Tick("U0DEV", T1),
           "documentation-updated": Tick("U0DEV", T1)}  # another group: untouched
    new, ticked, unticked = apply_selection(
        STANDARD_ITEMS, offered, {"rollback-plan-prepared", "staging-deployment-tested",
                                  "health-checks-passing"}, old, user="U0LEAD1", now=T2)
    assert ticked == ["staging-deployment-tested", "rollback-plan-prepared"]
    assert unticked == ["code-reviewed-and-approved"]
    assert new == {"documentation-updated": Tick("U0DEV", T1),
                   "staging-deployment-tested": Tick("U0LEAD1", T2),
                   "rollback-plan-prepared": Tick("U0LEAD1", T2)}
    # The same selection again changes nothing (a retried or repeated press).
    assert apply_selection(STANDARD_ITEMS, offered, {"rollback-plan-prepared",
                                                     "staging-deployment-tested"},
                           new, user="U0LEAD1", now=T2)[1:] == ([], [])


def test_states_combine_people_and_procedure() -> None:
    stored = {"team-notification-sent": {"done_by": "U0DEV", "at": T1.isoformat()}}
    result = {s.item.key: s.tick for s in states(
        STANDARD_ITEMS, stored, [StepFact("smoke_tests", StepState.SUCCEEDED, T2)])}
    assert len(result) == len(STANDARD_ITEMS)
    assert result["team-notification-sent"] == Tick("U0DEV", T1)
    assert result["smoke-tests-completed"] == Tick(BOT, T2, "smoke_tests")
    assert result["code-reviewed-and-approved"] is None
