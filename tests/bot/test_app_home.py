"""The App Home over signed requests into the real app, published to the Slack double.

Opening the Home tab acks at once and publishes a view (through the outbox) naming each
environment's live version and the running deployment; a change (a lock, a deployment
starting) republishes it once; a person without the right sees no Deploy... or Unlock button
and a forged click on one is refused by the gate; 20 environments fit Block Kit's limits.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from bot import actions
from bot.clicks import click_task
from bot.home import MAX_BLOCKS, TEXT_LIMIT, Buttons, EnvironmentHome, Waiting, home_view
from bot.home_publisher import HOME_KIND, HomePublisher
from bot.shell.slack_standin import home_view_problems
from bot.slack_requests import app_home_opened_body, home_block_actions_body
from procedures.clock import FixedClock
from procedures.model import DeploymentState, ProcedureKind, Slot
from procedures.windows import WindowPolicy
from storage.db import Database
from tests.bot.run_helpers import TinyRuns
from tests.fakes.bot_harness import BotHarness
from tests.fakes.policies import BASE, make_policy
from tests.fakes.slack_double import SlackDouble

STRANGER = "U0STRANGER"


class FakeMonotonic:
    """Pacing's clock, moved by the test."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _publisher(bot: BotHarness, **options: Any) -> HomePublisher:
    """The bot's own Home publisher task, replaced by one with the test's pacing clock."""
    tasks = bot.services.worker_tasks()
    index = next(i for i, t in enumerate(tasks) if isinstance(t, HomePublisher))
    tasks[index] = HomePublisher(bot.services, bot.services.slack, **options)
    return tasks[index]  # type: ignore[return-value]


def _open_home(bot: BotHarness, user: str, *, tab: str = "home") -> int:
    body = app_home_opened_body(user_id=user, tab=tab)
    response = bot.post(body, extra_headers={"content-type": "application/json"})
    return response.status_code


def _deliver(bot: BotHarness, publisher: HomePublisher) -> None:
    """Run the publisher until no Home publish is due (paced rows wait for the test's clock)."""
    for _ in range(50):
        if not publisher.run_once():
            return
    raise AssertionError("the publisher kept finding work")


def _homes(bot: BotHarness, user: str) -> list[dict[str, Any]]:
    return bot.slack.home_views(user)


def _text(view: dict[str, Any]) -> str:
    """Every text of a view, in order (sections, contexts, buttons)."""
    texts: list[str] = []
    for block in view["blocks"]:
        if "text" in block:
            texts.append(block["text"]["text"])
        for element in block.get("elements", []):
            texts.append(element["text"]["text"] if element.get("type") == "button"
                         else element.get("text", ""))
    return "\n".join(texts)


def _buttons(view: dict[str, Any], env: str) -> list[str]:
    for block in view["blocks"]:
        if block.get("block_id") == f"act-{env}":
            return [e["action_id"] for e in block["elements"]]
    return []


def _press(bot: BotHarness, action_id: str, env: str, user: str) -> str:
    """Press a Home button as ``user``; the answer the click got, once decided."""
    _press.count += 1  # type: ignore[attr-defined]
    action_ts = f"1764590400.{_press.count:06d}"  # type: ignore[attr-defined]
    body = home_block_actions_body(action_id=action_id, value=env, user_id=user,
                                   view_id=f"VH{user}", action_ts=action_ts)
    assert bot.post(body).status_code == 200
    clicks = click_task(bot.services)
    key = f"click:{action_id}:{action_ts}:{user}"
    answer = bot.wait_for(lambda: clicks.answer_of(key), what="the Home click's answer")
    return str(answer)


_press.count = 0  # type: ignore[attr-defined]


@pytest.fixture
def home_slack(slack: SlackDouble) -> SlackDouble:
    slack.users[STRANGER] = "stranger"
    return slack


# -- opening ------------------------------------------------------------------------------------


def test_opening_home_acks_first_then_publishes_live_versions_and_the_running_deployment(
        bot: BotHarness, home_slack: SlackDouble) -> None:
    environments = bot.services.environments
    environments.record_switch("production", Slot.BLUE, "v1.2.2")
    environments.record_switch("production", Slot.GREEN, "v1.2.3")
    environments.record_switch("staging", Slot.BLUE, "v2.0.0")
    runs = TinyRuns(bot)
    request = bot.command("deploy v1.2.4 to production", user="U0DEV")
    assert "requested" in request.text.lower(), request.text
    deployment = bot.services.deployments.list_recent("production", 1)[0]
    assert deployment.id is not None
    hold = runs.hold[deployment.id] = threading.Event()
    try:
        from tests.bot.run_helpers import press
        press(bot, deployment.id, "U0LEAD1")
        runs.pass_once()
        assert runs.started.setdefault(deployment.id, threading.Event()).wait(20)
        publisher = _publisher(bot, monotonic=FakeMonotonic())
        assert _open_home(bot, "U0LEAD2") == 200
        # The ack went out with the viewer and a publish queued: no Slack call before it.
        assert home_slack.call_count("views.publish") == 0
        pending = [n for n in bot.services.outbox.undelivered(100) if n.kind == HOME_KIND]
        assert [n.payload["user"] for n in pending] == ["U0LEAD2"]
        _deliver(bot, publisher)
        (view,) = _homes(bot, "U0LEAD2")
        assert view["type"] == "home" and view["callback_id"] == "qlp_home"
        text = _text(view)
        assert "Live: *v1.2.3* on green; previous v1.2.2 on blue" in text
        assert "Live: *v2.0.0* on blue; no previous version" in text
        assert f"Running: #{deployment.id} standard v1.2.4 by <@U0DEV>, running, step `work`" \
            in text
        assert home_view_problems(view) == []
    finally:
        hold.set()


def test_the_messages_tab_publishes_nothing_and_a_retry_publishes_once(
        bot: BotHarness, home_slack: SlackDouble) -> None:
    publisher = _publisher(bot, monotonic=FakeMonotonic())
    assert _open_home(bot, "U0DEV", tab="messages") == 200
    _deliver(bot, publisher)
    assert home_slack.call_count("views.publish") == 0
    # Slack retries an event it thinks was lost; both rows are covered by one publish.
    assert _open_home(bot, "U0DEV") == 200
    assert _open_home(bot, "U0DEV") == 200
    _deliver(bot, publisher)
    assert home_slack.call_count("views.publish") == 1


# -- changes ------------------------------------------------------------------------------------


def test_a_lock_and_a_deployment_starting_each_republish_once(
        bot: BotHarness, home_slack: SlackDouble, clock: FixedClock) -> None:
    pacing = FakeMonotonic()
    publisher = _publisher(bot, monotonic=pacing)
    assert _open_home(bot, "U0LEAD2") == 200
    _deliver(bot, publisher)
    assert len(_homes(bot, "U0LEAD2")) == 1
    _deliver(bot, publisher)
    assert len(_homes(bot, "U0LEAD2")) == 1  # nothing changed: nothing published

    pacing.now += 5
    bot.command('lock production --reason "incident 7 <!channel> & co"', user="U0DEV")
    _deliver(bot, publisher)
    homes = _homes(bot, "U0LEAD2")
    assert len(homes) == 2
    text = _text(homes[-1])
    assert ":lock: Locked by <@U0DEV>: incident 7 &lt;!channel&gt; &amp; co" in text
    assert "<!channel>" not in text
    pacing.now += 5
    _deliver(bot, publisher)
    assert len(_homes(bot, "U0LEAD2")) == 2  # once per change

    # A read-only command or a refusal is no change.
    bot.command("status", user="U0DEV")
    bot.command('lock production --reason "again"', user="U0DEV")  # refused: locked already
    pacing.now += 5
    _deliver(bot, publisher)
    assert len(_homes(bot, "U0LEAD2")) == 2

    bot.command("unlock production", user="U0DEV")
    runs = TinyRuns(bot)
    bot.command("deploy v1.2.4 to production", user="U0DEV")
    deployment = bot.services.deployments.list_recent("production", 1)[0]
    assert deployment.id is not None
    hold = runs.hold[deployment.id] = threading.Event()
    try:
        from tests.bot.run_helpers import press
        press(bot, deployment.id, "U0LEAD1")
        pacing.now += 5
        _deliver(bot, publisher)  # unlock, request and approval: one burst, one publish
        assert len(_homes(bot, "U0LEAD2")) == 3
        assert f"Pending: #{deployment.id}" not in _text(_homes(bot, "U0LEAD2")[-1])
        runs.pass_once()
        assert runs.started.setdefault(deployment.id, threading.Event()).wait(20)
        pacing.now += 5
        _deliver(bot, publisher)
        homes = _homes(bot, "U0LEAD2")
        assert len(homes) == 4
        assert f"Running: #{deployment.id} standard v1.2.4" in _text(homes[-1])
    finally:
        hold.set()


def test_a_burst_of_changes_within_the_pacing_coalesces_into_one_publish(
        bot: BotHarness, home_slack: SlackDouble, clock: FixedClock) -> None:
    pacing = FakeMonotonic()
    publisher = _publisher(bot, monotonic=pacing)
    _open_home(bot, "U0DEV")
    _deliver(bot, publisher)
    # Three changes, each seen by its own pass, while the viewer's pacing holds them back.
    for command in ('lock staging --reason "first hold"', "unlock staging",
                    'lock staging --reason "second hold"'):
        bot.command(command, user="U0DEV")
        publisher.run_once()
    rows = [n for n in bot.services.outbox.undelivered(100) if n.kind == HOME_KIND]
    assert len(rows) == 3
    assert len(_homes(bot, "U0DEV")) == 1
    pacing.now += 2
    clock.advance(timedelta(seconds=2))
    _deliver(bot, publisher)
    homes = _homes(bot, "U0DEV")
    assert len(homes) == 2
    assert ": second hold" in _text(homes[-1]) and "first hold" not in _text(homes[-1])
    assert not [n for n in bot.services.outbox.undelivered(100) if n.kind == HOME_KIND]


def test_a_rate_limited_publish_waits_and_goes_out(bot: BotHarness, home_slack: SlackDouble,
                                                   clock: FixedClock) -> None:
    pacing = FakeMonotonic()
    publisher = _publisher(bot, monotonic=pacing)
    home_slack.fail_next("views.publish", status=429)
    _open_home(bot, "U0DEV")
    publisher.run_once()
    assert _homes(bot, "U0DEV") == []
    (row,) = [n for n in bot.services.outbox.undelivered(100) if n.kind == HOME_KIND]
    assert row.state == "pending" and row.attempts == 0  # handed back untried
    pacing.now += 2
    clock.advance(timedelta(seconds=2))
    _deliver(bot, publisher)
    assert len(_homes(bot, "U0DEV")) == 1


def test_a_home_tab_that_is_not_enabled_is_given_up_not_retried(
        bot: BotHarness, home_slack: SlackDouble) -> None:
    home_slack.home_enabled = False
    publisher = _publisher(bot, monotonic=FakeMonotonic())
    _open_home(bot, "U0DEV")
    _deliver(bot, publisher)
    dead = [n for n in bot.services.outbox.undelivered(100) if n.kind == HOME_KIND]
    assert [(n.state, (n.last_error or "").split(" ")[0]) for n in dead] == \
        [("dead", "not_enabled")]


def test_a_window_closing_republishes_and_a_scheduled_request_shows_its_approvers(
        bot: BotHarness, home_slack: SlackDouble, clock: FixedClock) -> None:
    pacing = FakeMonotonic()
    publisher = _publisher(bot, monotonic=pacing)
    reply = bot.command("deploy v1.2.3 at 2026-12-02 10:00", user="U0DEV")
    assert "2026-12-02 10:00" in reply.text, reply.text
    scheduled = bot.services.deployments.list_recent("production", 1)[0]
    _open_home(bot, "U0DEV")
    _deliver(bot, publisher)
    text = _text(_homes(bot, "U0DEV")[-1])
    assert ":large_green_circle: window open, closes Tue 2026-12-01 14:00 UTC" in text
    assert (f":calendar: Scheduled: #{scheduled.id} standard v1.2.3 by <@U0DEV> at "
            "Wed 2026-12-02 10:00 UTC (in 23h): waiting for 1 approval from <@U0LEAD1> or a "
            "member of <!subteam^S0RELEASE>") in text
    # 14:00: the window closes; nothing was audited, the watcher's look at the windows
    # republishes (at most every WINDOW_EVERY seconds).
    clock.advance(timedelta(hours=3, minutes=30))
    pacing.now += 31
    _deliver(bot, publisher)
    homes = _homes(bot, "U0DEV")
    assert len(homes) == 2
    assert (":red_circle: window closed: outside the preferred hours" in _text(homes[-1])
            and "next preferred slot Wed 2026-12-02 10:00 UTC" in _text(homes[-1]))


def test_a_viewer_from_another_workspace_gets_no_home(bot: BotHarness,
                                                     home_slack: SlackDouble) -> None:
    publisher = _publisher(bot, monotonic=FakeMonotonic())
    body = app_home_opened_body(user_id="U0DEV", team_id="T0OTHER")
    assert bot.post(body, extra_headers={"content-type": "application/json"}).status_code == 200
    _deliver(bot, publisher)
    assert _homes(bot, "U0DEV") == []
    (row,) = [n for n in bot.services.outbox.undelivered(100) if n.kind == HOME_KIND]
    assert row.state == "dead" and "another workspace" in (row.last_error or "")


# -- who sees which button, and forged clicks ----------------------------------------------------


def test_without_the_right_no_unlock_or_deploy_and_forged_clicks_are_refused_by_the_gate(
        bot: BotHarness, home_slack: SlackDouble) -> None:
    pacing = FakeMonotonic()
    publisher = _publisher(bot, monotonic=pacing, publish_interval=0)
    bot.command('lock production --reason "incident 42"', user="U0DEV")
    _open_home(bot, STRANGER)
    _open_home(bot, "U0DEV")
    _deliver(bot, publisher)
    (stranger,) = _homes(bot, STRANGER)
    (holder,) = _homes(bot, "U0DEV")
    # Locked production: nobody may request a deployment; only the holder (or approvers) may
    # unlock. Staging is open and unlocked: anyone may request one.
    assert _buttons(stranger, "production") == []
    assert _buttons(holder, "production") == [actions.HOME_UNLOCK]
    assert _buttons(stranger, "staging") == [actions.HOME_DEPLOY]

    answer = _press(bot, actions.HOME_UNLOCK, "production", STRANGER)
    assert answer.startswith(":no_entry: You may not unlock production: <@U0DEV> locked it.")
    state = bot.services.environments.get("production")
    assert state is not None and state.lock_holder == "U0DEV"
    answer = _press(bot, actions.HOME_DEPLOY, "production", STRANGER)
    assert answer.startswith(":no_entry:") and "locked by <@U0DEV>" in answer
    answer = _press(bot, actions.HOME_DEPLOY, "nowhere", STRANGER)
    assert "does not name one of the bot's environments" in answer
    recent = [e.action for e in bot.services.audit.recent(50)]
    assert "unlock.refused" in recent and "deploy.refused" in recent
    # The refusal is shown at the top of the stranger's Home, republished.
    pacing.now += 5
    _deliver(bot, publisher)
    assert "does not name one of the bot's environments" in _text(_homes(bot, STRANGER)[-1])

    answer = _press(bot, actions.HOME_UNLOCK, "production", "U0DEV")
    assert answer.startswith(":unlock: production is unlocked")
    state = bot.services.environments.get("production")
    assert state is not None and state.lock_holder is None


def test_deploy_offers_the_command_and_rollback_requests_through_the_gate(
        bot: BotHarness, home_slack: SlackDouble, clock: FixedClock) -> None:
    publisher = _publisher(bot, monotonic=FakeMonotonic(), publish_interval=0,
                           viewer_interval=0)
    deployments = bot.services.deployments
    for version in ("v1.0.0", "v1.1.0"):
        row = deployments.create(ProcedureKind.STANDARD, version, "production", "U0DEV",
                                 channel="C0DEPLOY")
        assert row.id is not None
        for before, after in ((DeploymentState.PENDING_APPROVAL, DeploymentState.QUEUED),
                              (DeploymentState.QUEUED, DeploymentState.RUNNING),
                              (DeploymentState.RUNNING, DeploymentState.SUCCEEDED)):
            assert deployments.transition(row.id, [before], after)
        bot.services.environments.record_switch("production", Slot.BLUE if version ==
                                                 "v1.0.0" else Slot.GREEN, version)
    _open_home(bot, "U0DEV")
    _deliver(bot, publisher)
    (view,) = _homes(bot, "U0DEV")
    assert _buttons(view, "production") == [actions.HOME_DEPLOY, actions.HOME_ROLLBACK]
    rollback_button = next(e for b in view["blocks"] if b.get("block_id") == "act-production"
                           for e in b["elements"] if e["action_id"] == actions.HOME_ROLLBACK)
    assert "from v1.1.0 to v1.0.0" in rollback_button["confirm"]["text"]["text"]
    assert "Last: :white_check_mark:" in _text(view)

    # Deploy... opens the deploy dialog (bot.deploy_dialog) on the click's trigger.
    answer = _press(bot, actions.HOME_DEPLOY, "production", "U0DEV")
    assert answer == "The deploy dialog for production is open."
    (dialog,) = home_slack.views()
    assert json.loads(dialog.view["private_metadata"]) == {"origin": "home",
                                                           "environment": "production"}
    answer = _press(bot, actions.HOME_ROLLBACK, "production", "U0DEV")
    assert answer.startswith("Rollback #"), answer
    rollback = deployments.list_recent("production", 1)[0]
    assert (rollback.kind, rollback.version, rollback.state) == \
        (ProcedureKind.ROLLBACK, "v1.0.0", DeploymentState.PENDING_APPROVAL)
    # A rollback waits for approval: the gate holds the environment for a deployment (not
    # for a rollback, which restores service), so Deploy... goes.
    _deliver(bot, publisher)
    view = _homes(bot, "U0DEV")[-1]
    assert _buttons(view, "production") == [actions.HOME_ROLLBACK]
    assert answer in _text(view)  # the click's answer, at the top of the Home
    # An hour later it is no news: the next republish leaves it out.
    clock.advance(timedelta(hours=1, minutes=1))
    bot.command('lock staging --reason "after the rollback"', user="U0DEV")
    _deliver(bot, publisher)
    view = _homes(bot, "U0DEV")[-1]
    assert answer not in _text(view) and "Your last action" not in _text(view)
    assert f"Pending: #{rollback.id} rollback v1.0.0 by <@U0DEV>: waiting for 1 approval" \
        in _text(view)


def test_group_members_see_unlock_from_a_cached_read_and_a_failed_read_hides_it(
        bot: BotHarness, home_slack: SlackDouble, clock: FixedClock) -> None:
    pacing = FakeMonotonic()
    publisher = _publisher(bot, monotonic=pacing)
    bot.command('lock production --reason "incident 42"', user="U0DEV")
    _open_home(bot, "U0LEAD2")  # a member of S0RELEASE, which approvals.lock names
    _deliver(bot, publisher)
    assert _buttons(_homes(bot, "U0LEAD2")[-1], "production") == [actions.HOME_UNLOCK]
    lists = home_slack.call_count("usergroups.users.list")
    bot.command('lock staging --reason "incident 43"', user="U0DEV")
    pacing.now += 5
    _deliver(bot, publisher)
    assert _buttons(_homes(bot, "U0LEAD2")[-1], "staging") == [actions.HOME_UNLOCK]
    # Drawn from SlackGroups' cache (Tier 2 method): no new read for the second Home.
    assert home_slack.call_count("usergroups.users.list") == lists

    # Slack cannot list the group (and the cache is too old): the Home goes out without the
    # button, and the click still asks Slack and decides then.
    home_slack.groups.pop("S0RELEASE")
    publisher = _publisher(bot, monotonic=pacing)
    bot.services.groups._cache.clear()  # as after its 60 s
    bot.command("unlock staging", user="U0DEV")
    pacing.now += 5
    _deliver(bot, publisher)
    assert _buttons(_homes(bot, "U0LEAD2")[-1], "production") == []


# -- Block Kit limits -----------------------------------------------------------------------------


def _many_environments(count: int) -> dict[str, Any]:
    template = BASE["environments"]["staging"]
    return {f"env-{i:02d}-{'x' * 20}": {**template, "url": f"http://127.0.0.1:{100 + i}"}
            for i in range(count)}


@pytest.fixture
def wide_bot(database: Database, clock: FixedClock, home_slack: SlackDouble,
             tmp_path: Path) -> Iterator[BotHarness]:
    harness = BotHarness(database=database, clock=clock, home=tmp_path / "home",
                         slack=home_slack,
                         policy=make_policy(environments=_many_environments(20)))
    yield harness
    harness.close()


def test_twenty_environments_fit_block_kit_limits_over_the_wire(
        wide_bot: BotHarness, home_slack: SlackDouble) -> None:
    bot = wide_bot
    services = bot.services
    reason = "<!channel> & " + "a long reason " * 200
    for index, env in enumerate(services.policy.environments):
        services.environments.record_switch(env, Slot.BLUE, f"v1.{index}.0")
        services.environments.record_switch(env, Slot.GREEN, f"v1.{index}.1")
        services.environments.acquire_lock(env, "U0DEV", reason, None, None)
        for n in range(3):
            services.deployments.create(ProcedureKind.STANDARD, f"v2.{index}.{n}", env,
                                        "U0LEAD1", channel="C0DEPLOY")
    publisher = _publisher(bot, monotonic=FakeMonotonic())
    _open_home(bot, "U0DEV")
    _deliver(bot, publisher)
    (view,) = _homes(bot, "U0DEV")  # the double checked it as Slack does
    assert len(view["blocks"]) <= MAX_BLOCKS
    assert home_view_problems(view) == []
    for block in view["blocks"]:
        for piece in [block.get("text"), *block.get("elements", [])]:
            if isinstance(piece, dict) and piece.get("type") == "mrkdwn":
                assert len(piece["text"]) <= TEXT_LIMIT
    text = _text(view)
    assert all(f"*{env}*" in text for env in services.policy.environments)
    assert "<!channel>" not in text


def test_more_environments_than_fit_are_named_not_dropped() -> None:
    clock_now = datetime(2026, 12, 1, 11, 0, tzinfo=UTC)
    windows = WindowPolicy(make_policy().windows, make_policy().zone)
    verdict = windows.verdict(clock_now)
    homes = [EnvironmentHome(name=f"env{i}", state=None, window=verdict,
                             waiting=[Waiting(_FakeDeployment(i), ("U1",), "x" * 5000)] * 40,
                             buttons=Buttons(deploy=True, rollback_to="v1", unlock=True))
             for i in range(40)]
    view = home_view(homes, now=clock_now, zone=make_policy().zone,
                     notice="y" * 5000, notice_at=clock_now)
    assert len(view["blocks"]) <= MAX_BLOCKS
    assert home_view_problems(view) == []
    more = next(b for b in view["blocks"] if b["block_id"] == "home-more")
    assert "env39" in more["elements"][0]["text"]


class _FakeDeployment:
    """Just what the view reads of a waiting deployment."""

    def __init__(self, n: int) -> None:
        self.id = n
        self.kind = ProcedureKind.STANDARD
        self.version = f"v{n}.0.0"
        self.requester = "U0DEV"
        self.state = DeploymentState.PENDING_APPROVAL
        self.scheduled_at = None
