"""The scheduler lease: taken, renewed, taken over when expired, released; on both backends."""

from __future__ import annotations

from datetime import timedelta

from procedures.clock import FixedClock
from storage.db import Database
from storage.leases import LeaseRepository
from tests.conftest import _Factory
from tests.storage.concurrency import run_concurrently
from tests.storage.conftest import START

TTL = timedelta(seconds=30)


def test_the_first_caller_takes_the_lease_and_others_are_refused(
        database: Database, clock: FixedClock) -> None:
    leases = LeaseRepository(database, clock)
    assert leases.holder("scheduler") is None
    assert leases.try_acquire("scheduler", "a", TTL, START)
    assert not leases.try_acquire("scheduler", "b", TTL, START + timedelta(seconds=29))
    assert leases.holder("scheduler", START + timedelta(seconds=29)) == "a"
    row = leases.get("scheduler")
    assert row is not None
    assert (row.holder, row.term, row.acquired_at, row.expires_at) == ("a", 1, START, START + TTL)


def test_the_holder_renews_and_keeps_its_term(database: Database, clock: FixedClock) -> None:
    leases = LeaseRepository(database, clock)
    assert leases.try_acquire("scheduler", "a", TTL, START)
    later = START + timedelta(seconds=20)
    assert leases.try_acquire("scheduler", "a", TTL, later)
    # Renewed: b is still refused after the first expiry would have passed.
    assert not leases.try_acquire("scheduler", "b", TTL, START + timedelta(seconds=40))
    row = leases.get("scheduler")
    assert row is not None
    assert (row.holder, row.term, row.acquired_at, row.renewed_at, row.expires_at) == (
        "a", 1, START, later, later + TTL)


def test_an_expired_lease_is_taken_over_in_a_new_term(database: Database,
                                                      clock: FixedClock) -> None:
    leases = LeaseRepository(database, clock)
    assert leases.try_acquire("scheduler", "a", TTL, START)
    expired = START + TTL
    assert leases.holder("scheduler", expired) is None
    assert leases.try_acquire("scheduler", "b", TTL, expired)
    assert leases.holder("scheduler", expired) == "b"
    row = leases.get("scheduler")
    assert row is not None
    assert (row.holder, row.term, row.acquired_at) == ("b", 2, expired)
    # The old holder, back from a pause, cannot renew what it lost.
    assert not leases.try_acquire("scheduler", "a", TTL, expired + timedelta(seconds=1))


def test_release_frees_the_lease_at_once_only_for_its_holder(database: Database,
                                                             clock: FixedClock) -> None:
    leases = LeaseRepository(database, clock)
    assert leases.try_acquire("scheduler", "a", TTL, START)
    assert not leases.release("scheduler", "b", START)
    assert leases.holder("scheduler", START) == "a"
    assert leases.release("scheduler", "a", START + timedelta(seconds=1))
    assert not leases.release("scheduler", "a", START + timedelta(seconds=1))
    assert leases.holder("scheduler", START + timedelta(seconds=1)) is None
    assert leases.try_acquire("scheduler", "b", TTL, START + timedelta(seconds=1))
    row = leases.get("scheduler")
    assert row is not None and (row.holder, row.term) == ("b", 2)


def test_leases_are_separate_by_name(database: Database, clock: FixedClock) -> None:
    leases = LeaseRepository(database, clock)
    assert leases.try_acquire("scheduler", "a", TTL, START)
    assert leases.try_acquire("other", "b", TTL, START)
    assert (leases.holder("scheduler", START), leases.holder("other", START)) == ("a", "b")


def test_a_race_for_a_new_lease_has_exactly_one_winner(database_factory: _Factory) -> None:
    url = database_factory.url(migrated=True)
    handles = [database_factory.open(url) for _ in range(6)]
    clock = FixedClock(START)
    won = run_concurrently(
        lambda i: LeaseRepository(handles[i], clock).try_acquire("scheduler", f"p{i}", TTL),
        6)
    assert won.count(True) == 1
    assert LeaseRepository(handles[0], clock).holder("scheduler") == f"p{won.index(True)}"


def test_a_race_to_take_over_an_expired_lease_has_exactly_one_winner(
        database_factory: _Factory) -> None:
    url = database_factory.url(migrated=True)
    handles = [database_factory.open(url) for _ in range(6)]
    clock = FixedClock(START)
    assert LeaseRepository(handles[0], clock).try_acquire("scheduler", "dead", TTL, START)
    later = START + TTL + timedelta(seconds=1)
    won = run_concurrently(
        lambda i: LeaseRepository(handles[i], clock).try_acquire("scheduler", f"p{i}", TTL,
                                                                 later), 6)
    assert won.count(True) == 1
    row = LeaseRepository(handles[0], clock).get("scheduler")
    assert row is not None and (row.holder, row.term) == (f"p{won.index(True)}", 2)
