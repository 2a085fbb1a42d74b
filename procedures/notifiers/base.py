"""The notifier protocol, its receipt, and the stand-in for a route the policy does not name."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from procedures.errors import ExternalServiceError

RATE_LIMITED = "rate_limited"
"""``ExternalServiceError.code`` of a refusal that only asks to wait (HTTP 429): the message was
not tried, so the attempt does not count."""


@dataclass(frozen=True)
class Receipt:
    """What a receiver said when it accepted a message.

    ``reference`` is its name for it (PagerDuty's dedup key, the e-mail's Message-ID);
    ``note`` is set when the delivery was partial (some e-mail recipients refused).
    """

    reference: str
    note: str | None = None


class Notifier(Protocol):
    """Delivers one outbox payload of its kind to a service outside the bot.

    ``reference`` is stable for one outbox message (``qlp-notification-<id>``), so a retried
    message carries the same identity (an e-mail's Message-ID). Failures are raised as
    :class:`~procedures.errors.ExternalServiceError`: ``retryable`` when trying again may help,
    ``retry_after`` when the receiver said how long to wait, ``code`` :data:`RATE_LIMITED` for
    a rate limit. A payload the notifier cannot send at all is a non-retryable error.
    """

    @property
    def kind(self) -> str:
        """The outbox kind it delivers (``pagerduty``, ``email``)."""
        ...

    def send(self, payload: Mapping[str, Any], *, reference: str) -> Receipt:
        """Deliver ``payload``; return the receiver's receipt or raise."""
        ...


@dataclass(frozen=True)
class Unconfigured:
    """The notifier of a kind the policy has no route for: every message is refused for good.

    ``reason`` names the missing policy key (or setting), so the dead message in the outbox
    (and ``/qlp status``) says what to configure.
    """

    kind: str
    service: str
    reason: str

    def send(self, payload: Mapping[str, Any], *, reference: str) -> Receipt:
        del payload, reference
        raise ExternalServiceError(self.service, self.reason, retryable=False,
                                   code="unconfigured")
