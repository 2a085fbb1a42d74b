"""A standard deployment carrying ``migrations/v<version>.sql``, end to end: signed requests
into the real Bolt app, the Slack double behind SLACK_API_URL, the real engine and worker, the
local platform's real processes, and a scratch PostgreSQL as the application's database with
the seed's own ``schema_migrations(version)`` table."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from procedures.clock import SystemClock
from procedures.model import DeploymentState
from procedures.policy import Policy
from storage.db import Database
from tests.conftest import ON_POSTGRES_ONLY
from tests.fakes.bot_harness import BotHarness
from tests.fakes.policies import make_policy
from tests.fakes.slack_double import SlackDouble
from tests.fakes.slack_views import ALWAYS_OPEN, thread_text
from tests.fakes.slack_views import card as card_of
from tests.migrations.conftest import MigrationsDir, query

pytestmark = pytest.mark.postgres

SEED_TABLE = ("CREATE TABLE schema_migrations (version varchar(255) PRIMARY KEY, "
              "applied_at timestamp DEFAULT now())")


def _policy(app_db: str, migrations: Path) -> Policy:
    policy = make_policy(real_ports=True, windows=ALWAYS_OPEN,
                         monitoring={"duration": "3s", "interval": "1s"})
    env = policy.environments["production"].model_copy(
        update={"database_url": app_db, "migrations_dir": str(migrations)})
    return policy.model_copy(update={"environments": {**policy.environments,
                                                      "production": env}})


@pytest.fixture
def live_bot(database: Database, slack: SlackDouble, tmp_path: Path, app_db: str,
             migrations: MigrationsDir) -> Iterator[BotHarness]:
    harness = BotHarness(database=database, policy=_policy(app_db, migrations.root),
                         clock=SystemClock(), home=tmp_path / "home", slack=slack,
                         start_worker=True)
    try:
        yield harness
    finally:
        harness.close()


@ON_POSTGRES_ONLY
@pytest.mark.slow  # the local platform's real processes, pg_dump, monitoring on the wall clock
def test_a_deployment_applies_its_migration_at_step_4_into_the_seed_table(
        live_bot: BotHarness, app_db: str, migrations: MigrationsDir) -> None:
    bot, slack = live_bot, live_bot.slack
    query(app_db, SEED_TABLE)
    query(app_db, "INSERT INTO schema_migrations (version) VALUES ('0.9.0')")  # the team's
    migrations.write("v1.0.0", "CREATE TABLE invoices (id int PRIMARY KEY, total numeric);\n"
                               "INSERT INTO invoices VALUES (1, 9.5);\n")

    answer = bot.command("deploy v1.0.0")
    assert "Deployment #1 requested" in answer.text, answer.text
    request = bot.services.deployments.get(1)
    assert request is not None
    assert request.options["migration_file"] == "v1.0.0"
    assert len(request.options["migration_checksum"]) == 64  # what the approvers approve

    card = bot.wait_for(lambda: card_of(slack, 1), what="the card")
    bot.press("qlp_approve", "1", user="U0LEAD2", message_ts=card.ts)
    bot.wait_for(lambda: bot.services.deployments.get(1).state.terminal, timeout=120,
                 what="the deployment to end")
    final = bot.services.deployments.get(1)
    assert final.state is DeploymentState.SUCCEEDED, final.error

    # The seed's own verification query finds it; the team's row is kept; qlp's record beside.
    assert query(app_db, "SELECT version FROM schema_migrations WHERE version = '1.0.0'") == [
        ("1.0.0",)]
    assert query(app_db, "SELECT version FROM schema_migrations ORDER BY 1") == [
        ("0.9.0",), ("1.0.0",)]
    assert query(app_db, "SELECT version, applied_by FROM qlp_schema_migrations") == [
        ("1.0.0", "qlp #1")]
    assert query(app_db, "SELECT count(*) FROM invoices") == [(1,)]
    url = bot.services.policy.environments["production"].url
    assert httpx.get(url + "/health", timeout=5).json()["version"] == "v1.0.0"

    bot.wait_for(lambda: "Deployed v1.0.0 to production" in thread_text(slack, 1),
                 what="the final reply")
    thread = thread_text(slack, 1)
    # The thread names the migration step, after the backup and before the new slot.
    backup = thread.index("Database backup pre-deploy-1-")
    migration = thread.index("Database migration of this version (if any)")
    applied = thread.index("Migration v1.0.0.sql applied in one transaction on production")
    deploying = thread.index("Deploying v1.0.0 into")
    assert backup < migration < applied < deploying, thread
    assert "Validated v1.0.0.sql on production: ran in a transaction" in thread
