"""``/qlp lock`` and lifting another person's lock belong to ``approvals.lock`` (issue 13,
finding 6): a lock stops every deployment, an emergency too, so not everyone in the workspace
may set one. Without the key the standard approvers may. Signed commands into the real app.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from procedures.clock import FixedClock
from procedures.errors import ConfigError
from procedures.policy import parse_policy
from storage.db import Database
from tests.fakes.bot_harness import BotHarness
from tests.fakes.policies import BASE, make_policy
from tests.fakes.slack_double import SlackDouble

# The test policy without a lock rule: the standard approvers (U0LEAD1 and the members of
# S0RELEASE: U0LEAD2) may lock; the override rule's U0HEAD1 may lift anyone's lock.
APPROVALS: dict[str, Any] = {key: value for key, value in BASE["approvals"].items()
                             if key != "lock"}


def _harness(database: Database, clock: FixedClock, slack: SlackDouble, home: Path,
             approvals: dict[str, Any]) -> BotHarness:
    return BotHarness(database=database, policy=make_policy(approvals=approvals), clock=clock,
                      home=home, slack=slack)


@pytest.fixture
def default_bot(database: Database, clock: FixedClock, slack: SlackDouble,
                tmp_path: Path) -> Iterator[BotHarness]:
    bot = _harness(database, clock, slack, tmp_path / "home", APPROVALS)
    yield bot
    bot.close()


@pytest.fixture
def oncall_bot(database: Database, clock: FixedClock, slack: SlackDouble,
               tmp_path: Path) -> Iterator[BotHarness]:
    approvals = {**APPROVALS, "lock": {"users": ["U0ONCALL"]}}
    bot = _harness(database, clock, slack, tmp_path / "home", approvals)
    yield bot
    bot.close()


def _holder(bot: BotHarness) -> str | None:
    row = bot.services.environments.get("production")
    return row.lock_holder if row is not None else None


def test_without_a_lock_rule_a_person_who_is_no_approver_may_not_lock(
        default_bot: BotHarness) -> None:
    answer = default_bot.command('lock production --reason "just because"', user="U0DEV").text
    assert answer.startswith(":no_entry: You may not lock production")
    assert "(rule: approvals.standard)" in answer
    assert "<@U0LEAD1> or a member of <!subteam^S0RELEASE> may lock it" in answer
    assert _holder(default_bot) is None
    refused = [e for e in default_bot.services.audit.recent(20) if e.action == "lock.refused"]
    assert refused and refused[0].actor == "U0DEV"
    assert "environment.locked" not in [e.action for e in default_bot.services.audit.recent(20)]


def test_without_a_lock_rule_the_standard_approvers_may_lock(default_bot: BotHarness) -> None:
    assert default_bot.command('lock production --reason "incident 7"',
                               user="U0LEAD2").text.startswith(":lock: production is locked")
    assert _holder(default_bot) == "U0LEAD2"  # a member of S0RELEASE, read from Slack


def test_approvals_lock_names_who_may_lock_and_lift_anothers_lock(
        oncall_bot: BotHarness) -> None:
    bot = oncall_bot
    refused = bot.command('lock production --reason "incident 7"', user="U0LEAD1").text
    assert "You may not lock production" in refused and "(rule: approvals.lock)" in refused
    assert "<@U0ONCALL> may lock it" in refused
    assert _holder(bot) is None

    assert bot.command('lock production --reason "incident 7"',
                       user="U0ONCALL").text.startswith(":lock:")
    assert _holder(bot) == "U0ONCALL"

    # Someone else's lock: neither the lock rule nor the override rule names U0LEAD1.
    answer = bot.command("unlock production", user="U0LEAD1").text
    assert "You may not unlock production: <@U0ONCALL> locked it." in answer
    assert "(rule: approvals.lock)" in answer
    assert ("<@U0ONCALL> (who locked it), <@U0ONCALL> (`approvals.lock`) or <@U0HEAD1> "
            "(`approvals.override`) may unlock it") in answer
    assert _holder(bot) == "U0ONCALL"

    # The break-glass people may lift anyone's lock.
    assert bot.command("unlock production", user="U0HEAD1").text.startswith(":unlock:")
    assert _holder(bot) is None


def test_the_holder_always_lifts_their_own_lock(oncall_bot: BotHarness) -> None:
    oncall_bot.command('lock production --reason "incident 7"', user="U0ONCALL")
    assert oncall_bot.command("unlock production",
                              user="U0ONCALL").text.startswith(":unlock:")
    assert _holder(oncall_bot) is None


def test_the_policy_validates_approvals_lock() -> None:
    data = copy.deepcopy(BASE)
    data["approvals"]["lock"] = {"users": ["U0ONCALL"], "groups": ["S0RELEASE"]}
    policy = parse_policy(data, source="qlp.yml")
    assert policy.approval_rule("lock").users == ["U0ONCALL"]

    data["approvals"]["lock"] = {"users": ["U0ONCALL"], "required": 2}
    with pytest.raises(ConfigError) as caught:
        parse_policy(data, source="qlp.yml")
    assert "approvals" in caught.value.message and "required" in caught.value.message

    data["approvals"]["lock"] = {"users": ["oncall"]}
    with pytest.raises(ConfigError) as caught:
        parse_policy(data, source="qlp.yml")
    assert "approvals.lock.users" in caught.value.message

    data["approvals"].pop("lock")
    data["approvals"]["lokc"] = {"users": ["U0ONCALL"]}
    with pytest.raises(ConfigError) as caught:
        parse_policy(data, source="qlp.yml")
    assert "did you mean lock" in caught.value.message


def test_the_example_policy_documents_approvals_lock() -> None:
    text = (Path(__file__).parents[2] / "qlp.example.yml").read_text()
    assert "# lock:" in text and "/qlp lock" in text
