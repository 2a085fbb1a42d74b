"""A real backup before the switch, end to end (issue 12 item 4, seed gap 11): signed requests
into the real Bolt app, the Slack double, the real engine and worker, the local platform's real
processes, and a real PostgreSQL database as the environment's ``database_url``.

The standard deployment's snapshot runs ``pg_dump --format=custom`` of that database into the
bot's backups directory before anything is deployed; the thread names the file, its size and
how long it took; the file is a dump ``pg_restore`` can read, holding the application's table;
the checklist's "Pre-deployment backup created" is ticked by it. The audiences' channels
(engineering, customer success) are told of the start and the end, through the outbox, by the
Slack double.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from procedures.clock import SystemClock
from procedures.model import DeploymentState
from storage.db import Database
from tests.conftest import ON_POSTGRES_ONLY, PostgresServer, _libpq_dsn
from tests.fakes.bot_harness import BotHarness
from tests.fakes.policies import make_policy
from tests.fakes.slack_double import SlackDouble
from tests.fakes.slack_views import ALWAYS_OPEN
from tests.fakes.slack_views import card as _card
from tests.fakes.slack_views import thread_text as _thread_text

AUDIENCES = {"engineering": "C0ENGINEER", "customer-success": "C0CUSTSUC",
             "leadership": "C0LEADERS"}


@pytest.fixture
def app_database(postgres_server: PostgresServer) -> Iterator[str]:
    """The deployed application's own database (not the bot's), with a table and rows."""
    name = postgres_server.create()
    dsn = _libpq_dsn(name)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE orders (id serial PRIMARY KEY, total numeric NOT NULL)")
        conn.execute("INSERT INTO orders (total) SELECT g FROM generate_series(1, 500) g")
    try:
        yield dsn
    finally:
        postgres_server.drop(name)


@pytest.fixture
def live_bot(database: Database, slack: SlackDouble, tmp_path: Path,
             app_database: str) -> Iterator[BotHarness]:
    policy = make_policy(real_ports=True, windows=ALWAYS_OPEN,
                         monitoring={"duration": "2s", "interval": "1s"},
                         notifications={"audiences": AUDIENCES})
    production = policy.environments["production"].model_copy(
        update={"database_url": app_database})
    policy = policy.model_copy(
        update={"environments": {**policy.environments, "production": production}})
    harness = BotHarness(database=database, policy=policy, clock=SystemClock(),
                         home=tmp_path / "home", slack=slack, start_worker=True)
    yield harness
    harness.close()  # stops the router and both slots


@ON_POSTGRES_ONLY
@pytest.mark.slow  # the local platform's real processes and a real pg_dump
def test_a_backup_file_is_written_before_the_switch_and_named_in_the_thread(
        live_bot: BotHarness, tmp_path: Path) -> None:
    bot = live_bot
    answer = bot.command("deploy v1.0.0").text
    assert "Deployment #1 requested" in answer, answer
    card = bot.wait_for(lambda: _card(bot.slack, 1), what="the card")
    bot.press("qlp_approve", "1", user="U0LEAD1", message_ts=card.ts)
    deployments = bot.services.deployments
    bot.wait_for(lambda: deployments.get(1).state.terminal, timeout=90, what="the run to end")
    record = deployments.get(1)
    assert record is not None and record.state is DeploymentState.SUCCEEDED, record.error

    snapshot = deployments.get_step(1, "snapshot")
    assert snapshot is not None and snapshot.result is not None
    backup = snapshot.result["database_backup"]
    assert backup["taken"] is True and backup["name"].startswith("pre-deploy-1-")
    path = Path(backup["location"])
    assert path.parent == tmp_path / "home" / "backups" / "production"
    assert path.is_file() and path.stat().st_size == backup["size_bytes"] > 0

    # Named in the thread, before the switch.
    thread = _thread_text(bot.slack, 1)
    said = f"Database backup {backup['name']}"
    assert f"{said} completed: {path}" in thread, thread
    assert thread.index(said) < thread.index("Switch traffic to the new slot")
    switch = deployments.get_step(1, "switch_traffic")
    assert switch is not None and switch.started_at is not None
    assert snapshot.finished_at is not None and snapshot.finished_at <= switch.started_at

    # A real dump: pg_restore reads it and finds the application's table.
    listing = subprocess.run(["pg_restore", "--list", str(path)], capture_output=True,
                             text=True, check=True, timeout=30).stdout
    assert "TABLE public orders" in listing and "TABLE DATA public orders" in listing

    # The seed's checklist item is ticked by the backup it names (the boxes are posted as an
    # ephemeral message after the ack).
    assert "Checklist for #1" in bot.command("checklist 1").text
    message = bot.slack.wait_for(
        lambda: [m for m in bot.slack.ephemerals("U0DEV") if m.blocks])[-1]
    assert "☑ Pre-deployment backup created: by the bot (`snapshot`" in message.text, \
        message.text

    # The audiences heard of the start and the end in their own channels; v1.0.0 is a major
    # version (X.0.0), so leadership too.
    for channel in AUDIENCES.values():
        texts = bot.slack.wait_for(
            lambda channel=channel: [m.text for m in bot.slack.messages(channel)]
            if len(bot.slack.messages(channel)) >= 2 else None, timeout=15)
        assert "*Deployment #1 started*: v1.0.0 to production" in texts[0], texts
        assert "*Deployment #1 succeeded*" in texts[1], texts
