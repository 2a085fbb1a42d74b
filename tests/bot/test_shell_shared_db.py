"""The local shell and a database a served bot uses (issue 13, finding 7).

Pointed at production's database, the shell acted as any ``--user`` with nothing in the audit
saying so, and its sender marked the served bot's outbox rows as sent to its stand-in: those
messages never reached Slack. Now served bots keep a heartbeat row (``bot_instances``), the
shell refuses a database with a live one unless given ``--shared-database``, a shared shell
delivers only what it wrote itself, and what the shell does is audited ``via: shell``.
"""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from sqlmodel import select

from bot.cli import main
from bot.settings import Settings
from bot.shell.repl import LocalShell
from bot.shell.shared_db import SharedDatabaseRefused
from bot.wiring import build_services
from procedures.clock import Clock, FixedClock
from storage.db import Database
from storage.markers import BotMarkers
from storage.models import Notification
from storage.outbox import Outbox
from storage.session_outbox import SessionOutbox
from tests.fakes.policies import BASE, make_policy

T0 = datetime(2026, 12, 1, 11, 0, tzinfo=UTC)  # Tuesday, inside the test policy's window
PROD = "C0PROD"


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(T0)


def _settings(tmp_path: Path, database: Database) -> Settings:
    policy = tmp_path / "qlp.yml"
    policy.write_text(yaml.safe_dump(BASE))
    values: dict[str, object] = {
        "QLP_HOME": tmp_path / "home", "QLP_CONFIG": policy,
        "QLP_DATABASE_URL": database.url.render_as_string(hide_password=False)}
    return Settings(**values)  # type: ignore[arg-type]


def _served_bot(database: Database, clock: Clock, mode: str = "serve") -> None:
    BotMarkers(database, clock).beat("prodhost:4242:abc", mode, "prodhost", 4242)


@pytest.fixture
def shell_factory(tmp_path: Path, database: Database,
                  clock: FixedClock) -> Iterator[list[LocalShell]]:
    shells: list[LocalShell] = []
    yield shells
    for shell in shells:
        shell.close()


def _shell(shells: list[LocalShell], tmp_path: Path, database: Database, clock: Clock,
           *, shared: bool, user: str = "U0DEV") -> tuple[LocalShell, io.StringIO]:
    out = io.StringIO()
    shell = LocalShell(_settings(tmp_path, database), user=user, channel=None, out=out,
                       interactive=False, shared_database=shared, clock=clock,
                       database=database)
    shells.append(shell)
    return shell, out


def _settle(shell: LocalShell, clock: FixedClock) -> None:
    """Until the shell's own messages are out: the sender gives a card's thread replies a
    moment for the card's ts, so the clock moves a second at a time."""
    for _ in range(120):
        if shell.services.outbox.pending_count() == 0:
            return
        clock.advance(timedelta(seconds=1))
        shell.services.wake_worker()
        time.sleep(0.05)
    raise AssertionError("the shell's own messages were not delivered")


# -- the marker row -----------------------------------------------------------------------------


def test_markers_say_who_beat_and_when(database: Database, clock: FixedClock) -> None:
    markers = BotMarkers(database, clock)
    markers.beat("a", "serve", "host-a", 11)
    markers.beat("b", "socket", "host-b", 22)
    markers.beat("c", "shell", "laptop", 33)
    assert sorted(m.id for m in markers.live()) == ["a", "b"]  # a shell is not a served bot
    clock.advance(timedelta(seconds=90))
    markers.beat("a", "serve", "host-a", 11)  # a refreshes, b falls silent
    assert [m.id for m in markers.live(within=timedelta(seconds=60))] == ["a"]
    said = markers.live()[0].describe(clock.now())
    assert said == "serve on host-a (pid 11, heartbeat 0 s ago)"
    clock.advance(timedelta(minutes=3))
    assert markers.live() == []  # nobody beat within two minutes
    markers.remove("a")
    clock.advance(timedelta(days=2))
    markers.beat("z", "serve", "host-z", 9)  # a beat forgets rows silent for a day
    assert [m.id for m in markers.live(within=timedelta(days=9))] == ["z"]


def test_a_served_bots_worker_writes_and_refreshes_its_row(
        tmp_path: Path, database: Database, clock: FixedClock) -> None:
    services = build_services(Settings(QLP_HOME=tmp_path / "home"),  # type: ignore[call-arg]
                              policy=make_policy(), clock=clock, database=database)
    try:
        [marker] = [t for t in services.worker_tasks() if t.name == "instance-marker"]
        assert marker.run_once() is False  # never counts as work: the worker still idles
        [row] = BotMarkers(database, clock).live()
        assert (row.id, row.mode, row.pid) == (services.worker_id, "serve", marker.pid)
        assert row.heartbeat_at == T0
        clock.advance(timedelta(minutes=5))
        marker.beat()
        assert BotMarkers(database, clock).live()[0].heartbeat_at == T0 + timedelta(minutes=5)
        services.stop_worker()  # a clean stop takes the row away
        assert BotMarkers(database, clock).live() == []
    finally:
        services.close()


# -- refusing a served bot's database ----------------------------------------------------------


@pytest.mark.parametrize("mode", ["serve", "socket"])
def test_the_shell_refuses_a_database_a_served_bot_uses(
        tmp_path: Path, database: Database, clock: FixedClock,
        shell_factory: list[LocalShell], mode: str) -> None:
    _served_bot(database, clock, mode)
    clock.advance(timedelta(seconds=30))
    with pytest.raises(SharedDatabaseRefused) as caught:
        _shell(shell_factory, tmp_path, database, clock, shared=False)
    said = str(caught.value)
    assert "\n" not in said, said  # one line
    assert said.startswith("refusing to start the shell: a served bot uses this database "
                           f"({mode} on prodhost (pid 4242, heartbeat 30 s ago)"), said
    assert "--shared-database" in said
    assert shell_factory == []


def test_the_cli_says_why_in_one_line_and_exits_non_zero(
        tmp_path: Path, database: Database, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    BotMarkers(database, FixedClock(datetime.now(UTC))).beat("p:1", "serve", "prodhost", 4242)
    for key, value in {"QLP_HOME": str(tmp_path / "home"),
                       "QLP_DATABASE_URL": database.url.render_as_string(hide_password=False),
                       "QLP_AUDIT_KEY": "k" * 64}.items():
        monkeypatch.setenv(key, value)
    for key in ("SLACK_APP_TOKEN", "SLACK_SIGNING_SECRET", "SLACK_BOT_TOKEN", "QLP_CONFIG"):
        monkeypatch.delenv(key, raising=False)
    assert main(["shell"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("qlp-bot: refusing to start the shell"), err
    assert "Traceback" not in capsys.readouterr().err


def test_a_stale_heartbeat_or_a_shell_does_not_refuse(
        tmp_path: Path, database: Database, clock: FixedClock,
        shell_factory: list[LocalShell]) -> None:
    _served_bot(database, clock)
    BotMarkers(database, clock).beat("laptop:1:x", "shell", "laptop", 1)
    clock.advance(timedelta(minutes=3))  # the served bot stopped beating
    shell, _ = _shell(shell_factory, tmp_path, database, clock, shared=False)
    assert not shell.shared


# -- shared on purpose: the served bot's messages are never touched -----------------------------


def test_a_shared_shell_delivers_only_its_own_messages(
        tmp_path: Path, database: Database, clock: FixedClock,
        shell_factory: list[LocalShell]) -> None:
    _served_bot(database, clock)
    served = Outbox(database, clock)
    theirs = [served.enqueue(f"{PROD}{i}", "post", {"text": f"production message {i}"})
              for i in range(3)]
    shell, out = _shell(shell_factory, tmp_path, database, clock, shared=True, user="U0DEV")
    assert shell.shared
    shell.handle("/qlp deploy v1.2.3")
    _settle(shell, clock)
    printed = out.getvalue()
    assert "production message" not in printed
    # Its own card reached its stand-in; the served bot's rows were never touched.
    with database.session(read_only=True) as s:
        rows = {n.id: n for n in s.exec(select(Notification)).all()}
    for id in theirs:
        assert (rows[id].state, rows[id].attempts, rows[id].slack_ts) == ("pending", 0, None)
        assert rows[id].next_attempt_at == rows[id].created_at
    own = [n for id, n in rows.items() if id not in theirs]
    assert own and all(n.state == "sent" for n in own if n.kind == "post"), own
    assert "v1.2.3" in printed, printed
    # The served bot's own sender still finds its messages due (one per channel), only those.
    claimed = served.claim_due(limit=100)
    assert sorted(n.id for n in claimed) == sorted(theirs)


def test_a_shared_shell_runs_no_timed_work_and_no_queued_runs(
        tmp_path: Path, database: Database, clock: FixedClock,
        shell_factory: list[LocalShell]) -> None:
    _served_bot(database, clock)
    shell, _ = _shell(shell_factory, tmp_path, database, clock, shared=True)
    names = {task.name for task in shell.services.tasks}
    assert names == {"clicks", "doctor", "slack-outbox", "instance-marker"}
    assert shell.services.scheduler_health() != "leader"
    assert isinstance(shell.services.outbox, SessionOutbox)


def test_the_shell_outbox_refuses_to_mark_rows_it_did_not_write(
        database: Database, clock: FixedClock) -> None:
    served = Outbox(database, clock)
    theirs = served.enqueue(PROD, "post", {"text": "production"})
    mine_outbox = SessionOutbox(database, clock)
    mine = mine_outbox.enqueue(PROD, "post", {"text": "from the shell"})
    # A dedup key the served bot already wrote is its row, not the shell's.
    dup = served.enqueue(PROD, "post", {"text": "scheduled"}, dedup_key="scheduled:1:notice")
    assert mine_outbox.enqueue(PROD, "post", {"text": "x"}, dedup_key="scheduled:1:notice") == dup
    for id in (theirs, dup):
        assert not mine_outbox.mark_sent(id, "1.1")
        assert not mine_outbox.mark_dead(id, "no")
        assert not mine_outbox.mark_failed(id, "no", T0)
        assert not mine_outbox.release(id, T0)
        assert served.get(id).state == "pending"  # type: ignore[union-attr]
    assert mine_outbox.pending_count() == 1
    assert [n.id for n in mine_outbox.claim_due(T0, limit=10)] == []  # theirs is the key's head
    assert served.mark_sent(theirs, "1.2") and served.mark_sent(dup, "1.3")
    assert [n.id for n in mine_outbox.claim_due(T0, limit=10)] == [mine]
    # While the shell holds it, the served bot's sender leaves the shell's row alone.
    assert served.claim_due(T0 + timedelta(minutes=5), limit=10) == []
    assert mine_outbox.mark_sent(mine, "1.4")


def test_a_rolled_back_enqueue_is_not_the_shells(database: Database, clock: FixedClock) -> None:
    mine = SessionOutbox(database, clock)
    with pytest.raises(RuntimeError), database.session() as s:
        ghost = mine.enqueue(PROD, "post", {"text": "never committed"}, session=s)
        raise RuntimeError("the caller's change failed")
    assert not mine.owns(ghost)
    with database.session() as s:
        kept = mine.enqueue(PROD, "post", {"text": "committed"}, session=s)
    assert mine.owns(kept)


# -- everything the shell does is audited via shell --------------------------------------------


@pytest.mark.slow  # 4 s of the fast lane, measured
def test_what_the_shell_does_is_audited_via_shell(
        tmp_path: Path, database: Database, clock: FixedClock,
        shell_factory: list[LocalShell]) -> None:
    shell, _ = _shell(shell_factory, tmp_path, database, clock, shared=False, user="U0DEV")
    shell.handle("/qlp status")
    shell.handle("/qlp deploy v1.2.3")
    shell.handle("!user U0LEAD1")
    _settle(shell, clock)
    # Reject, not approve: an approved run would start the local platform's processes (on
    # the policy's ports), which outlive the shell and this test.
    shell.handle("!reject")
    shell.services.audit.flush()
    events = {e.action: e for e in shell.services.audit.recent(200)}
    for action in ("shell.started", "command.status", "command.deploy", "shell.user_switched",
                   "shell.pressed"):
        assert events[action].detail.get("via") == "shell", (action, events[action].detail)
    assert events["shell.started"].detail["shared_database"] is False
    assert events["shell.pressed"].actor == "U0LEAD1"
    assert events["shell.user_switched"].detail == {"from": "U0DEV", "to": "U0LEAD1",
                                                   "via": "shell"}
    assert shell.services.audit.verify().ok
