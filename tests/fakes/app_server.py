"""A tiny real HTTP application for tests that probe health paths and call hooks.

:class:`AppServer` listens on 127.0.0.1 (a free port) in a thread. ``GET`` answers the status
set for the path in ``get_status`` (200 by default, 404 for a path that was never set and is
not a health-like path); ``POST`` answers ``post_status`` and records ``(path, body)`` in
``posts``. It validates what a real application would: a POST without a JSON body is 400.
Use it as a context manager (it stops its thread on exit).
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any


class AppServer:
    """A real HTTP server with settable answers; see the module docstring."""

    def __init__(self) -> None:
        self.get_status: dict[str, int] = {"/health": 200, "/api/v1/status": 200}
        self.post_status = 200
        self.posts: list[tuple[str, Any]] = []
        self.gets: list[str] = []
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                return  # quiet

            def _answer(self, status: int, body: bytes = b"") -> None:
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                with server._lock:
                    server.gets.append(self.path)
                    status = server.get_status.get(self.path, 404)
                self._answer(status, b"ok" if status == 200 else b"no")

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    body = json.loads(raw)
                except ValueError:
                    self._answer(400, b"a JSON body is required")
                    return
                with server._lock:
                    server.posts.append((self.path, body))
                    status = server.post_status
                self._answer(status, b"reloaded" if status == 200 else b"failed")

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def __enter__(self) -> AppServer:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()
