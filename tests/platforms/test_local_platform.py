"""The local platform with real processes and real HTTP on free ports.

Every test gets its own ports and state directory; the fixture always calls ``shutdown_all``,
so no process outlives the test. Timing is printed, never asserted (except generous bounds that
tell "failed at once" from "waited for the timeout").
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from procedures.errors import StepFailure
from procedures.model import Slot
from procedures.platforms.base import Platform
from procedures.platforms.local import LocalPlatform, processes
from procedures.platforms.local.router import _is_loopback
from procedures.policy import Environment

pytestmark = pytest.mark.slow

SAMPLE = ["python", "-m", "procedures.platforms.local.sample_service",
          "--port", "{port}", "--version", "{version}", "--slot", "{slot}"]
READY = timedelta(seconds=10)


def free_ports(count: int) -> list[int]:
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def make_env(command: list[str] | None = None) -> Environment:
    router, blue, green = free_ports(3)
    return Environment.model_validate({
        "platform": "local",
        "url": f"http://127.0.0.1:{router}",
        "health": ["/health"],
        "local": {"command": command or SAMPLE, "slots": {"blue": blue, "green": green},
                  "ready_timeout": "10s"},
    })


@pytest.fixture
def env() -> Environment:
    return make_env()


@pytest.fixture
def platform(tmp_path: Path, env: Environment) -> Iterator[LocalPlatform]:
    local = LocalPlatform("test", env, tmp_path / "state",
                          extra_env={"QLP_SAMPLE_HEALTHY_FOR": "2"}, stop_grace=3.0)
    try:
        yield local
    finally:
        local.shutdown_all()
        local.close()


_http = httpx.Client(trust_env=False, timeout=5.0)


@pytest.fixture(scope="module", autouse=True)
def _close_http() -> Iterator[None]:
    yield
    _http.close()


def through_router(platform: LocalPlatform, path: str = "/") -> httpx.Response:
    return _http.get(platform.router_url + path)


def deploy_ready(platform: LocalPlatform, slot: Slot, version: str) -> None:
    platform.deploy(slot, version)
    platform.wait_ready(slot, READY)


def test_local_platform_is_a_platform(platform: LocalPlatform) -> None:
    conforming: Platform = platform  # mypy checks the protocol here
    assert conforming.slot_url(Slot.BLUE).startswith("http://127.0.0.1:")


def test_blue_green_round_trip(platform: LocalPlatform) -> None:
    deploy_ready(platform, Slot.BLUE, "v1.0.0")
    platform.switch(Slot.BLUE)
    response = through_router(platform)
    assert response.status_code == 200
    assert response.text.strip() == "QLP sample service v1.0.0"
    assert response.headers["X-QLP-Slot"] == "blue"
    assert through_router(platform, "/api/v1/status").json()["version"] == "v1.0.0"

    deploy_ready(platform, Slot.GREEN, "v1.1.0")
    assert through_router(platform).headers["X-QLP-Slot"] == "blue"  # not yet switched
    started = time.perf_counter()
    platform.switch(Slot.GREEN)
    switched = time.perf_counter()
    response = through_router(platform, "/health")
    served = time.perf_counter()
    assert response.json() == {"status": "ok", "version": "v1.1.0", "slot": "green"}
    assert response.headers["X-QLP-Slot"] == "green"
    print(f"\nswitch blue->green: {(switched - started) * 1000:.1f} ms (PUT + verifying GET), "
          f"first request through the router after it: {(served - switched) * 1000:.1f} ms")

    started = time.perf_counter()
    platform.switch(Slot.BLUE)
    print(f"switch green->blue: {(time.perf_counter() - started) * 1000:.1f} ms")
    response = through_router(platform)
    assert response.text.strip() == "QLP sample service v1.0.0"
    assert response.headers["X-QLP-Slot"] == "blue"

    state = platform.traffic()
    assert state.live is Slot.BLUE
    assert state.live_version == "v1.0.0"
    assert state.slots[Slot.GREEN].running and state.slots[Slot.GREEN].version == "v1.1.0"
    assert state.slots[Slot.GREEN].url == platform.slot_url(Slot.GREEN)


def test_broken_version_never_gets_ready(platform: LocalPlatform) -> None:
    platform.deploy(Slot.GREEN, "v1.0.1-broken")
    with pytest.raises(StepFailure) as failure:
        platform.wait_ready(Slot.GREEN, timedelta(seconds=1.5))
    message = str(failure.value)
    assert f"GET {platform.slot_url(Slot.GREEN)}/health: HTTP 500" in message
    assert "not ready within 1.5 s" in message
    assert platform.traffic().slots[Slot.GREEN].running  # the process runs; it is just unwell


def test_crashing_version_fails_at_once_with_its_exit_status(platform: LocalPlatform) -> None:
    platform.deploy(Slot.BLUE, "v1.0.2-crash")
    started = time.monotonic()
    with pytest.raises(StepFailure) as failure:
        platform.wait_ready(Slot.BLUE, timedelta(seconds=60))
    assert time.monotonic() - started < 20  # did not sit out the 60 s timeout
    assert "exited with status 3" in failure.value.message
    assert "crashing on purpose" in (failure.value.hint or "")  # the log's last lines
    assert platform.traffic().slots[Slot.BLUE].detail == "exited with status 3"


def test_unhealthy_version_is_healthy_for_its_first_health_requests(
    platform: LocalPlatform,
) -> None:
    deploy_ready(platform, Slot.GREEN, "v1.2.4-unhealthy")  # health request 1: 200
    url = platform.slot_url(Slot.GREEN) + "/health"
    codes = [_http.get(url).status_code for _ in range(3)]
    assert codes == [200, 500, 500]  # QLP_SAMPLE_HEALTHY_FOR=2


def test_slow_version_gets_ready_slowly(platform: LocalPlatform) -> None:
    status = platform.deploy(Slot.GREEN, "v1.3.0-slow")
    status = platform.wait_ready(Slot.GREEN, READY)
    assert status.version == "v1.3.0-slow"
    print(f"\nslow version: {status.detail}")


def test_restarted_router_serves_the_colour_from_its_state_file(
    platform: LocalPlatform,
) -> None:
    deploy_ready(platform, Slot.GREEN, "v2.0.0")
    platform.switch(Slot.GREEN)
    old_pid = platform.ensure_router()["pid"]
    os.kill(old_pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while processes.find(platform.pid_path()) is not None and time.monotonic() < deadline:
        time.sleep(0.02)
    with pytest.raises(httpx.TransportError):
        through_router(platform)

    info = platform.ensure_router()
    assert info["pid"] != old_pid
    assert info["live"] == "green"
    response = through_router(platform)
    assert response.text.strip() == "QLP sample service v2.0.0"
    assert response.headers["X-QLP-Slot"] == "green"


def test_a_restarted_bot_finds_slots_and_router_by_their_pid_files(
    platform: LocalPlatform, env: Environment
) -> None:
    deploy_ready(platform, Slot.BLUE, "v1.0.0")
    deploy_ready(platform, Slot.GREEN, "v1.1.0")
    platform.switch(Slot.GREEN)
    router_pid = platform.ensure_router()["pid"]

    # Another process, as a restarted bot would be: it did not start any of these.
    script = textwrap.dedent("""
        import json, sys
        from pathlib import Path
        from procedures.platforms.local import LocalPlatform
        from procedures.policy import Environment
        env = Environment.model_validate(json.loads(sys.argv[1]))
        platform = LocalPlatform("test", env, Path(sys.argv[2]))
        state = platform.traffic()
        print(json.dumps({
            "live": state.live, "router": platform.ensure_router()["pid"],
            "slots": {s.value: [st.running, st.version] for s, st in state.slots.items()},
        }))
    """)
    data = env.model_dump(mode="json")
    data["local"]["ready_timeout"] = 10  # the policy reads seconds or "10s", not ISO 8601
    result = subprocess.run(
        [sys.executable, "-c", script, json.dumps(data), str(platform.directory.parent)],
        capture_output=True, text=True, timeout=30, check=True,
    )
    seen = json.loads(result.stdout)
    assert seen == {"live": "green", "router": router_pid,
                    "slots": {"blue": [True, "v1.0.0"], "green": [True, "v1.1.0"]}}

    # And a new object in this process sees the same.
    again = LocalPlatform("test", env, platform.directory.parent)
    state = again.traffic()
    assert state.live is Slot.GREEN and state.live_version == "v1.1.0"
    assert state.slots[Slot.BLUE].version == "v1.0.0"
    assert again.ensure_router()["pid"] == router_pid
    again.close()


def test_a_pid_file_naming_another_process_is_not_trusted(platform: LocalPlatform) -> None:
    stranger = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        pid_path = platform.pid_path(Slot.GREEN)
        pid_path.parent.mkdir(parents=True, exist_ok=True)
        pid_path.write_text(json.dumps({
            "pid": stranger.pid, "argv": platform.slot_argv(Slot.GREEN, "v9.9.9"),
            "meta": {"version": "v9.9.9"},
        }))
        assert processes.find(pid_path) is None
        assert not platform.traffic().slots[Slot.GREEN].running
        deploy_ready(platform, Slot.GREEN, "v1.0.0")  # replaces the stale record ...
        assert stranger.poll() is None  # ... without signalling the stranger
        assert processes.find(pid_path) not in (None, stranger.pid)
    finally:
        stranger.kill()
        stranger.wait()


def test_a_reused_pid_with_the_same_argv_but_another_start_time_is_not_trusted(
    tmp_path: Path,
) -> None:
    pid_path = tmp_path / "sleeper.pid"
    pid = processes.start([sys.executable, "-c", "import time; time.sleep(60)"],
                          tmp_path / "sleeper.log", pid_path)
    try:
        assert processes.find(pid_path) == pid
        record = json.loads(pid_path.read_text())
        assert isinstance(record["start_ticks"], int)
        record["start_ticks"] += 1
        pid_path.write_text(json.dumps(record))
        assert processes.find(pid_path) is None
    finally:
        os.killpg(pid, signal.SIGKILL)
        deadline = time.monotonic() + 5
        while processes.exit_status(pid) is None and time.monotonic() < deadline:
            time.sleep(0.02)
    assert processes.exit_status(pid) == -signal.SIGKILL  # reaped: no zombie left


def test_the_live_slot_is_neither_deployed_into_nor_stopped(platform: LocalPlatform) -> None:
    with pytest.raises(StepFailure, match="nothing runs there"):
        platform.switch(Slot.BLUE)
    deploy_ready(platform, Slot.BLUE, "v1.0.0")
    platform.switch(Slot.BLUE)
    with pytest.raises(StepFailure, match="it is the live slot"):
        platform.deploy(Slot.BLUE, "v1.0.1")
    with pytest.raises(StepFailure, match="it is the live slot"):
        platform.stop(Slot.BLUE)
    assert through_router(platform).headers["X-QLP-Slot"] == "blue"

    platform.deploy(Slot.GREEN, "v1.0.1")
    assert platform.deploy(Slot.GREEN, "v1.0.1").detail.endswith("already running")
    platform.stop(Slot.GREEN)
    platform.stop(Slot.GREEN)  # stopping a stopped slot is fine
    assert not platform.traffic().slots[Slot.GREEN].running


def test_slot_exits_cleanly_on_sigterm(platform: LocalPlatform) -> None:
    deploy_ready(platform, Slot.GREEN, "v1.0.0")
    pid = processes.find(platform.pid_path(Slot.GREEN))
    assert pid is not None
    platform.stop(Slot.GREEN)
    assert processes.exit_status(pid) == 0
    assert not platform.pid_path(Slot.GREEN).exists()


def test_router_answers_502_when_the_live_slot_is_down(platform: LocalPlatform) -> None:
    deploy_ready(platform, Slot.BLUE, "v1.0.0")
    platform.switch(Slot.BLUE)
    processes.stop(platform.pid_path(Slot.BLUE))  # the live slot dies behind our back
    response = through_router(platform)
    assert response.status_code == 502
    assert response.headers["X-QLP-Slot"] == "blue"
    assert "is down" in response.json()["error"]
    with pytest.raises(StepFailure, match="nothing is deployed"):
        platform.wait_ready(Slot.BLUE, READY)


def test_version_is_substituted_literally_never_through_a_shell(
    platform: LocalPlatform,
) -> None:
    version = "v1.0.0-x;rm -rf ./qlp-no-such-dir $(id) `id` {slot} {port}"
    platform.deploy(Slot.GREEN, version)
    status = platform.wait_ready(Slot.GREEN, READY)
    assert status.version == version  # the service got it byte for byte
    record = processes.read_record(platform.pid_path(Slot.GREEN))
    assert record is not None
    port = str(platform.env.local.slots["green"]) if platform.env.local else ""
    assert record.argv == [sys.executable, "-m", "procedures.platforms.local.sample_service",
                           "--port", port, "--version", version, "--slot", "green"]
    cmdline = Path(f"/proc/{record.pid}/cmdline").read_bytes().split(b"\0")[:-1]
    assert [part.decode() for part in cmdline] == record.argv


class _Echo(BaseHTTPRequestHandler):
    def _echo(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = json.dumps({
            "method": self.command, "path": self.path,
            "body": self.rfile.read(length).decode(),
            "x_test": self.headers.get("X-Test"),
        }).encode()
        self.send_response(201)
        self.send_header("Content-Type", "application/json")
        self.send_header("Set-Cookie", "a=1")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_DELETE = _echo

    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_router_forwards_method_query_headers_and_body(tmp_path: Path) -> None:
    router_port, echo_port = free_ports(2)
    echo = ThreadingHTTPServer(("127.0.0.1", echo_port), _Echo)
    threading.Thread(target=echo.serve_forever, daemon=True).start()
    pid_path = tmp_path / "router.pid"
    processes.start(
        [sys.executable, "-m", "procedures.platforms.local.router",
         "--listen", f"127.0.0.1:{router_port}", "--state-file", str(tmp_path / "router.json"),
         "--upstream", f"blue={echo_port}"],
        tmp_path / "router.log", pid_path,
    )
    base = f"http://127.0.0.1:{router_port}"
    try:
        with httpx.Client(base_url=base, trust_env=False, timeout=5.0) as http:
            deadline = time.monotonic() + 10
            while True:
                try:
                    control = http.get("/_qlp/router")
                    break
                except httpx.TransportError:
                    assert time.monotonic() < deadline, processes.log_tail(tmp_path / "router.log")
                    time.sleep(0.05)
            assert control.json()["live"] is None
            assert http.get("/anything").status_code == 503
            assert http.put("/_qlp/router", content=b'{"live": "blue"}').status_code == 415
            assert http.put("/_qlp/router", json={"live": "purple"}).status_code == 400
            assert http.get("/_qlp/nope").status_code == 404
            assert http.put("/_qlp/router", json={"live": "blue"}).status_code == 200
            assert json.loads((tmp_path / "router.json").read_text())["live"] == "blue"

            response = http.post("/api/things?x=1&y=2", content=b"payload",
                                 headers={"X-Test": "yes"})
            assert response.status_code == 201
            assert response.headers["X-QLP-Slot"] == "blue"
            assert response.headers["Set-Cookie"] == "a=1"
            assert response.json() == {"method": "POST", "path": "/api/things?x=1&y=2",
                                       "body": "payload", "x_test": "yes"}

            def chunks() -> Iterator[bytes]:
                yield b"chunked "
                yield b"body"

            chunked = http.put("/c", content=chunks())
            assert chunked.json()["body"] == "chunked body"
    finally:
        processes.stop(pid_path)
        echo.shutdown()
        echo.server_close()


def test_control_plane_is_loopback_only() -> None:
    assert _is_loopback("127.0.0.1") and _is_loopback("::1") and _is_loopback("::ffff:127.0.0.1")
    assert not _is_loopback("10.1.2.3") and not _is_loopback("192.168.0.7")
    assert not _is_loopback("::ffff:10.1.2.3") and not _is_loopback("not-an-address")
