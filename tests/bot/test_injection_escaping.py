"""Mentions and links typed by a person or reported by a service are shown, never rendered
(issue 13, finding 4).

Every command and every kind of message (card and its updates, thread reply, broadcast,
channel notice, ephemeral answer, the answer of a click, status and history lines, and the
failure broadcast carrying a version a service reported on ``/health``) is driven through the
real app over signed requests; everything the bot sent to the Slack double (every Web API call's
arguments and every ``response_url`` post) and every command's ack is searched for the injected
markup. ``&``, ``<`` and ``>`` are escaped exactly once: ``&amp;lt;`` never appears.
"""

from __future__ import annotations

import itertools
import json
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from bot.clicks import click_task
from bot.outbox_sender import SlackOutboxSender
from bot.schedule.lock_reminders import LockReminders
from procedures.clock import FixedClock, SystemClock
from procedures.model import DeploymentState, ProcedureKind
from storage.db import Database
from tests.fakes.bot_harness import BotHarness
from tests.fakes.policies import make_policy
from tests.fakes.slack_double import SlackDouble
from tests.fakes.slack_views import ALWAYS_OPEN

CARD_TS = "1764849600.000100"

# The brief's strings, plus ids nobody mentions legitimately (so any raw copy is the injection).
INJECT = ("<!channel> <!here> <@U0LEAD1> <!subteam^S0RELEASE> <https://evil.example|click> "
          "<@U0INJECT> <!subteam^S0INJECT> <!everyone> R&D x<y>z")
NEVER_RAW = ("<!channel>", "<!here>", "<!everyone>", "<https://evil.example|click>",
             "<@U0INJECT>", "<!subteam^S0INJECT>", "<@U0LEAD1> <!subteam^S0RELEASE>",
             "x<y>z", "R&D")
ESCAPED = ("&lt;!channel&gt; &lt;!here&gt; &lt;@U0LEAD1&gt;", "R&amp;D x&lt;y&gt;z")
DOUBLE = ("&amp;lt;", "&amp;gt;", "&amp;amp;")


def _sent(slack: SlackDouble) -> list[tuple[str, str]]:
    """(method, arguments as JSON) of everything the bot sent Slack that Slack shows."""
    shown = {"chat.postMessage", "chat.update", "chat.postEphemeral", "response_url",
             "views.open"}
    return [(c.method, json.dumps(c.args, ensure_ascii=False)) for c in slack.calls()
            if c.method in shown]


def _kinds(slack: SlackDouble) -> dict[str, int]:
    """How many of each kind of message the bot sent (to show the test covers them)."""
    kinds: dict[str, int] = {}
    for call in slack.calls():
        args = call.args
        if call.method == "chat.postMessage":
            if args.get("thread_ts"):
                kind = ("broadcast" if str(args.get("reply_broadcast")).lower() in ("true", "1")
                        else "thread reply")
            elif str(args.get("channel", "")).startswith(("U", "W", "D")):
                kind = "DM"
            else:
                kind = "card" if args.get("blocks") else "channel notice"
        elif call.method == "chat.update":
            kind = "card update"
        elif call.method == "chat.postEphemeral":
            kind = "ephemeral"
        elif call.method == "response_url":
            kind = "answer of a click"
        else:
            continue
        kinds[kind] = kinds.get(kind, 0) + 1
    return kinds


def _problems(texts: list[tuple[str, str]]) -> list[str]:
    found = []
    for where, text in texts:
        for bad in NEVER_RAW + DOUBLE:
            if bad in text:
                at = text.index(bad)
                found.append(f"{where}: {bad!r} in ...{text[max(at - 80, 0):at + 60]}...")
    return found


def _deliver(bot: BotHarness, clock: FixedClock) -> None:
    """Send everything queued with the bot's outbox sender, on the test's clocks (its pacing
    reads a monotonic clock: one that moves 10 s per reading never makes it wait)."""
    ticks = itertools.count()
    sender = SlackOutboxSender(bot.services.outbox, bot.services.deployments,
                               bot.services.slack, clock,
                               monotonic=lambda: 1000.0 + 10 * next(ticks))
    idle = 0
    for _ in range(400):
        clock.advance(timedelta(seconds=5))
        idle = 0 if sender.run_once() else idle + 1
        if idle > 3:
            return


def _press(bot: BotHarness, action: str, value: str, user: str) -> None:
    assert bot.press(action, value, user=user, message_ts=CARD_TS).status_code == 200
    clicks = click_task(bot.services)
    bot.wait_for(lambda: not clicks.busy(), what="the click to be decided")


@pytest.fixture
def clock() -> FixedClock:
    from tests.bot.conftest import OPEN_WINDOW

    return FixedClock(OPEN_WINDOW)


@pytest.mark.slow  # 20 s of the fast lane, measured
def test_every_command_and_message_kind_shows_injected_markup_as_text(
        bot: BotHarness, clock: FixedClock) -> None:
    acks: list[tuple[str, str]] = []

    def run(text: str, user: str = "U0DEV") -> str:
        answer = bot.command(text, user=user).text
        acks.append((f"ack of /qlp {text[:30]}", answer))
        return answer

    reason = f'--reason "{INJECT}"'
    # A person's lock and what shows it: status, window, a refused deploy, the lock itself.
    run(f"lock production {reason}")
    run(f"lock production {reason}", user="U0LEAD1")  # refused: names the holder and reason
    run("status")
    run("status production")
    run("window")
    run("deploy v1.2.3")  # refused: locked, with the lock's reason
    run(f"unlock production {reason}")
    # Requests with reasons: cards, thread replies, broadcasts, channel notices, paging.
    run(f"hotfix v1.2.4 {reason}")
    run(f"emergency security v1.2.5 {reason}")
    run(f'deploy v1.2.6 to staging --override "{INJECT}"')
    run(f"rollback {reason}")
    run(f"rollback v1.0.0 in staging {reason}")
    _deliver(bot, clock)
    # Clicks: approvals, a rejection, an override grant; their answers and thread replies.
    ids = [d.id for d in bot.services.deployments.list_in_states(
        (DeploymentState.PENDING_APPROVAL,)) if d.id is not None]
    assert ids, acks
    for deployment_id in ids:
        _press(bot, "qlp_approve", str(deployment_id), "U0LEAD1")
        _press(bot, "qlp_approve", str(deployment_id), "U0HEAD1")
    run(f"lock production {reason}")
    for deployment_id in ids:
        run(f"checklist {deployment_id}")
        run(f"cancel {deployment_id}")
    run("history")
    run("history production 20")
    run("status")
    run("stats")
    run("help")
    run(f"frobnicate {INJECT}")  # unknown command: the typed text is quoted back
    # The lock's holder is reminded by DM once it is older than lock_max_age.
    reminders = LockReminders(bot.services.environments, bot.services.outbox,
                              bot.services.policy)
    assert reminders.run_due(clock.now() + timedelta(hours=9)) == 1
    _deliver(bot, clock)

    sent = _sent(bot.slack)
    kinds = _kinds(bot.slack)
    print("message kinds sent:", kinds)
    for kind in ("card", "card update", "thread reply", "broadcast", "channel notice",
                 "answer of a click", "DM"):
        assert kinds.get(kind), (kind, kinds)
    problems = _problems(acks + sent)
    assert not problems, "\n".join(problems)
    everything = "\n".join(text for _, text in acks + sent)
    for shown in ESCAPED:
        assert shown in everything, shown  # the reason is shown, as text


# -- a version reported by the deployed service ---------------------------------------------------

HOSTILE_VERSION = "<!channel> <@U0INJECT> <https://evil.example|click> R&D"


@pytest.fixture
def hostile_bot(database: Database, slack: SlackDouble, tmp_path: Path) -> Iterator[BotHarness]:
    """The local platform runs the sample service, which reports ``HOSTILE_VERSION`` on
    ``/health`` whatever version it was asked to run."""
    policy = make_policy(real_ports=True, windows=ALWAYS_OPEN,
                         monitoring={"duration": "2s", "interval": "1s"})
    production = policy.environments["production"]
    command = [sys.executable, "-m", "procedures.platforms.local.sample_service", "--port",
               "{port}", "--version", HOSTILE_VERSION, "--slot", "{slot}"]
    assert production.local is not None
    local = production.local.model_copy(update={"command": command, "ready_timeout": 3})
    local = local.model_copy(update={"ready_timeout": timedelta(seconds=3)})
    environments = {**policy.environments,
                    "production": production.model_copy(update={"local": local})}
    policy = policy.model_copy(update={"environments": environments})
    harness = BotHarness(database=database, policy=policy, clock=SystemClock(),
                         home=tmp_path / "home", slack=slack, start_worker=True)
    yield harness
    harness.close()


@pytest.mark.slow  # the local platform's real processes
def test_a_version_reported_by_the_service_is_shown_as_text_in_the_failure_broadcast(
        hostile_bot: BotHarness) -> None:
    bot = hostile_bot
    answer = bot.command("deploy v1.2.3").text
    assert "Deployment #1 requested" in answer, answer
    bot.wait_for(lambda: bot.slack.calls("chat.postMessage"), what="the card")
    assert bot.press("qlp_approve", "1", user="U0LEAD1", message_ts=CARD_TS).status_code == 200
    deployments = bot.services.deployments
    bot.wait_for(lambda: deployments.get(1).state.terminal, timeout=90, what="the run to end")
    assert deployments.get(1).state is not DeploymentState.SUCCEEDED
    bot.wait_for(lambda: any(c.args.get("reply_broadcast") in (True, "true", "1")
                             and "v1.2.3" in str(c.args.get("text"))
                             for c in bot.slack.calls("chat.postMessage")),
                 what="the failure broadcast")
    bot.settle()
    bot.command("status")
    bot.command("history")
    sent = _sent(bot.slack)
    problems = _problems(sent)
    assert not problems, "\n".join(problems)
    everything = "\n".join(text for _, text in sent)
    assert "&lt;!channel&gt; &lt;@U0INJECT&gt;" in everything  # shown, as text


# -- policy texts, stored errors and a service's error in a reply ----------------------------------


@pytest.fixture
def frozen_bot(database: Database, clock: FixedClock, slack: SlackDouble,
               tmp_path: Path) -> Iterator[BotHarness]:
    """A freeze today whose reason (a policy text) carries the injected markup."""
    from tests.fakes.policies import BASE

    windows = {**BASE["windows"], "freezes": [
        {"start": "2026-12-01", "end": "2026-12-02", "reason": INJECT}]}
    harness = BotHarness(database=database, policy=make_policy(windows=windows), clock=clock,
                         home=tmp_path / "home", slack=slack)
    yield harness
    harness.close()


def test_policy_texts_stored_errors_and_service_errors_show_markup_as_text(
        frozen_bot: BotHarness, clock: FixedClock) -> None:
    bot = frozen_bot
    acks: list[tuple[str, str]] = []

    def run(text: str, user: str = "U0DEV") -> str:
        answer = bot.command(text, user=user).text
        acks.append((f"ack of /qlp {text[:30]}", answer))
        return answer

    # The freeze's reason: window, a refused deploy, its dry run, a refused schedule, status.
    run("window")
    run("deploy v1.2.3")
    run("deploy v1.2.3 --dry-run")
    run("deploy v1.2.3 at 2026-12-02 11:00")
    run("hotfix v1.2.4 --reason \"checkout 500s\"")
    run('deploy v1.2.3 --override "the fix cannot wait"')
    # A run's stored error holding a service's words: history and status show it as text.
    deployments = bot.services.deployments
    failed = deployments.create(ProcedureKind.STANDARD, "v1.2.3", "staging", "U0DEV",
                                channel="C0DEPLOY")
    assert failed.id is not None
    for state in (DeploymentState.QUEUED, DeploymentState.RUNNING):
        assert deployments.transition(failed.id, [deployments.get(failed.id).state], state,
                                      **({"worker_id": "w1"} if state is DeploymentState.RUNNING
                                         else {}))
    assert deployments.transition(failed.id, [DeploymentState.RUNNING],
                                  DeploymentState.FAILED, error=f"Deploy failed: {INJECT}")
    run("history")
    run("status staging")
    # A service's error (Slack's own error code, here) in the answer of a click.
    _deliver(bot, clock)
    pending = [d.id for d in deployments.list_in_states((DeploymentState.PENDING_APPROVAL,))
               if d.id is not None]
    assert pending, acks
    bot.slack.fail_next("usergroups.users.list", INJECT, times=5)
    _press(bot, "qlp_approve", str(pending[0]), "U0LEAD2")
    _deliver(bot, clock)

    sent = _sent(bot.slack)
    problems = _problems(acks + sent)
    assert not problems, "\n".join(problems)
    everything = "\n".join(text for _, text in acks + sent)
    assert "&lt;!channel&gt; &lt;!here&gt;" in everything
    assert everything.count("R&amp;D x&lt;y&gt;z") >= 4  # freeze, history, error, window
