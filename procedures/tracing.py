"""OpenTelemetry spans for commands, buttons, runs, steps and the calls made for them.

The one owner of the bot's tracer. Off until the bot installs one (``bot.tracing_setup``,
when ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set): :func:`span` then does nothing at all, not even
the API's no-op tracer, so an untraced bot pays one ``None`` test per span. Only the
OpenTelemetry API is imported here; the SDK and its exporter live on the bot's side.

Each span carries what the current :func:`procedures.log_context.scope` is about
(``qlp.deployment_id``, ``qlp.kind``, ``qlp.environment``, ``qlp.step``, ``qlp.worker_id``)
and its own attributes. **One deployment, one trace**: a span about a deployment that starts
outside any other span (a run in the worker, a Slack call in the outbox sender, a click on
its card) is parented under a remote context whose trace id is derived from the deployment id,
so its run, steps, Azure and HTTP-check calls (children of the run by context) and the Slack
messages sent for it (another thread, possibly another replica) are one trace in the backend.
That parent is never exported: backends show the trace with a missing root, which is the
deployment itself.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import (
    NonRecordingSpan,
    Span,
    SpanContext,
    SpanKind,
    TraceFlags,
    Tracer,
)

from procedures.log_context import current

__all__ = ["SpanKind", "deployment_context", "enabled", "install", "span"]

_tracer: Tracer | None = None
_ATTRIBUTES = ("deployment_id", "kind", "environment", "step", "worker_id")
"""The scope's fields a span carries (``qlp.<field>``); never a person's text."""


def install(tracer: Tracer | None) -> None:
    """Trace with ``tracer`` from now on (``None``: stop tracing)."""
    global _tracer
    _tracer = tracer


def enabled() -> bool:
    return _tracer is not None


def deployment_context(deployment_id: int) -> Any:
    """The context a deployment's trace hangs from: trace id and parent span id derived from
    the deployment id, the same in every process."""
    digest = hashlib.sha256(f"qlp-deployment:{int(deployment_id)}".encode()).digest()
    parent = SpanContext(trace_id=int.from_bytes(digest[:16], "big") or 1,
                         span_id=int.from_bytes(digest[16:24], "big") or 1, is_remote=True,
                         trace_flags=TraceFlags(TraceFlags.SAMPLED))
    return trace.set_span_in_context(NonRecordingSpan(parent))


@contextlib.contextmanager
def span(name: str, kind: SpanKind = SpanKind.INTERNAL,
         **attributes: Any) -> Iterator[Span | None]:
    """A span named ``name`` around the block (None and nothing when tracing is off).

    ``attributes`` become ``qlp.<name>`` (None values left out); a ``deployment_id`` among
    them or in the scope ties the span to that deployment's trace when no span is current.
    An exception leaving the block is recorded on the span and marks it as an error."""
    tracer = _tracer
    if tracer is None:
        yield None
        return
    fields = current()
    values = {key: fields[key] for key in _ATTRIBUTES if fields.get(key) is not None}
    values.update({k: v for k, v in attributes.items() if v is not None})
    context = None
    deployment_id = values.get("deployment_id")
    if deployment_id is not None and not trace.get_current_span().get_span_context().is_valid:
        context = deployment_context(deployment_id)
    with tracer.start_as_current_span(
            name, context=context, kind=kind,
            attributes={f"qlp.{k}": v if isinstance(v, str | int | float | bool) else str(v)
                        for k, v in values.items()}) as current_span:
        yield current_span
