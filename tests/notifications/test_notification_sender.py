"""The NotificationSender against real receivers: a PagerDuty double over HTTP and an SMTP
server (aiosmtpd), on SQLite and PostgreSQL. Time is a FixedClock moved past each backoff;
nothing sleeps.

The promise under test: a receiver that fails first and recovers delays notifications, never
loses or repeats them, and they arrive in order (per deployment for pages, per audience for
e-mail); a permanent refusal makes a message dead, and ``/qlp status`` shows it.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from bot import paging
from bot.delivery_retry import RetryPolicy
from bot.notify import notify_audiences
from bot.undelivered import undelivered_lines
from procedures.model import ProcedureKind
from tests.fakes.pagerduty_double import PagerDutyDouble
from tests.fakes.smtp_double import SmtpDouble
from tests.notifications.conftest import routes_policy


def _page(rig: Any, deployment_id: int, reason: str = "rollback") -> int:
    return paging.trigger(rig.outbox, rig.policy, deployment_id=deployment_id, reason=reason,
                          summary=f"#{deployment_id} {reason}", severity="error",
                          component="production", event_class=f"{reason}/standard",
                          details={"version": "v1.2.3"})


def _resolve(rig: Any, deployment_id: int) -> int:
    return paging.resolve(rig.outbox, rig.policy, deployment_id=deployment_id,
                          summary=f"#{deployment_id} healthy again")


# -- PagerDuty ----------------------------------------------------------------------------------


def test_pages_survive_a_failing_receiver_and_arrive_once_in_order(
        rig_factory: Any, pagerduty: PagerDutyDouble) -> None:
    rig = rig_factory(routes_policy(pagerduty))
    first, second = rig.deployment(), rig.deployment()
    trigger_1, resolve_1 = _page(rig, first), _resolve(rig, first)
    trigger_2 = _page(rig, second)
    # Stored without the routing key: it is the policy's, added when sent.
    assert all("routing_key" not in rig.row(i).payload for i in (trigger_1, resolve_1, trigger_2))

    pagerduty.fail_next(500, times=2)
    assert rig.run() == 1
    assert pagerduty.events == []
    assert len(pagerduty.requests) == 2  # the heads of both deployments; the resolve waits
    for id in (trigger_1, trigger_2):
        row = rig.row(id)
        assert row.state == "pending" and row.attempts == 1
        assert row.last_error == "PagerDuty: HTTP 500: scripted 500"
        assert row.next_attempt_at == rig.clock.now() + timedelta(seconds=1)
    assert rig.row(resolve_1).attempts == 0
    lines = undelivered_lines(rig.outbox.database, rig.clock.now())
    assert lines[0] == ":warning: *Undelivered notifications*: 2 waiting to be retried"
    assert f"• #{trigger_1} pagerduty to PagerDuty (oncall) (deployment #{first}): 1 attempt, " \
           f"next try now; last error: PagerDuty: HTTP 500: scripted 500" in lines

    # Down altogether (connection refused), then back.
    pagerduty.stop()
    rig.clock.advance(timedelta(seconds=1))
    rig.run()
    assert "cannot reach" in (rig.row(trigger_1).last_error or "")
    assert rig.row(trigger_1).next_attempt_at == rig.clock.now() + timedelta(seconds=2)
    pagerduty.start()
    rig.clock.advance(timedelta(seconds=1))
    rig.run()
    assert pagerduty.events == []  # not due yet: nothing is tried early
    rig.drain()

    assert [(e["event_action"], e["dedup_key"]) for e in pagerduty.events] == [
        ("trigger", f"qlp-deployment-{first}"), ("trigger", f"qlp-deployment-{second}"),
        ("resolve", f"qlp-deployment-{first}")]
    assert {e["routing_key"] for e in pagerduty.events} == {pagerduty.routing_key}
    assert [rig.row(i).state for i in (trigger_1, resolve_1, trigger_2)] == ["sent"] * 3
    assert [rig.row(i).attempts for i in (trigger_1, resolve_1, trigger_2)] == [3, 1, 3]
    assert undelivered_lines(rig.outbox.database, rig.clock.now()) == []
    delivered = [e for e in rig.audit.recent(50) if e.action == "pagerduty.delivered"]
    assert sorted(e.detail["notification"] for e in delivered) == sorted(
        [trigger_1, resolve_1, trigger_2])


def test_a_rate_limit_waits_for_retry_after_without_counting_an_attempt(
        rig_factory: Any, pagerduty: PagerDutyDouble) -> None:
    rig = rig_factory(routes_policy(pagerduty))
    page = _page(rig, rig.deployment())
    pagerduty.fail_next(429, retry_after=30)
    rig.run()
    row = rig.row(page)
    assert row.state == "pending" and row.attempts == 0
    assert row.next_attempt_at == rig.clock.now() + timedelta(seconds=30)
    assert "throttled" in (row.last_error or "")
    rig.clock.advance(timedelta(seconds=29))
    rig.run()
    assert len(pagerduty.requests) == 1
    rig.clock.advance(timedelta(seconds=1))
    rig.run()
    assert rig.row(page).state == "sent" and rig.row(page).attempts == 1
    assert len(pagerduty.events) == 1


def test_a_refused_event_is_dead_at_once_and_no_longer_holds_its_deployment_back(
        rig_factory: Any, pagerduty: PagerDutyDouble) -> None:
    rig = rig_factory(routes_policy(pagerduty))
    deployment = rig.deployment()
    trigger, resolve = _page(rig, deployment), _resolve(rig, deployment)
    pagerduty.fail_next(400)
    rig.drain()
    dead = rig.row(trigger)
    assert dead.state == "dead" and dead.attempts == 1
    assert dead.last_error == "PagerDuty: HTTP 400: scripted 400"
    assert rig.row(resolve).state == "sent"
    assert [e["event_action"] for e in pagerduty.events] == ["resolve"]
    lines = undelivered_lines(rig.outbox.database, rig.clock.now())
    assert lines == [
        ":warning: *Undelivered notifications*: 1 given up in the last 7 days",
        f"• #{trigger} pagerduty to PagerDuty (oncall) (deployment #{deployment}): given up "
        "after 1 attempt: PagerDuty: HTTP 400: scripted 400"]
    [audited] = [e for e in rig.audit.recent(50) if e.action == "pagerduty.dead"]
    assert audited.deployment_id == deployment and audited.detail["notification"] == trigger


def test_a_wrong_routing_key_says_what_pagerduty_said(
        rig_factory: Any, pagerduty: PagerDutyDouble) -> None:
    policy = routes_policy(pagerduty)
    wrong = policy.model_copy(update={"notifications": policy.notifications.model_copy(
        update={"pagerduty": policy.notifications.pagerduty.model_copy(  # type: ignore[union-attr]
            update={"routing_key": "X" * 32})})})
    rig = rig_factory(wrong)
    page = _page(rig, rig.deployment())
    rig.run()
    assert rig.row(page).state == "dead"
    assert rig.row(page).last_error == (
        "PagerDuty: HTTP 400: Event object is invalid: 'routing_key' is invalid")
    assert pagerduty.requests[0]["routing_key"] == "X" * 32


def test_a_receiver_down_for_good_is_given_up_after_the_last_attempt(
        rig_factory: Any, pagerduty: PagerDutyDouble) -> None:
    rig = rig_factory(routes_policy(pagerduty), retry=RetryPolicy(3, 60))
    page = _page(rig, rig.deployment())
    pagerduty.fail_next(503, times=10)
    rig.drain()
    row = rig.row(page)
    assert row.state == "dead" and row.attempts == 3
    assert row.last_error == "gave up after 3 attempts: PagerDuty: HTTP 503: scripted 503"
    assert len(pagerduty.requests) == 3 and pagerduty.events == []


def test_without_a_route_pages_and_mail_are_dead_naming_the_missing_key(
        rig_factory: Any) -> None:
    rig = rig_factory(routes_policy())
    deployment = rig.deployment()
    page = _page(rig, deployment)
    mail = rig.outbox.enqueue("email:leadership", "email", {
        "to": ["cto@example.com"], "subject": "Hello", "body": "hello"})
    rig.run()
    assert rig.row(page).state == "dead"
    assert rig.row(page).last_error == (
        "PagerDuty: no route for pages: set notifications.pagerduty.routing_key in the policy "
        "file")
    assert rig.row(mail).last_error == (
        "E-mail: no SMTP server: set notifications.email (host, from) in the policy file")
    text = "\n".join(undelivered_lines(rig.outbox.database, rig.clock.now()))
    assert "2 given up" in text and "notifications.pagerduty.routing_key" in text
    assert "email to cto@example.com: given up after 1 attempt" in text


# -- e-mail -------------------------------------------------------------------------------------


def test_mail_survives_a_failing_server_and_arrives_once_in_order(
        rig_factory: Any, smtp: SmtpDouble) -> None:
    rig = rig_factory(routes_policy(smtp=smtp))
    first = notify_audiences(rig.outbox, rig.policy, ["leadership", "customer-success"],
                             "Release *v1.2.3* on <#C0DEPLOY|deploys>", subject="First",
                             dedup_key="first")
    second = notify_audiences(rig.outbox, rig.policy, ["leadership"], "Done",
                              subject="Second", dedup_key="second")
    assert [rig.row(i).kind for i in first + second] == ["post", "email", "email", "post",
                                                          "email"]
    mails = [i for i in first + second if rig.row(i).kind == "email"]

    smtp.fail_next(2)  # 451: the heads of both audiences
    rig.run()
    assert smtp.messages == []
    assert rig.row(mails[0]).last_error == "SMTP: the server answered 451 4.3.0 Try again later"
    smtp.stop()  # and then the server is down for a while
    rig.clock.advance(timedelta(seconds=1))
    rig.run()
    assert "cannot deliver through 127.0.0.1" in (rig.row(mails[0]).last_error or "")
    smtp.start()
    rig.drain()

    assert [(m.subject, m.rcpt_tos) for m in smtp.messages] == [
        ("First", ["cto@example.com"]), ("First", ["cs@example.com"]),
        ("Second", ["cto@example.com"])]
    assert smtp.attempts == 5  # two refused, three accepted: none twice
    message = smtp.messages[0].message
    assert message["From"] == "qlp-bot@example.com"
    assert message["To"] == "cto@example.com"
    assert message["Message-ID"] == f"<qlp-notification-{mails[0]}@example.com>"
    assert message["Date"] == "Tue, 01 Dec 2026 11:00:03 +0000"
    assert message["Auto-Submitted"] == "auto-generated"
    assert smtp.messages[0].body == "Release v1.2.3 on #deploys\n"
    assert [rig.row(i).state for i in mails] == ["sent"] * 3
    # The Slack posts are not this sender's: still pending for the Slack sender.
    assert {rig.row(i).state for i in first + second if i not in mails} == {"pending"}


def test_a_refused_recipient_is_dead_and_shown(rig_factory: Any, smtp: SmtpDouble) -> None:
    rig = rig_factory(routes_policy(smtp=smtp))
    smtp.refuse("cto@example.com")
    [mail] = notify_audiences(rig.outbox, rig.policy, ["leadership"], "x", subject="X",
                              dedup_key="x")[1:]
    rig.run()
    row = rig.row(mail)
    assert row.state == "dead"
    assert row.last_error == ("SMTP: every recipient was refused: cto@example.com "
                              "(550 5.1.1 No such user)")
    assert "email to cto@example.com: given up after 1 attempt: SMTP: every recipient was " \
           "refused" in "\n".join(undelivered_lines(rig.outbox.database, rig.clock.now()))


def test_a_page_is_mailed_to_the_incident_recipients_too(
        rig_factory: Any, pagerduty: PagerDutyDouble, smtp: SmtpDouble) -> None:
    rig = rig_factory(routes_policy(pagerduty, smtp))
    deployment = rig.deployment(ProcedureKind.EMERGENCY)
    _page(rig, deployment, reason="emergency")
    _resolve(rig, deployment)
    rig.drain()
    assert [e["event_action"] for e in pagerduty.events] == ["trigger", "resolve"]
    assert [(m.rcpt_tos, m.subject) for m in smtp.messages] == [
        (["oncall@example.com"], f"[qlp] #{deployment} emergency"),
        (["oncall@example.com"], f"[qlp] Resolved: #{deployment} healthy again")]
    assert f"PagerDuty alert: qlp-deployment-{deployment}" in smtp.messages[0].body
