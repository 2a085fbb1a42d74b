"""The notification outbox: order per key, dedup, head-blocking, retries, leases."""

from __future__ import annotations

from datetime import timedelta

import pytest

from procedures.clock import FixedClock
from procedures.model import ProcedureKind
from storage.db import Database
from storage.deployments import DeploymentRepository
from storage.outbox import Outbox
from tests.conftest import _Factory
from tests.storage.concurrency import run_concurrently


def _send_all(outbox: Outbox, clock: FixedClock) -> list[int]:
    """Deliver everything deliverable now, in the order a sender would; returns ids sent."""
    sent: list[int] = []
    while batch := outbox.claim_due(clock.now(), 10):
        for message in batch:
            assert message.id is not None
            outbox.mark_sent(message.id, f"ts-{message.id}", now=clock.now())
            sent.append(message.id)
    return sent


def test_enqueue_and_deliver_in_order_per_key(outbox: Outbox, clock: FixedClock) -> None:
    a1 = outbox.enqueue("C1", "post", {"text": "a1"}, ordering_key="a")
    b1 = outbox.enqueue("C1", "post", {"text": "b1"}, ordering_key="b")
    a2 = outbox.enqueue("C1", "post", {"text": "a2"}, ordering_key="a")
    a3 = outbox.enqueue("C1", "post", {"text": "a3"}, ordering_key="a")
    first = outbox.claim_due(clock.now(), 10)
    assert [m.id for m in first] == [a1, b1]  # only the head of each key
    assert first[0].payload == {"text": "a1"}
    assert first[0].attempts == 1
    for m in first:
        outbox.mark_sent(m.id, "1.0", now=clock.now())
    assert [m.id for m in outbox.claim_due(clock.now(), 10)] == [a2]
    outbox.mark_sent(a2, "1.1", now=clock.now())
    assert _send_all(outbox, clock) == [a3]
    assert outbox.pending_count() == 0
    stored = outbox.get(a3)
    assert stored is not None
    assert (stored.state, stored.slack_ts) == ("sent", f"ts-{a3}")
    assert stored.sent_at == clock.now()
    assert stored.sent_at.tzinfo is not None


def test_default_ordering_key_is_the_deployment_then_the_channel(
    database: Database, outbox: Outbox, clock: FixedClock
) -> None:
    deployment = DeploymentRepository(database, clock).create(
        ProcedureKind.STANDARD, "v1", "staging", "U1"
    )
    card = outbox.enqueue("C1", "post", {"card": 1}, deployment_id=deployment.id)
    reply = outbox.enqueue("C1", "post", {"reply": 1}, thread_of=deployment.id)
    other = outbox.enqueue("C2", "post", {"x": 1})
    assert outbox.get(card).ordering_key == f"deployment:{deployment.id}"
    assert outbox.get(reply).ordering_key == f"deployment:{deployment.id}"
    assert outbox.get(reply).thread_of == deployment.id
    assert outbox.get(other).ordering_key == "channel:C2"
    assert [m.id for m in outbox.claim_due(clock.now(), 10)] == [card, other]


def test_dedup_key_returns_the_existing_message(outbox: Outbox) -> None:
    first = outbox.enqueue("C1", "post", {"n": 1}, dedup_key="card:7")
    again = outbox.enqueue("C1", "post", {"n": 2}, dedup_key="card:7")
    assert first == again
    assert outbox.pending_count() == 1
    assert outbox.get(first).payload == {"n": 1}


def test_concurrent_enqueue_with_one_dedup_key_makes_one_row(
    database_factory: _Factory, clock: FixedClock
) -> None:
    url = database_factory.url(migrated=True)
    boxes = [Outbox(database_factory.open(url), clock) for _ in range(8)]
    ids = run_concurrently(
        lambda i: boxes[i].enqueue("C1", "post", {"i": i}, dedup_key="same"), 8
    )
    assert len(set(ids)) == 1
    assert boxes[0].pending_count() == 1


def test_a_failing_head_blocks_its_key_only(outbox: Outbox, clock: FixedClock) -> None:
    a1 = outbox.enqueue("C1", "post", {}, ordering_key="a")
    a2 = outbox.enqueue("C1", "post", {}, ordering_key="a")
    b1 = outbox.enqueue("C1", "post", {}, ordering_key="b")
    b2 = outbox.enqueue("C1", "post", {}, ordering_key="b")
    claimed = outbox.claim_due(clock.now(), 10)
    assert [m.id for m in claimed] == [a1, b1]
    retry_at = clock.now() + timedelta(seconds=30)
    assert outbox.mark_failed(a1, "ratelimited", retry_at, now=clock.now())
    outbox.mark_sent(b1, "1.1", now=clock.now())
    # a1 waits for its retry, and a2 waits behind it; b moves on.
    assert [m.id for m in outbox.claim_due(clock.now(), 10)] == [b2]
    outbox.mark_sent(b2, "1.2", now=clock.now())
    clock.advance(timedelta(seconds=29))
    assert outbox.claim_due(clock.now(), 10) == []
    clock.advance(timedelta(seconds=1))
    retried = outbox.claim_due(clock.now(), 10)
    assert [m.id for m in retried] == [a1]
    assert retried[0].attempts == 2
    assert retried[0].last_error == "ratelimited"
    outbox.mark_sent(a1, "1.3", now=clock.now())
    assert _send_all(outbox, clock) == [a2]


def test_a_dead_head_unblocks_its_key(outbox: Outbox, clock: FixedClock) -> None:
    a1 = outbox.enqueue("C1", "post", {}, ordering_key="a")
    a2 = outbox.enqueue("C1", "post", {}, ordering_key="a")
    outbox.claim_due(clock.now(), 10)
    assert outbox.mark_dead(a1, "channel_not_found")
    assert [m.id for m in outbox.undelivered()] == [a1, a2]
    assert [m.id for m in outbox.claim_due(clock.now(), 10)] == [a2]
    dead = outbox.get(a1)
    assert (dead.state, dead.last_error) == ("dead", "channel_not_found")
    assert outbox.mark_sent(a1, now=clock.now()) is False  # dead stays dead


def test_a_claim_is_a_lease(outbox: Outbox, clock: FixedClock) -> None:
    a1 = outbox.enqueue("C1", "post", {}, ordering_key="a")
    assert [m.id for m in outbox.claim_due(clock.now(), 10)] == [a1]
    assert outbox.claim_due(clock.now(), 10) == []  # another sender sees nothing to do
    clock.advance(timedelta(seconds=61))  # the first sender died without reporting
    again = outbox.claim_due(clock.now(), 10)
    assert [(m.id, m.attempts) for m in again] == [(a1, 2)]


def test_limit_and_kinds(outbox: Outbox, clock: FixedClock) -> None:
    ids = [outbox.enqueue("C1", "post", {}, ordering_key=f"k{i}") for i in range(5)]
    assert [m.id for m in outbox.claim_due(clock.now(), 3)] == ids[:3]
    with pytest.raises(ValueError, match="unknown notification kind"):
        outbox.enqueue("C1", "tweet", {})
    outbox.enqueue("pagerduty", "pagerduty", {"summary": "rollback failed"})
    outbox.enqueue("email", "email", {"to": "ops@example.com"})


def test_enqueue_joins_the_callers_transaction(database: Database, outbox: Outbox) -> None:
    with pytest.raises(RuntimeError), database.session() as s:
        outbox.enqueue("C1", "post", {}, session=s)
        raise RuntimeError("rolled back")
    assert outbox.pending_count() == 0


def test_concurrent_senders_never_claim_the_same_message(
    database_factory: _Factory, clock: FixedClock
) -> None:
    url = database_factory.url(migrated=True)
    boxes = [Outbox(database_factory.open(url), clock) for _ in range(6)]
    expected = {boxes[0].enqueue("C1", "post", {}, ordering_key=f"k{i}") for i in range(30)}

    def drain(i: int) -> list[int]:
        got: list[int] = []
        while batch := boxes[i].claim_due(clock.now(), 3):
            got.extend(m.id for m in batch)
        return got

    claims = run_concurrently(drain, 6)
    flat = [i for chunk in claims for i in chunk]
    assert sorted(flat) == sorted(expected)  # every message once, none twice
