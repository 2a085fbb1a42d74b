"""The preflight on an Azure environment: the database backup check through the ARM double,
its finding stored on the waiting deployment and shown on its card (red when stale, grey when
Azure cannot answer, green when fresh). The real bot on both databases; no worker thread: the
test calls ``run_preflight`` as the scheduler's T-2h validation does."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bot.cards import render_card
from bot.platforms import AzureParts
from bot.preflight import run_preflight
from procedures.clock import Clock, FixedClock
from procedures.platforms.azure import AzurePlatform
from procedures.platforms.azure.settings import AzureSettings
from procedures.policy import Environment
from storage.db import Database
from tests.azure.arm_double import ArmDouble, fail_backups, set_backups
from tests.azure.test_azure_platform import azure_section
from tests.azure.test_backups import NIGHTLY, SERVER, double  # noqa: F401 (a fixture)
from tests.fakes.bot_harness import BOT_TOKEN, BotHarness
from tests.fakes.policies import BASE, make_policy
from tests.fakes.slack_double import SlackDouble
from tests.playbooks.test_standard_failures import ZeroErrors

pytestmark = pytest.mark.slow  # starts an HTTPS server

NOW = datetime(2026, 12, 1, 11, 0, tzinfo=UTC)  # a Tuesday inside the window


@pytest.fixture
def azure_bot(database: Database, tmp_path: Path, double: ArmDouble,  # noqa: F811
              make_platform: Callable[..., AzurePlatform]) -> Iterator[BotHarness]:
    slack = SlackDouble(token=BOT_TOKEN, users={"U0DEV": "dev"})
    slack.start()
    production = {"platform": "azure", "url": "https://api.qlp-hq.com", "health": ["/health"],
                  "azure": azure_section(double, postgres_server=SERVER)}
    policy = make_policy(environments={"production": production,
                                       "staging": BASE["environments"]["staging"]})
    harness = BotHarness(database=database, policy=policy, clock=FixedClock(NOW),
                         home=tmp_path / "home", slack=slack)

    def factory(name: str, env: Environment, settings: AzureSettings,
                clock: Clock) -> AzureParts:
        return make_platform(postgres_server=SERVER), ZeroErrors()  # type: ignore[return-value]

    harness.services.platforms.azure_factory = factory
    yield harness
    harness.close()
    slack.stop()


def _evidence(bot: BotHarness, deployment_id: int) -> str:
    services = bot.services
    _, blocks = render_card(services.views.snapshot(deployment_id), zone=services.policy.zone,
                            now=services.clock.now())
    return "\n".join(block["text"]["text"] if "text" in block else block["elements"][0]["text"]
                     for block in blocks if block["block_id"].startswith("card-evidence"))


def test_the_backup_check_goes_on_the_card(azure_bot: BotHarness,
                                          double: ArmDouble) -> None:  # noqa: F811
    response = azure_bot.command("deploy v1.2.3")
    assert "Deployment #1 requested" in response.text, response.text
    assert double.calls_to("backups") == []  # the listener asked nothing of Azure

    set_backups(double, SERVER, NIGHTLY[:2])  # the newest completed 1d 7h ago: too old
    stale = run_preflight(azure_bot.services, 1)
    assert [(f.name, f.verdict.value) for f in stale.findings] == [
        ("health", "skipped"), ("errors", "skipped"), ("backup", "failed")]
    text = _evidence(azure_bot, 1)
    assert (":red_circle: *Database backup* (failed, 11:00:00): qlp-prod-db: newest backup "
            "2026-11-30 03:05 UTC (Full, automatic), 1d 7h old, older than the 6h allowed"
            ) in text
    assert "1 failed: the run's final validation checks again at start" in text

    fail_backups(double, 403, "AuthorizationFailed", "no backups/read permission")
    denied = run_preflight(azure_bot.services, 1, force=True)
    assert [f.verdict.value for f in denied.problems] == ["inconclusive"]
    text = _evidence(azure_bot, 1)
    assert ":grey_question: *Database backup* (inconclusive, 11:00:00): inconclusive " \
           "(Azure Database for PostgreSQL: list the backups of PostgreSQL server qlp-prod-db: " \
           "AuthorizationFailed" in text
    assert ":large_green_circle:" not in text

    # (the 403 answered one list only); the seed's limit is 6h (validation.backup_max_age)
    set_backups(double, SERVER, [*NIGHTLY, ("ondemand-3h", "Customer On-Demand",
                                            "2026-12-01T08:00:00Z")])
    fresh = run_preflight(azure_bot.services, 1, force=True)
    assert fresh.passed, fresh.findings
    assert ":large_green_circle: *Database backup* (ok, 11:00:00): qlp-prod-db: newest " \
           "backup 2026-12-01 08:00 UTC" in _evidence(azure_bot, 1)
