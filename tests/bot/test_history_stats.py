"""``/qlp history`` and ``/qlp stats`` over signed requests, on deployments written through the
repository at times set on the FixedClock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from procedures.clock import FixedClock
from procedures.model import DeploymentState as S
from procedures.model import ProcedureKind as K
from tests.bot.conftest import OPEN_WINDOW
from tests.fakes.bot_harness import BotHarness


def _at(month: int, day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2026, month, day, hour, minute, tzinfo=UTC)


def _deploy(bot: BotHarness, clock: FixedClock, *, requested: datetime, version: str,
            final: S | None, wait: int = 0, run: int = 0, kind: K = K.STANDARD,
            env: str = "production", requester: str = "U0DEV", error: str | None = None,
            approver: str | None = None) -> int:
    """A deployment requested at ``requested``, started ``wait`` minutes later, ending in
    ``final`` after ``run`` minutes (``None``: left waiting for approval)."""
    deployments = bot.services.deployments
    clock.set(requested)
    created = deployments.create(kind, version, env, requester, plan_hash="plan")
    assert created.id is not None
    if approver is not None:
        bot.services.approvals.record(created.id, approver, "approve", "plan")
    if final is not None:
        clock.advance(timedelta(minutes=wait))
        assert deployments.transition(created.id, [S.PENDING_APPROVAL], S.QUEUED)
        assert deployments.transition(created.id, [S.QUEUED], S.RUNNING, worker_id="w")
        clock.advance(timedelta(minutes=run))
        assert deployments.transition(created.id, [S.RUNNING], final, error=error)
    clock.set(OPEN_WINDOW)
    return created.id


def _populate(bot: BotHarness, clock: FixedClock) -> None:
    """#1 too old for 30 days; #2 ok (lead 35m, 30m); #3 rolled back (20m), restored by the
    hotfix #4 (lead 10m, 10m) 50m later; #5 staging waiting; #6 cancelled while running."""
    _deploy(bot, clock, requested=_at(10, 1, 10), version="v0.9.0", final=S.SUCCEEDED, run=5)
    _deploy(bot, clock, requested=_at(11, 10, 10), version="v1.0.0", final=S.SUCCEEDED,
            wait=5, run=30, approver="U0LEAD1")
    _deploy(bot, clock, requested=_at(11, 17, 10), version="v1.1.0", final=S.ROLLED_BACK,
            run=20, approver="U0LEAD2",
            error="5 of 10 health checks failed <!channel> and a very long tail that goes on "
                  "and on well past eighty characters")
    _deploy(bot, clock, requested=_at(11, 17, 11), version="v1.1.1", final=S.SUCCEEDED,
            run=10, kind=K.HOTFIX, requester="U0LEAD1", approver="U0LEAD2")
    _deploy(bot, clock, requested=_at(11, 24, 10), version="v1.2.0", final=None,
            env="staging")
    _deploy(bot, clock, requested=_at(11, 25, 10), version="v1.2.1", final=S.ROLLED_BACK,
            run=3, error="cancelled by <@U0LEAD1>")


# -- history --------------------------------------------------------------------------------


def test_history_on_nothing(bot: BotHarness) -> None:
    assert bot.command("history").text == "No deployments yet."
    assert bot.command("history staging 5").text == "No deployments to staging yet."


def test_history_of_an_unknown_environment_suggests_one(bot: BotHarness) -> None:
    text = bot.command("history prod").text
    assert "There is no environment `prod`. Did you mean `production`?" in text
    assert "from 1 to 100" in bot.command("history 101").text


def test_history_lists_the_newest_first_one_line_each(bot: BotHarness,
                                                      clock: FixedClock) -> None:
    _populate(bot, clock)
    lines = bot.command("history").text.split("\n")
    assert lines[0] == "*The last 6 deployments*, newest first:"
    assert [line.split(" ")[0] for line in lines[1:]] == ["#6", "#5", "#4", "#3", "#2", "#1"]
    by_id = {line.split(" ")[0]: line for line in lines[1:]}
    assert by_id["#2"] == (
        "#2 standard v1.0.0 → production · :white_check_mark: succeeded · by <@U0DEV> · "
        "approved by <@U0LEAD1> · started Tue 2026-11-10 10:05 UTC · took 30m")
    rolled_back = by_id["#3"]
    assert ":leftwards_arrow_with_hook: rolled back" in rolled_back
    assert "took 20m · error: 5 of 10 health checks failed &lt;!channel&gt;" in rolled_back
    assert "<!channel>" not in rolled_back and rolled_back.endswith("…")
    assert by_id["#4"].startswith("#4 hotfix v1.1.1 → production")
    assert "by <@U0LEAD1> · approved by <@U0LEAD2>" in by_id["#4"]
    assert by_id["#5"] == (
        "#5 standard v1.2.0 → staging · :hourglass_flowing_sand: pending approval · by "
        "<@U0DEV> · no approvals · requested Tue 2026-11-24 10:00 UTC, not started")
    assert by_id["#6"].endswith("error: cancelled by <@U0LEAD1>")


def test_history_takes_a_count_and_an_environment(bot: BotHarness, clock: FixedClock) -> None:
    _populate(bot, clock)
    two = bot.command("history 2").text.split("\n")
    assert two[0] == "*The last 2 deployments*, newest first:"
    assert [line.split(" ")[0] for line in two[1:]] == ["#6", "#5"]
    staging = bot.command("history staging").text.split("\n")
    assert staging[0] == "*The last 1 deployment to staging*, newest first:"
    assert len(staging) == 2 and staging[1].startswith("#5 ")
    production = bot.command("history production 100").text.split("\n")
    assert len(production) == 1 + 5


def test_history_shows_how_long_a_running_deployment_has_run(bot: BotHarness,
                                                             clock: FixedClock) -> None:
    deployments = bot.services.deployments
    created = deployments.create(K.STANDARD, "v2.0.0", "production", "U0DEV")
    assert created.id is not None
    deployments.transition(created.id, [S.PENDING_APPROVAL], S.QUEUED)
    deployments.transition(created.id, [S.QUEUED], S.RUNNING, worker_id="w")
    clock.advance(timedelta(minutes=7))
    assert ":arrows_counterclockwise: running" in bot.command("history").text
    assert "running for 7m" in bot.command("history").text


# -- stats ----------------------------------------------------------------------------------


def test_stats_on_nothing_say_so(bot: BotHarness) -> None:
    assert bot.command("stats").text == "No deployments in the last 30 days."
    assert bot.command("stats staging 7").text == "No deployments to staging in the last 7 days."
    assert "Did you mean `staging`?" in bot.command("stats stagin").text
    assert "from 1 to 365" in bot.command("stats 400").text


def test_stats_over_a_month(bot: BotHarness, clock: FixedClock) -> None:
    _populate(bot, clock)
    # By hand, #2-#6 are in the period (#1 is two months old): 5 requests; completed #2, #3,
    # #4 (2 succeeded, 1 rolled back); #6 was cancelled; #5 waits. Durations 30, 20, 10 ->
    # 20m; one automatic rollback in 30 days = 7/30 a week; 2 successes in production ->
    # 2/30 a day, 14/30 a week; lead times 35m, 10m -> 22m 30s; restore 10:20 -> 11:10 = 50m.
    assert bot.command("stats").text.split("\n") == [
        "*Deployments, the last 30 days* (since Sun 2026-11-01 11:00 UTC)",
        "Requests: 5: 3 completed (2 succeeded, 1 failed or rolled back), 1 cancelled, "
        "0 rejected or expired, 1 in progress",
        "Success rate: 67% (2 of 3)",
        "Mean duration: 20m",
        "Rollbacks: 1 (1 automatic, 0 manual), 0.23 a week",
        # No monitor step figures or baselines in these rows (tests/bot/test_stats_impact.py).
        "Error rate during deployments: n/a (no monitored deployment with request counts)",
        "Performance impact post-deployment: n/a (no version compared with the one before it "
        "yet)",
        "*DORA*",
        "• Deployment frequency: 2 successful deployments to production, 0.07 a day "
        "(0.47 a week)",
        "• Lead time (request to success, median): 22m 30s",
        "• Change failure rate: 33% (1 of 3)",
        "• Time to restore (median): 50m over 1 incident",
    ]


def test_stats_for_one_environment_and_a_shorter_period(bot: BotHarness,
                                                        clock: FixedClock) -> None:
    _populate(bot, clock)
    staging = bot.command("stats staging").text.split("\n")
    assert staging[0] == "*Deployments to staging, the last 30 days* (since Sun 2026-11-01 " \
                         "11:00 UTC)"
    assert "Success rate: n/a (nothing completed)" in staging
    assert "Mean duration: n/a" in staging
    assert "• Deployment frequency: 0 successful deployments to staging, 0 a day (0 a week)" \
        in staging
    assert "• Time to restore (median): n/a" in staging
    assert bot.command("stats production 5").text == \
        "No deployments to production in the last 5 days."
    week = bot.command("stats production 7").text
    assert "Requests: 1: 0 completed" in week and "1 cancelled" in week


@pytest.mark.slow  # about 6 s on a busy machine (6,000 rows and the command over HTTP)
def test_stats_count_every_deployment_of_a_period_past_5000(bot: BotHarness,
                                                             clock: FixedClock) -> None:
    # 6,000 successes in the last 30 days, bulk-loaded: all of them are counted (the figures
    # once came from the newest 5,000 rows only), and nothing says they were cut.
    from procedures.stats import DeploymentFacts
    from tests.storage.test_stats_sql import _load

    now = clock.now()
    facts = [DeploymentFacts(id=i, kind=K.STANDARD, environment="production",
                             state=S.SUCCEEDED, requested_at=now - timedelta(minutes=i * 7),
                             started_at=now - timedelta(minutes=i * 7 - 1),
                             finished_at=now - timedelta(minutes=i * 7 - 3))
             for i in range(1, 6001)]
    _load(bot.services.database, facts)
    text = bot.command("stats").text
    assert "Requests: 6000: 6000 completed (6000 succeeded, 0 failed or rolled back)" in text
    assert "• Deployment frequency: 6000 successful deployments to production, 200 a day" \
        in text
    assert "• Lead time (request to success, median): 3m" in text
    assert "newest" not in text
