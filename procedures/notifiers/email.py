"""E-mail over SMTP (``smtplib``): one plain-text message per outbox payload.

The outbox payload::

    {"to": ["ops@example.com", ...], "subject": "...", "body": "..."}

The message is a proper :class:`email.message.EmailMessage` with ``From``, ``To``,
``Subject``, ``Date``, a ``Message-ID`` that is stable for one outbox message (so a copy sent
twice after a crash is recognisable as one message) and ``Auto-Submitted: auto-generated``
(RFC 3834: no auto-replies to the bot). The connection uses STARTTLS (certificate verified)
and logs in when the policy says so; the password comes from the bot's settings, never from
the policy file.

Failures: an SMTP 4xx reply (``421``, ``450``, ``451``, ``452``, ``454`` ...), a dropped
connection, a refused connection or a timeout is retryable; a 5xx reply (``550`` unknown
mailbox, ``535`` bad credentials, ``554`` ...), a server without STARTTLS when it is required,
or a certificate that does not verify is permanent. When the server accepts the message for
some recipients and refuses others, the message counts as delivered (sending it again would
reach the accepted ones twice) and the receipt notes who was refused.
"""

from __future__ import annotations

import re
import smtplib
import ssl
from collections.abc import Mapping
from email import policy as email_policy
from email.message import EmailMessage
from email.utils import format_datetime
from typing import Any, NoReturn

from procedures.clock import Clock, SystemClock
from procedures.errors import ExternalServiceError
from procedures.notifiers.base import Receipt

SERVICE = "SMTP"
SUBJECT_LIMIT = 200
# No folding of our short headers: Python's folder may break a subject right after
# "Subject:", which some clients then show with a leading space. 998 is RFC 5322's hard limit.
_POLICY = email_policy.SMTP.clone(max_line_length=998)
MAX_RECIPIENTS = 100

# A plain address (no display name, no comments): what the policy may name. Deliberately
# narrower than RFC 5322, and free of anything that could start a new header line.
_ADDRESS = re.compile(
    r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]{1,64}"
    r"@(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$")


def validate_address(address: str) -> str:
    """A plain e-mail address (``name@example.com``); ValueError saying what is accepted."""
    if not isinstance(address, str) or not _ADDRESS.fullmatch(address) or ".." in address:
        raise ValueError(f"{address!r} is not an e-mail address; write a plain address such "
                         "as ops@example.com (no display name)")
    return address


class SmtpMailer:
    """Sends plain-text e-mail through one SMTP server (a :class:`~procedures.notifiers.Notifier`).

    A connection per message: notices are rare, and a fresh connection never trips over a
    server that dropped an idle one. ``clock`` dates the messages.
    """

    kind = "email"

    def __init__(self, host: str, port: int, sender: str, *, starttls: bool = True,
                 username: str | None = None, password: str | None = None,
                 timeout: float = 15.0, clock: Clock | None = None,
                 tls_context: ssl.SSLContext | None = None) -> None:
        if username and password is None:
            raise ValueError("an SMTP username needs a password")
        self._host = host
        self._port = port
        self._sender = validate_address(sender)
        self._starttls = starttls
        self._username = username
        self._password = password
        self._timeout = timeout
        self._clock = clock or SystemClock()
        self._tls_context = tls_context

    def send(self, payload: Mapping[str, Any], *, reference: str) -> Receipt:
        """Send the message of ``payload``; the receipt is its Message-ID."""
        message = self.message(payload, reference=reference)
        try:
            with smtplib.SMTP(self._host, self._port, timeout=self._timeout) as smtp:
                if self._starttls:
                    smtp.starttls(context=self._tls_context or ssl.create_default_context())
                if self._username:
                    smtp.login(self._username, self._password or "")
                refused = smtp.send_message(message)
        except smtplib.SMTPRecipientsRefused as exc:
            raise _refused_all(exc) from exc
        except smtplib.SMTPResponseException as exc:
            raise _reply_error(exc.smtp_code, exc.smtp_error) from exc
        except smtplib.SMTPNotSupportedError as exc:
            raise ExternalServiceError(
                SERVICE, f"{self._host}:{self._port} does not support what the policy asks "
                f"({exc}); check notifications.email.starttls and username",
                retryable=False, code="unsupported") from exc
        except ssl.SSLCertVerificationError as exc:
            raise ExternalServiceError(
                SERVICE, f"the certificate of {self._host} does not verify: "
                f"{exc.verify_message}", retryable=False, code="certificate") from exc
        except (smtplib.SMTPException, OSError) as exc:  # disconnected, refused, timed out
            raise ExternalServiceError(
                SERVICE, f"cannot deliver through {self._host}:{self._port}: "
                f"{type(exc).__name__}: {exc}"[:500], retryable=True,
                code="unreachable") from exc
        note = None
        if refused:
            note = "refused by the server for " + ", ".join(
                f"{address} ({_reply(code, text)})" for address, (code, text) in refused.items())
        return Receipt(str(message["Message-ID"]), note=note[:500] if note else None)

    def message(self, payload: Mapping[str, Any], *, reference: str) -> EmailMessage:
        """The e-mail for ``payload``; a permanent error if the payload cannot be one."""
        to = payload.get("to")
        if isinstance(to, str):
            to = [to]
        if not isinstance(to, list) or not to or len(to) > MAX_RECIPIENTS:
            _invalid(f"'to' must list 1-{MAX_RECIPIENTS} addresses")
        try:
            recipients = [validate_address(address) for address in to]
        except ValueError as exc:
            _invalid(str(exc))
        subject = " ".join(str(payload.get("subject") or "").split())[:SUBJECT_LIMIT]
        if not subject:
            _invalid("'subject' is empty")
        body = str(payload.get("body") or "")
        if not re.fullmatch(r"[A-Za-z0-9._-]{1,128}", reference):
            _invalid(f"reference {reference!r} cannot be a Message-ID")
        message = EmailMessage(policy=_POLICY)
        message["From"] = self._sender
        message["To"] = ", ".join(recipients)
        message["Subject"] = subject
        message["Date"] = format_datetime(self._clock.now())
        message["Message-ID"] = f"<{reference}@{self._sender.rsplit('@', 1)[1]}>"
        message["Auto-Submitted"] = "auto-generated"
        message.set_content(body if body.endswith("\n") else body + "\n")
        return message


def _invalid(message: str) -> NoReturn:
    raise ExternalServiceError(SERVICE, f"invalid e-mail: {message}", retryable=False,
                               code="invalid_email")


def _reply(code: int, text: bytes | str) -> str:
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return f"{code} {' '.join(str(text).split())}"[:200]


def _reply_error(code: int, text: bytes | str) -> ExternalServiceError:
    """A 4xx reply may pass (retry); anything else is the server's final word."""
    temporary = 400 <= code < 500
    return ExternalServiceError(SERVICE, f"the server answered {_reply(code, text)}",
                                retryable=temporary, code=str(code))


def _refused_all(exc: smtplib.SMTPRecipientsRefused) -> ExternalServiceError:
    """Every recipient refused: retry if any refusal was temporary (the rest may be typos)."""
    answers = dict(exc.recipients)
    temporary = any(400 <= code < 500 for code, _ in answers.values())
    listing = ", ".join(f"{address} ({_reply(code, text)})"
                        for address, (code, text) in answers.items())
    return ExternalServiceError(SERVICE, f"every recipient was refused: {listing}"[:500],
                                retryable=temporary, code="recipients_refused")
