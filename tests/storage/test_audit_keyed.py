"""The keyed audit chain: rewritten without the key, it names the first altered row.

Finding 10 of issue 13: with write access to the database, who approved deployment #1 was
changed, every hash recomputed (plain SHA-256), and the unkeyed chain still verified. Each test
runs on SQLite and PostgreSQL (the ``database`` fixture).
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from datetime import timedelta

import pytest

from procedures.clock import FixedClock
from procedures.model import ProcedureKind
from storage.audit import (
    ROTATION_ACTION,
    Anchor,
    AuditKey,
    AuditKeyring,
    AuditLog,
    event_hash,
    keyed_event_hash,
    use_keyring,
)
from storage.audit_group import GroupCommitAuditLog
from storage.db import Database
from storage.decisions import DecisionRecorder
from storage.deployments import DeploymentRepository
from tests.storage.audit_attack import cut_back, rewrite


def _key(key_id: str | None = None) -> AuditKey:
    return AuditKey.of(secrets.token_hex(32), key_id)


@pytest.fixture
def key() -> Iterator[AuditKey]:
    """The process's audit key (as ``qlp-bot`` installs it from QLP_AUDIT_KEY)."""
    key = _key()
    use_keyring(AuditKeyring(key))
    yield key
    use_keyring(None)


def _approved_deployment_one(database: Database, clock: FixedClock) -> int:
    """Deployment #1 requested, approved by U0ALICE, then some more history; returns the id of
    the approval's audit row."""
    deployments = DeploymentRepository(database, clock)
    audit = AuditLog(database, clock)
    audit.append("U0DEV", "command", detail={"text": "/qlp deploy v1.2.3"})
    deployment = deployments.create(ProcedureKind.STANDARD, "v1.2.3", "production", "U0DEV",
                                    plan_hash="plan-a")
    assert deployment.id == 1
    audit.append("U0DEV", "deployment.requested", deployment_id=1, environment="production")
    clock.advance(timedelta(minutes=2))
    DecisionRecorder(database, clock).approve(1, "U0ALICE", required=1)
    for n in range(5):
        clock.advance(timedelta(seconds=30))
        audit.append("U0BOB", "command", detail={"text": f"/qlp status {n}"})
    approval = [e for e in audit.recent(100, deployment_id=1)
                if e.action == "deployment.approved"]
    assert len(approval) == 1 and approval[0].actor == "U0ALICE"
    assert approval[0].id is not None
    return approval[0].id


def _approver_becomes(name: str, approval_id: int):  # type: ignore[no-untyped-def]
    def change(event):  # type: ignore[no-untyped-def]
        if event.id == approval_id:
            event.actor = name
    return change


def test_rows_are_hmac_signed_and_name_their_key(
        database: Database, clock: FixedClock, key: AuditKey) -> None:
    event = AuditLog(database, clock).append("U1", "lock", environment="staging",
                                             detail={"reason": "x"})
    assert event.key_id == key.key_id
    fields = (event.prev_hash, event.at, "U1", "lock", None, "staging", {"reason": "x"})
    assert event.hash == keyed_event_hash(key, *fields)
    assert event.hash != event_hash(*fields)
    result = AuditLog(database, clock).verify()
    assert result.ok and result.signed == {key.key_id: 1} and result.unkeyed == 0


def test_approval_of_one_rewritten_without_the_key_is_named(
        database: Database, clock: FixedClock, key: AuditKey) -> None:
    """The must-show: the approver of #1 changed, all hashes recomputed the plain way."""
    approval_id = _approved_deployment_one(database, clock)
    assert AuditLog(database, clock).verify().ok
    rewrite(database, _approver_becomes("U0MALLORY", approval_id))
    result = AuditLog(database, clock).verify()
    assert not result.ok
    assert result.first_bad_id == approval_id
    assert result.checked == approval_id - 1
    assert "plain SHA-256" in (result.problem or "")
    assert not result.wrong_key


def test_a_chain_rewritten_from_its_first_row_is_reported_from_there(
        database: Database, clock: FixedClock, key: AuditKey) -> None:
    """Recomputing even the unchanged rows' hashes changes those hashes: the first row whose
    hash was replaced by a plain SHA-256 is #1, and verify says so."""
    approval_id = _approved_deployment_one(database, clock)
    rewrite(database, _approver_becomes("U0MALLORY", approval_id), from_first_row=True)
    result = AuditLog(database, clock).verify()
    assert not result.ok and result.first_bad_id == 1
    assert "plain SHA-256" in (result.problem or "")


def test_a_rewrite_that_also_drops_the_key_ids_is_named(
        database: Database, clock: FixedClock, key: AuditKey) -> None:
    approval_id = _approved_deployment_one(database, clock)
    rewrite(database, _approver_becomes("U0MALLORY", approval_id),
            drop_key_id_from=approval_id)
    result = AuditLog(database, clock).verify()
    assert not result.ok and result.first_bad_id == approval_id
    assert "carries no key id" in (result.problem or "")


def test_a_chain_rewritten_whole_as_unkeyed_is_not_proven(
        database: Database, clock: FixedClock, key: AuditKey) -> None:
    approval_id = _approved_deployment_one(database, clock)
    rewrite(database, _approver_becomes("U0MALLORY", approval_id), drop_key_id_from=1)
    result = AuditLog(database, clock).verify()
    assert not result.ok
    assert "none of the" in (result.problem or "") and "without the key" in (result.problem or "")


def test_a_wrong_key_is_reported_as_such(database: Database, clock: FixedClock,
                                         key: AuditKey) -> None:
    _approved_deployment_one(database, clock)
    other = _key()
    result = AuditLog(database, clock).verify(AuditKeyring(other))
    assert not result.ok and result.wrong_key and result.first_bad_id == 1
    assert key.key_id in (result.problem or "") and other.key_id in (result.problem or "")
    # The same explicit id on another secret: every row fails, said as a wrong key.
    use_keyring(AuditKeyring(_key("prod-2026")))
    AuditLog(database, clock).append("U1", "a")
    AuditLog(database, clock).append("U1", "b")
    wrong = AuditLog(database, clock).verify(AuditKeyring(_key("prod-2026"), [key]))
    assert not wrong.ok and wrong.wrong_key
    assert "is wrong" in (wrong.problem or "")


def test_unkeyed_rows_from_before_stay_verifiable_and_are_sealed(
        database: Database, clock: FixedClock) -> None:
    legacy = AuditLog(database, clock)  # no key anywhere: the chain as it was
    for n in range(3):
        legacy.append("U1", f"old-{n}")
    assert legacy.verify().ok
    key = _key()
    keyed = AuditLog(database, clock, AuditKeyring(key))
    keyed.append("U1", "new")
    events = list(reversed(keyed.recent(10)))
    assert [e.action for e in events] == ["old-0", "old-1", "old-2", ROTATION_ACTION, "new"]
    assert events[3].detail == {"from": "unkeyed", "to": key.key_id}
    assert [e.key_id for e in events] == [None, None, None, key.key_id, key.key_id]
    result = keyed.verify()
    assert result.ok and result.unkeyed == 3 and result.signed == {key.key_id: 2}
    # The sealed legacy rows cannot be rewritten either: the first signed row covers them.
    rewrite(database, lambda e: setattr(e, "actor", "U0MALLORY") if e.id == 2 else None,
            key=None)
    broken = keyed.verify()
    assert not broken.ok and broken.first_bad_id == 4


def test_rotation_marks_the_switch_and_old_keys_still_verify(
        database: Database, clock: FixedClock) -> None:
    old, new = _key(), _key()
    AuditLog(database, clock, AuditKeyring(old)).append("U1", "before")
    rotated = AuditLog(database, clock, AuditKeyring(new, [old]))
    rotated.append("U1", "after")
    rotated.append("U1", "after-2")  # one rotation row, not one per append
    events = list(reversed(rotated.recent(10)))
    assert [e.action for e in events] == ["before", ROTATION_ACTION, "after", "after-2"]
    assert events[1].detail == {"from": old.key_id, "to": new.key_id}
    result = rotated.verify()
    assert result.ok and result.signed == {old.key_id: 1, new.key_id: 3}
    without_old = rotated.verify(AuditKeyring(new))
    assert not without_old.ok and without_old.wrong_key and without_old.first_bad_id == 1
    assert "QLP_AUDIT_OLD_KEYS" in (without_old.problem or "")


def test_group_commit_signs_its_rows(database: Database, clock: FixedClock,
                                     key: AuditKey) -> None:
    AuditLog(database, clock, AuditKeyring(_key())).append("U1", "earlier key")
    group = GroupCommitAuditLog(AuditLog(database, clock), database, clock)
    try:
        for n in range(4):
            group.record("U2", f"status-{n}")
        group.append("U2", "waited")
        result = group.verify()
    finally:
        group.close()
    assert not result.ok and result.wrong_key  # the earlier key is not given
    events = list(reversed(group.recent(10)))
    assert events[1].action == ROTATION_ACTION
    assert {e.key_id for e in events[1:]} == {key.key_id}


def test_anchors_catch_a_cut_and_a_rewrite_by_a_key_holder(
        database: Database, clock: FixedClock, key: AuditKey) -> None:
    approval_id = _approved_deployment_one(database, clock)
    audit = AuditLog(database, clock)
    head_id, head_hash, head_key = audit.head()
    assert head_key == key.key_id
    anchor = Anchor(head_id, head_hash, "test")
    assert audit.check_anchors([anchor]) == (1, [])
    # Someone holding the key rewrites the approval: the keyed chain verifies, the anchor not.
    rewrite(database, _approver_becomes("U0MALLORY", approval_id), key=key)
    assert audit.verify().ok
    checked, problems = audit.check_anchors([anchor])
    assert checked == 1 and [p[0] for p in problems] == [head_id]
    assert "rewritten" in problems[0][1]
    # Cutting the newest rows back leaves a valid shorter chain, but not the anchored row.
    cut_back(database, 3)
    assert audit.verify().ok
    _, problems = audit.check_anchors([anchor])
    assert "missing" in problems[0][1]


def test_keys_are_checked(database: Database) -> None:
    with pytest.raises(ValueError, match="at least 32"):
        AuditKey.of("short")
    with pytest.raises(ValueError, match="key id"):
        AuditKey.of("x" * 40, "bad id!")
    with pytest.raises(ValueError, match="share the id"):
        AuditKeyring(_key("same"), [_key("same")])
    assert "secret" not in repr(_key())
