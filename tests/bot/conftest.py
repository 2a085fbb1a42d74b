"""Fixtures for tests that drive the real Bolt app over HTTP."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from procedures.clock import FixedClock
from storage.db import Database
from tests.fakes.bot_harness import BotHarness
from tests.fakes.policies import make_policy
from tests.fakes.slack_double import SlackDouble

# Tuesday 2026-12-01 11:00 UTC: inside the preferred window, not a holiday week.
OPEN_WINDOW = datetime(2026, 12, 1, 11, 0, tzinfo=UTC)


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(OPEN_WINDOW)


@pytest.fixture
def bot(database: Database, clock: FixedClock, slack: SlackDouble,
        tmp_path: Path) -> Iterator[BotHarness]:
    harness = BotHarness(database=database, policy=make_policy(), clock=clock,
                         home=tmp_path / "home", slack=slack)
    yield harness
    harness.close()
