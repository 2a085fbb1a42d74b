"""``SmtpDouble``: an SMTP server on 127.0.0.1 (aiosmtpd), for tests.

A real SMTP conversation on a free port. Accepted messages are parsed and kept in
``messages`` (in arrival order). Faults:

- ``fail_next(times, reply="451 4.3.0 ...")``: the next ``times`` messages are answered
  ``reply`` at the end of DATA (not accepted). A 4xx reply is temporary, a 5xx permanent.
- ``refuse(address, reply="550 5.1.1 ...")``: that recipient is refused at RCPT TO.
- ``stop()`` / ``start()``: down (connection refused) and up again on the same port.

No STARTTLS and no AUTH: the tests of the bot use ``starttls: false`` (a server without
STARTTLS is also how the test of ``starttls: true`` fails for good).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from email import message_from_bytes
from email import policy as email_policy
from email.message import EmailMessage
from typing import Any

from aiosmtpd.controller import Controller

from tests.fakes.policies import free_port


@dataclass(frozen=True)
class Received:
    """One accepted message: the envelope and the parsed message."""

    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage

    @property
    def subject(self) -> str:
        return str(self.message["Subject"])

    @property
    def body(self) -> str:
        part = self.message.get_body(("plain",))
        text = "" if part is None else str(part.get_content())  # type: ignore[attr-defined]
        return text.replace("\r\n", "\n")


class _Handler:
    """aiosmtpd handler hooks (called on the server's event loop thread)."""

    def __init__(self, double: SmtpDouble) -> None:
        self._double = double

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str,
                          rcpt_options: list[str]) -> str:
        refusal = self._double._refused.get(address)
        if refusal is not None:
            return refusal
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        return self._double._data(envelope)


class SmtpDouble:
    """An SMTP server on ``127.0.0.1:port``."""

    def __init__(self) -> None:
        self.port = free_port()
        self.host = "127.0.0.1"
        self.messages: list[Received] = []
        self.attempts = 0  # DATA commands seen (accepted or failed)
        self._failures: list[str] = []
        self._refused: dict[str, str] = {}
        self._lock = threading.Lock()
        self._controller: Controller | None = None

    def start(self) -> SmtpDouble:
        if self._controller is None:
            self._controller = Controller(_Handler(self), hostname=self.host, port=self.port)
            self._controller.start()
        return self

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def fail_next(self, times: int = 1, reply: str = "451 4.3.0 Try again later") -> None:
        with self._lock:
            self._failures.extend([reply] * times)

    def refuse(self, address: str, reply: str = "550 5.1.1 No such user") -> None:
        with self._lock:
            self._refused[address] = reply

    def _data(self, envelope: Any) -> str:
        with self._lock:
            self.attempts += 1
            if self._failures:
                return self._failures.pop(0)
            message = message_from_bytes(envelope.content, policy=email_policy.default)
            assert isinstance(message, EmailMessage)
            self.messages.append(Received(str(envelope.mail_from), list(envelope.rcpt_tos),
                                          message))
        return "250 OK"
