"""``/qlp hotfix``, ``/qlp emergency``, ``/qlp rollback`` and the Roll back button.

Signed requests into the real Bolt app (the ``bot`` fixture: worker stopped, clock fixed on
Tue 2026-12-01 11:00 UTC, inside the window): each command's refusals (rule and what would
allow it, nothing written) and the requests it creates (row, options, audit, the first thread
reply and, for an emergency, the page in the outbox). Then an emergency and a manual rollback
end to end on the real local platform, with the worker running.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from procedures.clock import FixedClock, SystemClock
from procedures.model import DeploymentState, ProcedureKind, Slot
from storage.db import Database
from storage.models import Notification
from tests.conftest import ON_POSTGRES_ONLY
from tests.fakes.bot_harness import BotHarness
from tests.fakes.policies import make_policy
from tests.fakes.slack_double import SlackDouble
from tests.fakes.slack_views import ALWAYS_OPEN, CHANNEL
from tests.fakes.slack_views import card as _card
from tests.fakes.slack_views import ephemeral_for as _ephemeral_for
from tests.fakes.slack_views import thread_text as _thread_text

S = DeploymentState
ENV = "production"


# -- helpers ------------------------------------------------------------------------------------


def _id_in(text: str) -> int:
    """The deployment number in a reply such as ``Hotfix #3 requested: ...``."""
    return int(text.split("#", 1)[1].split(" ", 1)[0].rstrip(":"))


def _outbox(bot: BotHarness) -> list[Notification]:
    return bot.services.outbox.undelivered(limit=1000)


def _replies(bot: BotHarness, deployment_id: int) -> list[Notification]:
    """Thread replies written for ``deployment_id`` (not delivered: the worker is stopped)."""
    return [n for n in _outbox(bot) if n.kind == "post" and n.thread_of == deployment_id]


def _actions(bot: BotHarness) -> list[str]:
    return [entry.action for entry in bot.services.audit.recent(500)]


def _finished(bot: BotHarness, clock: FixedClock, kind: ProcedureKind, version: str,
              state: DeploymentState = S.SUCCEEDED, **options: Any) -> int:
    """A deployment that already ran (created, then moved to ``state`` a minute later)."""
    deployments = bot.services.deployments
    record = deployments.create(kind, version, ENV, "U0DEV", state=S.RUNNING, options=options)
    assert record.id is not None
    clock.advance(timedelta(minutes=1))
    assert deployments.transition(record.id, [S.RUNNING], state)
    return record.id


def _history(bot: BotHarness, clock: FixedClock) -> None:
    """#1 v1.0.0 on blue, then #2 v1.1.0 on green: v1.1.0 is live."""
    _finished(bot, clock, ProcedureKind.STANDARD, "v1.0.0")
    bot.services.environments.record_switch(ENV, Slot.BLUE, "v1.0.0")
    _finished(bot, clock, ProcedureKind.STANDARD, "v1.1.0")
    bot.services.environments.record_switch(ENV, Slot.GREEN, "v1.1.0")


def _refused(text: str, rule: str) -> None:
    assert text.startswith(":no_entry:"), text
    assert f"(rule: {rule})" in text, text


# -- /qlp hotfix --------------------------------------------------------------------------------


def test_hotfix_request_says_what_it_skips(bot: BotHarness) -> None:
    text = bot.command('hotfix v1.2.4 --reason "checkout 500s <!channel>"').text
    assert text.startswith("Hotfix #1 requested: v1.2.4 to production"), text
    record = bot.services.deployments.get(1)
    assert record is not None
    assert (record.kind, record.version, record.state) == (ProcedureKind.HOTFIX, "v1.2.4",
                                                           S.PENDING_APPROVAL)
    assert record.reason == "checkout 500s <!channel>"
    assert record.options["maintenance"] is False
    assert "deployment.requested" in _actions(bot)
    [first] = _replies(bot, 1)
    said = first.payload["text"]
    assert "requested hotfix v1.2.4 to production" in said
    assert "&lt;!channel&gt;" in said and "<!channel>" not in said  # echoed text cannot ping
    assert "without the extended health check" in said
    assert "recording a performance baseline" in said
    assert "Monitoring is shortened to 2s" in said  # 2 s: two 1 s intervals (test policy)
    assert any(n.payload.get("card_for") == 1 for n in _outbox(bot))


def test_a_hotfix_outside_the_window_is_allowed(bot: BotHarness, clock: FixedClock) -> None:
    clock.set(datetime(2026, 12, 4, 19, 0, tzinfo=UTC))  # a Friday evening
    assert "not allowed now" in bot.command("deploy v1.2.4").text
    text = bot.command('hotfix v1.2.4 --reason "checkout 500s"').text
    assert text.startswith("Hotfix #1 requested"), text
    [first] = _replies(bot, 1)
    assert "outside the preferred window (Friday is an avoided day)" in first.payload["text"]


def test_a_hotfix_in_a_freeze_is_refused(bot: BotHarness, clock: FixedClock) -> None:
    clock.set(datetime(2026, 12, 22, 11, 0, tzinfo=UTC))
    text = bot.command('hotfix v1.2.4 --reason "checkout 500s"').text
    _refused(text, "freeze")
    assert "2026-12-21 to 2027-01-04: year-end freeze" in text
    assert "hotfixes are possible again from Tue 2027-01-05 00:00 UTC" in text
    assert "`/qlp emergency &lt;category&gt; &lt;version&gt; --reason" in text
    assert bot.services.deployments.list_recent() == []
    assert "hotfix.refused" in _actions(bot)


def test_a_hotfix_past_a_manual_lock_is_refused(bot: BotHarness) -> None:
    assert bot.services.environments.acquire_lock(ENV, "U0OPS", "incident 42", None, None)
    text = bot.command('hotfix v1.2.4 --reason "checkout 500s"').text
    _refused(text, "environment-lock")
    assert "locked by <@U0OPS>: incident 42" in text and "/qlp unlock production" in text
    assert bot.services.deployments.list_recent() == []


@pytest.mark.parametrize("state", [S.PENDING_APPROVAL, S.QUEUED, S.RUNNING])
def test_a_hotfix_waits_for_another_deployment(bot: BotHarness, state: DeploymentState) -> None:
    bot.services.deployments.create(ProcedureKind.STANDARD, "v1.2.3", ENV, "U0DEV", state=state)
    text = bot.command('hotfix v1.2.4 --reason "checkout 500s"').text
    _refused(text, "one-at-a-time")
    assert "Deployment #1 (v1.2.3" in text and "/qlp cancel 1" in text
    assert len(bot.services.deployments.list_recent()) == 1


def test_hotfix_input_errors_and_dry_run(bot: BotHarness) -> None:
    assert "needs a reason" in bot.command("hotfix v1.2.4").text
    assert "is not a version" in bot.command('hotfix latest --reason "x y z"').text
    assert "no environment `prod`" in bot.command('hotfix v1.2.4 to prod --reason "abc"').text
    dry = bot.command('hotfix v1.2.4 --reason "checkout 500s" --dry-run').text
    assert "Dry run: hotfix v1.2.4 to production" in dry and "Hotfix now: allowed" in dry
    assert "Extended health check" not in dry and "Record the performance baseline" not in dry
    assert "Monitor the hotfix (shortened)" in dry and "Maintenance" not in dry
    assert bot.services.deployments.list_recent() == []


# -- /qlp emergency -----------------------------------------------------------------------------


def test_emergency_request_pages_broadcasts_and_attaches_the_review(
        bot: BotHarness, clock: FixedClock) -> None:
    clock.set(datetime(2026, 12, 26, 3, 0, tzinfo=UTC))  # a Saturday night in the freeze
    text = bot.command('emergency outage v1.2.5 --reason "API down"').text
    assert text.startswith("Emergency deployment #1 requested: v1.2.5 to production (outage)"), \
        text
    assert "on-call route is paged" in text
    record = bot.services.deployments.get(1)
    assert record is not None and record.kind is ProcedureKind.EMERGENCY
    assert record.state is S.PENDING_APPROVAL and record.reason == "API down"
    options = record.options
    assert options["category"] == "outage" and options["fast_track"] is True
    assert datetime.fromisoformat(options["review_due"]) == clock.now() + timedelta(hours=24)
    assert len(options["checklist"]) == 14
    assert options["checklist"][0] == {"section": "Emergency Authorization",
                                       "item": "Emergency approval obtained", "done_by": None}

    [page] = [n for n in _outbox(bot) if n.kind == "pagerduty"]
    assert page.channel == "oncall" and page.deployment_id == 1
    assert page.payload["event_action"] == "trigger"
    assert page.payload["payload"]["severity"] == "critical"
    assert page.payload["payload"]["custom_details"]["version"] == "v1.2.5"
    assert "routing_key" not in page.payload  # the sender adds it from the policy
    # Its own ordering key: a page nobody delivers yet never holds back the Slack messages.
    assert page.ordering_key == "pagerduty:oncall:1"

    [first] = _replies(bot, 1)
    said = first.payload["text"]
    assert first.payload["reply_broadcast"] is True
    assert "requested an *emergency deployment* (outage) of v1.2.5" in said
    assert "fast track: no smoke tests" in said
    assert "Post-emergency review due by Sun 2026-12-27 03:00 UTC" in said
    assert "emergency checklist (14 items) is attached: `/qlp checklist 1`" in said
    actions = _actions(bot)
    assert "deployment.requested" in actions and "oncall.paged" in actions


def test_emergency_blue_green_categories(bot: BotHarness) -> None:
    text = bot.command('emergency critical-bug v1.2.5 --reason "payments fail"').text
    assert "Emergency deployment #1 requested" in text
    record = bot.services.deployments.get(1)
    assert record is not None and record.options["fast_track"] is False
    [page] = [n for n in _outbox(bot) if n.kind == "pagerduty"]
    assert page.payload["payload"]["severity"] == "error"
    assert "blue-green: ready within 5m, smoke tests" in _replies(bot, 1)[0].payload["text"]


def test_emergency_refusals(bot: BotHarness) -> None:
    hint = bot.command('emergency outtage v1.2.5 --reason "API down"').text
    assert "is not an emergency category" in hint and "`outage`" in hint
    assert "needs a reason" in bot.command("emergency outage v1.2.5").text

    # A request waiting for approval does not hold an emergency back; a running one makes it
    # wait in line, said up front (never "starting" and then dropped).
    bot.services.deployments.create(ProcedureKind.STANDARD, "v1.2.3", ENV, "U0DEV",
                                    state=S.PENDING_APPROVAL)
    running = bot.services.deployments.create(ProcedureKind.STANDARD, "v1.2.4", "staging",
                                              "U0DEV", state=S.RUNNING)
    assert "Emergency deployment #3 requested" in bot.command(
        'emergency security v1.2.5 --reason "CVE-2026-1"').text
    text = bot.command('emergency security v1.2.5 to staging --reason "CVE-2026-1"').text
    assert "Emergency deployment #4 requested" in text, text
    assert f"It waits for #{running.id}, under way on staging, and starts right after it." \
        in text
    bot.services.deployments.transition(4, [S.PENDING_APPROVAL], S.REJECTED)

    # A person's lock stops an emergency (it takes no override): refused with the holder.
    assert bot.services.environments.acquire_lock("staging", "U0OPS", "db restore", None, None)
    bot.services.deployments.transition(running.id or 0, [S.RUNNING], S.SUCCEEDED)
    text = bot.command('emergency outage v1.2.5 to staging --reason "API down"').text
    _refused(text, "environment-lock")
    assert "<@U0OPS>" in text and "break glass" not in text
    assert [n for n in _outbox(bot) if n.kind == "pagerduty"
            and n.deployment_id not in (3, 4)] == []


def test_emergency_approval_is_a_second_person_pressing_approve(
        bot: BotHarness, slack: SlackDouble) -> None:
    assert "#1 requested" in bot.command('emergency outage v1.2.5 --reason "API down"').text
    bot.press("qlp_approve", "1", user="U0DEV", message_ts="1.000001")
    bot.press("qlp_approve", "1", user="U0STRANGER", message_ts="1.000001")
    bot.wait_for(lambda: "someone else must approve" in _ephemeral_for(slack, "U0DEV"),
                 what="the self-approval refusal")
    bot.wait_for(lambda: "may not approve emergency deployments" in
                 _ephemeral_for(slack, "U0STRANGER"), what="the stranger's refusal")
    assert bot.services.deployments.get(1).state is S.PENDING_APPROVAL
    bot.press("qlp_approve", "1", user="U0LEAD2", message_ts="1.000001")
    bot.wait_for(lambda: "it is starting" in _ephemeral_for(slack, "U0LEAD2"),
                 what="the approval")
    assert bot.services.deployments.get(1).state is S.QUEUED


def test_emergency_dry_run(bot: BotHarness) -> None:
    dry = bot.command('emergency security v1.2.5 --reason "CVE" --dry-run').text
    assert "Dry run: emergency (security) v1.2.5 to production" in dry
    assert "an emergency may run at any time, in a freeze too" in dry
    assert "Smoke tests" not in dry and "Minimal verification" in dry
    assert bot.services.deployments.list_recent() == []
    assert [n for n in _outbox(bot) if n.kind == "pagerduty"] == []


# -- /qlp rollback ------------------------------------------------------------------------------


def test_rollback_goes_to_the_version_before_the_live_one(
        bot: BotHarness, clock: FixedClock) -> None:
    _history(bot, clock)
    # An automatic rollback of v1.2.0 leaves previous_version = v1.2.0 in the state row; the
    # rollback must not go there: v1.2.0 never succeeded.
    _finished(bot, clock, ProcedureKind.STANDARD, "v1.2.0", S.ROLLED_BACK)
    environments = bot.services.environments
    environments.record_switch(ENV, Slot.BLUE, "v1.2.0")
    environments.record_switch(ENV, Slot.GREEN, "v1.1.0")
    assert environments.get(ENV).previous_version == "v1.2.0"

    text = bot.command('rollback --reason "error rate up"').text
    assert text.startswith("Rollback #4 requested: production from v1.1.0 back to v1.0.0"), text
    record = bot.services.deployments.get(4)
    assert record is not None
    assert (record.kind, record.version, record.state) == (ProcedureKind.ROLLBACK, "v1.0.0",
                                                           S.PENDING_APPROVAL)
    assert record.options["target_version"] == "v1.0.0"
    assert record.options["from_version"] == "v1.1.0"
    assert record.options["target_deployment"] == 1
    [first] = _replies(bot, 4)
    assert first.payload["reply_broadcast"] is True
    assert "requested a *rollback* of production from v1.1.0 to v1.0.0" in \
        first.payload["text"]


def test_rollback_to_a_named_version(bot: BotHarness, clock: FixedClock) -> None:
    _history(bot, clock)
    never = bot.command('rollback v0.9.0 --reason "back to the old one"').text
    _refused(never, "rollback-target")
    assert "v0.9.0 never succeeded on production" in never and "v1.0.0" in never
    live = bot.command('rollback v1.1.0 --reason "again"').text
    _refused(live, "rollback-target")
    assert "already live" in live
    assert "Rollback #3 requested" in bot.command('rollback v1.0.0 --reason "back"').text


def test_rollback_with_nothing_to_go_back_to(bot: BotHarness, clock: FixedClock) -> None:
    _refused(bot.command('rollback --reason "error rate up"').text, "nothing-to-roll-back")
    _finished(bot, clock, ProcedureKind.STANDARD, "v1.0.0")
    bot.services.environments.record_switch(ENV, Slot.BLUE, "v1.0.0")
    text = bot.command('rollback --reason "error rate up"').text
    _refused(text, "rollback-target")
    assert "/qlp hotfix" in text
    assert len(bot.services.deployments.list_recent()) == 1


def test_rollback_across_an_irreversible_migration_is_refused(
        bot: BotHarness, clock: FixedClock) -> None:
    # A reversible migration before v1.0.0, an irreversible one between v1.0.0 and v1.1.0.
    _finished(bot, clock, ProcedureKind.MIGRATION, "2026_11_01_add_table",
              migration="2026_11_01_add_table", irreversible=True)
    _finished(bot, clock, ProcedureKind.STANDARD, "v1.0.0")
    _finished(bot, clock, ProcedureKind.MIGRATION, "2026_11_20_add_index",
              migration="2026_11_20_add_index", irreversible=False)
    _finished(bot, clock, ProcedureKind.MIGRATION, "2026_11_26_drop_column",
              migration="2026_11_26_drop_column", irreversible=True)
    _finished(bot, clock, ProcedureKind.STANDARD, "v1.1.0")
    bot.services.environments.record_switch(ENV, Slot.GREEN, "v1.1.0")
    text = bot.command('rollback --reason "error rate up"').text
    _refused(text, "irreversible-migration")
    assert "`2026_11_26_drop_column` (#4)" in text and "2026_11_20_add_index" not in text
    assert "2026_11_01_add_table" not in text
    assert "Roll forward instead" in text and "override approver (<@U0HEAD1>)" in text
    assert len(bot.services.deployments.list_recent()) == 5
    dry = bot.command('rollback --reason "error rate up" --dry-run').text
    assert "crosses irreversible migration(s) `2026_11_26_drop_column` (#4)" in dry
    assert "rollback.refused" in _actions(bot)


def test_rollback_refusals_lock_and_busy(bot: BotHarness, clock: FixedClock) -> None:
    _history(bot, clock)
    running = bot.services.deployments.create(ProcedureKind.HOTFIX, "v1.1.1", ENV, "U0DEV",
                                              state=S.RUNNING)
    _refused(bot.command('rollback --reason "error rate up"').text, "one-at-a-time")
    bot.services.deployments.transition(running.id or 0, [S.RUNNING], S.NEEDS_ATTENTION,
                                        error="undo of Switch traffic failed")
    assert bot.services.environments.acquire_lock(ENV, "U0DEV", "needs attention after #3",
                                                  running.id, None)
    text = bot.command('rollback --reason "error rate up"').text
    _refused(text, "needs-attention")
    assert "#3 needs attention" in text


def test_rollback_approval_needs_a_rollback_approver(
        bot: BotHarness, clock: FixedClock, slack: SlackDouble) -> None:
    _history(bot, clock)
    assert "Rollback #3 requested" in bot.command('rollback --reason "error rate up"').text
    bot.press("qlp_approve", "3", user="U0LEAD2", message_ts="1.000001")  # standard only
    bot.wait_for(lambda: "may not approve rollback deployments" in
                 _ephemeral_for(slack, "U0LEAD2"), what="the refusal")
    bot.press("qlp_approve", "3", user="U0LEAD1", message_ts="1.000001")
    bot.wait_for(lambda: "it is starting" in _ephemeral_for(slack, "U0LEAD1"),
                 what="the approval")
    assert bot.services.deployments.get(3).state is S.QUEUED


def test_the_roll_back_button_requests_a_rollback(
        bot: BotHarness, clock: FixedClock, slack: SlackDouble) -> None:
    _history(bot, clock)
    # #1 is no longer live: its button refuses.
    bot.press("qlp_rollback", "1", user="U0DEV", message_ts="1.000001")
    bot.wait_for(lambda: "no longer live" in _ephemeral_for(slack, "U0DEV"),
                 what="the refusal")
    assert "(rule: rollback-source)" in _ephemeral_for(slack, "U0DEV")
    # #2 is live: its button asks to go back to v1.0.0, once however often Slack retries.
    for _ in range(2):
        bot.press("qlp_rollback", "2", user="U0DEV", message_ts="1.000002",
                  action_ts="1764165700.000001")
    bot.wait_for(lambda: "Rollback #3 requested" in _ephemeral_for(slack, "U0DEV"),
                 what="the request")
    assert _ephemeral_for(slack, "U0DEV").count("Rollback #3 requested") == 1
    record = bot.services.deployments.get(3)
    assert record is not None and record.kind is ProcedureKind.ROLLBACK
    assert record.version == "v1.0.0" and record.requester == "U0DEV"
    assert record.reason == "rollback of #2 requested from its card"
    assert len(bot.services.deployments.list_recent()) == 3
    # The presser requested it, so someone else must approve it.
    bot.press("qlp_approve", "3", user="U0DEV", message_ts="1.000003")
    bot.wait_for(lambda: "someone else must approve" in _ephemeral_for(slack, "U0DEV"),
                 what="the self-approval refusal")


# -- end to end on the real local platform ------------------------------------------------------


@pytest.fixture
def live_bot(database: Database, slack: SlackDouble, tmp_path: Path) -> Iterator[BotHarness]:
    policy = make_policy(real_ports=True, windows=ALWAYS_OPEN,
                         monitoring={"duration": "3s", "interval": "1s"})
    harness = BotHarness(database=database, policy=policy, clock=SystemClock(),
                         home=tmp_path / "home", slack=slack, start_worker=True)
    yield harness
    harness.close()


def _served(bot: BotHarness) -> str:
    url = bot.services.policy.environments[ENV].url
    return str(httpx.get(url + "/health", timeout=5).json()["version"])


def _approve_and_finish(bot: BotHarness, reply: str, approver: str) -> int:
    deployment_id = _id_in(reply)
    card = bot.wait_for(lambda: _card(bot.slack, deployment_id), what=f"the card of #"
                                                                      f"{deployment_id}")
    assert bot.press("qlp_approve", str(deployment_id), user=approver,
                     message_ts=card.ts).status_code == 200
    deployments = bot.services.deployments
    bot.wait_for(lambda: deployments.get(deployment_id).state.terminal, timeout=120,
                 what=f"#{deployment_id} to end")
    final = deployments.get(deployment_id)
    assert final.state is S.SUCCEEDED, (final.state, final.error)
    return deployment_id


@ON_POSTGRES_ONLY
@pytest.mark.slow  # the local platform's real processes, monitoring on the wall clock
def test_manual_rollback_and_emergency_end_to_end(live_bot: BotHarness) -> None:
    bot, slack = live_bot, live_bot.slack
    for version in ("v1.0.0", "v1.1.0"):
        reply = bot.command(f"deploy {version}").text
        assert "requested" in reply, reply
        _approve_and_finish(bot, reply, "U0LEAD2")
        assert _served(bot) == version

    # /qlp rollback: the requester cannot approve; a rollback approver does.
    reply = bot.command('rollback --reason "error rate up after v1.1.0"').text
    assert reply.startswith("Rollback #3 requested: production from v1.1.0 back to v1.0.0"), \
        reply
    card = bot.wait_for(lambda: _card(slack, 3), what="the rollback card")
    bot.press("qlp_approve", "3", user="U0DEV", message_ts=card.ts)
    bot.wait_for(lambda: "someone else must approve" in _ephemeral_for(slack, "U0DEV"),
                 what="the self-approval refusal")
    rollback_id = _approve_and_finish(bot, reply, "U0LEAD1")
    assert _served(bot) == "v1.0.0"
    state = bot.services.environments.get(ENV)
    assert state.live_version == "v1.0.0"
    bot.wait_for(lambda: "Deployed v1.0.0 to production" in _thread_text(slack, rollback_id),
                 what="the rollback's final reply")
    thread = _thread_text(slack, rollback_id)
    for phrase in ("requested a *rollback*", "Approved by <@U0LEAD1>",
                   "✓ Rollback snapshot", "✓ Switch traffic to the earlier version",
                   "✓ Post-rollback verification", "Stopped the old"):
        assert phrase in thread, (phrase, thread)

    # /qlp emergency outage: fast track, approved by someone else, paged, review and checklist.
    reply = bot.command('emergency outage v1.2.0 --reason "API down for EU users"').text
    assert reply.startswith("Emergency deployment #4 requested"), reply
    emergency_id = _approve_and_finish(bot, reply, "U0LEAD1")
    assert _served(bot) == "v1.2.0"
    pages = [n for n in bot.services.outbox.undelivered(limit=1000) if n.kind == "pagerduty"]
    # Paged on request, resolved once it succeeded (the test policy has no PagerDuty route).
    assert [(p.channel, p.deployment_id, p.payload["event_action"]) for p in pages] == [
        ("oncall", emergency_id, "trigger"), ("oncall", emergency_id, "resolve")]
    bot.wait_for(lambda: "Deployed v1.2.0 to production" in _thread_text(slack, emergency_id),
                 what="the emergency's final reply")
    thread = _thread_text(slack, emergency_id)
    for phrase in ("emergency deployment", "Post-emergency review due by",
                   f"`/qlp checklist {emergency_id}`", "✓ Emergency backup",
                   "✓ Minimal verification", "✓ Post-emergency review and checklist"):
        assert phrase in thread, (phrase, thread)
    assert "Smoke tests" not in thread.split("Approved by")[1]  # skipped on the fast track
    broadcast = [m.text for m in slack.thread(CHANNEL, _card(slack, emergency_id).ts)
                 if m.broadcast]
    assert any("requested an *emergency deployment*" in text for text in broadcast)
    assert any("Deployed v1.2.0 to production" in text for text in broadcast)
    record = bot.services.deployments.get(emergency_id)
    assert datetime.fromisoformat(record.options["review_due"]) > datetime.now(UTC)
    assert len(record.options["checklist"]) == 14
