"""Versions are ASCII (issue 13, finding 5): look-alikes are refused with the reason.

Versions with fullwidth (U+FF11), Arabic-Indic (U+0661) or Devanagari (U+0969) digits look like
``v1.2.3`` to an approver; ``\\d`` and str.isdigit() accept them. Every command that takes a
version (deploy, a scheduled deploy, hotfix, emergency, rollback) refuses them, names the
offending character, its code point and its position, and echoes nothing unescaped. Every
version valid before stays valid. Numbers (``/qlp cancel`` with Arabic-Indic digits) and
times get the same rule.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bot.grammar import normalise_version, parse
from bot.schedule.scheduled_deployments import is_major
from procedures.clock import FixedClock
from procedures.errors import UserError
from storage.db import Database
from tests.fakes.bot_harness import BotHarness
from tests.fakes.policies import make_policy
from tests.fakes.slack_double import SlackDouble

LOOK_ALIKES = [
    # (text, the offending character, its code point and name, its 1-based position)
    ("v\uff11.2.3", "\uff11", "U+FF11 FULLWIDTH DIGIT ONE", 2),
    ("v\u0661.\u0662.\u0663", "\u0661", "U+0661 ARABIC-INDIC DIGIT ONE", 2),
    ("v1.2.\u0969", "\u0969", "U+0969 DEVANAGARI DIGIT THREE", 6),
    ("\uff561.2.3", "\uff56", "U+FF56 FULLWIDTH LATIN SMALL LETTER V", 1),
    ("v1.2.3-rc.\u0661", "\u0661", "U+0661 ARABIC-INDIC DIGIT ONE", 11),
    ("v1.\u00b2.3", "\u00b2", "U+00B2 SUPERSCRIPT TWO", 4),
    ("v1.2.3-\u0430", "\u0430", "U+0430 CYRILLIC SMALL LETTER A", 8),
]

# Every command that takes a version, with ``{v}`` where the version goes.
ENTRIES = [
    "deploy {v}",
    "deploy {v} to staging --dry-run",
    "deploy {v} at 2026-12-01 10:00",
    'deploy {v} --override "checkout fix cannot wait"',
    'hotfix {v} --reason "checkout 500s"',
    'emergency outage {v} --reason "API down"',
    'rollback {v} --reason "errors up"',
    'rollback {v} in staging --reason "errors up"',
]

# Versions the bot, its tests and its demo use today: all stay valid.
STILL_VALID = [
    ("v1.2.3", "v1.2.3"), ("1.2.3", "v1.2.3"), ("v0.0.1", "v0.0.1"),
    ("v1.2.3-rc.1", "v1.2.3-rc.1"), ("v1.1.0-unhealthy", "v1.1.0-unhealthy"),
    ("v2.0.0-slow-unhealthy", "v2.0.0-slow-unhealthy"), ("v1.0.0-x", "v1.0.0-x"),
    ("v2026.11.26", "v2026.11.26"), ("v01.02.03", "v01.02.03"),
    ("v1.2.3-RC.1", "v1.2.3-RC.1"),
    # Semver build metadata: '+' is one of the ASCII characters a version may hold.
    ("v1.2.3+build.5", "v1.2.3+build.5"), ("1.2.3-rc.1+sha.0a1b2c", "v1.2.3-rc.1+sha.0a1b2c"),
]


@pytest.mark.parametrize(("text", "char", "named", "position"), LOOK_ALIKES)
@pytest.mark.parametrize("entry", ENTRIES)
def test_look_alike_versions_are_refused_at_every_entry(
        entry: str, text: str, char: str, named: str, position: int) -> None:
    with pytest.raises(UserError) as caught:
        parse(entry.format(v=text))
    said = caught.value.message
    assert said.startswith(f"`{text}` is not a version: it has a non-ASCII character "), said
    assert f"'{char}' ({named}) at position {position}" in said, said
    assert "versions are ASCII: digits, letters, '.', '+', '-'" in said, said


def test_the_reason_reads_as_the_issue_asks() -> None:
    with pytest.raises(UserError) as caught:
        normalise_version("v\uff11.2.3")
    assert caught.value.message == (
        "`v\uff11.2.3` is not a version: it has a non-ASCII character '\uff11' "
        "(U+FF11 FULLWIDTH DIGIT ONE) at position 2; versions are ASCII: digits, letters, "
        "'.', '+', '-'.")


@pytest.mark.parametrize(("text", "expected"), STILL_VALID)
def test_every_ascii_version_valid_before_stays_valid(text: str, expected: str) -> None:
    assert normalise_version(text) == expected
    assert parse(f"deploy {text}").version == expected
    assert parse(f'rollback {text} --reason "errors up"').version == expected


@pytest.mark.parametrize("text", [
    "v1.2", "v1.2.3.4", "latest", "v1.2.3-", "v1.2.3+", "v1.2.3+a..b", "vv1.2.3",
    "v12345.0.0", "v1.2.3-" + "a" * 50, "-v1.2.3", "v1.2.3-.rc",
])
def test_ascii_that_is_not_semver_is_still_refused(text: str) -> None:
    with pytest.raises(UserError) as caught:
        normalise_version(text)
    assert "is not a version" in caught.value.message


@pytest.mark.parametrize(("text", "shown", "named"), [
    ("v1.2.<!channel>", "'&lt;'", "U+003C LESS-THAN SIGN"),
    ("v1.2.3&x", "'&amp;'", "U+0026 AMPERSAND"),
    ("v1.2.3;", "';'", "U+003B SEMICOLON"),
    ("v1.2.3/..", "'/'", "U+002F SOLIDUS"),
    ("v1.2.3_x", "'_'", "U+005F LOW LINE"),
])
def test_other_ascii_characters_are_named_and_escaped(text: str, shown: str, named: str) -> None:
    with pytest.raises(UserError) as caught:
        normalise_version(text)
    said = caught.value.message
    assert f"it has the character {shown} ({named})" in said, said
    assert "<" not in said.replace("&lt;", "") and "<!channel>" not in said


@pytest.mark.parametrize(("char", "named"), [
    ("\u202e", "U+202E RIGHT-TO-LEFT OVERRIDE"),
    ("\u200b", "U+200B ZERO WIDTH SPACE"),
    ("\u0301", "U+0301 COMBINING ACUTE ACCENT"),
    ("`", "U+0060 GRAVE ACCENT"),
])
def test_invisible_characters_are_named_not_shown(char: str, named: str) -> None:
    """A right-to-left override or a zero-width space shown raw would rearrange or hide the
    answer around it: the reason names it, and the echoed text shows its code point."""
    with pytest.raises(UserError) as caught:
        parse(f"deploy v1.2.3{char}")
    said = caught.value.message
    assert f"character ({named}) at position 7" in said, said
    assert "\u202e" not in said and "\u200b" not in said
    assert said.count("`") == 2, said  # only the quoting pair: no stray code span


@pytest.mark.parametrize("text", ["cancel \u0661\u0662", "checklist \u0661\u0662",
                                  "cancel \u00b2", "cancel #\uff11", "cancel " + "9" * 30])
def test_deployment_numbers_are_ascii_digits(text: str) -> None:
    """``\u0661\u0662`` passed str.isdigit() and int() read it as 12 (``cancel`` then acted on
    #12); ``\u00b2`` passed isdigit() and int() raised: "Something went wrong"."""
    with pytest.raises(UserError) as caught:
        parse(text)
    assert "is not a deployment number" in caught.value.message


def test_counts_are_ascii_digits() -> None:
    assert parse("history production 12").number == 12
    with pytest.raises(UserError):
        parse("history production \u0661\u0662")
    assert parse("stats \uff13\uff10").number is None  # not a count: taken as an environment


@pytest.mark.parametrize("when", ["\u0662\u0660\u0662\u0666-\u0661\u0662-\u0660\u0661 10:00",
                                  "2026-12-01 \u0661\u0660:\u0660\u0660",
                                  "2026-12-01 \uff11\uff10:00"])
def test_schedule_times_are_ascii_digits(when: str) -> None:
    with pytest.raises(UserError) as caught:
        parse(f"deploy v1.2.3 at {when}")
    assert "is not a date and time" in caught.value.message


def test_major_version_reads_ascii_digits_only() -> None:
    """A scheduled deployment's major-version notice compares ASCII major numbers."""
    assert is_major("v2.0.0", "v1.4.0") and not is_major("v1.5.0", "v1.4.0")
    assert not is_major("v\u0661.5.0", "v1.4.0")  # not a version: no leadership notice
    assert not is_major("v\u0662.0.0", None)


# -- through the real app: no request is created, nothing raw reaches Slack --------------------


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(datetime(2026, 12, 1, 11, 0, tzinfo=UTC))  # Tuesday, inside the window


@pytest.fixture
def app_bot(sqlite_database: Database, clock: FixedClock, slack: SlackDouble,
            tmp_path: Path) -> Iterator[BotHarness]:
    harness = BotHarness(database=sqlite_database, policy=make_policy(), clock=clock,
                         home=tmp_path / "home", slack=slack)
    yield harness
    harness.close()


@pytest.mark.parametrize("entry", [
    "deploy {v}", "deploy {v} at 2026-12-02 10:00", 'hotfix {v} --reason "checkout 500s"',
    'emergency outage {v} --reason "API down"',
])
def test_a_look_alike_version_becomes_no_approvable_request(app_bot: BotHarness,
                                                             entry: str) -> None:
    text = app_bot.command(entry.format(v="v\uff11.2.3")).text
    assert "is not a version" in text and "U+FF11 FULLWIDTH DIGIT ONE" in text, text
    assert app_bot.services.deployments.list_recent() == []
    assert not any(n.payload.get("card_for") for n in
                   app_bot.services.outbox.undelivered(limit=100))
    # The same command with the real version is a request: the refusal was the version's.
    ok = app_bot.command(entry.format(v="v1.2.3")).text
    assert "#1" in ok, ok
