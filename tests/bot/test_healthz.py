"""Issue 13, finding 9: liveness (``/healthz``, ``/livez``) says whether the process works (its
database accepts a write, its worker runs), readiness (``/readyz``) adds the schema and the
scheduler; Slack's state is a detail, never a reason for a 503. A database the bot cannot
write at start is one line and exit code 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml
from psycopg import sql
from sqlalchemy.engine import make_url

import storage.db
from bot import modes
from bot.modes import CachedHealth, open_writable_database
from bot.settings import Settings
from procedures.errors import ConfigError
from storage.db import Database
from tests.fakes.bot_harness import BotHarness
from tests.fakes.policies import BASE

ROOT = Path(__file__).resolve().parents[2]


def _get(bot: BotHarness, path: str) -> tuple[int, dict[str, Any]]:
    response = bot.http.get(path)
    return response.status_code, json.loads(response.text)


def _read_only_url(database: Database) -> str:
    """A URL of the same database on which every write is refused (as root, file modes would
    not stop SQLite; PostgreSQL: ``default_transaction_read_only`` on the database)."""
    url = database.url
    if url.get_backend_name() == "sqlite":
        return f"sqlite:///file:{url.database}?mode=ro&uri=true"
    admin = url.set(drivername="postgresql", database="postgres")
    with psycopg.connect(admin.render_as_string(hide_password=False),
                         autocommit=True) as connection:
        connection.execute(sql.SQL("ALTER DATABASE {} SET default_transaction_read_only = on")
                           .format(sql.Identifier(str(url.database))))
    return url.render_as_string(hide_password=False)


@pytest.fixture
def running(bot: BotHarness) -> Iterator[BotHarness]:
    """The bot with its worker running, as ``qlp-bot serve`` has it."""
    bot.services.start_worker()
    yield bot


def test_a_healthy_bot_is_live(running: BotHarness) -> None:
    for path in ("/healthz", "/livez"):
        status, report = _get(running, path)
        assert status == 200, report
        assert report["status"] == "ok" and report["database"] == "ok"


def test_a_slack_outage_is_a_detail_not_a_liveness_failure(
        running: BotHarness, monkeypatch: pytest.MonkeyPatch) -> None:
    # While chat.* calls hang, a worker pass outlasts the stall threshold: "stalled".
    monkeypatch.setattr(running.services, "worker_health", lambda: "stalled")
    monkeypatch.setattr(running.services, "scheduler_health", lambda: "leader")
    status, report = _get(running, "/healthz")
    assert status == 200, report
    assert report["worker"] == "stalled" and "Slack" in report["details"]["worker"]
    assert report["details"]["slack_delivery_blocked"] == {}
    assert report["details"]["outbox_pending"] == 0
    assert _get(running, "/readyz")[0] == 200


def test_a_read_only_database_fails_liveness(running: BotHarness) -> None:
    assert _get(running, "/healthz")[0] == 200
    read_only = Database(_read_only_url(running.services.database))
    running.services.database = read_only
    try:
        status, report = _get(running, "/healthz")
        assert status == 503, report
        assert report["status"] == "failing"
        assert "read" in report["database"] and "only" in report["database"]
        assert any(problem.startswith("database:") for problem in report["problems"])
        assert _get(running, "/readyz")[0] == 503
    finally:
        read_only.dispose()


def test_a_full_disk_under_a_sqlite_file_fails_liveness(
        running: BotHarness, monkeypatch: pytest.MonkeyPatch) -> None:
    if running.services.database.dialect != "sqlite":
        pytest.skip("PostgreSQL's own write refuses a full disk (the table's file is extended)")
    monkeypatch.setattr(storage.db, "MIN_FREE_DISK", 2 ** 62)  # no disk has that much free
    status, report = _get(running, "/healthz")
    assert status == 503 and report["database"].startswith("disk full")


def test_a_stopped_worker_fails_liveness(bot: BotHarness) -> None:
    status, report = _get(bot, "/healthz")
    assert status == 503 and report["worker"] == "stopped"
    assert report["problems"][0] == "worker: stopped"


def test_readiness_needs_the_schema_at_head_and_the_scheduler(
        running: BotHarness, monkeypatch: pytest.MonkeyPatch) -> None:
    status, report = _get(running, "/readyz")
    assert status == 503 and "scheduler: stopped" in report["problems"]
    assert _get(running, "/healthz")[0] == 200  # not a reason to restart
    monkeypatch.setattr(running.services, "scheduler_health", lambda: "standby")
    status, report = _get(running, "/readyz")
    assert status == 200 and report["ready"] is True, report
    monkeypatch.setattr(modes, "_head_revision", lambda: "9999_newer")
    status, report = _get(running, "/readyz")
    assert status == 503 and report["migrations"].endswith("the code's head is 9999_newer")
    assert _get(running, "/healthz")[0] == 200


def test_the_served_report_is_cached_for_a_second(
        bot: BotHarness, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []

    def counted(services: object) -> dict[str, Any]:
        calls.append(1)
        return {"status": "ok", "ready": True}

    monkeypatch.setattr(modes, "health_report", counted)
    health = CachedHealth(bot.services, ttl=3600)
    for _ in range(50):
        assert health()["status"] == "ok"
    assert len(calls) == 1


def test_opening_a_read_only_database_is_one_clear_error(database: Database,
                                                         tmp_path: Path) -> None:
    settings = Settings(QLP_DATABASE_URL=_read_only_url(database), QLP_HOME=tmp_path)
    with pytest.raises(ConfigError) as raised:
        open_writable_database(settings)
    message = raised.value.message
    assert "does not accept writes" in message and "\n" not in message
    assert raised.value.key == "QLP_DATABASE_URL"


def test_opening_a_writable_database_passes(database: Database, tmp_path: Path) -> None:
    url = database.url.render_as_string(hide_password=False)
    opened = open_writable_database(Settings(QLP_DATABASE_URL=url, QLP_HOME=tmp_path))
    opened.dispose()


@pytest.mark.slow
def test_serve_on_a_read_only_database_exits_2_with_one_line(database: Database,
                                                             tmp_path: Path) -> None:
    policy = tmp_path / "qlp.yml"
    policy.write_text(yaml.safe_dump(BASE))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "QLP_"))}
    env.update(SLACK_BOT_TOKEN="xoxb-start", SLACK_SIGNING_SECRET="start-secret",
               QLP_CONFIG=str(policy), QLP_HOME=str(tmp_path / "home"),
               QLP_DATABASE_URL=_read_only_url(database), QLP_AUDIT_KEY="k" * 32)
    finished = subprocess.run([sys.executable, "-m", "bot", "serve", "--port", "0"], env=env,
                              cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
    assert finished.returncode == 2, finished.stderr
    lines = finished.stderr.strip().splitlines()
    assert len(lines) == 1, finished.stderr
    assert "does not accept writes" in lines[0] and "Traceback" not in finished.stderr
    host = make_url(_read_only_url(database)).host
    assert host is None or host in lines[0]
