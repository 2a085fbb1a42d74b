"""UTC days as the ``/qlp stats`` summary tables key them: whole days since 1970-01-01."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def day_of(moment: datetime) -> int:
    """The UTC day of ``moment``, as days since 1970-01-01."""
    return (moment - EPOCH) // timedelta(days=1)


def day_start(day: int) -> datetime:
    """The first moment of ``day``."""
    return EPOCH + timedelta(days=day)


def to_us(moment: datetime) -> int:
    """``moment`` as integer microseconds since the epoch (exact)."""
    return (moment - EPOCH) // timedelta(microseconds=1)
