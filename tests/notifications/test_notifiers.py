"""The two notifiers on their own, against the doubles: what each answer becomes.

PagerDuty: 202 -> a receipt; 429 -> retryable, rate limited, with Retry-After; 5xx and a
refused connection -> retryable; 400 -> permanent with PagerDuty's reasons; a malformed event
is refused before any request. SMTP: a proper message; 4xx -> retryable; 5xx -> permanent;
a partial refusal is a delivery with a note; STARTTLS asked of a server without it ->
permanent.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from procedures.clock import FixedClock
from procedures.errors import ExternalServiceError
from procedures.notifiers import RATE_LIMITED, Receipt
from procedures.notifiers import pagerduty as pagerduty_module
from procedures.notifiers.email import SmtpMailer, validate_address
from procedures.notifiers.pagerduty import PagerDutyEvents
from tests.fakes.pagerduty_double import PagerDutyDouble
from tests.fakes.policies import free_port
from tests.fakes.smtp_double import SmtpDouble

NOW = datetime(2026, 12, 1, 11, 0, tzinfo=UTC)
TRIGGER = {"event_action": "trigger", "dedup_key": "qlp-deployment-7",
           "payload": {"summary": "x" * 2000, "source": "qlp-chatops", "severity": "error"}}


def _client(double: PagerDutyDouble, **options: Any) -> PagerDutyEvents:
    return PagerDutyEvents(double.routing_key, events_url=double.url, timeout=2.0, **options)


def _refusal(call: Any) -> ExternalServiceError:
    with pytest.raises(ExternalServiceError) as caught:
        call()
    return caught.value


def test_pagerduty_accepts_a_trigger_with_the_routing_key_added(
        pagerduty: PagerDutyDouble) -> None:
    with _client(pagerduty) as client:
        receipt = client.send(TRIGGER, reference="qlp-notification-1")
    assert receipt == Receipt("qlp-deployment-7")
    [event] = pagerduty.events
    assert event["routing_key"] == pagerduty.routing_key
    assert len(event["payload"]["summary"]) == 1024  # PagerDuty's limit
    assert "routing_key" not in TRIGGER  # the caller's payload is not changed


@pytest.mark.parametrize(("status", "retry_after", "retryable", "code", "wait"), [
    (429, 12, True, RATE_LIMITED, 12.0),
    (429, None, True, RATE_LIMITED, None),
    (500, None, True, "HTTP500", None),
    (503, 5, True, "HTTP503", 5.0),
    (400, None, False, "HTTP400", None),
    (403, None, False, "HTTP403", None),
    (404, None, False, "HTTP404", None),
])
def test_pagerduty_answers_become_errors(pagerduty: PagerDutyDouble, status: int,
                                         retry_after: int | None, retryable: bool, code: str,
                                         wait: float | None) -> None:
    pagerduty.fail_next(status, retry_after=retry_after)
    with _client(pagerduty) as client:
        error = _refusal(lambda: client.send(TRIGGER, reference="r"))
    assert (error.retryable, error.code, error.retry_after) == (retryable, code, wait)
    assert str(error).startswith(f"PagerDuty: HTTP {status}: scripted {status}")


def test_pagerduty_retry_after_as_an_http_date() -> None:
    clock = FixedClock(datetime(2015, 10, 21, 7, 27, 0, tzinfo=UTC))
    response = httpx.Response(429, headers={"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"})
    assert pagerduty_module._retry_after(response, clock) == 60.0
    assert pagerduty_module._retry_after(httpx.Response(429, headers={
        "Retry-After": "soon"}), clock) is None


def test_pagerduty_unreachable_is_retryable() -> None:
    client = PagerDutyEvents("R" * 32, events_url=f"http://127.0.0.1:{free_port()}/v2/enqueue",
                             timeout=2.0)
    error = _refusal(lambda: client.send(TRIGGER, reference="r"))
    client.close()
    assert error.retryable and error.code == "unreachable"
    assert "cannot reach http://127.0.0.1:" in str(error)


@pytest.mark.parametrize(("event", "words"), [
    ({"event_action": "page"}, "event_action 'page' is not one of"),
    ({"event_action": "resolve"}, "a resolve event needs the dedup_key"),
    ({"event_action": "trigger"}, "needs a payload {summary, source, severity}"),
    ({"event_action": "trigger", "payload": {"summary": "s", "source": "q",
                                             "severity": "urgent"}},
     "payload.severity 'urgent' is not one of critical, error, warning, info"),
    ({"event_action": "trigger", "payload": {"source": "q", "severity": "info"}},
     "payload.summary is required"),
    ({**TRIGGER, "routing_key": "R" * 32}, "the stored event carries a routing_key"),
])
def test_pagerduty_refuses_a_malformed_event_without_sending_it(
        pagerduty: PagerDutyDouble, event: dict[str, Any], words: str) -> None:
    with _client(pagerduty) as client:
        error = _refusal(lambda: client.send(event, reference="r"))
    assert not error.retryable and error.code == "invalid_event"
    assert words in str(error)
    assert pagerduty.requests == []


# -- SMTP ---------------------------------------------------------------------------------------


def _mailer(smtp: SmtpDouble, **options: Any) -> SmtpMailer:
    return SmtpMailer(smtp.host, smtp.port, "qlp-bot@example.com",
                      starttls=options.pop("starttls", False), timeout=2.0,
                      clock=FixedClock(NOW), **options)


MAIL = {"to": ["ops@example.com"], "subject": "Deployment\r\nBcc: evil@example.com",
        "body": "Line one\nLine two"}


def test_smtp_sends_a_proper_message(smtp: SmtpDouble) -> None:
    receipt = _mailer(smtp).send(MAIL, reference="qlp-notification-9")
    assert receipt == Receipt("<qlp-notification-9@example.com>")
    [received] = smtp.messages
    assert received.mail_from == "qlp-bot@example.com"
    assert received.rcpt_tos == ["ops@example.com"]
    message = received.message
    assert message["From"] == "qlp-bot@example.com" and message["To"] == "ops@example.com"
    # A line break in a subject cannot add a header: it is folded into the one line.
    assert message["Subject"] == "Deployment Bcc: evil@example.com"
    assert message["Bcc"] is None
    assert message["Date"] == "Tue, 01 Dec 2026 11:00:00 +0000"
    assert message["Message-ID"] == "<qlp-notification-9@example.com>"
    assert message["Auto-Submitted"] == "auto-generated"
    assert received.body == "Line one\nLine two\n"


@pytest.mark.parametrize(("reply", "retryable"), [
    ("451 4.3.0 Try again later", True),
    ("421 4.7.0 Too busy", True),
    ("452 4.3.1 Insufficient storage", True),
    ("554 5.7.1 Message rejected", False),
    ("552 5.3.4 Message too big", False),
])
def test_smtp_replies_at_the_end_of_data(smtp: SmtpDouble, reply: str, retryable: bool) -> None:
    smtp.fail_next(1, reply)
    error = _refusal(lambda: _mailer(smtp).send(MAIL, reference="r"))
    assert error.retryable is retryable
    assert str(error) == f"SMTP: the server answered {reply}"
    assert error.code == reply[:3]


def test_smtp_recipients(smtp: SmtpDouble) -> None:
    smtp.refuse("gone@example.com")
    error = _refusal(lambda: _mailer(smtp).send({**MAIL, "to": ["gone@example.com"]},
                                                reference="r"))
    assert not error.retryable and "gone@example.com (550 5.1.1 No such user)" in str(error)

    smtp.refuse("full@example.com", "452 4.2.2 Mailbox full")
    error = _refusal(lambda: _mailer(smtp).send({**MAIL, "to": ["full@example.com"]},
                                                reference="r"))
    assert error.retryable  # it may have room later

    receipt = _mailer(smtp).send({**MAIL, "to": ["ops@example.com", "gone@example.com"]},
                                 reference="qlp-notification-3")
    assert receipt.note == "refused by the server for gone@example.com (550 5.1.1 No such user)"
    assert [m.rcpt_tos for m in smtp.messages] == [["ops@example.com"]]


def test_smtp_down_is_retryable_and_starttls_missing_is_not(smtp: SmtpDouble) -> None:
    error = _refusal(lambda: _mailer(smtp, starttls=True).send(MAIL, reference="r"))
    assert not error.retryable and "check notifications.email.starttls" in str(error)
    smtp.stop()
    error = _refusal(lambda: _mailer(smtp).send(MAIL, reference="r"))
    assert error.retryable and "ConnectionRefusedError" in str(error)


@pytest.mark.parametrize(("payload", "words"), [
    ({"to": [], "subject": "s"}, "'to' must list 1-100 addresses"),
    ({"to": ["Bob <bob@example.com>"], "subject": "s"}, "is not an e-mail address"),
    ({"to": ["ops@example.com"], "subject": "  "}, "'subject' is empty"),
])
def test_smtp_refuses_a_malformed_payload(smtp: SmtpDouble, payload: dict[str, Any],
                                          words: str) -> None:
    error = _refusal(lambda: _mailer(smtp).send(payload, reference="r"))
    assert not error.retryable and words in str(error)
    assert smtp.attempts == 0


@pytest.mark.parametrize("address", [
    "ops@example.com", "first.last+tag@mail.example.co.uk", "root@localhost"])
def test_addresses_accepted(address: str) -> None:
    assert validate_address(address) == address


@pytest.mark.parametrize("address", [
    "ops", "ops@", "@example.com", "a b@example.com", "ops@example..com", "ops@-x.com",
    "ops@example.com\nBcc: x@y.z", "Ops <ops@example.com>", "a..b@example.com"])
def test_addresses_refused(address: str) -> None:
    with pytest.raises(ValueError, match="is not an e-mail address"):
        validate_address(address)
