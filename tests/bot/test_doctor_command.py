"""``/qlp doctor`` through signed requests into the real app: approvers only, an ack that
touches no network, and the report delivered afterwards by the worker as an ephemeral."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from bot.doctor import MANIFEST_BOT_SCOPES
from procedures.clock import FixedClock
from storage.db import Database
from tests.fakes.bot_harness import BotHarness
from tests.fakes.policies import make_policy
from tests.fakes.slack_double import SlackDouble

pytestmark = pytest.mark.slow  # HTTP server, Slack double, worker thread

CHANNEL = "C0DEPLOY"
NETWORK_METHODS = ("auth.test", "conversations.info", "chat.postEphemeral")


@pytest.fixture
def doctor_bot(sqlite_database: Database, clock: FixedClock, slack: SlackDouble,
               tmp_path: Path) -> Iterator[BotHarness]:
    harness = BotHarness(database=sqlite_database, policy=make_policy(), clock=clock,
                         home=tmp_path / "home", slack=slack)
    yield harness
    harness.close()


def _network_calls(slack: SlackDouble) -> int:
    return sum(slack.call_count(method) for method in NETWORK_METHODS)


def test_manifest_scopes_are_the_ones_doctor_expects() -> None:
    manifest = yaml.safe_load((Path(__file__).parents[2] / "manifest.yml").read_text())
    assert tuple(manifest["oauth_config"]["scopes"]["bot"]) == MANIFEST_BOT_SCOPES


def test_non_approvers_are_refused(doctor_bot: BotHarness, slack: SlackDouble) -> None:
    response = doctor_bot.command("doctor", user="U0DEV")
    assert response.status_code == 200
    assert "Only approvers may run" in response.text
    assert "qlp-bot doctor" in response.text  # where else the same checks are
    assert _network_calls(slack) == 0
    actions = [event.action for event in doctor_bot.services.audit.recent(20)]
    assert "doctor.refused" in actions


def test_an_approver_gets_an_ack_at_once_and_the_report_afterwards(
        doctor_bot: BotHarness, slack: SlackDouble) -> None:
    response = doctor_bot.command("doctor", user="U0LEAD1")
    assert response.status_code == 200
    assert "The report follows here" in response.text
    # The ack came before any check: nothing was asked of Slack yet (the worker is not even
    # running in this harness until now).
    assert _network_calls(slack) == 0
    doctor_bot.services.start_worker()
    doctor_bot.wait_for(lambda: slack.ephemerals("U0LEAD1", channel=CHANNEL),
                        what="the doctor report")
    report = slack.ephemerals("U0LEAD1", channel=CHANNEL)[-1]
    body = "\n".join(block["text"]["text"] for block in report.blocks)
    assert "a deployment can run" in report.text
    assert ":white_check_mark: *slack* Slack token: valid" in body
    assert ":white_check_mark: *slack* Slack scopes: commands, chat:write" in body
    assert ":white_check_mark: *database* database: reachable, schema at head" in body
    assert ":white_check_mark: *production* platform: local platform" in body
    assert ":white_check_mark: *staging* platform: local platform" in body
    assert slack.call_count("auth.test") == 1
    # Nobody else sees it.
    assert not [m for m in slack.messages(CHANNEL) if "qlp doctor" in m.text]


def test_one_environment_and_a_failure_in_slack(doctor_bot: BotHarness,
                                                slack: SlackDouble) -> None:
    slack.scopes = [scope for scope in MANIFEST_BOT_SCOPES if scope != "users:read"]
    slack.member_of = set()
    response = doctor_bot.command("doctor staging", user="U0LEAD2")  # a S0RELEASE member
    assert "*staging*" in response.text
    doctor_bot.services.start_worker()
    doctor_bot.wait_for(lambda: slack.ephemerals("U0LEAD2", channel=CHANNEL),
                        what="the doctor report")
    report = slack.ephemerals("U0LEAD2", channel=CHANNEL)[-1]
    body = "\n".join(block["text"]["text"] for block in report.blocks)
    assert "cannot run until the failures are fixed" in report.text
    assert ":x: *slack* Slack scopes: the token lacks users:read" in body
    assert "*production*" not in body and "*staging* platform" in body


def test_an_unknown_environment_is_refused_before_anything_runs(
        doctor_bot: BotHarness, slack: SlackDouble) -> None:
    response = doctor_bot.command("doctor prod", user="U0LEAD1")
    assert "There is no environment `prod`" in response.text
    assert "production" in response.text  # did you mean
    assert _network_calls(slack) == 0


# -- qlp-bot doctor ----------------------------------------------------------------------------


def _clear_slack_env(monkeypatch: pytest.MonkeyPatch, home: Path) -> None:
    for name in ("SLACK_BOT_TOKEN", "SLACK_APP_TOKEN", "SLACK_SIGNING_SECRET", "QLP_CONFIG",
                 "QLP_DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("QLP_HOME", str(home))


def test_cli_on_the_demo_policy_exits_0(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    from bot.cli import main

    _clear_slack_env(monkeypatch, tmp_path / "home")
    assert main(["doctor"]) == 0
    out = capsys.readouterr().out
    assert "[ok] policy: policy file: the built-in demo policy is valid" in out
    assert "[skipped] slack: Slack token: skipped: no SLACK_BOT_TOKEN (local shell)" in out
    assert "[ok] production: platform: local platform" in out
    assert out.strip().endswith("a deployment can run.")


def test_cli_names_the_bad_key_of_the_policy_and_exits_1(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    from bot.cli import main

    _clear_slack_env(monkeypatch, tmp_path / "home")
    policy = tmp_path / "qlp.yml"
    policy.write_text("timezone: UTC\nchannel: C0DEPLOY\nenvironments:\n  production:\n"
                      "    platform: local\n    url: http://127.0.0.1:1\n", encoding="utf-8")
    monkeypatch.setenv("QLP_CONFIG", str(policy))
    assert main(["doctor"]) == 1
    out = capsys.readouterr().out
    assert "[FAIL] policy: policy file: " in out and "environments.production" in out
    assert "-> fix: fix environments.production" in out
    assert "[skipped] platforms: environments: not checked: the policy is not valid" in out
