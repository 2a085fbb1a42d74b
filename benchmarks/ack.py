"""How fast Slack gets its ack: signed ``/qlp help`` and ``/qlp status`` against a real
``qlp-bot serve`` process, at concurrency 1 and 50, side by side with a bare Bolt app that only
acks (``benchmarks/bare_app.py``), plus the resident memory of an idle ``qlp-bot serve``.

    python benchmarks/ack.py [--requests 400]

Prints figures; asserts nothing. Targets (issue 2): p99 within 1.2x of the bare app, no errors,
idle RSS under 150 MB.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bot.shell.slack_standin import SlackStandIn  # noqa: E402
from bot.slack_requests import signed_headers, slash_command_body  # noqa: E402
from tests.fakes.policies import BASE, free_port  # noqa: E402

SECRET = "benchmark-signing-secret"


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


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid`` so far (``/proc/<pid>/stat``), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _one(client: httpx.Client, url: str, text: str) -> tuple[float, bool]:
    body = slash_command_body(text, user_id="U0BENCH", channel_id="C0DEPLOY")
    started = time.perf_counter()
    response = client.post(url, content=body, headers=signed_headers(SECRET, body))
    return time.perf_counter() - started, response.status_code == 200


def _load(url: str, text: str, requests: int, concurrency: int) -> tuple[list[float], int]:
    per_worker = max(requests // concurrency, 1)

    def worker(_: int) -> list[tuple[float, bool]]:
        with httpx.Client(timeout=10) as client:
            _one(client, url, text)  # warm the connection
            return [_one(client, url, text) for _ in range(per_worker)]

    with ThreadPoolExecutor(concurrency) as pool:
        results = [r for rs in pool.map(worker, range(concurrency)) for r in rs]
    return [t for t, _ in results], sum(1 for _, ok in results if not ok)


def _pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] * 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3,
                        help="interleaved rounds per row; the median round is reported")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="qlp-bench-"))
    policy = tmp / "qlp.yml"
    policy.write_text(yaml.safe_dump(BASE))
    standin = SlackStandIn().start()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "QLP_"))}
    env.update(SLACK_BOT_TOKEN="xoxb-bench", SLACK_SIGNING_SECRET=SECRET,
               SLACK_API_URL=standin.api_url, QLP_CONFIG=str(policy), QLP_HOME=str(tmp))
    qlp_port, bare_port = free_port(), free_port()
    qlp = subprocess.Popen([sys.executable, "-m", "bot", "serve", "--port", str(qlp_port)],
                           env=env, cwd=ROOT, stderr=subprocess.DEVNULL)
    bare = subprocess.Popen([sys.executable, str(ROOT / "benchmarks" / "bare_app.py"),
                             str(bare_port), SECRET], env=env, stderr=subprocess.DEVNULL)
    try:
        _wait(f"http://127.0.0.1:{qlp_port}/healthz", qlp)
        _wait(f"http://127.0.0.1:{bare_port}/", bare)
        time.sleep(1.0)
        idle_rss = _rss_mb(qlp.pid)
        print(f"idle qlp-bot serve RSS: {idle_rss:.1f} MB (target < 150 MB)")
        print(f"median of {args.rounds} interleaved rounds per row")
        print(f"{'server':<10} {'command':<8} {'conc':>4} {'n':>5} {'p50 ms':>8} "
              f"{'p99 ms':>8} {'max ms':>8} {'errors':>6} {'cpu ms':>8}")
        print("(cpu ms: the server process's CPU time per request, median round; background "
              "work included)")
        figures: dict[tuple[str, str, int], float] = {}
        for text in ("help", "status"):
            for concurrency in (1, 50):
                rounds: dict[str, list[tuple[float, float, float, int, int]]] = {
                    "bare-bolt": [], "qlp-bot": []}
                cpu: dict[str, list[float]] = {"bare-bolt": [], "qlp-bot": []}
                # Interleave the two servers round by round, so a burst of load elsewhere on
                # the machine hits both alike; report each server's median round.
                for _ in range(args.rounds):
                    for name, port, pid in (("bare-bolt", bare_port, bare.pid),
                                            ("qlp-bot", qlp_port, qlp.pid)):
                        url = f"http://127.0.0.1:{port}/slack/events"
                        _load(url, text, 50, min(concurrency, 10))  # warm-up
                        before = _cpu_seconds(pid)
                        times, errors = _load(url, text, args.requests, concurrency)
                        cpu[name].append((_cpu_seconds(pid) - before) / len(times) * 1000)
                        rounds[name].append((_pct(times, 99), _pct(times, 50),
                                             max(times) * 1000, errors, len(times)))
                for name in ("bare-bolt", "qlp-bot"):
                    p99, p50, worst, errors, count = sorted(rounds[name])[len(rounds[name]) // 2]
                    figures[(name, text, concurrency)] = p99
                    print(f"{name:<10} {text:<8} {concurrency:>4} {count:>5} {p50:>8.2f} "
                          f"{p99:>8.2f} {worst:>8.2f} {errors:>6} "
                          f"{statistics.median(cpu[name]):>8.2f}")
        for text in ("help", "status"):
            for concurrency in (1, 50):
                ratio = figures[("qlp-bot", text, concurrency)] / figures[
                    ("bare-bolt", text, concurrency)]
                print(f"p99 ratio qlp-bot/bare for {text} at {concurrency}: {ratio:.2f}x "
                      "(target <= 1.2x)")
        print(f"RSS after load: {_rss_mb(qlp.pid):.1f} MB")
    finally:
        for process in (qlp, bare):
            process.terminate()
            process.wait(timeout=10)
        standin.stop()


if __name__ == "__main__":
    main()
