"""``notify_audiences``: a Slack post per audience channel and an e-mail per audience list."""

from __future__ import annotations

import pytest

from bot.notify import notify_audiences, plain_text
from procedures.clock import FixedClock
from procedures.model import ProcedureKind
from storage.db import Database
from storage.deployments import DeploymentRepository
from storage.outbox import Outbox
from tests.fakes.policies import make_policy
from tests.fakes.smtp_double import SmtpDouble
from tests.notifications.conftest import routes_policy

TEXT = ":calendar: *Scheduled deployment #1: v1.2.3* by <@U0DEV>, see <https://x.example/r|notes>"


def test_each_audience_gets_its_routes_once(database: Database, clock: FixedClock) -> None:
    outbox = Outbox(database, clock)
    deployment = DeploymentRepository(database, clock).create(
        ProcedureKind.STANDARD, "v1.2.3", "production", "U0DEV").id
    policy = routes_policy(smtp=SmtpDouble())  # never started: only enqueued here
    audiences = ["engineering", "leadership", "customer-success", "nobody", "leadership"]
    ids = notify_audiences(outbox, policy, audiences, TEXT, subject="Scheduled: v1.2.3",
                           dedup_key="schedule:1:notice", deployment_id=deployment)
    rows = [outbox.get(i) for i in ids]
    assert [(r.kind, r.channel, r.dedup_key, r.ordering_key) for r in rows if r] == [
        ("post", "C0ENGINEER", "schedule:1:notice:slack:engineering", "channel:C0ENGINEER"),
        ("post", "C0LEADERS", "schedule:1:notice:slack:leadership", "channel:C0LEADERS"),
        ("email", "email:leadership", "schedule:1:notice:email:leadership", "email:leadership"),
        ("email", "email:customer-success", "schedule:1:notice:email:customer-success",
         "email:customer-success"),
    ]
    assert all(r is not None and r.deployment_id == deployment for r in rows)
    assert rows[0] is not None and rows[0].payload == {"text": TEXT}
    assert rows[2] is not None and rows[2].payload == {
        "to": ["cto@example.com"], "subject": "Scheduled: v1.2.3",
        "body": ":calendar: Scheduled deployment #1: v1.2.3 by @U0DEV, see notes "
                "(https://x.example/r)"}
    # Asked again (a retried tick): the same rows, nothing new.
    assert notify_audiences(outbox, policy, audiences, TEXT, subject="Scheduled: v1.2.3",
                            dedup_key="schedule:1:notice", deployment_id=deployment) == ids
    assert len(outbox.undelivered(100)) == 4


def test_without_an_email_section_only_slack(database: Database, clock: FixedClock) -> None:
    outbox = Outbox(database, clock)
    policy = make_policy(notifications={"audiences": {"leadership": "C0LEADERS"}})
    ids = notify_audiences(outbox, policy, ["leadership", "engineering"], "hi", subject="Hi",
                           dedup_key="hi")
    assert [(n.kind, n.channel) for n in outbox.undelivered(10)] == [("post", "C0LEADERS")]
    assert len(ids) == 1


def test_the_messages_join_the_callers_transaction(database: Database,
                                                   clock: FixedClock) -> None:
    outbox = Outbox(database, clock)
    policy = routes_policy(smtp=SmtpDouble())
    with pytest.raises(RuntimeError), database.session() as session:
        notify_audiences(outbox, policy, ["leadership"], "hi", subject="Hi", dedup_key="t",
                         session=session)
        raise RuntimeError("the caller's own write failed")
    assert outbox.undelivered(10) == []


@pytest.mark.parametrize(("mrkdwn", "text"), [
    ("*bold* and 2*3*4", "bold and 2*3*4"),
    ("<@U0DEV> in <#C0DEPLOY|deploys> and <#C0OTHER>", "@U0DEV in #deploys and #C0OTHER"),
    ("<https://x.example/a|the runbook> or <https://x.example/b>",
     "the runbook (https://x.example/a) or https://x.example/b"),
    ("a &lt;b&gt; &amp; c", "a <b> & c"),
])
def test_plain_text(mrkdwn: str, text: str) -> None:
    assert plain_text(mrkdwn) == text
