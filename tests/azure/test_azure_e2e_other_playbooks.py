"""``/qlp hotfix``, ``/qlp emergency`` and ``/qlp rollback`` end to end on Azure: signed Slack
requests into the real Bolt app, the real engine and worker, the Azure platform's real SDK
clients against the local ARM double over HTTPS (``tests.azure.e2e_world``: production runs
v0.9.0 on green, Front Door's route points at green's origin group, the PostgreSQL flexible
server's newest automatic backup completed 3 hours ago).

Each run is followed through Front Door (the route's origin group and what the public URL
answers), the container groups left behind, the bot's state and the card's thread. SQLite only:
the storage side is the standard end-to-end test's business (``test_azure_e2e``, both
databases); these are about the playbooks on the Azure platform.
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from procedures.model import DeploymentState, ProcedureKind, Slot
from tests.azure.arm_double.backups import refuse_on_demand
from tests.azure.e2e_world import (
    DB_SERVER,
    ENV,
    ROUTE,
    AzureWorld,
    approve,
    id_in,
    request_and_approve,
    wait_until_done,
)
from tests.fakes.bot_harness import BotHarness
from tests.fakes.slack_views import CHANNEL
from tests.fakes.slack_views import card as _card
from tests.fakes.slack_views import thread_text as _thread_text

pytestmark = pytest.mark.slow  # HTTPS double, HTTP stand-in, the bot and its worker

S = DeploymentState


def _route_targets(world: AzureWorld) -> list[str]:
    """The origin groups Front Door's route was pointed at, in order (one PATCH each)."""
    return [call.body["properties"]["originGroup"]["id"].rsplit("/", 1)[-1]
            for call in world.double.calls_to("route", "PATCH")]


def _finished_thread(bot: BotHarness, deployment_id: int, last: str) -> str:
    """The card's thread once ``last`` (the final reply) has been delivered."""
    bot.wait_for(lambda: last in _thread_text(bot.slack, deployment_id),
                 what=f"{last!r} in the thread of #{deployment_id}")
    return _thread_text(bot.slack, deployment_id)


def _broadcast(bot: BotHarness, deployment_id: int) -> list[str]:
    """Thread replies also shown in the channel."""
    card = _card(bot.slack, deployment_id)
    return [m.text for m in bot.slack.thread(CHANNEL, card.ts) if m.broadcast]


def _contains_all(text: str, *phrases: str) -> None:
    for phrase in phrases:
        assert phrase in text, (phrase, text)


def test_hotfix_on_azure(azure_bot_sqlite: BotHarness, world: AzureWorld) -> None:
    bot, double = azure_bot_sqlite, world.double

    # --maintenance cannot work on Azure (no maintenance mode): refused before anything is
    # written, saying what is missing and how to go on.
    refused = bot.command('hotfix v1.0.1 --maintenance --reason "checkout 500s"').text
    _contains_all(refused, ":no_entry:", "Maintenance mode is not available on production",
                  "runs on Azure", "(rule: not-implemented)",
                  "Without `--maintenance`: `/qlp hotfix v1.0.1 to production")
    refused = bot.command("deploy v1.0.1 --maintenance").text  # a standard one, the same
    _contains_all(refused, "Maintenance mode is not available on production",
                  "Without `--maintenance`: `/qlp deploy v1.0.1 to production`")
    assert bot.services.deployments.list_recent() == []

    hotfix = request_and_approve(bot, 'hotfix v1.0.1 --reason "checkout 500s"', "U0LEAD1")
    run = wait_until_done(bot, hotfix)
    assert (run.kind, run.state) == (ProcedureKind.HOTFIX, S.SUCCEEDED), \
        (run.error, _thread_text(bot.slack, hotfix))

    # Front Door moved from green to blue; the public URL serves the hotfix; green is gone.
    assert double.route_origin_group(*ROUTE) == "qlp-blue-og"
    assert _route_targets(world)[-1:] == ["qlp-blue-og"]
    assert world.public_version() == "v1.0.1"
    assert double.groups["qlp-blue"]["tags"]["qlp-version"] == "v1.0.1"
    assert "qlp-green" not in double.groups  # stopped after the shortened monitoring
    state = bot.services.environments.get(ENV)
    assert state is not None
    assert (state.live_slot, state.live_version, state.lock_holder) == (Slot.BLUE, "v1.0.1",
                                                                        None)
    # Final validation read the live colour's errors and the database's backups from Azure.
    assert any('AppRoleName == "qlp-green"' in q.body["query"]
               for q in double.calls_to("logs", "POST"))
    assert double.calls_to("backups", "GET")

    thread = _finished_thread(bot, hotfix, "Deployed v1.0.1 to production")
    _contains_all(thread, "requested hotfix v1.0.1 to production", "Monitoring is shortened",
                  "✓ Final validation (no freeze; live system healthy)",
                  "qlp-prod-db: newest backup", "3h old (at most 6h)",
                  "Database backup pre-deploy-1-",
                  "✓ Smoke tests", "✓ Switch traffic", "✓ Post-deployment tests",
                  "✓ Monitor the hotfix (shortened)", "Stopped the old green slot (v0.9.0)")
    for skipped in ("Extended health check", "Record the performance baseline"):
        assert skipped not in thread, (skipped, thread)


def test_emergency_fast_track_then_blue_green_on_azure(azure_bot_sqlite: BotHarness,
                                                       world: AzureWorld) -> None:
    bot, double = azure_bot_sqlite, world.double

    # 1. outage (fast track: no smoke tests, no stability monitor): the emergency's first step
    #    takes a real on-demand backup of the flexible server (seed "backup first"), waited for
    #    in model time, before anything is deployed.
    world.backups_completed(timedelta(hours=40))
    seen = len(double.calls)  # the world's own set-up calls come first
    reply = bot.command('emergency outage v1.0.1 --reason "API down for EU users"').text
    assert reply.startswith("Emergency deployment #1 requested"), reply
    approve(bot, id_in(reply), "U0LEAD1")
    run = wait_until_done(bot, 1)
    assert (run.kind, run.state) == (ProcedureKind.EMERGENCY, S.SUCCEEDED), \
        (run.error, _thread_text(bot.slack, 1))
    assert double.route_origin_group(*ROUTE) == "qlp-blue-og"
    assert world.public_version() == "v1.0.1"
    # The previous colour keeps running for a quick way back.
    assert double.groups["qlp-green"]["tags"]["qlp-version"] == "v0.9.0"
    thread = _finished_thread(bot, 1, "Deployed v1.0.1 to production")
    _contains_all(thread, "requested an *emergency deployment* (outage)",
                  "a database backup where the environment has a database",
                  "✓ Emergency backup", "Database backup emergency-backup-1-",
                  "of PostgreSQL server qlp-prod-db: started", "completed: PostgreSQL server "
                  "qlp-prod-db", "✓ Switch traffic", "✓ Minimal verification",
                  "Post-emergency review due by", "keeps running for a quick way back")
    after_approval = thread.split("Approved by")[1]
    assert "Smoke tests" not in after_approval  # skipped on the fast track
    assert "Stability monitor" not in after_approval  # so is the 5-minute watch
    # The backup was created on the server before the deployment touched a container group.
    puts = [c for c in double.calls[seen:] if c.method == "PUT"]
    first_backup = next(i for i, c in enumerate(puts) if "/backups/" in c.path)
    first_group = next(i for i, c in enumerate(puts) if "containerGroups" in c.path)
    assert first_backup < first_group
    snapshot = bot.services.deployments.get_step(1, "snapshot")
    assert snapshot is not None and snapshot.result is not None
    assert snapshot.result["database_backup"]["taken"] is True
    assert snapshot.result["database_backup"]["name"].startswith("emergency-backup-1-")

    # 2. critical-bug (blue-green) on a server whose tier cannot take on-demand backups: said
    #    plainly and broadcast with the newest automatic backup's age; the emergency goes on
    #    (it is an emergency), with smoke tests first and the 5-minute stability monitor after.
    refuse_on_demand(double, DB_SERVER, "OnDemandBackupNotSupported",
                     "On-demand backups are not supported for this server's tier")
    reply = bot.command('emergency critical-bug v1.0.2 --reason "payments fail"').text
    assert reply.startswith("Emergency deployment #2 requested"), reply
    approve(bot, 2, "U0LEAD1")
    run = wait_until_done(bot, 2)
    assert run.state is S.SUCCEEDED, (run.error, _thread_text(bot.slack, 2))
    assert double.route_origin_group(*ROUTE) == "qlp-green-og"
    assert _route_targets(world)[-2:] == ["qlp-blue-og", "qlp-green-og"]
    assert world.public_version() == "v1.0.2"
    assert double.groups["qlp-green"]["tags"]["qlp-version"] == "v1.0.2"
    assert double.groups["qlp-blue"]["tags"]["qlp-version"] == "v1.0.1"  # kept
    thread = _finished_thread(bot, 2, "Deployed v1.0.2 to production")
    _contains_all(thread, "(critical-bug)", "then watched for 3s",
                  "Database backup NOT taken", "cannot take an on-demand backup",
                  "OnDemandBackupNotSupported", "Newest database backup:",
                  "✓ Smoke tests on the new slot (blue-green only)",
                  "✓ Switch traffic", "✓ Minimal verification",
                  "Monitoring green (v1.0.2) for 3s", "✓ Stability monitor")
    assert any("Database backup NOT taken" in text for text in _broadcast(bot, 2))
    snapshot = bot.services.deployments.get_step(2, "snapshot")
    assert snapshot is not None and snapshot.result is not None
    assert snapshot.result["database_backup"]["taken"] is False
    # The newest backup is the first emergency's own on-demand one: minutes old, fresh.
    assert snapshot.result["database_backup"]["newest"]["fresh"] is True
    state = bot.services.environments.get(ENV)
    assert state is not None
    assert (state.live_slot, state.live_version, state.lock_holder) == (Slot.GREEN, "v1.0.2",
                                                                        None)


def test_rollback_on_azure(azure_bot_sqlite: BotHarness, world: AzureWorld) -> None:
    bot, double = azure_bot_sqlite, world.double
    deployments, environments = bot.services.deployments, bot.services.environments
    # History: v0.9.0 went live on green, then v1.0.0 on blue (green stopped afterwards).
    first = deployments.create(ProcedureKind.STANDARD, "v0.9.0", ENV, "U0DEV",
                               state=S.SUCCEEDED)
    environments.record_switch(ENV, Slot.GREEN, "v0.9.0")
    world.put_live(Slot.BLUE, "v1.0.0", stop_other=True)
    deployments.create(ProcedureKind.STANDARD, "v1.0.0", ENV, "U0DEV", state=S.SUCCEEDED)
    environments.record_switch(ENV, Slot.BLUE, "v1.0.0")
    assert "qlp-green" not in double.groups
    assert world.public_version() == "v1.0.0"

    reply = bot.command('rollback --reason "error rate up after v1.0.0"').text
    assert reply.startswith("Rollback #3 requested: production from v1.0.0 back to v0.9.0"), \
        reply
    approve(bot, 3, "U0LEAD1")
    run = wait_until_done(bot, 3)
    assert (run.kind, run.state) == (ProcedureKind.ROLLBACK, S.SUCCEEDED), \
        (run.error, _thread_text(bot.slack, 3))

    # v0.9.0 was created again in green, Front Door moved back to it, blue was stopped.
    assert double.route_origin_group(*ROUTE) == "qlp-green-og"
    assert _route_targets(world)[-1:] == ["qlp-green-og"]
    assert world.public_version() == "v0.9.0"
    assert double.groups["qlp-green"]["tags"]["qlp-version"] == "v0.9.0"
    assert "qlp-blue" not in double.groups
    state = environments.get(ENV)
    assert state is not None
    assert (state.live_slot, state.live_version, state.lock_holder) == (Slot.GREEN, "v0.9.0",
                                                                        None)
    thread = _finished_thread(bot, 3, "Deployed v0.9.0 to production")
    _contains_all(thread, "requested a *rollback*", f"(last deployed by #{first.id})",
                  "Approved by <@U0LEAD1>", "✓ Rollback snapshot",
                  "✓ Deploy the earlier version to the idle slot",
                  "✓ Switch traffic to the earlier version", "✓ Post-rollback verification",
                  "✓ Post-rollback tests", "Stopped the old blue slot (v1.0.0)")
    assert any("requested a *rollback*" in text for text in _broadcast(bot, 3))
