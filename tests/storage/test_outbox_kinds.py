"""The outbox's sender-facing extras: claim and count by kind, release, supersede, joint marks."""

from __future__ import annotations

from datetime import timedelta

import pytest

from procedures.clock import FixedClock
from procedures.model import ProcedureKind
from storage.db import Database
from storage.deployments import DeploymentRepository
from storage.outbox import Outbox


def test_claim_due_only_hands_out_the_kinds_asked_for(outbox: Outbox, clock: FixedClock) -> None:
    post = outbox.enqueue("C1", "post", {}, ordering_key="a")
    page = outbox.enqueue("pd", "pagerduty", {}, ordering_key="b")
    mail = outbox.enqueue("ops", "email", {}, ordering_key="c")
    update = outbox.enqueue("C1", "update", {}, ordering_key="d")
    slack = outbox.claim_due(clock.now(), 10, kinds=("post", "update", "ephemeral"))
    assert [m.id for m in slack] == [post, update]
    assert [m.id for m in outbox.claim_due(clock.now(), 10, kinds=["pagerduty"])] == [page]
    assert [m.id for m in outbox.claim_due(clock.now(), 10)] == [mail]  # no filter: any kind


def test_kinds_do_not_break_the_order_of_a_key(outbox: Outbox, clock: FixedClock) -> None:
    page = outbox.enqueue("pd", "pagerduty", {}, ordering_key="k")
    post = outbox.enqueue("C1", "post", {}, ordering_key="k")
    # The key's head is the page: the Slack sender waits for the PagerDuty sender.
    assert outbox.claim_due(clock.now(), 10, kinds=("post",)) == []
    claimed = outbox.claim_due(clock.now(), 10, kinds=("pagerduty",))
    assert [m.id for m in claimed] == [page]
    outbox.mark_sent(page, now=clock.now())
    assert [m.id for m in outbox.claim_due(clock.now(), 10, kinds=("post",))] == [post]


def test_pending_count_by_kind(outbox: Outbox, clock: FixedClock) -> None:
    outbox.enqueue("C1", "post", {}, ordering_key="a")
    outbox.enqueue("C1", "update", {}, ordering_key="b")
    outbox.enqueue("pd", "pagerduty", {}, ordering_key="c")
    assert outbox.pending_count() == 3
    assert outbox.pending_count(("post", "update")) == 2
    assert outbox.pending_count(("email",)) == 0


def test_release_hands_a_claim_back_without_counting_an_attempt(
    outbox: Outbox, clock: FixedClock
) -> None:
    first = outbox.enqueue("C1", "post", {}, ordering_key="a")
    outbox.enqueue("C1", "post", {}, ordering_key="a")
    (claimed,) = outbox.claim_due(clock.now(), 10)
    assert claimed.attempts == 1
    assert outbox.release(first, clock.now() + timedelta(seconds=2), "paced")
    released = outbox.get(first)
    assert released is not None
    assert (released.state, released.attempts, released.last_error) == ("pending", 0, "paced")
    assert outbox.claim_due(clock.now(), 10) == []  # not due yet, and the key waits behind it
    clock.advance(timedelta(seconds=2))
    (again,) = outbox.claim_due(clock.now(), 10)
    assert (again.id, again.attempts) == (first, 1)
    assert outbox.release(first, clock.now())  # note None: last_error kept
    assert outbox.get(first).last_error == "paced"  # type: ignore[union-attr]
    outbox.mark_dead(first, "gone")
    assert outbox.release(first, clock.now()) is False  # only pending messages come back


def test_newest_pending_id_per_key_and_kind(outbox: Outbox, clock: FixedClock) -> None:
    assert outbox.newest_pending_id("card:1") is None
    u1 = outbox.enqueue("C1", "update", {"n": 1}, ordering_key="card:1")
    u2 = outbox.enqueue("C1", "update", {"n": 2}, ordering_key="card:1")
    post = outbox.enqueue("C1", "post", {}, ordering_key="card:1")
    outbox.enqueue("C1", "update", {"n": 9}, ordering_key="card:2")
    assert outbox.newest_pending_id("card:1") == post
    assert outbox.newest_pending_id("card:1", "update") == u2
    outbox.claim_due(clock.now(), 10)
    outbox.mark_sent(u1, now=clock.now(), note=f"superseded by #{u2}")
    assert outbox.get(u1).last_error == f"superseded by #{u2}"  # type: ignore[union-attr]
    assert outbox.newest_pending_id("card:1", "update") == u2


def test_mark_sent_joins_the_callers_transaction(
    database: Database, outbox: Outbox, clock: FixedClock
) -> None:
    deployments = DeploymentRepository(database, clock)
    deployment = deployments.create(ProcedureKind.STANDARD, "v1", "staging", "U1")
    assert deployment.id is not None
    card = outbox.enqueue("C1", "post", {"card_for": deployment.id}, ordering_key="channel:C1")
    outbox.claim_due(clock.now(), 10)
    with pytest.raises(RuntimeError), outbox.database.session() as s:
        assert outbox.mark_sent(card, "1.000100", now=clock.now(), session=s)
        deployments.update_fields(deployment.id, session=s, card_ts="1.000100", channel="C1")
        raise RuntimeError("crash before commit")
    assert outbox.get(card).state == "pending"  # type: ignore[union-attr]
    assert deployments.get(deployment.id).card_ts is None  # type: ignore[union-attr]
    with outbox.database.session() as s:
        assert outbox.mark_sent(card, "1.000100", now=clock.now(), session=s)
        deployments.update_fields(deployment.id, session=s, card_ts="1.000100", channel="C1")
    assert outbox.get(card).slack_ts == "1.000100"  # type: ignore[union-attr]
    assert deployments.get(deployment.id).card_ts == "1.000100"  # type: ignore[union-attr]
