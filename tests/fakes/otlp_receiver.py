"""A real OTLP/HTTP trace receiver: what a collector's ``/v1/traces`` endpoint does, on a port.

:class:`OtlpReceiver` is an ``http.server`` on 127.0.0.1 that accepts what an OpenTelemetry
exporter sends (``POST /v1/traces``, ``application/x-protobuf``, optionally gzip), decodes the
``ExportTraceServiceRequest`` with ``opentelemetry-proto`` and keeps each span as a
:class:`ReceivedSpan`. Like a collector it says no: another path is 404, another method 405,
another content type 415, a body that is not a valid request 400; it starts empty.
"""

from __future__ import annotations

import gzip
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

PROTOBUF = "application/x-protobuf"


@dataclass(frozen=True)
class ReceivedSpan:
    """One decoded span: ids as lowercase hex (``parent_span_id`` empty for a root)."""

    name: str
    trace_id: str
    span_id: str
    parent_span_id: str
    kind: int
    attributes: dict[str, Any] = field(default_factory=dict)
    status_code: int = 0
    service_name: str = ""


def _value(any_value: Any) -> Any:
    which = any_value.WhichOneof("value")
    return None if which is None else getattr(any_value, which)


class OtlpReceiver:
    """``with OtlpReceiver() as receiver``: serves until the block ends; ``endpoint`` is what
    ``OTEL_EXPORTER_OTLP_ENDPOINT`` would say, ``spans`` what arrived so far."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._spans: list[ReceivedSpan] = []
        self.requests = 0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                if self.path != "/v1/traces":
                    return self._answer(404, b"not found", "text/plain")
                if self.headers.get("Content-Type", "").split(";")[0].strip() != PROTOBUF:
                    return self._answer(415, b"unsupported media type", "text/plain")
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    if self.headers.get("Content-Encoding") == "gzip":
                        body = gzip.decompress(body)
                    request = ExportTraceServiceRequest.FromString(body)
                except (DecodeError, OSError, EOFError):
                    return self._answer(400, b"not an ExportTraceServiceRequest", "text/plain")
                receiver._keep(request)
                return self._answer(200, ExportTraceServiceResponse().SerializeToString(),
                                    PROTOBUF)

            def do_GET(self) -> None:
                self._answer(405, b"method not allowed", "text/plain")

            def _answer(self, status: int, body: bytes, content_type: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:  # quiet
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        name="otlp-receiver", daemon=True)

    @property
    def endpoint(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def spans(self) -> list[ReceivedSpan]:
        with self._lock:
            return list(self._spans)

    def _keep(self, request: ExportTraceServiceRequest) -> None:
        received = []
        for resource_spans in request.resource_spans:
            resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    received.append(ReceivedSpan(
                        name=span.name, trace_id=span.trace_id.hex(), span_id=span.span_id.hex(),
                        parent_span_id=span.parent_span_id.hex(), kind=span.kind,
                        attributes={a.key: _value(a.value) for a in span.attributes},
                        status_code=span.status.code,
                        service_name=str(resource.get("service.name", ""))))
        with self._lock:
            self.requests += 1
            self._spans.extend(received)

    def __enter__(self) -> OtlpReceiver:
        self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
