"""Windows and approval rules per environment (seed gap 4: staging is not held to
production's window). Signed requests into the real app."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from procedures.clock import FixedClock
from procedures.errors import ConfigError
from procedures.model import DeploymentState as S
from storage.db import Database
from tests.bot.run_helpers import press
from tests.fakes.bot_harness import BotHarness
from tests.fakes.policies import BASE, make_policy
from tests.fakes.slack_double import SlackDouble

FRIDAY = datetime(2026, 12, 4, 11, 0, tzinfo=UTC)
ANY_TIME = {"preferred": [{"days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"],
                           "start": "00:00", "end": "24:00"}]}


def _environments() -> dict:
    environments = copy.deepcopy(BASE["environments"])
    environments["staging"]["windows"] = ANY_TIME
    environments["staging"]["approvals"] = {"standard": {"users": ["U0QA1"]}}
    return environments


@pytest.fixture
def staged(database: Database, clock: FixedClock, slack: SlackDouble,
           tmp_path: Path) -> Iterator[BotHarness]:
    harness = BotHarness(database=database, policy=make_policy(environments=_environments()),
                         clock=clock, home=tmp_path / "home", slack=slack)
    yield harness
    harness.close()


def test_staging_deploys_on_a_friday_while_production_is_refused(
        staged: BotHarness, clock: FixedClock) -> None:
    clock.set(FRIDAY)
    refused = staged.command("deploy v1.2.3").text
    assert "(rule: avoided-day)" in refused, refused
    answer = staged.command("deploy v1.2.3 to staging").text
    assert answer.startswith("Deployment #1 requested: v1.2.3 to staging."), answer
    assert "1 approval from <@U0QA1>" in answer  # staging's own approvers
    press(staged, 1, "U0LEAD1")  # production's approver is not staging's
    assert staged.services.deployments.get(1).state is S.PENDING_APPROVAL
    press(staged, 1, "U0QA1")
    assert staged.services.deployments.get(1).state is S.QUEUED


def test_an_environment_approval_rule_for_an_unknown_kind_is_refused() -> None:
    environments = _environments()
    environments["staging"]["approvals"] = {"hotfx": {"users": ["U0QA1"]}}
    with pytest.raises(ConfigError, match=r"'hotfx' is not a procedure kind .did you mean hotfix"):
        make_policy(environments=environments)
