"""How fast Slack gets its ack: signed ``/qlp help`` and ``/qlp status`` against a real
``qlp-bot serve`` process, at concurrency 1 and 50, side by side with a bare Bolt app that only
acks (``benchmarks/bare_app.py``), plus the resident memory of an idle ``qlp-bot serve``.
Then (issue 11) an Approve click and ``/qlp checklist`` against a ``qlp-bot serve`` whose Slack
answers every call (``usergroups.users.list``, ``response_url``...) only after 8 s.

    python benchmarks/ack.py [--requests 400] [--only-slow-slack]

Prints figures; asserts nothing. Targets (issue 2): p99 within 1.2x of the bare app, no errors,
idle RSS under 150 MB. Issue 11: with the slow Slack, p99 of the ack under 300 ms.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bot.shell.slack_standin import SlackStandIn  # noqa: E402
from bot.slack_requests import (  # noqa: E402
    block_actions_body,
    signed_headers,
    slash_command_body,
)
from tests.fakes.policies import BASE, free_port  # noqa: E402
from tests.fakes.slack_double import SlackDouble  # noqa: E402

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


SLOW_SLACK_SECONDS = 8.0


def _timed(client: httpx.Client, url: str, body: str) -> tuple[float, bool, str]:
    started = time.perf_counter()
    response = client.post(url, content=body, headers=signed_headers(SECRET, body))
    return time.perf_counter() - started, response.status_code == 200, response.text


def slow_slack(requests: int, concurrency: int) -> None:
    """Acks of an Approve click and ``/qlp checklist`` while Slack answers after 8 s."""
    tmp = Path(tempfile.mkdtemp(prefix="qlp-bench-slow-"))
    policy = tmp / "qlp.yml"
    every_day = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
    data = {**BASE, "windows": {"preferred": [{"days": every_day, "start": "00:00",
                                               "end": "23:59"}]}}
    policy.write_text(yaml.safe_dump(data))
    slack = SlackDouble(groups={"S0RELEASE": ["U0LEAD2"]}).start()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "QLP_"))}
    env.update(SLACK_BOT_TOKEN="xoxb-bench", SLACK_SIGNING_SECRET=SECRET,
               SLACK_API_URL=slack.api_url, QLP_CONFIG=str(policy), QLP_HOME=str(tmp))
    port = free_port()
    qlp = subprocess.Popen([sys.executable, "-m", "bot", "serve", "--port", str(port)],
                           env=env, cwd=ROOT, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/slack/events"
    try:
        _wait(f"http://127.0.0.1:{port}/healthz", qlp)
        with httpx.Client(timeout=30) as client:
            _, _, answer = _timed(client, url, slash_command_body(
                "deploy v1.2.3 to staging", user_id="U0DEV", channel_id="C0DEPLOY"))
        print(f"request: {answer[:100]}")
        slack.slow(SLOW_SLACK_SECONDS)  # from now on every Slack call takes 8 s
        print(f"Slack answering every call after {SLOW_SLACK_SECONDS:g} s; "
              f"{requests} requests per row, concurrency {concurrency}")
        print(f"{'request':<18} {'n':>5} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} "
              f"{'errors':>6}")
        counter = iter(range(1, 10**9))

        def approve() -> str:
            n = next(counter)
            return block_actions_body(
                action_id="qlp_approve", value="1", user_id="U0LEAD2", channel_id="C0DEPLOY",
                message_ts="1764849600.000100", action_ts=f"1764849700.{n:06d}",
                response_url=slack.response_url(f"act-{n}", channel="C0DEPLOY",
                                                user="U0LEAD2"))

        def checklist() -> str:
            n = next(counter)
            return slash_command_body(
                "checklist 1", user_id="U0DEV", channel_id="C0DEPLOY",
                response_url=slack.response_url(f"cmd-{n}", channel="C0DEPLOY", user="U0DEV"))

        for name, make in (("approve click", approve), ("/qlp checklist", checklist)):
            def worker(_: int, make: Callable[[], str] = make) -> list[tuple[float, bool]]:
                with httpx.Client(timeout=30) as client:
                    return [_timed(client, url, make())[:2]
                            for _ in range(max(requests // concurrency, 1))]

            with ThreadPoolExecutor(concurrency) as pool:
                results = [r for rs in pool.map(worker, range(concurrency)) for r in rs]
            times = [t for t, _ in results]
            errors = sum(1 for _, ok in results if not ok)
            print(f"{name:<18} {len(times):>5} {_pct(times, 50):>8.2f} {_pct(times, 99):>8.2f} "
                  f"{max(times) * 1000:>8.2f} {errors:>6}   (target p99 < 300 ms)")
        print(f"Slack calls received so far: {len(slack.arrivals())}, answered: "
              f"{len(slack.calls())} (the decisions and answers go on after the acks)")
    finally:
        qlp.terminate()
        try:
            qlp.wait(timeout=10)
        except subprocess.TimeoutExpired:
            qlp.kill()
        slack.stop()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3,
                        help="interleaved rounds per row; the median round is reported")
    parser.add_argument("--slow-requests", type=int, default=200,
                        help="requests per row with the slow Slack")
    parser.add_argument("--only-slow-slack", action="store_true",
                        help="run only the slow-Slack rows (issue 11)")
    args = parser.parse_args()
    if args.only_slow_slack:
        slow_slack(args.slow_requests, 10)
        return
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
    slow_slack(args.slow_requests, 10)


if __name__ == "__main__":
    main()
