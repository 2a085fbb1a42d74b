"""How fast the App Home answers and publishes, through signed requests into the real Bolt app
served over HTTP (``tests.fakes.bot_harness``) on SQLite, with the Slack double, for a policy
of 20 environments (each locked, with a live and a previous version and three requests
waiting):

- the ``app_home_opened`` event's ack (the listener writes the viewer and a publish);
- one publish: the view read and judged for the viewer (gate per environment and button) and
  built, then ``views.publish`` to the double (which checks it as Slack does);
- the watcher's pass when nothing changed (it runs on every worker pass);
- a change (a lock) to its republish for 10 viewers (paced: 0.6 s between publishes).

    python benchmarks/app_home.py [--rounds 20]

Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bot.home_publisher import HOME_KIND, HomePublisher  # noqa: E402
from bot.slack_requests import app_home_opened_body  # noqa: E402
from procedures.clock import FixedClock  # noqa: E402
from procedures.model import ProcedureKind, Slot  # noqa: E402
from storage.db import Database  # noqa: E402
from storage.migrate import upgrade  # noqa: E402
from tests.fakes.bot_harness import BOT_TOKEN, BotHarness  # noqa: E402
from tests.fakes.policies import BASE, make_policy  # noqa: E402
from tests.fakes.slack_double import SlackDouble  # noqa: E402

TUESDAY = datetime(2026, 12, 1, 11, 0, tzinfo=UTC)
VIEWERS = [f"U0VIEW{i:03d}" for i in range(10)]


def _ms(samples: list[float]) -> str:
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]
    return (f"median {1000 * statistics.median(ordered):7.1f} ms   p95 {1000 * p95:7.1f} ms   "
            f"max {1000 * ordered[-1]:7.1f} ms   (n={len(ordered)})")


def _policy_of(count: int) -> dict[str, object]:
    template = BASE["environments"]["staging"]
    return {f"env-{i:02d}": {**template, "url": f"http://127.0.0.1:{100 + i}"}
            for i in range(count)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=20)
    rounds = parser.parse_args().rounds
    with tempfile.TemporaryDirectory() as tmp:
        database = Database(f"sqlite:///{tmp}/qlp.db")
        upgrade(database)
        slack = SlackDouble(token=BOT_TOKEN, groups={"S0RELEASE": ["U0LEAD2"]},
                            users={"U0DEV": "dev", "U0LEAD1": "lead",
                                   **{v: v.lower() for v in VIEWERS}})
        slack.start()
        bot = BotHarness(database=database, clock=FixedClock(TUESDAY), home=Path(tmp) / "h",
                         slack=slack, policy=make_policy(environments=_policy_of(20)))
        try:
            run(bot, slack, rounds)
        finally:
            bot.close()
            slack.stop()
            database.dispose()


def run(bot: BotHarness, slack: SlackDouble, rounds: int) -> None:
    services = bot.services
    for index, env in enumerate(services.policy.environments):
        services.environments.record_switch(env, Slot.BLUE, f"v1.{index}.0")
        services.environments.record_switch(env, Slot.GREEN, f"v1.{index}.1")
        if index:  # env-00 stays unlocked: its lock is the change measured below
            services.environments.acquire_lock(env, "U0DEV", "maintenance", None, None)
        for n in range(3):
            services.deployments.create(ProcedureKind.STANDARD, f"v2.{index}.{n}", env,
                                        "U0LEAD1", channel="C0DEPLOY")
    tasks = services.worker_tasks()
    index = next(i for i, t in enumerate(tasks) if isinstance(t, HomePublisher))
    publisher = HomePublisher(services, services.slack, publish_interval=0, viewer_interval=0)
    tasks[index] = publisher

    acks, publishes, idle = [], [], []
    for _ in range(rounds):
        body = app_home_opened_body(user_id="U0DEV")
        started = time.perf_counter()
        response = bot.post(body, extra_headers={"content-type": "application/json"})
        acks.append(time.perf_counter() - started)
        assert response.status_code == 200
        started = time.perf_counter()
        publisher.run_once()
        publishes.append(time.perf_counter() - started)
        started = time.perf_counter()
        publisher.run_once()
        idle.append(time.perf_counter() - started)
    view = slack.home_views("U0DEV")[-1]
    print(f"App Home, 20 environments ({len(view['blocks'])} blocks, "
          f"{len(str(view))} characters of view):")
    print(f"  app_home_opened ack            {_ms(acks)}")
    print(f"  read, judge, build and publish {_ms(publishes)}")
    print(f"  watcher pass, nothing changed  {_ms(idle)}")

    paced = HomePublisher(services, services.slack)  # production pacing
    tasks[index] = paced
    for viewer in VIEWERS:
        bot.post(app_home_opened_body(user_id=viewer),
                 extra_headers={"content-type": "application/json"})
    _drain(bot, paced)
    before = {v: len(slack.home_views(v)) for v in VIEWERS}
    started = time.perf_counter()
    bot.command('lock env-00 --reason "benchmark"', user="U0DEV")
    _drain(bot, paced)
    took = time.perf_counter() - started
    after = {v: len(slack.home_views(v)) - before[v] for v in VIEWERS}
    print(f"  a lock to its republish for {len(VIEWERS)} viewers (paced 0.6 s): "
          f"{took:.2f} s, publishes per viewer {sorted(set(after.values()))}")


def _drain(bot: BotHarness, publisher: HomePublisher) -> None:
    clock = bot.services.clock
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        publisher.run_once()
        if bot.services.outbox.pending_count((HOME_KIND,)) == 0:
            return
        time.sleep(0.05)
        if isinstance(clock, FixedClock):  # released rows are due on the outbox's clock
            clock.advance(timedelta(milliseconds=50))
    raise TimeoutError("home publishes still pending")


if __name__ == "__main__":
    main()
