"""A new user's first deployments on Azure, end to end: signed Slack requests into the real Bolt
app, the real engine and worker, the Azure platform's real SDK clients against the strict ARM
double (bodies validated against the published definitions, provisioning and Front Door
propagation taking model time, role assignments enforced), and an application whose
``/health`` answers a plain ``OK``.

The world starts empty (``tests.azure.e2e_world.new_world``): Front Door's route already points
at the blue origin group, the origins wait at the FQDNs the groups will get, no container group
exists. Telemetry reaches Logs under the cloud role name each group's own environment carries
(``OTEL_SERVICE_NAME``), so monitoring sees data only because the bot injected it.

1. ``/qlp deploy v1.0.0``: the first deployment goes into blue, where the route already points;
   nothing is switched, the public URL is confirmed, SUCCEEDED.
2. ``/qlp deploy v1.1.0``: green is created, the route repointed; Front Door takes 90 s to
   propagate (the thread shows the wait); green's application then fails a lot: monitoring rolls
   back to blue.
3. ``/qlp deploy v1.1.1``: green again, the same 90 s wait, healthy: SUCCEEDED, nothing undone.

And a missing role assignment: ``/qlp doctor`` names the role and the scope; a deployment started
anyway fails at its step with Azure's code and the same hint, and leaves nothing behind.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from procedures.model import DeploymentState
from storage.db import Database
from tests.azure.arm_double.authz import IDENTITY_ID
from tests.azure.e2e_world import (
    ENV,
    ROUTE,
    AzureWorld,
    new_world,
    request_and_approve,
    start_azure_bot,
    wait_until_done,
)
from tests.fakes.bot_harness import BotHarness
from tests.fakes.slack_double import SlackDouble
from tests.fakes.slack_views import CHANNEL
from tests.fakes.slack_views import thread_text as _thread_text

pytestmark = pytest.mark.slow  # HTTPS double, HTTP stand-in, the bot and its worker

PROPAGATION = 90.0  # model seconds Front Door takes to reach its edges after a change


@pytest.fixture
def empty_world(tmp_path: Path) -> Iterator[AzureWorld]:
    world = new_world(tmp_path, health_mode="plain")
    world.double.provision_seconds = 40  # Pending, image pull, Running: model seconds
    yield world
    world.stop()


@pytest.fixture
def bot(sqlite_database: Database, world_slack: SlackDouble, tmp_path: Path,
        empty_world: AzureWorld) -> Iterator[BotHarness]:
    harness = start_azure_bot(sqlite_database, world_slack, tmp_path / "home", empty_world)
    yield harness
    harness.close()


def _route_targets(world: AzureWorld) -> list[str]:
    return [call.body["properties"]["originGroup"]["id"].rsplit("/", 1)[-1]
            for call in world.double.calls_to("route", "PATCH")]


def test_first_deployments_into_an_empty_resource_group(bot: BotHarness,
                                                        empty_world: AzureWorld) -> None:
    world, double, slack = empty_world, empty_world.double, bot.slack
    assert not double.groups and double.route_origin_group(*ROUTE) == "qlp-blue-og"

    # 1. The first deployment: into blue, where the route already points.
    first = request_and_approve(bot, "deploy v1.0.0", "U0LEAD1")
    run = wait_until_done(bot, first)
    thread = _thread_text(slack, first)
    assert run.state is DeploymentState.SUCCEEDED, (run.error, thread)
    assert "Nothing is live on production" in thread, thread
    assert double.groups["qlp-blue"]["tags"]["qlp-version"] == "v1.0.0"
    assert world.injected_role("qlp-blue") == "qlp-blue"
    assert _route_targets(world) == []  # the route already pointed at blue: not touched
    public = world.app.seen_public("/health")
    assert public and public[-1].status == 200 and public[-1].group == "qlp-blue"
    assert all(seen.headers.get("cache-control") == "no-cache" for seen in public)
    queries = [call.body["query"] for call in double.calls_to("logs", "POST")]
    assert any('AppRoleName == "qlp-blue"' in query for query in queries)

    # 2. v1.1.0 goes to green; Front Door takes 90 s; then green's application fails a lot.
    double.propagation_seconds = PROPAGATION
    world.telemetry["qlp-green"] = (300, 120)
    second = request_and_approve(bot, "deploy v1.1.0", "U0LEAD1")
    run = wait_until_done(bot, second)
    bot.wait_for(lambda: "Traffic switched back" in _thread_text(slack, second),
                 what="the rollback replies")
    thread = _thread_text(slack, second)
    assert run.state is DeploymentState.ROLLED_BACK, (run.error, thread)
    assert "qlp-green" not in double.groups  # the failed colour was stopped
    assert "Front Door still deploying the switch to green (InProgress" in thread, thread
    # Read through the role name green's group carried: the bot injected it.
    assert "error rate 40.0% (120 of 300 requests) is" in thread, thread
    assert _route_targets(world) == ["qlp-green-og", "qlp-blue-og"]
    assert double.served_origin_group(*ROUTE) == "qlp-blue-og"

    # 3. v1.1.1 goes to green, healthy this time: the same wait, and nothing is undone.
    world.telemetry["qlp-green"] = (300, 1)
    third = request_and_approve(bot, "deploy v1.1.1", "U0LEAD1")
    run = wait_until_done(bot, third)
    bot.wait_for(lambda: "Deployed v1.1.1 to production" in _thread_text(slack, third),
                 what="the final reply")
    thread = _thread_text(slack, third)
    assert run.state is DeploymentState.SUCCEEDED, (run.error, thread)
    assert "Front Door still deploying the switch to green (InProgress" in thread, thread
    assert "Rolling back v1.1.1" not in thread and "switched back" not in thread, thread
    assert double.served_origin_group(*ROUTE) == "qlp-green-og"
    assert double.groups["qlp-green"]["tags"]["qlp-version"] == "v1.1.1"
    assert world.injected_role("qlp-green") == "qlp-green"
    assert "qlp-blue" not in double.groups  # the old colour stopped after monitoring
    state = bot.services.environments.get(ENV)
    assert state is not None and state.lock_holder is None


def test_a_missing_role_is_named_by_doctor_and_by_the_failed_step(
        bot: BotHarness, empty_world: AzureWorld) -> None:
    world, double, slack = empty_world, empty_world.double, bot.slack
    double.revoke(IDENTITY_ID, "Managed Identity Operator")

    # qlp doctor, from Slack: the line of the identity's permissions names role and scope.
    response = bot.command("doctor production", user="U0LEAD1")
    assert response.status_code == 200
    bot.wait_for(lambda: slack.ephemerals("U0LEAD1", channel=CHANNEL),
                 what="the doctor report")
    report = slack.ephemerals("U0LEAD1", channel=CHANNEL)[-1]
    body = "\n".join(block["text"]["text"] for block in report.blocks)
    assert "cannot run until the failures are fixed" in report.text
    doctor_line = next(line for line in body.splitlines()
                       if "Managed Identity Operator" in line)
    assert ":x:" in doctor_line and IDENTITY_ID in doctor_line, doctor_line

    # A deployment started anyway fails at the step that needs the role, with Azure's code.
    deployment = request_and_approve(bot, "deploy v1.0.0", "U0LEAD1")
    run = wait_until_done(bot, deployment)
    bot.wait_for(lambda: "Managed Identity Operator" in _thread_text(slack, deployment),
                 what="the failure in the thread")
    thread = _thread_text(slack, deployment)
    # The step failed; what ran before it (final validation, snapshot) was undone.
    assert run.state is DeploymentState.ROLLED_BACK, (run.error, thread)
    assert "LinkedAuthorizationFailed" in (run.error or ""), run.error
    assert "LinkedAuthorizationFailed" in thread, thread
    assert "Managed Identity Operator" in thread and IDENTITY_ID in thread, thread
    # Nothing is left half done: no group, the route untouched, the environment free.
    assert not double.groups
    assert _route_targets(world) == []
    state = bot.services.environments.get(ENV)
    assert state is not None and state.lock_holder is None
