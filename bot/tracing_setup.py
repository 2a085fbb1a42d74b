"""Sets up OpenTelemetry tracing when ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set, else nothing.

The SDK's ``TracerProvider`` with a ``BatchSpanProcessor`` and the OTLP/HTTP (protobuf)
exporter, which reads the standard ``OTEL_EXPORTER_OTLP_*`` variables itself (endpoint plus
``/v1/traces``, headers, timeout, compression). Spans are queued and sent by the processor's
own thread: a listener never waits on the collector, and a collector that is down loses spans,
never a request. The tracer goes to :func:`procedures.tracing.install` (its one owner); the
global provider is left alone, so libraries do not start exporting on their own.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from procedures import tracing

__all__ = ["setup_tracing"]

log = logging.getLogger(__name__)

ENDPOINT = "OTEL_EXPORTER_OTLP_ENDPOINT"


def setup_tracing(environ: Mapping[str, str] | None = None,
                  *, mode: str = "bot") -> TracerProvider | None:
    """Trace to the OTLP endpoint of ``environ`` (default: the process's environment); None,
    and nothing set up, without one. The caller shuts the provider down at exit (the
    processor flushes what it holds)."""
    environ = os.environ if environ is None else environ
    endpoint = environ.get(ENDPOINT, "").strip()
    if not endpoint:
        return None
    resource = Resource.create({"service.name": environ.get("OTEL_SERVICE_NAME") or "qlp-bot",
                                "qlp.mode": mode})
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(
        endpoint=endpoint.rstrip("/") + "/v1/traces")))
    tracing.install(provider.get_tracer("qlp-bot"))
    log.info("tracing: spans go to %s", endpoint)  # the endpoint is not a secret
    return provider


def stop_tracing(provider: TracerProvider | None) -> None:
    """Stop tracing and send what is queued (bounded by the exporter's timeout)."""
    if provider is None:
        return
    tracing.install(None)
    provider.shutdown()
