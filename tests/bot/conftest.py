"""Fixtures for tests that drive the real Bolt app over HTTP."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from bot import log_redaction
from procedures.clock import FixedClock

# Tuesday 2026-12-01 11:00 UTC: inside the preferred window, not a holiday week.
OPEN_WINDOW = datetime(2026, 12, 1, 11, 0, tzinfo=UTC)


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(OPEN_WINDOW)


@pytest.fixture(autouse=True)
def _log_redaction_stays_in_its_test() -> Iterator[None]:
    """``cli.main`` redacts every log record of the process from then on: undo it after each
    test, so one test calling ``main`` does not change what later tests' logs say."""
    yield
    log_redaction.uninstall()
