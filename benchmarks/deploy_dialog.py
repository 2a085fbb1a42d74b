"""How fast the deploy dialog answers Slack, through signed requests into the real Bolt app
served over HTTP (``tests.fakes.bot_harness``) on SQLite, with the Slack double:

- the global shortcut: its ack, and how long after the trigger was issued ``views.open``
  reached Slack (Slack takes a trigger for 3 s);
- the version menu's ``block_suggestion`` (the local platform: versions from history);
- a submission refused on the date field (Friday), a dry run, and a valid one (each then
  cancelled, so the next is judged on the same state).

    python benchmarks/deploy_dialog.py [--rounds 30]

Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bot.deploy_dialog_view import CALLBACK_ID, VERSION_ACTION  # noqa: E402
from bot.slack_requests import (  # noqa: E402
    block_suggestion_body,
    new_trigger_id,
    shortcut_body,
    view_submission_body,
)
from procedures.clock import FixedClock  # noqa: E402
from procedures.model import DeploymentState  # noqa: E402
from storage.db import Database  # noqa: E402
from storage.migrate import upgrade  # noqa: E402
from tests.bot.test_deploy_dialog import state  # noqa: E402
from tests.fakes.bot_harness import BOT_TOKEN, BotHarness  # noqa: E402
from tests.fakes.policies import make_policy  # noqa: E402
from tests.fakes.slack_double import SlackDouble  # noqa: E402

TUESDAY = datetime(2026, 12, 1, 11, 0, tzinfo=UTC)
FRIDAY = datetime(2026, 12, 4, 11, 0, tzinfo=UTC)


def _ms(samples: list[float]) -> str:
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]
    return (f"median {1000 * statistics.median(ordered):6.1f} ms   p95 {1000 * p95:6.1f} ms   "
            f"max {1000 * ordered[-1]:6.1f} ms   (n={len(ordered)})")


def _timed(call: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    result = call()
    return time.perf_counter() - started, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=30)
    rounds = parser.parse_args().rounds
    with tempfile.TemporaryDirectory() as tmp:
        database = Database(f"sqlite:///{tmp}/qlp.db")
        upgrade(database)
        slack = SlackDouble(token=BOT_TOKEN, users={"U0DEV": "dev"})
        slack.start()
        clock = FixedClock(TUESDAY)
        bot = BotHarness(database=database, policy=make_policy(), clock=clock,
                         home=Path(tmp) / "home", slack=slack)
        try:
            run(bot, clock, rounds)
        finally:
            bot.close()
            slack.stop()
            database.dispose()


def open_view(bot: BotHarness) -> Any:
    """A dialog opened through the shortcut (not timed)."""
    trigger = new_trigger_id()
    bot.post(shortcut_body(callback_id=CALLBACK_ID, user_id="U0DEV", trigger_id=trigger))
    found: Any = bot.wait_for(lambda: [v for v in bot.slack.views()
                                       if v.trigger_id == trigger], timeout=5)
    return found[0]


def run(bot: BotHarness, clock: FixedClock, rounds: int) -> None:
    acks, opens = [], []
    views = []
    for _ in range(rounds):
        trigger = new_trigger_id()
        issued = time.time()
        body = shortcut_body(callback_id=CALLBACK_ID, user_id="U0DEV", trigger_id=trigger)
        took, _ = _timed(lambda body=body: bot.post(body))  # type: ignore[misc]
        acks.append(took)
        found: Any = bot.wait_for(lambda trigger=trigger: [  # type: ignore[misc]
            v for v in bot.slack.views() if v.trigger_id == trigger], timeout=5)
        call = next(c for c in bot.slack.calls() if c.method == "views.open"
                    and c.args.get("trigger_id") == trigger)
        opens.append(call.at - issued)
        views.append(found[0])
    print(f"shortcut ack                      {_ms(acks)}")
    print(f"trigger issued -> views.open      {_ms(opens)}")

    def submit(view: Any, **fields: Any) -> Any:
        body = view_submission_body(view=view.view, view_id=view.id, values=state(**fields),
                                    user_id="U0DEV")
        return bot.post(body).json()

    valid = []
    for i in range(rounds):  # history for the menu, and the valid submission's figure
        took, answer = _timed(lambda i=i: submit(views[i], version=f"v1.{i}.0"))
        assert answer["response_action"] == "update", answer
        valid.append(took)
        latest = bot.services.deployments.list_recent(limit=1)[0]
        assert latest.id is not None
        bot.services.deployments.transition(latest.id, [DeploymentState.PENDING_APPROVAL],
                                            DeploymentState.CANCELLED)
    print(f"valid submission (card queued)    {_ms(valid)}")
    menus = []
    for view in views:
        body = block_suggestion_body(view=view.view, view_id=view.id, action_id=VERSION_ACTION,
                                     block_id="version", value="v1.", user_id="U0DEV")
        took, response = _timed(lambda body=body: bot.post(body))
        menus.append(took)
    label = f"version menu ({len(response.json()['options'])} versions)"
    print(f"{label:<34}{_ms(menus)}")
    # Fresh views: one already submitted answers from its kept outcome.
    fresh = [open_view(bot) for _ in range(2 * rounds)]
    dry = [_timed(lambda view=view: submit(view, flags=("dry-run",)))[0]
           for view in fresh[:rounds]]
    print(f"dry-run submission                {_ms(dry)}")
    clock.set(FRIDAY)
    refused = [_timed(lambda view=view: submit(view))[0] for view in fresh[rounds:]]
    print(f"refused on the date field (Fri)   {_ms(refused)}")


if __name__ == "__main__":
    main()
