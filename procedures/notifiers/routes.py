"""The notifiers the policy's ``notifications`` section configures, one per outbox kind."""

from __future__ import annotations

from procedures.clock import Clock
from procedures.notifiers.base import Notifier, Unconfigured
from procedures.notifiers.email import SmtpMailer
from procedures.notifiers.pagerduty import PagerDutyEvents
from procedures.policy import Notifications

NO_PAGERDUTY = "no route for pages: set notifications.pagerduty.routing_key in the policy file"
NO_EMAIL = "no SMTP server: set notifications.email (host, from) in the policy file"
NO_SMTP_LOGIN = ("notifications.email.username is set but the SMTP_PASSWORD setting is "
                 "empty")


def notifiers_for(notifications: Notifications, *, smtp_password: str | None, clock: Clock,
                  timeout: float = 10.0) -> dict[str, Notifier]:
    """``{"pagerduty": ..., "email": ...}``; a kind without a route gets an
    :class:`Unconfigured` notifier whose refusal names the missing key."""
    routes: dict[str, Notifier] = {}
    pagerduty = notifications.pagerduty
    routes["pagerduty"] = (
        PagerDutyEvents(pagerduty.routing_key, events_url=pagerduty.events_url,
                        timeout=timeout, clock=clock)
        if pagerduty is not None else Unconfigured("pagerduty", "PagerDuty", NO_PAGERDUTY))
    email = notifications.email
    if email is None:
        routes["email"] = Unconfigured("email", "E-mail", NO_EMAIL)
    elif email.username and not smtp_password:
        routes["email"] = Unconfigured("email", "E-mail", NO_SMTP_LOGIN)
    else:
        routes["email"] = SmtpMailer(
            email.host, email.port, email.from_, starttls=email.starttls,
            username=email.username, password=smtp_password if email.username else None,
            timeout=timeout, clock=clock)
    return routes
