"""Notifiers: the outside world the bot tells besides Slack (PagerDuty, e-mail).

Each notifier delivers one outbox payload of its kind and says how a failure should be treated
(:class:`~procedures.errors.ExternalServiceError` with ``retryable`` and ``retry_after``); the
bot's ``NotificationSender`` decides when to try again. See :mod:`procedures.notifiers.base`.
"""

from procedures.notifiers.base import RATE_LIMITED, Notifier, Receipt, Unconfigured

__all__ = ["RATE_LIMITED", "Notifier", "Receipt", "Unconfigured"]
