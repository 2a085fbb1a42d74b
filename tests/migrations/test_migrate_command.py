"""``/qlp migrate`` through the real Bolt app: signed requests over HTTP, a Slack double behind
SLACK_API_URL, the real engine and worker, and a scratch PostgreSQL as the application's
database."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from procedures.clock import FixedClock, SystemClock
from procedures.model import DeploymentState, ProcedureKind
from procedures.policy import Policy, parse_policy
from storage.db import Database
from tests.bot.conftest import OPEN_WINDOW
from tests.bot.test_deploy_e2e import ALWAYS_OPEN
from tests.fakes.app_server import AppServer
from tests.fakes.bot_harness import BOT_TOKEN, BotHarness
from tests.fakes.policies import BASE
from tests.fakes.slack_double import SlackDouble
from tests.migrations.conftest import MigrationsDir, query, tables

pytestmark = pytest.mark.postgres

CHANNEL = "C0DEPLOY"
NAME = "2026_11_26_add_index"


@pytest.fixture
def slack() -> Iterator[SlackDouble]:
    double = SlackDouble(token=BOT_TOKEN, groups={"S0RELEASE": ["U0LEAD2"]},
                         users={"U0DEV": "dev", "U0LEAD1": "lead1", "U0LEAD2": "lead2"})
    double.start()
    yield double
    double.stop()


def _policy(database_url: str | None, migrations_dir: Path | None, *, url: str | None = None,
            **changes: Any) -> Policy:
    data: dict[str, Any] = copy.deepcopy(BASE)
    data.update(changes)
    production = data["environments"]["production"]
    if url is not None:  # where the post-migration tests probe the health path
        production["url"] = url
    if database_url is not None:
        production["database_url"] = database_url
    if migrations_dir is not None:
        production["migrations_dir"] = str(migrations_dir)
    return parse_policy(data, source="test policy")


def _bot(database: Database, slack: SlackDouble, tmp_path: Path, policy: Policy, *,
         start_worker: bool = False) -> BotHarness:
    # A running worker paces its posts by the clock, so it needs one that moves (and then a
    # window that is always open).
    clock = SystemClock() if start_worker else FixedClock(OPEN_WINDOW)
    return BotHarness(database=database, policy=policy, clock=clock, home=tmp_path / "home",
                      slack=slack, start_worker=start_worker)


@pytest.fixture
def files(migrations: MigrationsDir) -> MigrationsDir:
    migrations.write("2026_11_20_add_users", "CREATE TABLE users (id int, email text);")
    migrations.write(NAME, "CREATE INDEX CONCURRENTLY IF NOT EXISTS users_email "
                           "ON users (email);")
    migrations.write(f"{NAME}.down", "DROP INDEX CONCURRENTLY IF EXISTS users_email;")
    return migrations


def _refusals(bot: BotHarness) -> list[dict[str, Any]]:
    return [dict(e.detail) for e in reversed(bot.services.audit.recent(50))
            if e.action == "migration.refused"]


def test_missing_database_url_is_refused_naming_the_key(
        database: Database, slack: SlackDouble, tmp_path: Path, files: MigrationsDir) -> None:
    bot = _bot(database, slack, tmp_path, _policy(None, files.root))
    try:
        answer = bot.command(f"migrate {NAME}")
        assert answer.status_code == 200
        assert "`environments.production.database_url` is not set" in answer.text
        assert "rule: migration-config" in answer.text
        assert _refusals(bot)[0]["rule"] == "migration-config"
        assert bot.services.deployments.list_in_states(list(DeploymentState)) == []
    finally:
        bot.close()


def test_unknown_or_unsafe_names_are_refused_with_the_nearest_names(
        database: Database, slack: SlackDouble, tmp_path: Path, app_db: str,
        files: MigrationsDir) -> None:
    bot = _bot(database, slack, tmp_path, _policy(app_db, files.root))
    try:
        answer = bot.command("migrate 2026_11_26_add_indx")
        assert "There is no migration `2026_11_26_add_indx`" in answer.text
        assert "rule: known-migrations" in answer.text
        assert f"Nearest available: `{NAME}`" in answer.text
        assert "is not a migration name" in bot.command("migrate ../../etc/passwd").text
        assert "not a migration name" in bot.command(f"migrate {NAME}.down").text
        assert [r["rule"] for r in _refusals(bot)] == ["known-migrations", "migration-name"]
        assert tables(app_db) == []
    finally:
        bot.close()


def test_dry_run_describes_the_plan_without_touching_anything(
        database: Database, slack: SlackDouble, tmp_path: Path, app_db: str,
        files: MigrationsDir) -> None:
    bot = _bot(database, slack, tmp_path, _policy(app_db, files.root))
    try:
        text = bot.command(f"migrate {NAME} --dry-run").text
        assert f"*Dry run: migration `{NAME}` on production*" in text
        assert "CREATE INDEX CONCURRENTLY, alone outside a transaction" in text
        assert f"down script `{NAME}.down.sql`" in text
        assert "1. Validate the migration (rolled back)" in text
        assert "Maintenance mode" not in text and "staging" not in text.split("Steps:")[1]
        assert bot.services.deployments.list_in_states(list(DeploymentState)) == []
    finally:
        bot.close()


@pytest.mark.slow  # runs pg_dump and the migration through the worker
def test_request_posts_the_card_and_approval_runs_it(
        database: Database, slack: SlackDouble, tmp_path: Path, app_db: str,
        files: MigrationsDir) -> None:
    query(app_db, "CREATE TABLE users (id int, email text)")
    app = AppServer()
    bot = _bot(database, slack, tmp_path,
               _policy(app_db, files.root, url=app.url, windows=ALWAYS_OPEN), start_worker=True)
    try:
        answer = bot.command(f"migrate {NAME}")
        assert f"Migration #1 requested: `{NAME}` on production" in answer.text, answer.text
        deployment = bot.services.deployments.get(1)
        assert deployment is not None and deployment.kind is ProcedureKind.MIGRATION
        assert deployment.version == NAME
        assert deployment.options["outside_transaction"] == "CREATE INDEX CONCURRENTLY"
        assert len(deployment.options["checksum"]) == 64
        assert deployment.options["irreversible"] is False  # it has a down script

        def card() -> Any:
            return next((m for m in slack.messages(CHANNEL)
                         if f"Migration #1: {NAME} on production" in m.text), None)

        message = bot.wait_for(card, what="the card")
        buttons = [e["action_id"] for b in message.blocks if b["type"] == "actions"
                   for e in b["elements"]]
        assert buttons == ["qlp_approve", "qlp_reject"]
        bot.press("qlp_approve", "1", user="U0DEV", message_ts=message.ts)  # not the requester
        bot.press("qlp_approve", "1", user="U0LEAD2", message_ts=message.ts)
        bot.wait_for(lambda: bot.services.deployments.get(1).state.terminal, timeout=60,
                     what="the migration to end")
        final = bot.services.deployments.get(1)
        assert final.state is DeploymentState.SUCCEEDED, final.error
        assert query(app_db, "SELECT name FROM schema_migrations") == [(NAME,)]
        assert query(app_db, "SELECT count(*) FROM pg_indexes WHERE indexname = "
                             "'users_email'") == [(1,)]
        assert len(list((tmp_path / "home" / "backups" / "production").iterdir())) == 1
        def thread() -> str:
            return "\n".join(m.text for m in slack.thread(CHANNEL, message.ts))

        bot.wait_for(lambda: "Post-migration tests" in thread(), what="the thread replies")
        for phrase in ("Validated 2026_11_26_add_index.sql on production",
                       "Backup of production's database", "alone, outside a transaction",
                       "schema_migrations: 2026_11_26_add_index",
                       "Post-migration tests on "):
            assert phrase in thread(), (phrase, thread())

        def no_buttons() -> bool:  # succeeded: no Roll back button for a migration
            latest = card()
            return latest is not None and "Succeeded" in str(latest.blocks) and not [
                b for b in latest.blocks if b["type"] == "actions"]

        bot.wait_for(no_buttons, what="the card without buttons")

        # The same migration again: refused by the validation step, with the date.
        again = bot.command(f"migrate {NAME}")
        assert "Migration #2 requested" in again.text
        message2 = bot.wait_for(lambda: next((m for m in slack.messages(CHANNEL)
                                              if "Migration #2" in m.text), None))
        bot.press("qlp_approve", "2", user="U0LEAD1", message_ts=message2.ts)
        bot.wait_for(lambda: bot.services.deployments.get(2).state.terminal, timeout=60)
        second = bot.services.deployments.get(2)
        assert second.state is DeploymentState.FAILED
        assert f"{NAME} was already applied on " in (second.error or "")
    finally:
        bot.close()
        app.close()


def test_a_deployment_names_its_migration_and_refuses_a_bad_file(
        database: Database, slack: SlackDouble, tmp_path: Path, app_db: str,
        files: MigrationsDir) -> None:
    bot = _bot(database, slack, tmp_path, _policy(app_db, files.root))
    try:
        plan = bot.command("deploy v1.2.3 --dry-run").text
        assert "Migration: none (no `v1.2.3.sql`)" in plan
        assert "Database migration of this version (if any)" in plan
        files.write("v1.2.3", "CREATE TABLE invoices (id int);")
        plan = bot.command("deploy v1.2.3 --dry-run").text
        assert "Migration: `v1.2.3.sql` (checksum " in plan
        # A file that cannot run is refused at request time, not after approval.
        files.write("v1.2.3", "BEGIN;\nCREATE TABLE invoices (id int);\nCOMMIT;\n")
        answer = bot.command("deploy v1.2.3")
        assert "v1.2.3.sql controls transactions itself (BEGIN on line 1)" in answer.text
        assert "rule: migration-file" in answer.text
        assert bot.services.deployments.list_in_states(list(DeploymentState)) == []
        assert tables(app_db) == []
    finally:
        bot.close()
