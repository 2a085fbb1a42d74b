"""Issue 14, must show: the JSON logs of a run carry its deployment id on every line the run
wrote (its thread and its heartbeat thread), and redaction applies to JSON lines too."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from bot import log_redaction
from bot.logging_setup import configure
from procedures.model import ProcedureKind
from procedures.playbook import Playbook, Step, StepContext, StepResult
from tests.bot.run_helpers import press
from tests.fakes.bot_harness import BotHarness


@pytest.fixture
def json_stream() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    root = logging.getLogger()
    level = root.level
    handler = configure(level="INFO", mode="serve", stream=stream)
    try:
        yield stream
    finally:
        if handler is not None:
            root.removeHandler(handler)
        root.setLevel(level)


def _work(ctx: StepContext) -> StepResult:
    logging.getLogger("tests.step").info("working on %s", ctx.environment_name)
    return {"ok": True}


def test_every_line_a_run_wrote_has_its_deployment_id(bot: BotHarness,
                                                      json_stream: io.StringIO) -> None:
    bot.services.engine.playbooks = {kind: Playbook(kind, "One step", (
        Step("work", "Work", _work),)) for kind in ProcedureKind}
    bot.services.start_worker()
    answer = bot.command("deploy v1.0.0").text
    assert "#1 requested" in answer
    press(bot, 1, "U0LEAD1")
    bot.wait_for(lambda: bot.services.deployments.get(1).state.terminal, what="#1 to end")
    bot.wait_for(lambda: "stopped: succeeded" in json_stream.getvalue(), what="the last line")
    lines = [json.loads(line) for line in json_stream.getvalue().splitlines() if line]
    run_lines = [line for line in lines if str(line.get("thread", "")).startswith("qlp-run")]
    assert len(run_lines) >= 4, lines  # started, the step's own line, step done, stopped
    for line in run_lines:
        assert line["deployment_id"] == 1, line
        assert line["environment"] == "production" and line["kind"] == "standard"
        assert line["worker_id"] == bot.services.worker_id
    step_line = next(line for line in run_lines if line["logger"] == "tests.step")
    assert step_line["step"] == "work" and step_line["message"] == "working on production"
    assert {"time", "level", "logger", "message"} <= set(step_line)


def test_json_lines_are_redacted(json_stream: io.StringIO) -> None:
    log_redaction.install(["a-signing-secret-of-this-test"])
    try:
        try:
            raise ValueError("token=xoxb-1234567890-abcdef a-signing-secret-of-this-test")
        except ValueError:
            logging.getLogger("tests.redaction").exception(
                "failed with response_url=https://hooks.slack.com/commands/T0/1/secret")
    finally:
        log_redaction.uninstall()
    text = json_stream.getvalue()
    line = json.loads(text.splitlines()[-1])
    assert "hooks.slack.com" not in text and "xoxb-1234567890" not in text
    assert "a-signing-secret-of-this-test" not in text
    assert "ValueError" in line["exc_info"]
