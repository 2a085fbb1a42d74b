"""The seed's dashboard figures "error rate during deployments" and "performance impact
post-deployment" in ``/qlp stats`` (signed requests into the real app), computed in SQL by
``storage.stats_impact`` on SQLite and PostgreSQL from the monitor steps' figures (passed and
rolled back alike) and the recorded baselines (each version against the one before it)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from procedures.clock import FixedClock
from procedures.model import DeploymentState as S
from procedures.model import ProcedureKind as K
from procedures.model import StepState
from storage.baselines import BaselineRepository
from storage.stats_impact import ImpactQueries
from tests.bot.conftest import OPEN_WINDOW
from tests.fakes.bot_harness import BotHarness


def _run(bot: BotHarness, clock: FixedClock, *, at: datetime, version: str, final: S,
         errors: int | None, requests: int | None, p95: float | None = None,
         env: str = "production") -> int:
    """A deployment requested at ``at`` whose monitor step saw ``errors`` of ``requests``;
    a succeeded one with ``p95`` records its baseline."""
    deployments = bot.services.deployments
    clock.set(at)
    created = deployments.create(K.STANDARD, version, env, "U0DEV", plan_hash="plan")
    assert created.id is not None
    assert deployments.transition(created.id, [S.PENDING_APPROVAL], S.QUEUED)
    assert deployments.transition(created.id, [S.QUEUED], S.RUNNING, worker_id="w")
    clock.advance(timedelta(minutes=30))
    figures = {} if errors is None else {"error_count": errors, "request_count": requests}
    deployments.upsert_step(created.id, "monitor", 11,
                            StepState.SUCCEEDED if final is S.SUCCEEDED else StepState.FAILED,
                            result={**figures, "series": []})
    if p95 is not None:
        BaselineRepository(bot.services.database, clock).record(
            env, version, {"response_ms_p95": p95, "error_rate": 0.0})
    assert deployments.transition(created.id, [S.RUNNING], final)
    clock.set(OPEN_WINDOW)
    return created.id


def _day(day: int) -> datetime:
    return datetime(2026, 11, day, 10, 0, tzinfo=UTC)


def test_error_rate_and_performance_impact(bot: BotHarness, clock: FixedClock) -> None:
    # Before the period: a baseline the first version of the period is compared with.
    _run(bot, clock, at=datetime(2026, 9, 1, 10, tzinfo=UTC), version="v0.9.0",
         final=S.SUCCEEDED, errors=0, requests=100, p95=200.0)
    _run(bot, clock, at=_day(10), version="v1.0.0", final=S.SUCCEEDED, errors=2,
         requests=1000, p95=220.0)  # +10 %
    _run(bot, clock, at=_day(17), version="v1.1.0", final=S.ROLLED_BACK, errors=90,
         requests=1000)  # rolled back: its errors count, it has no baseline
    _run(bot, clock, at=_day(18), version="v1.1.1", final=S.SUCCEEDED, errors=8,
         requests=1000, p95=198.0)  # -10 % against v1.0.0
    _run(bot, clock, at=_day(19), version="v2.0.0", final=S.SUCCEEDED, errors=None,
         requests=None, p95=400.0, env="staging")  # no figures: not counted; own env
    answer = bot.command("stats").text
    assert ("Error rate during deployments: 3.33% (100 failed of 3000 requests over 3 "
            "monitored deployments)") in answer, answer
    # (220/200 + 198/220) / 2 = (1.1 + 0.9) / 2 = 1.0; staging's first baseline has nothing
    # before it.
    assert ("Performance impact post-deployment: p95 +0% on average against the previous "
            "version (2 comparisons)") in answer, answer

    staging = bot.command("stats staging").text
    assert "Error rate during deployments: n/a (no monitored deployment" in staging, staging
    assert "Performance impact post-deployment: n/a (no version compared" in staging


def test_only_the_period_counts(bot: BotHarness, clock: FixedClock) -> None:
    _run(bot, clock, at=datetime(2026, 9, 1, 10, tzinfo=UTC), version="v0.9.0",
         final=S.SUCCEEDED, errors=50, requests=100, p95=100.0)
    _run(bot, clock, at=_day(20), version="v1.0.0", final=S.SUCCEEDED, errors=1,
         requests=100, p95=150.0)
    impact = ImpactQueries(bot.services.database).impact(
        since=_day(1), until=OPEN_WINDOW, environment="production")
    assert (impact.monitored, impact.errors, impact.requests) == (1, 1, 100)
    assert impact.compared == 1 and impact.mean_p95_ratio == 1.5
    answer = bot.command("stats 365").text
    assert "Error rate during deployments: 25.50% (51 failed of 200 requests" in answer
    assert "older ones not counted" not in answer  # step results are kept 365 days


def test_whole_days_come_from_the_summary_which_outlives_purged_step_results(
        bot: BotHarness, clock: FixedClock) -> None:
    from sqlmodel import delete

    from storage.models import StepRun
    from storage.stats_impact import rebuild_monitor_days

    _run(bot, clock, at=_day(10), version="v1.0.0", final=S.SUCCEEDED, errors=3,
         requests=300)
    _run(bot, clock, at=_day(17), version="v1.1.0", final=S.ROLLED_BACK, errors=40,
         requests=200)
    queries = ImpactQueries(bot.services.database)
    period = {"since": _day(1), "until": OPEN_WINDOW, "environment": None}
    kept = queries.impact(**period)
    assert (kept.monitored, kept.errors, kept.requests) == (2, 43, 500)
    # The incremental summary equals a rebuild from the step rows.
    with bot.services.database.session() as s:
        rebuild_monitor_days(s.connection())
    assert queries.impact(**period) == kept
    # Retention purges step results; the days already summed keep counting.
    with bot.services.database.session() as s:
        s.exec(delete(StepRun))  # type: ignore[call-overload]
    assert queries.impact(**period) == kept
    # A period starting mid-day reads that partial day from the (now purged) steps.
    partial = queries.impact(since=_day(10) + timedelta(hours=1), until=OPEN_WINDOW,
                             environment="production")
    assert (partial.monitored, partial.errors, partial.requests) == (1, 40, 200)
