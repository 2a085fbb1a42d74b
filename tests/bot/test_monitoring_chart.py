"""The monitoring chart (issue 15, item 3): drawn from the monitor step's recorded checks, the
previous version's baseline and the policy's thresholds; put in the outbox when monitoring ends
or a rollback starts; uploaded with ``files.getUploadURLExternal``, a POST of the bytes and
``files.completeUploadExternal`` into the card's thread.

- the figure's data: the thresholds, baselines and the rollback marker are read from the
  figure's ``Line2D`` objects (``gid``), not from pixels; the PNG's header and IHDR size;
- the Slack double's upload flow refuses what Slack refuses;
- through the bot harness (fixed clock, worker stopped): a chart survives a Slack outage in the
  outbox and goes out once Slack is back, once, in the card's thread;
- end to end on the real local platform (slow): a deployment that passes and one that is rolled
  back each get their chart in their card's thread.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from matplotlib.lines import Line2D
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from sqlmodel import col, select

from bot.chart_reporter import chart_dedup_key
from bot.charts import (
    HEIGHT,
    WIDTH,
    draw,
    png_size,
    render_png,
    rolling_percentiles,
    thin,
)
from bot.outbox_sender import SlackOutboxSender
from bot.shell.render import render_message
from bot.shell.slack_standin import SlackStandIn
from procedures.clock import FixedClock, SystemClock
from procedures.model import DeploymentState, ProcedureKind, StepState
from storage.baselines import BaselineRepository
from storage.db import Database
from storage.models import Notification
from tests.conftest import ON_POSTGRES_ONLY
from tests.fakes.bot_harness import BOT_TOKEN, BotHarness
from tests.fakes.policies import make_policy
from tests.fakes.slack_double import SlackDouble
from tests.fakes.slack_views import ALWAYS_OPEN, CHANNEL
from tests.fakes.slack_views import card as _card

ENV = "production"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# A recorded monitoring window: 30 checks 30 s apart, slowing down from check 20, health
# failing at checks 22, 24 and 25; the rollback began 870 s in.
SERIES = [[i * 30.0, 100.0 + i * (5 if i < 20 else 40), int(i not in (22, 24, 25))]
          for i in range(30)]
SPEC: dict[str, Any] = {
    "title": "#7 v1.2.0 on production (green): response time and failed checks",
    "series": SERIES,
    "baseline": {"version": "v1.1.0", "p50": 110.0, "p95": 180.0},
    "thresholds": {"response_time_ms": 2000, "response_time_ratio": 2.0, "health_failures": 10,
                   "health_window_s": 300.0},
    "rollback_at_s": 870.0,
}


def _lines(figure: Any, gid: str) -> list[Line2D]:
    return [line for axes in figure.axes for line in axes.get_lines() if line.get_gid() == gid]


def _y(line: Line2D) -> list[float]:
    return [float(v) for v in line.get_ydata()]


def _x(line: Line2D) -> list[float]:
    return [float(v) for v in line.get_xdata()]


# -- the figure ---------------------------------------------------------------------------------


@pytest.mark.slow  # 3 s of the fast lane, measured
def test_the_chart_draws_thresholds_baseline_and_the_rollback_from_the_recorded_series() -> None:
    figure = draw(SPEC)
    top, bottom = figure.axes

    # The rollback thresholds as horizontal lines at the policy's values.
    [failures] = _lines(figure, "threshold-health-failures")
    assert failures.axes is bottom and _y(failures) == [10.0, 10.0]
    [manual] = _lines(figure, "threshold-manual")  # 2x the baseline's p50
    assert manual.axes is top and _y(manual) == [220.0, 220.0]
    [slow] = _lines(figure, "threshold-slow")
    assert _y(slow) == [2000.0, 2000.0]
    # The previous version's baseline.
    assert _y(_lines(figure, "baseline-p50")[0]) == [110.0, 110.0]
    assert _y(_lines(figure, "baseline-p95")[0]) == [180.0, 180.0]
    assert "v1.1.0" in str(_lines(figure, "baseline-p50")[0].get_label())
    # The rollback: a vertical line at 870 s = 14.5 min, on both axes.
    rollback = _lines(figure, "rollback")
    assert {line.axes for line in rollback} == {top, bottom}
    assert all(_x(line) == [14.5, 14.5] for line in rollback)

    # The series itself: p50/p95 over the last 5 minutes at each check, per minute.
    [p50], [p95] = _lines(figure, "p50"), _lines(figure, "p95")
    assert _x(p50) == [i * 0.5 for i in range(30)]
    expected50, expected95 = rolling_percentiles(
        [(t, ms, bool(ok)) for t, ms, ok in SERIES], 300.0)
    assert _y(p50) == expected50 and _y(p95) == expected95
    assert _y(p95)[0] == 100.0 and _y(p95)[-1] == 100.0 + 29 * 40  # the slowest of the window
    [total] = _lines(figure, "failed-total")
    assert _y(total)[-1] == 3.0 and _y(total)[21] == 0.0 and _y(total)[22] == 1.0


def test_a_passed_window_has_no_rollback_marker_and_no_baseline_lines_without_one() -> None:
    figure = draw({**SPEC, "baseline": None, "rollback_at_s": None})
    assert _lines(figure, "rollback") == []
    assert _lines(figure, "baseline-p50") == [] and _lines(figure, "threshold-manual") == []
    assert _y(_lines(figure, "threshold-health-failures")[0]) == [10.0, 10.0]


def test_the_png_is_valid_and_of_the_expected_size() -> None:
    data = render_png(SPEC)
    assert data[:8] == PNG_SIGNATURE and data[12:16] == b"IHDR"
    assert png_size(data) == (WIDTH, HEIGHT) == (1000, 600)
    assert data.endswith(b"IEND\xaeB`\x82")
    assert render_png(SPEC) == data  # no timestamps inside: a retried upload is the same file
    with pytest.raises(ValueError):
        png_size(b"GIF89a" + data[6:])


def test_odd_series_rows_are_dropped_and_text_is_drawn_as_text() -> None:
    spec = {**SPEC, "title": "<!channel> *bold* $x$", "series": [
        [0, 100, 1], ["x", 1, 1], [30, None, 1], [60, 120, 0], "junk"]}
    figure = draw(spec)
    assert _x(_lines(figure, "p50")[0]) == [0.0, 1.0]
    assert png_size(render_png(spec)) == (WIDTH, HEIGHT)


def test_a_long_window_is_thinned_but_keeps_every_failed_check() -> None:
    day = [[i * 10.0, 100.0 + i % 50, int(i % 97 != 0)] for i in range(8640)]  # 24 h, 10 s
    kept = thin(day)
    assert len(kept) <= 1100 and len(json.dumps(kept)) < 25_000
    assert [row for row in kept if not row[2]] == [row for row in day if not row[2]]
    figure = draw({**SPEC, "series": day, "rollback_at_s": None})
    assert len(_x(_lines(figure, "p50")[0])) == len(kept)


# -- the Slack double's upload flow -------------------------------------------------------------


@pytest.fixture
def client(slack: SlackDouble, tmp_path: Path) -> WebClient:
    slack.files_dir = tmp_path / "slack-files"
    return WebClient(token=BOT_TOKEN, base_url=slack.api_url)


def _error(call: Any) -> str:
    with pytest.raises(SlackApiError) as raised:
        call()
    return str(raised.value.response["error"])


def test_the_double_refuses_what_slack_refuses(slack: SlackDouble, client: WebClient) -> None:
    assert _error(lambda: client.files_getUploadURLExternal(filename="", length=3)) == \
        "invalid_arguments"
    assert _error(lambda: client.files_getUploadURLExternal(filename="a.png", length=0)) == \
        "invalid_arguments"
    answer = client.files_getUploadURLExternal(filename="a.png", length=4)
    url, file_id = answer["upload_url"], answer["file_id"]
    # Not yet uploaded: nothing to complete.
    assert _error(lambda: client.files_completeUploadExternal(
        files=[{"id": file_id, "title": "A"}], channel_id=CHANNEL)) == "file_not_found"
    assert httpx.post(url, content=b"abc").status_code == 400  # not the announced length
    assert httpx.post(url, content=b"abcd").status_code == 200
    assert httpx.post(url, content=b"abcd").status_code == 400  # once
    parent = client.chat_postMessage(channel=CHANNEL, text="card")["ts"]
    assert _error(lambda: client.files_completeUploadExternal(
        files=[{"id": "F404", "title": "A"}], channel_id=CHANNEL)) == "file_not_found"
    assert _error(lambda: client.files_completeUploadExternal(
        files=[{"id": file_id, "title": "A"}], channel_id=CHANNEL,
        thread_ts="1.000001")) == "thread_not_found"
    done = client.files_completeUploadExternal(files=[{"id": file_id, "title": "A"}],
                                               channel_id=CHANNEL, thread_ts=parent,
                                               initial_comment="here")
    assert done["files"] == [{"id": file_id, "title": "A"}]
    assert _error(lambda: client.files_completeUploadExternal(
        files=[{"id": file_id, "title": "A"}], channel_id=CHANNEL, thread_ts=parent)) == \
        "file_already_completed"
    [shared] = slack.thread(CHANNEL, parent)
    assert shared.files[0]["id"] == file_id and shared.text.startswith("here\nA: ")
    assert Path(shared.files[0]["local_path"]).read_bytes() == b"abcd"

    no_scope = SlackDouble(token=BOT_TOKEN, scopes=["chat:write"]).start()
    try:
        plain = WebClient(token=BOT_TOKEN, base_url=no_scope.api_url)
        assert _error(lambda: plain.files_getUploadURLExternal(filename="a.png", length=4)) == \
            "missing_scope"
    finally:
        no_scope.stop()


# -- through the bot: the outbox keeps the chart through an outage ------------------------------


def _monitored(bot: BotHarness, clock: FixedClock, *, failed: bool) -> int:
    """A standard deployment whose monitor step just ended (with recorded checks); its card
    and the chart are enqueued by the engine's reporter, as the engine does after the step."""
    services = bot.services
    deployments = services.deployments
    record = deployments.create(ProcedureKind.STANDARD, "v1.2.0", ENV, "U0DEV",
                                state=DeploymentState.RUNNING)
    assert record.id is not None
    started = clock.now()
    clock.advance(timedelta(minutes=15))
    result = {"slot": "green", "version": "v1.2.0", "series_started_at": started.isoformat(),
              "series": SERIES}
    deployments.upsert_step(record.id, "monitor", 9,
                            StepState.FAILED if failed else StepState.SUCCEEDED,
                            started_at=started, finished_at=clock.now(), result=result)
    services.engine.reporter.run_changed(services.engine.snapshot(record.id))
    return record.id


def _sender(bot: BotHarness, clock: FixedClock) -> SlackOutboxSender:
    services = bot.services
    return SlackOutboxSender(services.outbox, services.deployments, services.slack, clock,
                             per_channel_interval=0.0, settle=timedelta(seconds=0))


def _deliver(sender: SlackOutboxSender, clock: FixedClock, passes: int = 20) -> None:
    for _ in range(passes):
        sender.run_once()
        clock.advance(timedelta(seconds=61))


def _charts(bot: BotHarness) -> list[Notification]:
    with bot.services.database.session(read_only=True) as s:
        return list(s.exec(select(Notification).where(
            col(Notification.dedup_key).like("chart:%"))).all())


def test_a_chart_waits_out_a_slack_outage_and_goes_into_the_cards_thread_once(
        bot: BotHarness, clock: FixedClock, tmp_path: Path) -> None:
    slack = bot.slack
    slack.files_dir = tmp_path / "slack-files"
    BaselineRepository(bot.services.database, clock).record(
        ENV, "v1.1.0", {"response_ms_p50": 110.0, "response_ms_p95": 180.0})
    clock.advance(timedelta(minutes=1))
    deployment_id = _monitored(bot, clock, failed=True)
    # Asked again (every later run_changed): still one chart.
    bot.services.engine.reporter.run_changed(bot.services.engine.snapshot(deployment_id))
    [row] = _charts(bot)
    assert row.dedup_key == chart_dedup_key(deployment_id) and row.thread_of == deployment_id
    spec = row.payload["file"]["chart"]
    assert spec["rollback_at_s"] == 900.0  # the step's end, 15 minutes in
    assert spec["baseline"] == {"version": "v1.1.0", "p50": 110.0, "p95": 180.0}
    assert spec["thresholds"]["health_failures"] == 10
    assert len(json.dumps(row.payload)) < 4000  # the data, not the picture

    sender = _sender(bot, clock)
    slack.down()
    _deliver(sender, clock, passes=5)
    assert slack.uploaded_files() == []
    assert bot.services.outbox.get(row.id).state == "pending"  # delayed, not lost

    slack.up()
    _deliver(sender, clock)
    assert bot.services.outbox.get(row.id).state == "sent"
    [file] = slack.uploaded_files()
    assert file.completed and file.channel == CHANNEL
    card = _card(slack, deployment_id)
    assert file.thread_ts == card.ts  # shared in the card's thread
    assert file.data is not None and file.data[:8] == PNG_SIGNATURE
    assert png_size(file.data) == (WIDTH, HEIGHT)
    [shared] = [m for m in slack.thread(CHANNEL, card.ts) if m.files]
    assert "Monitoring of v1.2.0 on production (rolled back)" in shared.text
    assert file.path is not None and Path(file.path).read_bytes() == file.data


@pytest.mark.slow  # 4 s of the fast lane, measured
def test_a_failed_upload_is_retried_and_the_chart_still_arrives_once(
        bot: BotHarness, clock: FixedClock, tmp_path: Path) -> None:
    slack = bot.slack
    slack.files_dir = tmp_path / "slack-files"
    deployment_id = _monitored(bot, clock, failed=False)
    [row] = _charts(bot)
    assert row.payload["file"]["chart"]["rollback_at_s"] is None
    assert row.payload["file"]["chart"]["baseline"] is None  # no earlier baseline
    slack.fail_next("upload", status=500)
    _deliver(_sender(bot, clock), clock)
    assert bot.services.outbox.get(row.id).state == "sent"
    completed = [f for f in slack.uploaded_files() if f.completed]
    assert len(completed) == 1 and completed[0].thread_ts == _card(slack, deployment_id).ts
    assert slack.call_count("upload") == 2  # the refused POST, then the one that took


def test_a_lost_completion_answer_is_looked_up_not_shared_twice(
        bot: BotHarness, clock: FixedClock, tmp_path: Path) -> None:
    slack = bot.slack
    slack.files_dir = tmp_path / "slack-files"
    deployment_id = _monitored(bot, clock, failed=False)
    [row] = _charts(bot)
    # Slack shares the file but the connection closes before its answer.
    slack.drop_answer("files.completeUploadExternal")
    _deliver(_sender(bot, clock), clock)
    assert bot.services.outbox.get(row.id).state == "sent"
    assert "confirmed by lookup" in str(bot.services.outbox.get(row.id).last_error)
    assert slack.served_count("files.completeUploadExternal") == 1
    assert slack.call_count("files.getUploadURLExternal") == 1
    card = _card(slack, deployment_id)
    assert len([m for m in slack.thread(CHANNEL, card.ts) if m.files]) == 1


# -- end to end on the real local platform ------------------------------------------------------


@pytest.fixture
def live_bot(database: Database, slack: SlackDouble, tmp_path: Path) -> Iterator[BotHarness]:
    slack.files_dir = tmp_path / "slack-files"
    policy = make_policy(real_ports=True, windows=ALWAYS_OPEN,
                         monitoring={"duration": "3s", "interval": "1s"})
    harness = BotHarness(database=database, policy=policy, clock=SystemClock(),
                         home=tmp_path / "home", slack=slack, start_worker=True)
    yield harness
    harness.close()


def _deploy(bot: BotHarness, version: str) -> int:
    reply = bot.command(f"deploy {version}").text
    assert "requested" in reply, reply
    deployment_id = int(reply.split("#", 1)[1].split(" ", 1)[0].rstrip(":"))
    card = bot.wait_for(lambda: _card(bot.slack, deployment_id), what="the card")
    assert bot.press("qlp_approve", str(deployment_id), user="U0LEAD2",
                     message_ts=card.ts).status_code == 200
    deployments = bot.services.deployments
    bot.wait_for(lambda: deployments.get(deployment_id).state.terminal, timeout=120,
                 what=f"#{deployment_id} to end")
    return deployment_id


def _chart_in_thread(bot: BotHarness, deployment_id: int) -> Any:
    card = _card(bot.slack, deployment_id)
    return bot.wait_for(lambda: [f for f in bot.slack.uploaded_files()
                                 if f.completed and f.thread_ts == card.ts],
                        timeout=60, what=f"the chart of #{deployment_id}")


@ON_POSTGRES_ONLY
@pytest.mark.slow  # the local platform's real processes, monitoring on the wall clock
def test_charts_of_a_passed_and_a_rolled_back_local_deployment(live_bot: BotHarness) -> None:
    bot = live_bot
    passed = _deploy(bot, "v1.0.0")
    assert bot.services.deployments.get(passed).state is DeploymentState.SUCCEEDED
    [first] = _chart_in_thread(bot, passed)
    assert first.channel == CHANNEL and first.data is not None
    assert png_size(first.data) == (WIDTH, HEIGHT)

    # Healthy for its first health requests (readiness, smoke, extended health, post-deploy
    # tests), then 500: monitoring fails and the run rolls back.
    rolled = _deploy(bot, "v1.1.0-unhealthy")
    assert bot.services.deployments.get(rolled).state is DeploymentState.ROLLED_BACK
    [second] = _chart_in_thread(bot, rolled)
    assert second.data is not None and second.data[:8] == PNG_SIGNATURE
    assert png_size(second.data) == (WIDTH, HEIGHT)
    rows = {row.thread_of: row for row in _charts(bot)}
    assert set(rows) == {passed, rolled}
    passed_spec = rows[passed].payload["file"]["chart"]
    rolled_spec = rows[rolled].payload["file"]["chart"]
    assert passed_spec["rollback_at_s"] is None and len(passed_spec["series"]) == 3
    assert rolled_spec["rollback_at_s"] is not None
    assert any(ok == 0 for _, _, ok in rolled_spec["series"])
    assert rolled_spec["baseline"]["version"] == "v1.0.0"  # the previous version's
    figure = draw(rolled_spec)
    assert [_x(line)[0] for line in _lines(figure, "rollback")] == \
        [rolled_spec["rollback_at_s"] / 60] * 2


def test_the_local_shell_writes_a_shared_png_to_a_file_and_prints_its_path() -> None:
    data = render_png(SPEC)
    standin = SlackStandIn(token=BOT_TOKEN).start()  # as the shell starts it: no files_dir
    shown: list[str] = []
    standin.subscribe(lambda event: shown.append(render_message(event[1]).text)
                      if event[0] == "posted" else None)
    try:
        client = WebClient(token=BOT_TOKEN, base_url=standin.api_url)
        parent = client.chat_postMessage(channel=CHANNEL, text="card")["ts"]
        answer = client.files_getUploadURLExternal(filename="qlp-monitoring-7.png",
                                                   length=len(data))
        assert httpx.post(answer["upload_url"], content=data).status_code == 200
        client.files_completeUploadExternal(
            files=[{"id": answer["file_id"], "title": "Monitoring #7"}], channel_id=CHANNEL,
            thread_ts=parent, initial_comment="Monitoring of v1.2.0 on production (passed)")
        [file] = standin.uploaded_files()
        assert file.path is not None and Path(file.path).read_bytes() == data
        assert file.path in shown[-1] and "Monitoring of v1.2.0" in shown[-1]
    finally:
        standin.stop()
        if standin.files_dir is not None:
            shutil.rmtree(standin.files_dir, ignore_errors=True)
