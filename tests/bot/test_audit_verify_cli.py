"""``qlp-bot audit verify|anchor``, the audit key from the settings, and the anchor job.

The must-show of finding 10 (issue 13): the approval of deployment #1 rewritten in the database
and every hash recomputed without the key: ``qlp-bot audit verify`` names that row and exits
non-zero. In process on SQLite and PostgreSQL, and once as a real process (slow).
"""

from __future__ import annotations

import io
import json
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlmodel import col, select

from bot.audit_cli import (
    EXIT_BROKEN,
    EXIT_KEY,
    anchor_file,
    announce_audit_key,
    audit_key_check,
    audit_keyring,
    install_audit_key,
    key_file,
    run_audit_verify,
)
from bot.cli import main
from bot.schedule.audit_anchor import AuditAnchors
from bot.settings import Settings
from procedures.clock import FixedClock
from procedures.errors import ConfigError
from storage.audit import AuditKey, AuditLog, process_keyring, use_keyring
from storage.db import Database
from storage.models import Notification
from storage.outbox import Outbox
from tests.storage.audit_attack import cut_back, rewrite
from tests.storage.test_audit_keyed import _approved_deployment_one, _approver_becomes

KEY = secrets.token_hex(32)


def _url(database: Database) -> str:
    return database.url.render_as_string(hide_password=False)


def _settings(tmp_path: Path, database: Database, **extra: object) -> Settings:
    values: dict[str, object] = {"QLP_HOME": tmp_path / "home",
                                 "QLP_DATABASE_URL": _url(database), "QLP_AUDIT_KEY": KEY}
    values.update(extra)
    return Settings(**values)  # type: ignore[arg-type]


@pytest.fixture(autouse=True)
def _no_process_keyring() -> Iterator[None]:
    yield
    use_keyring(None)


def _verify(settings: Settings, *anchors: Path) -> tuple[int, str]:
    out = io.StringIO()
    code = run_audit_verify(settings, anchors=list(anchors), out=out)
    return code, out.getvalue()


def _history(tmp_path: Path, database: Database, clock: FixedClock) -> tuple[Settings, int]:
    """The bot's history, signed with QLP_AUDIT_KEY as ``qlp-bot serve`` signs it."""
    settings = _settings(tmp_path, database)
    install_audit_key(settings, "shell")
    return settings, _approved_deployment_one(database, clock)


def test_verify_an_untouched_chain_with_the_right_key_exits_0(
        tmp_path: Path, database: Database, clock: FixedClock) -> None:
    settings, _ = _history(tmp_path, database, clock)
    code, out = _verify(settings)
    assert code == 0, out
    key_id = AuditKey.of(KEY).key_id
    rows = AuditLog(database, clock).head()[0]
    assert f"audit chain intact: {rows} rows checked ({rows} signed with key {key_id})" in out


def test_the_approval_of_one_rewritten_without_the_key_is_named(
        tmp_path: Path, database: Database, clock: FixedClock,
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    settings, approval_id = _history(tmp_path, database, clock)
    rewrite(database, _approver_becomes("U0MALLORY", approval_id))
    code, out = _verify(settings)
    assert code == EXIT_BROKEN
    assert out.startswith(f"audit chain broken at row {approval_id}: #{approval_id} was "
                          "changed: its hash is a plain SHA-256"), out
    # Through the command line's entry point (settings from the environment) as well.
    monkeypatch.setenv("QLP_HOME", str(settings.qlp_home))
    monkeypatch.setenv("QLP_DATABASE_URL", _url(database))
    monkeypatch.setenv("QLP_AUDIT_KEY", KEY)
    assert main(["audit", "verify"]) == EXIT_BROKEN
    assert f"audit chain broken at row {approval_id}:" in capsys.readouterr().out


def test_a_wrong_key_is_reported_clearly(tmp_path: Path, database: Database,
                                         clock: FixedClock) -> None:
    _history(tmp_path, database, clock)
    other = secrets.token_hex(32)
    code, out = _verify(_settings(tmp_path, database, QLP_AUDIT_KEY=other))
    assert code == EXIT_KEY
    assert out.startswith("audit key wrong or missing at row 1:"), out
    assert AuditKey.of(KEY).key_id in out and AuditKey.of(other).key_id in out
    assert KEY not in out and other not in out
    # Rotated: the old key in QLP_AUDIT_OLD_KEYS verifies the rows it signed.
    rotated = _settings(tmp_path, database, QLP_AUDIT_KEY=other, QLP_AUDIT_OLD_KEYS=KEY)
    assert _verify(rotated)[0] == 0
    # A key too short is a configuration error, naming the setting.
    with pytest.raises(ConfigError, match="QLP_AUDIT_KEY: an audit key must have at least 32"):
        audit_keyring(_settings(tmp_path, database, QLP_AUDIT_KEY="hunter2"), create=False)


def test_anchors_catch_what_the_key_cannot(tmp_path: Path, database: Database,
                                           clock: FixedClock) -> None:
    settings, approval_id = _history(tmp_path, database, clock)
    anchors = AuditAnchors(AuditLog(database, clock), Outbox(database, clock), database,
                           channel="C0AUDIT", every=900, path=anchor_file(settings))
    assert anchors.run_due(clock.now()) == 1
    head_id = AuditLog(database, clock).head()[0]
    code, out = _verify(settings)
    assert code == 0 and "anchors: 2 checked" in out, out  # the file and the posted message
    # Someone holding the key rewrites the approval: only the anchors can tell.
    rewrite(database, _approver_becomes("U0MALLORY", approval_id), key=AuditKey.of(KEY))
    code, out = _verify(settings)
    assert code == EXIT_BROKEN
    assert "audit chain signatures intact" in out
    assert f"audit chain broken at row {head_id} or before" in out, out
    # Cut back: the anchored head is gone. A saved log line is an anchor too.
    cut_back(database, 3)
    log = tmp_path / "saved.log"
    log.write_text(f"2026-12-02 10:00:00 INFO qlp.audit: audit anchor: row #{head_id} hash "
                   f"{'0' * 64} (key x, 2026-12-02T10:00:00+00:00)\n")
    anchor_file(settings).unlink()
    with database.session() as s:
        for row in s.exec(select(Notification)).all():
            s.delete(row)
    code, out = _verify(settings, log)
    assert code == EXIT_BROKEN and f"#{head_id} is missing" in out and "saved.log:1" in out


def test_the_anchor_job_posts_through_the_outbox_once_per_head_and_interval(
        tmp_path: Path, database: Database, clock: FixedClock) -> None:
    settings, _ = _history(tmp_path, database, clock)
    outbox = Outbox(database, clock)
    audit = AuditLog(database, clock)
    job = AuditAnchors(audit, outbox, database, channel="C0AUDIT", every=900,
                       path=anchor_file(settings))
    now = clock.now()
    first_head = audit.head()[0]
    assert job.run_due(now) == 1
    assert job.run_due(now) == 0  # a second tick at the same moment
    assert job.upcoming(now, timedelta(hours=1)) == [now + timedelta(seconds=900)]
    audit.append("U1", "more")
    clock.advance(timedelta(seconds=60))
    assert job.run_due(clock.now()) == 0  # moved, but the interval is not over
    clock.advance(timedelta(seconds=900))
    assert job.run_due(clock.now()) == 1
    clock.advance(timedelta(seconds=900))
    assert job.run_due(clock.now()) == 0  # not moved since
    with database.session(read_only=True) as s:
        posts = list(s.exec(select(Notification).order_by(col(Notification.id))).all())
    assert [p.channel for p in posts] == ["C0AUDIT", "C0AUDIT"]
    assert all(p.kind == "post" and "audit anchor: row #" in p.payload["text"] for p in posts)
    lines = anchor_file(settings).read_text().splitlines()
    assert [json.loads(line)["event_id"] for line in lines] == [first_head, first_head + 1]


def test_no_key_the_shell_is_quiet_and_serve_is_loud(tmp_path: Path,
                                                     database: Database) -> None:
    settings = _settings(tmp_path, database, QLP_AUDIT_KEY=None)
    err = io.StringIO()
    source = install_audit_key(settings, "shell")
    announce_audit_key(err)
    assert err.getvalue() == "" and not source.from_settings
    assert key_file(settings).stat().st_mode & 0o077 == 0  # readable by its owner only
    keyring = process_keyring()
    assert keyring is not None and keyring.current is not None
    again = install_audit_key(settings, "serve")  # the same key, and a warning once started
    assert again.keyring is not None and again.keyring.current == keyring.current
    announce_audit_key(err)
    announce_audit_key(err)
    assert err.getvalue().count("WARNING: QLP_AUDIT_KEY is not set") == 1
    quiet = io.StringIO()
    install_audit_key(_settings(tmp_path, database), "serve")
    announce_audit_key(quiet)
    assert quiet.getvalue() == ""


@pytest.mark.slow
def test_qlp_bot_audit_verify_as_a_process_names_the_row(
        tmp_path: Path, database: Database, clock: FixedClock) -> None:
    settings, approval_id = _history(tmp_path, database, clock)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "QLP_"))}
    env.update(QLP_HOME=str(settings.qlp_home), QLP_DATABASE_URL=_url(database),
               QLP_AUDIT_KEY=KEY)
    command = [sys.executable, "-m", "bot", "audit", "verify"]
    intact = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert intact.returncode == 0, intact.stdout + intact.stderr
    rewrite(database, _approver_becomes("U0MALLORY", approval_id))
    broken = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert broken.returncode == 1
    assert f"audit chain broken at row {approval_id}:" in broken.stdout, broken.stdout
    wrong = subprocess.run(command, env={**env, "QLP_AUDIT_KEY": "x" * 40},
                           capture_output=True, text=True, timeout=60)
    assert wrong.returncode == 2 and "audit key wrong" in wrong.stdout


@pytest.mark.slow
def test_the_demo_shell_prints_no_audit_warning(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "QLP_"))}
    env["QLP_HOME"] = str(tmp_path / "home")
    shell = subprocess.run([sys.executable, "-m", "bot"], input="/qlp help\n/qlp status\n",
                           env=env, capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert shell.returncode == 0 and shell.stderr == "", shell.stderr
    verify = subprocess.run([sys.executable, "-m", "bot", "audit", "verify"], env=env,
                            capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert verify.returncode == 0 and "audit chain intact" in verify.stdout, verify.stdout


def test_doctor_warns_a_served_bot_without_an_audit_key(tmp_path: Path,
                                                        database: Database) -> None:
    def line(settings: Settings, served: bool) -> str:
        result = audit_key_check(settings, served=served).run()
        assert not isinstance(result, (list, tuple))
        return result.line()

    no_key = _settings(tmp_path, database, QLP_AUDIT_KEY=None)
    assert line(no_key, served=True).startswith("[warn] audit: audit key: QLP_AUDIT_KEY is not")
    assert line(no_key, served=False).startswith("[ok] audit: audit key: the local shell's")
    assert line(_settings(tmp_path, database), served=True).startswith(
        f"[ok] audit: audit key: QLP_AUDIT_KEY is set (keys: current {AuditKey.of(KEY).key_id}")
    short = _settings(tmp_path, database, QLP_AUDIT_KEY="hunter2")
    assert line(short, served=True).startswith("[FAIL] audit: audit key: QLP_AUDIT_KEY: an")
    assert "hunter2" not in line(short, served=True)


def test_the_anchor_job_reads_only_the_end_of_a_long_anchor_file(
        tmp_path: Path, database: Database, clock: FixedClock) -> None:
    settings, _ = _history(tmp_path, database, clock)
    audit = AuditLog(database, clock)
    head_id, head_hash, _ = audit.head()
    path = anchor_file(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    at = clock.now() - timedelta(seconds=60)
    older = [json.dumps({"at": at.isoformat(), "event_id": 1, "hash": "0" * 64})] * 2000
    newest = json.dumps({"at": at.isoformat(), "event_id": head_id, "hash": head_hash})
    path.write_text("\n".join([*older, newest]) + "\n")
    job = AuditAnchors(audit, Outbox(database, clock), database, channel=None, every=900,
                       path=path)
    assert job.run_due(clock.now()) == 0  # the head is anchored already (the last line)
    assert job.upcoming(clock.now(), timedelta(hours=1)) == [at + timedelta(seconds=900)]
