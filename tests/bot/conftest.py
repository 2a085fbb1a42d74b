"""Fixtures for tests that drive the real Bolt app over HTTP."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from procedures.clock import FixedClock

# Tuesday 2026-12-01 11:00 UTC: inside the preferred window, not a holiday week.
OPEN_WINDOW = datetime(2026, 12, 1, 11, 0, tzinfo=UTC)


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(OPEN_WINDOW)


