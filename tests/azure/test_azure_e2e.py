"""The standard playbook end to end on Azure: signed Slack requests into the real Bolt app, the
real engine and worker, and the Azure platform's real SDK clients against the local ARM double
(container groups, Front Door Standard route, Log Analytics queries) over HTTPS.

A plain-HTTP stand-in answers for the container groups' FQDNs and for the public URL (Front
Door's edge): the public URL serves the version of whichever colour the double's route points
at. Production first runs v0.9.0 on green (put there through the platform itself). The world
and the bot are ``tests.azure.e2e_world``'s (fixtures in ``tests/azure/conftest.py``), shared
with the hotfix, emergency and rollback tests (``test_azure_e2e_other_playbooks``).

1. ``/qlp deploy v1.0.0`` -> approve -> v1.0.0 goes to blue, the route is repointed at blue's
   origin group, monitoring sees few failed requests for ``qlp-blue``: SUCCEEDED.
2. ``/qlp deploy v1.1.0`` with a spike of failed requests for ``qlp-green`` in Logs: monitoring
   rolls back, the route points at blue again, ROLLED_BACK, and the thread says why.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from procedures.clock import SystemClock
from procedures.model import DeploymentState
from procedures.platforms.azure import AzurePlatform
from procedures.platforms.azure.monitoring import AzureMetrics
from tests.azure.e2e_world import ROUTE, AzureWorld, request_and_approve, wait_until_done
from tests.fakes.bot_harness import BotHarness
from tests.fakes.policies import make_policy
from tests.fakes.slack_views import thread_text as _thread_text

pytestmark = pytest.mark.slow  # HTTPS double, HTTP stand-in, the bot and its worker


def test_deploy_and_automatic_rollback_through_front_door(azure_bot: BotHarness,
                                                          world: AzureWorld) -> None:
    bot, slack, double = azure_bot, azure_bot.slack, world.double

    # 1. v1.0.0 goes to blue; the route moves to blue's origin group; the run succeeds.
    first = request_and_approve(bot, "deploy v1.0.0", "U0LEAD1")
    run = wait_until_done(bot, first)
    assert run.state is DeploymentState.SUCCEEDED, (run.error, _thread_text(slack, first))
    assert double.route_origin_group(*ROUTE) == "qlp-blue-og"
    assert world.public_version() == "v1.0.0"
    assert double.groups["qlp-blue"]["tags"]["qlp-version"] == "v1.0.0"
    assert "qlp-green" not in double.groups  # the old colour stopped after monitoring
    patches = double.calls_to("route", "PATCH")
    assert patches[-1].body["properties"]["originGroup"]["id"].endswith("/qlp-blue-og")
    queries = double.calls_to("logs", "POST")
    assert any('AppRoleName == "qlp-blue"' in q.body["query"] for q in queries)
    assert any('AppRoleName == "qlp-green"' in q.body["query"] for q in queries)  # pre-check
    assert all(q.authorized for q in queries)
    bot.wait_for(lambda: "Deployed v1.0.0 to production" in _thread_text(slack, first),
                 what="the final reply")
    thread = _thread_text(slack, first)
    for phrase in ("✓ Final validation", "✓ Switch traffic", "✓ Monitor the new version"):
        assert phrase in thread, (phrase, thread)

    # 2. v1.1.0 goes to green, whose role then reports a spike of failed requests.
    world.telemetry["qlp-green"] = (300, 120)  # green's application fails a lot
    second = request_and_approve(bot, "deploy v1.1.0", "U0LEAD1")
    run = wait_until_done(bot, second)
    assert run.state is DeploymentState.ROLLED_BACK, (run.error, _thread_text(slack, second))
    assert double.route_origin_group(*ROUTE) == "qlp-blue-og"
    assert world.public_version() == "v1.0.0"
    # Front Door was pointed at green, then back at blue.
    targets = [c.body["properties"]["originGroup"]["id"].rsplit("/", 1)[-1]
               for c in double.calls_to("route", "PATCH")]
    assert targets[-2:] == ["qlp-green-og", "qlp-blue-og"]
    bot.wait_for(lambda: "Traffic switched back" in _thread_text(slack, second),
                 what="the rollback replies")
    thread = _thread_text(slack, second)
    assert "Rolling back v1.1.0" in thread, thread
    assert "error rate 40.0% (120 of 300 requests) is" in thread, thread
    state = bot.services.environments.get("production")
    assert state is not None and state.lock_holder is None


def test_registry_checks_azure_sections_and_ready_timeout_reads_them(
        world: AzureWorld, tmp_path: Path) -> None:
    from bot.platforms import PlatformRegistry
    from procedures.errors import ConfigError
    from procedures.playbooks.standard import ready_timeout

    good = world.environment()
    policy = make_policy(environments={"production": good})
    assert ready_timeout(policy.environments["production"]) == timedelta(minutes=10)
    registry = PlatformRegistry(policy, tmp_path, SystemClock(), azure_factory=world.factory)
    assert isinstance(registry.platform_for("production"), AzurePlatform)
    assert isinstance(registry.metrics_for("production"), AzureMetrics)
    registry.close()

    bad = {**good, "azure": {**good["azure"], "front_door": {
        **good["azure"]["front_door"], "rout": "x"}}}
    with pytest.raises(ConfigError) as caught:
        PlatformRegistry(make_policy(environments={"production": bad}), tmp_path,
                         SystemClock())
    assert caught.value.key == "environments.production.azure.front_door.rout"
    assert "did you mean route" in str(caught.value)
