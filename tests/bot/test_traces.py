"""Issue 14 item 3: with ``OTEL_EXPORTER_OTLP_ENDPOINT`` set, a deployment driven by signed
requests sends its spans over OTLP/HTTP to a real receiver (``tests.fakes.otlp_receiver``):
the command and the Approve click, the run and its steps, an HTTP check and an Azure call made
by a step, and the Slack Web API calls the outbox made for it; each carries the deployment id,
steps are children of the run, the calls children of their step, and the run, the click and
the Slack calls share the deployment's one trace. Without the variable nothing is set up."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider

from bot.tracing_setup import setup_tracing, stop_tracing
from procedures import tracing
from procedures.checks.http import HttpChecker
from procedures.model import DeploymentState, ProcedureKind
from procedures.platforms.azure.errors import AzureCalls
from procedures.playbook import Playbook, Step, StepContext, StepResult
from tests.bot.run_helpers import press
from tests.fakes.bot_harness import BotHarness
from tests.fakes.otlp_receiver import OtlpReceiver, ReceivedSpan


class _Healthy(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        status = 200 if self.path == "/health" else 404
        self.send_response(status)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def health_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Healthy)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/health"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as receiver:
        yield receiver


@pytest.fixture
def provider(receiver: OtlpReceiver) -> Iterator[TracerProvider]:
    provider = setup_tracing({"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint}, mode="test")
    assert provider is not None and tracing.enabled()
    try:
        yield provider
    finally:
        stop_tracing(provider)
    assert not tracing.enabled()


@pytest.fixture
def traced_bot(bot: BotHarness, provider: TracerProvider, health_url: str) -> BotHarness:
    def work(ctx: StepContext) -> StepResult:
        with HttpChecker() as checker:
            probe = checker.probe(health_url)
        AzureCalls("Azure Front Door").call("read route qlp-route", lambda: "route")
        return {"status": probe.status}

    def monitor(ctx: StepContext) -> StepResult:
        return {"checks": 1}

    bot.services.engine.playbooks = {kind: Playbook(kind, "Two steps", (
        Step("work", "Work", work), Step("monitor", "Monitor", monitor)))
        for kind in ProcedureKind}
    bot.services.start_worker()
    return bot


def _one(spans: list[ReceivedSpan], name: str, **attributes: Any) -> ReceivedSpan:
    found = [s for s in spans if s.name == name
             and all(s.attributes.get(k) == v for k, v in attributes.items())]
    assert len(found) == 1, f"{name} {attributes}: {len(found)} of " + ", ".join(
        sorted({s.name for s in spans}))
    return found[0]


@pytest.mark.slow  # 3 s of the fast lane, measured
def test_a_deployment_is_one_trace_from_the_click_to_the_checks(
        traced_bot: BotHarness, provider: TracerProvider, receiver: OtlpReceiver) -> None:
    bot = traced_bot
    answer = bot.command("deploy v1.0.0").text
    assert "#1 requested" in answer, answer
    press(bot, 1, "U0LEAD1")
    bot.wait_for(lambda: bot.services.deployments.get(1).state.terminal, what="#1 to end")
    assert bot.services.deployments.get(1).state is DeploymentState.SUCCEEDED
    bot.wait_for(lambda: bot.slack.call_count() >= 2, what="the sender's posts")
    bot.services.stop_worker()
    # The run's span ends just after its terminal state is written: flush until it is in.
    bot.wait_for(lambda: provider.force_flush(5_000)
                 and any(s.name == "qlp.run" for s in receiver.spans), what="the run's span")

    spans = receiver.spans
    assert receiver.requests >= 1 and {s.service_name for s in spans} == {"qlp-bot"}
    command = _one(spans, "qlp.command", **{"qlp.command": "deploy"})
    assert command.kind == 2  # SERVER
    button = _one(spans, "qlp.button", **{"qlp.button": "qlp_approve",
                                          "qlp.deployment_id": 1})
    run = _one(spans, "qlp.run", **{"qlp.deployment_id": 1})
    assert run.attributes["qlp.outcome"] == "succeeded"
    assert run.attributes["qlp.environment"] == "production"
    # The run, the click on the card and the messages share the deployment's trace.
    assert button.trace_id == run.trace_id
    assert run.parent_span_id  # under the deployment's (never exported) context
    work = _one(spans, "qlp.step work", **{"qlp.deployment_id": 1, "qlp.step": "work"})
    monitor = _one(spans, "qlp.step monitor", **{"qlp.deployment_id": 1})
    assert work.parent_span_id == run.span_id and monitor.parent_span_id == run.span_id
    assert {work.trace_id, monitor.trace_id} == {run.trace_id}
    check = _one(spans, "http check GET", **{"qlp.deployment_id": 1})
    assert check.parent_span_id == work.span_id and check.trace_id == run.trace_id
    assert check.attributes["http.response.status_code"] == 200
    assert check.attributes["qlp.step"] == "work"
    azure = _one(spans, "azure read", **{"qlp.azure_service": "Azure Front Door"})
    assert azure.parent_span_id == work.span_id and azure.attributes["qlp.deployment_id"] == 1
    slack = [s for s in spans if s.name.startswith("slack ")
             and s.attributes.get("qlp.deployment_id") == 1]
    assert any(s.name == "slack chat.postMessage" for s in slack), [s.name for s in spans]
    assert {s.trace_id for s in slack} == {run.trace_id}
    assert all(s.kind == 3 for s in slack)  # CLIENT
    # Spans that are about no deployment stay out of its trace.
    assert command.trace_id != run.trace_id


def test_without_the_endpoint_nothing_is_set_up() -> None:
    assert setup_tracing({}) is None
    assert not tracing.enabled()
    with tracing.span("qlp.run", deployment_id=1) as span:
        assert span is None
