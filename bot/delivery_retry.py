"""How the outbox senders retry a message that failed for a reason that may pass.

One policy for every sender (Slack, PagerDuty, e-mail): exponential backoff (1, 2, 4 ...
seconds, capped), a longer wait when the receiver asked for one (``Retry-After``), and a
message declared dead after ``max_attempts`` tries. Only the numbers differ per sender.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from storage.models import Notification
from storage.outbox import Outbox

MAX_ATTEMPTS = 20
MAX_BACKOFF = 60.0


def backoff(attempts: int, cap: float = MAX_BACKOFF) -> float:
    """Seconds to wait after the ``attempts``-th failed try: 1, 2, 4 ... at most ``cap``."""
    return float(min(cap, 2.0 ** min(max(attempts - 1, 0), 62)))


@dataclass(frozen=True)
class RetryPolicy:
    """When a failed message is tried again, and when it is given up."""

    max_attempts: int = MAX_ATTEMPTS
    max_backoff: float = MAX_BACKOFF

    def delay(self, attempts: int, retry_after: float | None = None) -> float:
        """The wait after the ``attempts``-th try: the backoff, or longer if the receiver
        asked for longer."""
        return max(backoff(attempts, self.max_backoff), retry_after or 0.0)


def retry_or_give_up(outbox: Outbox, notification: Notification, detail: str, *,
                     now: datetime, policy: RetryPolicy,
                     retry_after: float | None = None,
                     not_before: float = 0.0) -> float | None:
    """Record a failed try of a claimed message: due again after the policy's delay (and no
    sooner than ``not_before`` seconds), or dead once it has had ``max_attempts`` tries.
    Returns the delay in seconds, None if given up."""
    assert notification.id is not None  # claimed rows always have one
    if notification.attempts >= policy.max_attempts:
        outbox.mark_dead(notification.id,
                         f"gave up after {notification.attempts} attempts: {detail}")
        return None
    delay = max(policy.delay(notification.attempts, retry_after), not_before)
    outbox.mark_failed(notification.id, detail, now + timedelta(seconds=delay), now=now)
    return delay
