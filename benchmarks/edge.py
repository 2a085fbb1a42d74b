"""The HTTP edge under attack (issue 13): signed ``/qlp help`` acks from a real ``qlp-bot serve``
while unauthenticated clients hold 200 idle connections and 5 clients stream 200 MiB bodies.

    python benchmarks/edge.py [--requests 200] [--idle 200] [--uploaders 5]

The idle clients reconnect whenever the server closes one of theirs (it closes a connection
that sends nothing within 5 s), so 200 stay open throughout. The uploaders send a
``Content-Length: 200 MiB`` request (or, every other one, a chunked body with no length) and
stream it slowly (64 KiB every 10 ms); when the server answers 413 and closes, they start again.

Prints the acks' p50/p99/max, the server's resident memory and the growth of its temporary
directory and QLP_HOME (the database) before, during (peak) and after. Asserts nothing.
Targets: p99 under 500 ms, memory and disk within a few MiB of before.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import select
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bot.shell.slack_standin import SlackStandIn  # noqa: E402
from bot.slack_requests import signed_headers, slash_command_body  # noqa: E402
from tests.fakes.policies import BASE, free_port  # noqa: E402

SECRET = "benchmark-signing-secret"
BODY_SIZE = 200 * 1024 * 1024
CHUNK = b"x" * 65536


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _size_mb(path: Path) -> float:
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):  # a file removed while walking
                total += os.stat(os.path.join(dirpath, name)).st_blocks * 512
    return total / (1024 * 1024)


def _open_files_of(pid: int, under: Path) -> float:
    """MiB held by files the server has open under ``under`` (deleted temp files included:
    waitress's overflow buffers are unlinked at once but still take disk space)."""
    total = 0
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
            if target.startswith(str(under)):
                total += os.stat(fd).st_blocks * 512
        except OSError:
            pass
    return total / (1024 * 1024)


def _wait(url: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"server exited with {process.returncode}")
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.1)
    raise SystemExit(f"{url} did not come up")


class IdleHorde:
    """``count`` connections that never send a byte; closed ones are replaced."""

    def __init__(self, port: int, count: int) -> None:
        self.port, self.count = port, count
        self.stop = threading.Event()
        self.reconnects = 0
        self.refused = 0
        self.socks: list[socket.socket] = []
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _connect(self) -> socket.socket | None:
        try:
            return socket.create_connection(("127.0.0.1", self.port), timeout=2)
        except OSError:
            self.refused += 1
            return None

    def _run(self) -> None:
        while not self.stop.is_set():
            self.socks = [s for s in self.socks if s.fileno() >= 0]
            while len(self.socks) < self.count and not self.stop.is_set():
                sock = self._connect()
                if sock is None:
                    break
                self.socks.append(sock)
            readable, _, _ = select.select(self.socks, [], [], 0.2) if self.socks else \
                ([], [], [])
            for sock in readable:  # readable with nothing sent: the server closed it
                with contextlib.suppress(OSError):
                    sock.recv(4096)
                sock.close()
                self.reconnects += 1
        for sock in self.socks:
            sock.close()

    def open_count(self) -> int:
        return sum(1 for s in self.socks if s.fileno() >= 0)


class Uploader(threading.Thread):
    """Streams a 200 MiB body slowly, again and again, as long as the server lets it."""

    def __init__(self, port: int, chunked: bool) -> None:
        super().__init__(daemon=True)
        self.port, self.chunked = port, chunked
        self.stop = threading.Event()
        self.attempts = 0
        self.sent = 0  # bytes of body the server took before cutting us off
        self.answers: dict[str, int] = {}

    def run(self) -> None:
        while not self.stop.is_set():
            self.attempts += 1
            try:
                sock = socket.create_connection(("127.0.0.1", self.port), timeout=5)
            except OSError:
                time.sleep(0.1)
                continue
            with sock:
                head = (b"POST /slack/events HTTP/1.1\r\nHost: bench\r\n"
                        b"Content-Type: application/x-www-form-urlencoded\r\n")
                head += b"Transfer-Encoding: chunked\r\n\r\n" if self.chunked else \
                    b"Content-Length: %d\r\n\r\n" % BODY_SIZE
                try:
                    sock.sendall(head)
                    for _ in range(BODY_SIZE // len(CHUNK)):
                        if self.stop.is_set():
                            return
                        data = b"%x\r\n%s\r\n" % (len(CHUNK), CHUNK) if self.chunked else CHUNK
                        sock.sendall(data)
                        self.sent += len(CHUNK)
                        time.sleep(0.01)
                except OSError:
                    pass  # the server answered and closed
                try:
                    sock.settimeout(1)
                    line = sock.recv(64).split(b"\r\n", 1)[0].decode("latin-1")
                except OSError:
                    line = "closed without an answer"
                status = line.split(" ")[1] if line.startswith("HTTP/") else line or "closed"
                self.answers[status] = self.answers.get(status, 0) + 1
            time.sleep(0.05)


def _acks(url: str, requests: int) -> tuple[list[float], int]:
    times: list[float] = []
    errors = 0
    with httpx.Client(timeout=10) as client:
        for _ in range(requests):
            body = slash_command_body("help", user_id="U0BENCH", channel_id="C0DEPLOY")
            started = time.perf_counter()
            try:
                response = client.post(url, content=body, headers=signed_headers(SECRET, body))
                ok = response.status_code == 200 and "QLP deploy bot" in response.text
            except httpx.HTTPError:
                ok = False
            times.append(time.perf_counter() - started)
            errors += not ok
            time.sleep(0.01)
    return times, errors


def _pct(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] * 1000


def _row(name: str, times: list[float], errors: int) -> None:
    print(f"{name:<34} n={len(times):>4} p50={_pct(times, 50):7.1f} ms "
          f"p99={_pct(times, 99):7.1f} ms max={max(times) * 1000:7.1f} ms errors={errors}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--idle", type=int, default=200)
    parser.add_argument("--uploaders", type=int, default=5)
    parser.add_argument("--settle", type=float, default=8.0,
                        help="seconds of attack before the acks are measured")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="qlp-bench-edge-"))
    home, tmpdir = tmp / "home", tmp / "tmpdir"
    home.mkdir()
    tmpdir.mkdir()
    policy = tmp / "qlp.yml"
    policy.write_text(yaml.safe_dump(BASE))
    standin = SlackStandIn().start()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "QLP_"))}
    env.update(SLACK_BOT_TOKEN="xoxb-bench", SLACK_SIGNING_SECRET=SECRET,
               SLACK_API_URL=standin.api_url, QLP_CONFIG=str(policy), QLP_HOME=str(home),
               TMPDIR=str(tmpdir), QLP_AUDIT_KEY="bench-audit-key-" + "k" * 24)
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "bot", "serve", "--port", str(port)],
                              env=env, cwd=ROOT, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/slack/events"
    horde = IdleHorde(port, args.idle)
    uploaders = [Uploader(port, chunked=i % 2 == 1) for i in range(args.uploaders)]
    try:
        _wait(f"http://127.0.0.1:{port}/healthz", server)
        _acks(url, 20)  # warm-up
        time.sleep(1)
        rss_before, tmp_before, home_before = _rss_mb(server.pid), _size_mb(tmpdir), \
            _size_mb(home)
        quiet, quiet_errors = _acks(url, args.requests)

        horde.thread.start()
        for uploader in uploaders:
            uploader.start()
        peak = {"rss": rss_before, "tmp": tmp_before, "home": home_before, "held": 0.0}
        sampling = threading.Event()

        def sample() -> None:
            while not sampling.is_set():
                peak["rss"] = max(peak["rss"], _rss_mb(server.pid))
                peak["tmp"] = max(peak["tmp"], _size_mb(tmpdir))
                peak["home"] = max(peak["home"], _size_mb(home))
                peak["held"] = max(peak["held"], _open_files_of(server.pid, tmpdir))
                time.sleep(0.1)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        time.sleep(args.settle)
        open_idle = horde.open_count()
        attacked, attacked_errors = _acks(url, args.requests)
        open_idle = min(open_idle, horde.open_count())
        sampling.set()
        sampler.join()
        horde.stop.set()
        for uploader in uploaders:
            uploader.stop.set()
        horde.thread.join(5)
        for uploader in uploaders:
            uploader.join(5)
        time.sleep(1.5)
        rss_after, tmp_after, home_after = _rss_mb(server.pid), _size_mb(tmpdir), \
            _size_mb(home)

        print(f"qlp-bot serve under attack: {args.idle} idle unauthenticated connections "
              f"(at least {open_idle} open while measuring; {horde.reconnects} closed by the "
              f"server and replaced, {horde.refused} refused), {args.uploaders} clients "
              "streaming 200 MiB bodies")
        _row("signed /qlp help, quiet", quiet, quiet_errors)
        _row("signed /qlp help, under attack", attacked, attacked_errors)
        print(f"p99 under attack: {_pct(attacked, 99):.1f} ms (target < 500 ms)")
        for index, uploader in enumerate(uploaders):
            kind = "chunked" if uploader.chunked else "Content-Length 200 MiB"
            print(f"uploader {index} ({kind}): {uploader.attempts} attempts, "
                  f"{uploader.sent / 1024 / 1024:.1f} MiB sent in all, answers {uploader.answers}")
        print(f"server RSS: before {rss_before:.1f} MB, peak {peak['rss']:.1f} MB, "
              f"after {rss_after:.1f} MB (growth {rss_after - rss_before:+.1f} MB)")
        print(f"temp dir on disk: before {tmp_before:.2f} MiB, peak {peak['tmp']:.2f} MiB, "
              f"after {tmp_after:.2f} MiB; deleted-but-open temp files peak "
              f"{peak['held']:.2f} MiB (target: a few MiB)")
        print(f"QLP_HOME (the database, its WAL; grows with the acks' audit rows): before "
              f"{home_before:.2f} MiB, peak {peak['home']:.2f} MiB, after {home_after:.2f} MiB")
    finally:
        horde.stop.set()
        for uploader in uploaders:
            uploader.stop.set()
        server.terminate()
        server.wait(timeout=15)
        standin.stop()


if __name__ == "__main__":
    main()
