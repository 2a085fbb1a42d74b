"""HttpChecker against a real local HTTP server (and one MockTransport case)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from procedures.checks.http import HttpChecker, Probe

SLOW_SECONDS = 1.5


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path == "/slow":
            time.sleep(SLOW_SECONDS)
        status = {"/ok": 200, "/created": 201, "/boom": 500, "/slow": 200,
                  "/moved": 302}.get(self.path, 404)
        body = b'{"status": "ok"}' if status < 300 else b"no"
        self.send_response(status)
        if status == 302:
            self.send_header("Location", "/ok")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture
def checker() -> Iterator[HttpChecker]:
    with HttpChecker(timeout=0.5, connect_timeout=0.5) as http:
        yield http


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_2xx_is_ok(server: str, checker: HttpChecker) -> None:
    probe = checker.probe(server + "/ok")
    assert probe.ok and probe.status == 200 and probe.error is None
    assert probe.url == server + "/ok"
    assert probe.elapsed_ms >= 0
    assert checker.probe(server + "/created").ok


def test_500_is_not_ok(server: str, checker: HttpChecker) -> None:
    probe = checker.probe(server + "/boom")
    assert not probe.ok and probe.status == 500 and probe.error == "HTTP 500"
    assert probe.describe().startswith(f"GET {server}/boom: HTTP 500 in ")


def test_redirects_are_not_followed(server: str, checker: HttpChecker) -> None:
    probe = checker.probe(server + "/moved")
    assert not probe.ok and probe.status == 302


def test_a_slow_answer_times_out(server: str, checker: HttpChecker) -> None:
    started = time.perf_counter()
    probe = checker.probe(server + "/slow")
    waited = time.perf_counter() - started
    assert not probe.ok and probe.status is None
    assert probe.error is not None and probe.error.startswith("timed out")
    assert waited < SLOW_SECONDS  # gave up at the timeout, did not wait for the answer
    print(f"\ntimed out after {probe.elapsed_ms:.0f} ms")


def test_connection_refused_does_not_raise(checker: HttpChecker) -> None:
    probe = checker.probe(f"http://127.0.0.1:{closed_port()}/health")
    assert not probe.ok and probe.status is None
    assert probe.error is not None and probe.error.startswith("connection failed")


def test_a_bad_url_does_not_raise(checker: HttpChecker) -> None:
    for url in ("not a url", "ftp://127.0.0.1/x", "http://"):
        probe = checker.probe(url)
        assert not probe.ok and probe.status is None and probe.error


def test_check_paths_probes_each_path_in_order(server: str, checker: HttpChecker) -> None:
    probes = checker.check_paths(server + "/", ["/ok", "/boom", "/nope"])
    assert [(p.url, p.status, p.ok) for p in probes] == [
        (server + "/ok", 200, True), (server + "/boom", 500, False),
        (server + "/nope", 404, False)]


def test_transport_is_injectable() -> None:
    seen: list[str] = []

    def app(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        if request.url.path == "/down":
            raise httpx.ConnectError("refused", request=request)
        return httpx.Response(204)

    ticks = iter([1.0, 1.25, 2.0, 2.5])
    with HttpChecker(transport=httpx.MockTransport(app), timer=lambda: next(ticks)) as http:
        assert http.probe("http://app.test/health") == Probe(True, 204, 250.0, None,
                                                             "http://app.test/health")
        down = http.probe("http://app.test/down")
    assert down == Probe(False, None, 500.0, "connection failed: refused", "http://app.test/down")
    assert seen == ["http://app.test/health", "http://app.test/down"]
