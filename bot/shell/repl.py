"""The local shell: try the bot without a Slack workspace (like Hubot's shell adapter).

Each line you type (or pipe in) goes into the *same* Bolt app as production, as a signed request,
and the app's Web API client talks to an in-process stand-in for Slack that prints what the bot
posts: cards, their threads (indented), ephemeral answers (marked), and buttons, numbered so that
``!1`` or ``!approve`` presses one. ``--user U123`` (or ``!user U123``) chooses who you are.

Everything it does is audited with ``"via": "shell"``. It refuses a database that a served bot
(``serve``, ``socket``) uses unless given ``--shared-database``; then it delivers only the
messages it wrote itself and leaves timed work and queued runs to the served bot
(:mod:`bot.shell.shared_db`).

Piped input runs the lines, waits until queued work has finished, and exits 0.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import sys
import threading
import time
from collections.abc import Sequence
from typing import TextIO

from slack_bolt import App
from slack_bolt.request import BoltRequest

from bot.app import create_app
from bot.policy_source import load_configured_policy
from bot.settings import Settings
from bot.shell.render import RenderedButton, mrkdwn_to_text, render_message
from bot.shell.shared_db import SHARED_TASKS, check_database
from bot.shell.slack_standin import SlackStandIn, StandInEvent, StoredMessage
from bot.slack_requests import block_actions_body, signed_headers, slash_command_body
from bot.wiring import Services, build_services
from procedures.clock import Clock, SystemClock
from storage.db import Database
from storage.session_outbox import SessionOutbox

log = logging.getLogger(__name__)

SHELL_TOKEN = "xoxb-local-shell"  # noqa: S105  (the stand-in accepts only this)
SHELL_HELP = """Type a slash command as in Slack, e.g. /qlp help, /qlp window, /qlp status.
  !N            press button N (as numbered in [!N ...])
  !approve      press the latest button whose name matches (approve, reject, cancel, ...)
  !user U123    act as another Slack user (approvers differ from requesters)
  !wait         wait until queued work has finished
  !help         this text;  exit (or Ctrl-D) leaves"""


class LocalShell:
    """The stand-in for Slack plus the real app, wired together for a terminal."""

    def __init__(self, settings: Settings, *, user: str, channel: str | None,
                 out: TextIO, interactive: bool, color: bool = False,
                 shared_database: bool = False, clock: Clock | None = None,
                 database: Database | None = None) -> None:
        self.out = out
        self.user = user
        self.interactive = interactive
        self.color = color
        self.secret = secrets.token_hex(16)
        self._lock = threading.Lock()
        self._buttons: dict[int, RenderedButton] = {}
        self._shown: dict[str, str] = {}  # message ts -> the text last printed for it
        self._next_button = 1
        self._count = 0
        policy = load_configured_policy(settings, allow_demo=True)
        self.channel = channel or policy.channel
        clock = clock or SystemClock()
        settings.qlp_home.mkdir(parents=True, exist_ok=True)
        database = database or Database(settings.database_url)
        try:
            served = check_database(database, clock, shared_ok=shared_database)
        except Exception:
            database.dispose()
            raise
        # Told the database is shared: shared mode even if its served bot is down right now.
        self.shared = shared_database or bool(served)
        self.standin = SlackStandIn(token=SHELL_TOKEN).start()
        local = settings.model_copy(update={"slack_api_url": self.standin.api_url})
        self.services: Services = build_services(
            local, policy=policy, bot_token=SHELL_TOKEN, clock=clock, database=database,
            outbox=SessionOutbox(database, clock) if self.shared else None, audit_via="shell")
        self.services.mode = "shell"
        if self.shared:
            # Only what answers this terminal: queued runs, recovery, preflights, e-mail and
            # pager notifications stay with the served bot (their messages go to Slack).
            self.services.tasks = [task for task in self.services.worker_tasks()
                                   if task.name in SHARED_TASKS]
        self.app: App = create_app(self.services, signing_secret=self.secret)
        self._unsubscribe = self.standin.subscribe(self._on_event)
        self.services.start_worker()
        if not self.shared:
            # Daemon threads: the scheduler never keeps a piped shell from exiting. On a shared
            # database timed work is the served bot's: its reminders go to Slack.
            self.services.start_scheduler()
        now = clock.now()
        self.services.audit.append(user, "shell.started", detail={
            "host": socket.gethostname(), "pid": os.getpid(), "channel": self.channel,
            "shared_database": self.shared,
            "served_bots": [marker.describe(now) for marker in served]})
        if self.shared:
            print("qlp-bot shell: on a shared database"
                  + (f" (a served bot: {served[0].describe(now)})" if served else "")
                  + ": what you do is real and audited via shell; only messages this shell "
                    "writes are shown here, the served bot's go to Slack.",
                  file=sys.stderr, flush=True)

    # -- output -------------------------------------------------------------------------------

    def _print(self, text: str) -> None:
        with self._lock:
            print(text, file=self.out, flush=True)

    def _on_event(self, event: StandInEvent) -> None:
        kind, item = event
        if not isinstance(item, StoredMessage):
            return
        if kind == "deleted":
            self._print(f"(message {item.ts} deleted)")
            return
        with self._lock:
            unchanged = render_message(item, first_button=0, user_name=self.standin.user_name)
            if kind == "updated" and self._shown.get(item.ts) == unchanged.text:
                return  # an update that changes nothing is not worth a screenful
            previous = self._shown.get(item.ts)
            self._shown[item.ts] = unchanged.text
            # A message shown again (chat.update) gets fresh numbers; its old ones go stale.
            for number in [n for n, b in self._buttons.items() if b.message_ts == item.ts]:
                del self._buttons[number]
            view = render_message(item, first_button=self._next_button,
                                  user_name=self.standin.user_name, color=self.color)
            for button in view.buttons:
                self._buttons[button.number] = button
            self._next_button = view.next_number
        if kind == "updated" and previous is not None:
            # Show what changed, not the whole card again.
            old = set(previous.splitlines())
            lines = view.text.splitlines()
            changed = [line for line in lines[1:] if line not in old and "· updated" not in line]
            self._print(f"(card updated) {lines[0].strip('= ')}\n" + "\n".join(
                "    " + line for line in changed))
            return
        self._print(view.text)

    # -- input --------------------------------------------------------------------------------

    def handle(self, line: str) -> bool:
        """Run one line; False means leave."""
        line = line.strip()
        if not line or line.startswith("#"):
            return True
        if line in ("exit", "quit", "!exit", "!quit"):
            return False
        if line.startswith("!"):
            self._bang(line[1:].strip())
        elif line.startswith("/"):
            self._slash(line)
        else:
            self._print("Type a slash command such as /qlp help, or !help for the shell.")
        return True

    def _slash(self, line: str) -> None:
        command, _, text = line.partition(" ")
        self._count += 1
        response_url = self.standin.response_url(f"cmd-{self._count}", channel=self.channel,
                                                 user=self.user)
        body = slash_command_body(text, user_id=self.user, channel_id=self.channel,
                                  command=command, response_url=response_url)
        self._dispatch(body)

    def _dispatch(self, body: str) -> None:
        headers: dict[str, str | Sequence[str]] = dict(signed_headers(self.secret, body))
        response = self.app.dispatch(BoltRequest(body=body, headers=headers))
        if response.status == 404:
            self._print("(Slack would say: this command is not handled by the app; "
                        "the app answers /qlp)")
        elif response.status != 200:
            self._print(f"(the app answered {response.status}: {response.body})")
        elif response.body:
            text = mrkdwn_to_text(response.body, user_name=self.standin.user_name,
                                  color=self.color)
            self._print("\n".join("(only you) " + row for row in text.splitlines()))

    def _bang(self, word: str) -> None:
        name, _, rest = word.partition(" ")
        if name == "help":
            self._print(SHELL_HELP)
        elif name == "user":
            if not rest.strip():
                self._print(f"You are {self.user}.")
            else:
                before, self.user = self.user, rest.strip().split()[0]
                self.services.audit.append(before, "shell.user_switched",
                                           detail={"from": before, "to": self.user})
                self._print(f"You are now {self.user}.")
        elif name == "wait":
            self.wait_idle()
        else:
            button = self._find_button(name)
            if button is None and not self.interactive:
                # A script presses buttons that the bot may still be posting: wait for it.
                button = self._await_button(name)
            if button is None:
                self._print(f"No button `{name}` on screen. Buttons look like [!1 Approve].")
                return
            self._press(button)

    def _await_button(self, name: str, timeout: float = 120) -> RenderedButton | None:
        """Wait for the button while the bot still has work that may post it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.services.wake_worker()
            button = self._find_button(name)
            if button is not None:
                return button
            worker = self.services.worker
            if self.services.outbox.pending_count() == 0 and (
                    worker is None or not worker.busy()):
                return self._find_button(name)
            time.sleep(0.1)
        return None

    def settle_outbox(self, timeout: float = 30) -> None:
        """Wait until what the bot meant to post has reached the stand-in (piped mode)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.services.outbox.pending_count() > 0:
            self.services.wake_worker()
            time.sleep(0.05)

    def _find_button(self, name: str) -> RenderedButton | None:
        with self._lock:
            if name.isdigit():
                return self._buttons.get(int(name))
            wanted = name.lower()
            for number in sorted(self._buttons, reverse=True):
                button = self._buttons[number]
                if wanted in (button.text.lower(), button.action_id.lower()) or \
                        button.action_id.lower().endswith("_" + wanted):
                    return button
        return None

    def _press(self, button: RenderedButton) -> None:
        if button.confirm and not self._confirmed(button.confirm):
            self._print("(not confirmed; nothing sent)")
            return
        self._count += 1
        # A click has no command text of its own in the audit: say who pressed what, here.
        self.services.audit.append(self.user, "shell.pressed", detail={
            "action_id": button.action_id, "value": button.value or "", "text": button.text,
            "channel": button.channel, "message_ts": button.message_ts})
        response_url = self.standin.response_url(f"act-{self._count}", channel=button.channel,
                                                 user=self.user, message_ts=button.message_ts)
        body = block_actions_body(action_id=button.action_id, value=button.value or "",
                                  user_id=self.user, channel_id=button.channel,
                                  message_ts=button.message_ts, thread_ts=button.thread_ts,
                                  response_url=response_url, text=button.text,
                                  block_id=button.block_id or "actions")
        self._dispatch(body)

    def _confirmed(self, confirm: dict[str, object]) -> bool:
        title = _plain(confirm.get("title"))
        text = _plain(confirm.get("text"))
        if not self.interactive:
            self._print(f"(confirm: {title}: {text} -> confirmed)")
            return True
        answer = input(f"{title}: {text} [y/N] ")
        return answer.strip().lower() in ("y", "yes")

    def wait_idle(self, timeout: float = 900) -> None:
        worker = self.services.worker
        if worker is not None and not worker.wait_idle(timeout):
            self._print("(still working after the wait; leaving anyway)")

    def close(self) -> None:
        try:
            self.services.audit.append(self.user, "shell.stopped",
                                       detail={"shared_database": self.shared})
        except Exception:  # the database is away: closing must still stop the threads
            log.warning("could not audit the shell's stop", exc_info=True)
        self._unsubscribe()
        self.services.stop_scheduler()
        self.services.stop_worker()
        self.services.close()
        self.standin.stop()


def _plain(value: object) -> str:
    if isinstance(value, dict):
        return str(value.get("text", ""))
    return str(value or "")


def run_shell(settings: Settings, *, user: str, channel: str | None, color: bool,
              shared_database: bool = False) -> int:
    """``qlp-bot shell``: read lines from stdin until EOF or ``exit``."""
    interactive = sys.stdin.isatty()
    shell = LocalShell(settings, user=user, channel=channel, out=sys.stdout,
                       interactive=interactive, color=color, shared_database=shared_database)
    try:
        if interactive:
            print(f"QLP local shell: you are {user} in #{shell.channel}. "
                  "Type /qlp help, or !help. Ctrl-D leaves.", flush=True)
        while True:
            try:
                line = input("qlp> " if interactive else "")
            except EOFError:
                break
            if not interactive and line.strip():
                print(f"> {line.strip()}", flush=True)
            if not shell.handle(line):
                break
            if not interactive:
                shell.settle_outbox()
        shell.wait_idle()
    finally:
        shell.close()
    return 0
