"""Outbox claims name their sender (``claimed_by``); a stopped or dead sender's claims are
handed on at once instead of after their lease (``Outbox.release_claims``,
``Outbox.retry_orphaned_claims``, ``bot.orphaned_claims``). Both backends."""

from __future__ import annotations

from datetime import timedelta

from bot.orphaned_claims import OrphanedClaimsTask
from procedures.clock import FixedClock
from storage.db import Database
from storage.markers import BotMarkers
from storage.outbox import Outbox


def _outbox(database: Database, clock: FixedClock, claimant: str) -> Outbox:
    outbox = Outbox(database, clock)
    outbox.claimant = claimant
    return outbox


def test_a_claim_names_its_sender_and_every_outcome_ends_it(
        database: Database, clock: FixedClock) -> None:
    a = _outbox(database, clock, "host-a:1:aaaaaa")
    ids = [a.enqueue("C1", "post", {"text": str(n)}, ordering_key=f"k{n}") for n in range(3)]
    claimed = a.claim_due(clock.now(), 10)
    assert [m.claimed_by for m in claimed] == ["host-a:1:aaaaaa"] * 3
    a.mark_sent(ids[0], "1.0")
    a.mark_failed(ids[1], "boom", clock.now() + timedelta(seconds=30))
    a.release(ids[2], clock.now() + timedelta(seconds=5))
    assert [a.get(i).claimed_by for i in ids] == [None, None, None]  # type: ignore[union-attr]
    # Nothing is held any more: a stop hands nothing back, and the backoff stays.
    assert a.release_claims("host-a:1:aaaaaa") == []
    assert a.retry_orphaned_claims(live=[]) == []
    assert a.get(ids[1]).next_attempt_at == clock.now() + timedelta(seconds=30)  # type: ignore[union-attr]


def test_a_stopping_sender_hands_its_claims_back_due_at_once(
        database: Database, clock: FixedClock) -> None:
    a = _outbox(database, clock, "A")
    b = _outbox(database, clock, "B")
    first = a.enqueue("C1", "post", {"text": "a"}, ordering_key="ka")
    second = b.enqueue("C1", "post", {"text": "b"}, ordering_key="kb")
    assert [m.id for m in a.claim_due(clock.now(), 1)] == [first]
    assert [m.id for m in b.claim_due(clock.now(), 1)] == [second]
    assert b.claim_due(clock.now(), 10) == []  # both leased for 60 s

    assert a.release_claims("A") == [first]  # only A's
    again = b.claim_due(clock.now(), 10)
    assert [m.id for m in again] == [first]
    # attempts stay counted: the sender looks a post up before posting it again
    assert again[0].attempts == 2 and again[0].claimed_by == "B"


def test_claims_of_a_replica_that_stopped_beating_are_handed_on(
        database: Database, clock: FixedClock) -> None:
    markers = BotMarkers(database, clock)
    markers.beat("A", "serve", "host-a", 1)
    markers.beat("B", "serve", "host-b", 2)
    a = _outbox(database, clock, "A")
    b = _outbox(database, clock, "B")
    held = a.enqueue("C1", "post", {"text": "in flight"}, ordering_key="k")
    assert [m.id for m in a.claim_due(clock.now(), 10)] == [held]
    task = OrphanedClaimsTask(b, markers, own_id="B", dead_after=timedelta(seconds=30),
                              every=0, monotonic=lambda: 0.0)

    clock.advance(timedelta(seconds=20))
    markers.beat("B", "serve", "host-b", 2)
    assert task.run_once() is False  # A beat 20 s ago: alive, its claim stands
    assert b.claim_due(clock.now(), 10) == []

    clock.advance(timedelta(seconds=15))  # A's row is 35 s old: gone, 25 s before its lease
    markers.beat("B", "serve", "host-b", 2)
    assert task.run_once() is True
    taken = b.claim_due(clock.now(), 10)
    assert [(m.id, m.attempts, m.claimed_by) for m in taken] == [(held, 2, "B")]
    assert task.run_once() is False  # B itself is alive: its new claim is left alone


def test_a_clean_stop_removes_the_row_and_its_claims_are_handed_on(
        database: Database, clock: FixedClock) -> None:
    markers = BotMarkers(database, clock)
    markers.beat("A", "serve", "host-a", 1)
    markers.beat("B", "serve", "host-b", 2)
    a = _outbox(database, clock, "A")
    held = a.enqueue("C1", "post", {"text": "x"}, ordering_key="k")
    a.claim_due(clock.now(), 10)
    task = OrphanedClaimsTask(_outbox(database, clock, "B"), markers, own_id="B",
                              dead_after=timedelta(seconds=30), every=0,
                              monotonic=lambda: 0.0)
    assert task.run_once() is False
    markers.remove("A")  # its stop removed the row (after its sender was done)
    assert task.run_once() is True  # at once, no waiting for the row to go stale
    assert a.get(held).next_attempt_at == clock.now()  # type: ignore[union-attr]
