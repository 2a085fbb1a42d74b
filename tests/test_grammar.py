"""The /qlp grammar: what parses, and what each mistake is told."""

from __future__ import annotations

from datetime import datetime

import pytest

from bot.grammar import parse
from procedures.errors import UserError


@pytest.mark.parametrize(("text", "expected"), [
    ("deploy v1.2.3", {"name": "deploy", "version": "v1.2.3"}),
    ("deploy 1.2.3 to staging --dry-run",
     {"version": "v1.2.3", "environment": "staging", "dry_run": True}),
    ("deploy v1.2.3-rc.1 --maintenance", {"version": "v1.2.3-rc.1", "maintenance": True}),
    ("deploy v1.2.3 at 2026-12-01 10:00", {"at": datetime(2026, 12, 1, 10, 0), "at_zone": None}),
    ("deploy v1.2.3 at 2026-12-01 10:00 Europe/Berlin", {"at_zone": "Europe/Berlin"}),
    ('hotfix v1.2.4 --reason "checkout 500s"', {"name": "hotfix", "reason": "checkout 500s"}),
    ("hotfix v1.2.4 --reason=“smart quotes work”", {"reason": "smart quotes work"}),
    ('emergency outage v1.2.5 --reason "API down"', {"category": "outage"}),
    ("migrate 2026_11_26_add_index --maintenance", {"migration": "2026_11_26_add_index"}),
    ('rollback --reason "errors up"', {"version": None, "reason": "errors up"}),
    ('rollback v1.2.2 in staging --reason "errors up"',
     {"version": "v1.2.2", "environment": "staging"}),
    ("status", {"name": "status", "environment": None}),
    ("status Staging", {"environment": "staging"}),
    ("history production 20", {"environment": "production", "number": 20}),
    ("history 5", {"environment": None, "number": 5}),
    ("window", {"name": "window"}),
    ('lock production --reason "incident 42"', {"environment": "production"}),
    ("unlock production", {"name": "unlock"}),
    ("cancel #12", {"number": 12}),
    ("checklist 7", {"number": 7}),
    ("stats production 30", {"number": 30}),
    ("", {"name": "help"}),
    ("HELP deploy", {"name": "help", "topic": "deploy"}),
])
def test_parses(text: str, expected: dict[str, object]) -> None:
    command = parse(text)
    for key, value in expected.items():
        assert getattr(command, key) == value, (key, command)


@pytest.mark.parametrize(("text", "says"), [
    ("deplyo v1.2.3", "Did you mean `deploy`?"),
    ("frobnicate", "Commands:"),
    ("deploy", "Which version?"),
    ("deploy 1.2", "is not a version"),
    ("deploy v1.2.3; rm -rf /", "is not a version"),
    ("deploy $(reboot)", "is not a version"),
    ("deploy v1.2.3 --maintenace", "Did you mean `--maintenance`?"),
    ("deploy v1.2.3 to", "needs a value"),
    ("deploy v1.2.3 at tomorrow", "is not a date and time"),
    ("deploy v1.2.3 at 2026-02-30 10:00", "not a valid date"),
    ("deploy v1.2.3 extra words", "did not understand"),
    ("hotfix v1.2.4", "needs a reason"),
    ('hotfix v1.2.4 --reason "x"', "too short"),
    ('hotfix v1.2.4 --reason "unclosed', "quote is not closed"),
    ('emergency outtage v1.2.5 --reason "down"', "Did you mean `outage`?"),
    ("migrate ../../etc/passwd", "not a migration name"),
    ("history 500", "from 1 to 100"),
    ("cancel twelve", "deployment number"),
    ("lock production", "needs a reason"),
    ("x" * 1001, "longer than 1000"),
])
def test_mistakes_say_what_is_accepted(text: str, says: str) -> None:
    with pytest.raises(UserError) as caught:
        parse(text)
    assert says in str(caught.value)


def test_echoed_text_cannot_ping_or_link() -> None:
    with pytest.raises(UserError) as caught:
        parse("<!channel>")
    assert "<!channel>" not in str(caught.value)
    assert "&lt;!channel&gt;" in str(caught.value)
