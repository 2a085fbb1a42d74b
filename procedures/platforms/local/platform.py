"""The local platform: blue and green slots as real processes behind a real router process.

Layout under ``state_dir/<environment>/``::

    blue.pid  blue.log  green.pid  green.log    one slot process each (argv from the policy)
    router.pid  router.log  router.json         the router process and its state file
    .lock                                       serialises changes across bot threads/processes

Every process is detached (own session) and tracked by a pid file that records its argv, so a
restarted bot (a new ``LocalPlatform`` object) finds the slots and the router again, and a pid
reused by another program is never trusted. The live colour is read from the running router
(``GET /_qlp/router``), never from a file; the router itself persists it in ``router.json`` so
that a restarted router serves the same colour. The same holds for maintenance mode
(``set_maintenance``, the optional ``SupportsMaintenance`` capability). The router also counts
requests and 5xx answers per colour, which ``procedures.platforms.local.metrics.LocalMetrics``
reads through ``router_state``.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import os
import re
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from procedures.clock import Clock, SystemClock
from procedures.errors import ConfigError, ExternalServiceError, StepFailure
from procedures.migrations.backup import PgDump
from procedures.model import Slot
from procedures.platforms.base import DatabaseBackup, SlotStatus, TrafficState
from procedures.platforms.local import processes
from procedures.policy import Environment, LocalPlatformSettings

ROUTER_MODULE = "procedures.platforms.local.router"
POLL_INTERVAL = 0.1
ROUTER_START_TIMEOUT = 10.0
LOG_TAIL_LINES = 15
_ENV_NAME = re.compile(r"[a-z][a-z0-9-]{0,30}")
_BACKUP_NAME = re.compile(r"[A-Za-z0-9][-\w.]{0,127}")
_PLACEHOLDER = re.compile(r"\{(port|version|slot)\}")
# The only variables a slot or the router inherits from the bot: never the bot's secrets.
_INHERITED_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR", "PYTHONPATH",
                  "VIRTUAL_ENV")


class LocalPlatform:
    """Blue-green on one machine: each colour is a process on its own port, and a router
    process on the environment's URL forwards to the live one.

    ``environment_name`` names the state sub-directory; ``env`` must be a ``local`` environment.
    ``extra_env`` is added to every slot's environment (e.g. ``QLP_SAMPLE_HEALTHY_FOR``); slots
    also get ``QLP_ENVIRONMENT``, ``QLP_SLOT``, ``QLP_PORT`` and ``QLP_VERSION``. ``clock`` and
    ``sleep`` drive the polling in ``wait_ready``. Needs no Slack, database or bot.
    """

    def __init__(
        self,
        environment_name: str,
        env: Environment,
        state_dir: Path,
        *,
        clock: Clock | None = None,
        sleep: Callable[[float], None] = time.sleep,
        extra_env: Mapping[str, str] | None = None,
        stop_grace: float = 5.0,
        backups_dir: Path | None = None,
        pg_dump: PgDump | None = None,
    ) -> None:
        if env.local is None:
            raise ConfigError(f"environments.{environment_name}: the local platform needs a "
                              "'local:' section", key=f"environments.{environment_name}.local")
        if not _ENV_NAME.fullmatch(environment_name):
            raise ConfigError(f"{environment_name!r} is not an environment name (lowercase "
                              "letters, digits, -)", key="environments")
        parts = urlsplit(env.url)
        if parts.scheme != "http":
            key = f"environments.{environment_name}.url"
            raise ConfigError(f"{key}: the local router speaks plain http, not {parts.scheme}",
                              key=key)
        self.name = environment_name
        self.env = env
        self.settings: LocalPlatformSettings = env.local
        self.directory = Path(state_dir) / environment_name
        # The bot's state_dir is <QLP_HOME>/platform, so by default <QLP_HOME>/backups: where
        # the migration playbook writes its dumps too.
        self.backups_dir = Path(backups_dir or Path(state_dir).parent / "backups")
        self._pg_dump = pg_dump or PgDump()
        self._clock = clock or SystemClock()
        self._sleep = sleep
        self._extra_env = dict(extra_env or {})
        self._grace = stop_grace
        self._router_port = parts.port or 80
        self._bind_host, control_host = _router_hosts(parts.hostname or "127.0.0.1")
        self._control_url = f"http://{control_host}:{self._router_port}/_qlp/router"
        self._client: httpx.Client | None = None
        self._client_lock = threading.Lock()

    # -- the Platform protocol -------------------------------------------------------------

    def traffic(self) -> TrafficState:
        """The live colour (asked of the router, started if needed) and each slot's state."""
        info = self.ensure_router()
        live = info.get("live")
        return TrafficState(
            live=Slot(live) if live in (Slot.BLUE.value, Slot.GREEN.value) else None,
            slots={slot: self._slot_status(slot) for slot in Slot},
        )

    def deploy(self, slot: Slot, version: str) -> SlotStatus:
        """Start ``version`` in ``slot``, replacing what ran there; never the live slot.

        Idempotent: if the same command already runs in the slot, it is left alone.
        """
        slot = Slot(slot)
        _check_version(version)
        argv = self.slot_argv(slot, version)
        pid_path = self._pid_path(slot)
        with self._locked():
            info = self._ensure_router()
            if info.get("live") == slot.value:
                raise StepFailure(
                    f"refusing to deploy {version} into the {slot} slot of {self.name}: "
                    "it is the live slot",
                    hint=f"deploy into {slot.other} and switch, or switch away from {slot} first",
                )
            record = processes.read_record(pid_path)
            pid = processes.find(pid_path)
            if pid is not None and record is not None and record.argv == argv:
                return SlotStatus(slot, True, version, self.slot_url(slot),
                                  detail=f"pid {pid}, already running")
            processes.stop(pid_path, self._grace)
            port = self._slot_port(slot)
            if _port_in_use("127.0.0.1", port):
                raise StepFailure(
                    f"port {port} of the {slot} slot of {self.name} is held by a process this "
                    "platform did not start",
                    hint="stop that process or give the slot another port in the policy file",
                )
            pid = processes.start(
                argv, self._log_path(slot), pid_path, env=self._child_env(slot, version),
                cwd=self.settings.workdir,
                meta={"slot": slot.value, "version": version, "port": port},
            )
        return SlotStatus(slot, True, version, self.slot_url(slot), detail=f"pid {pid} started")

    def wait_ready(self, slot: Slot, timeout: timedelta) -> SlotStatus:
        """Poll the slot's first health path until it answers 200, the process dies, or
        ``timeout`` passes (StepFailure naming the URL and the last error)."""
        slot = Slot(slot)
        pid_path = self._pid_path(slot)
        record = processes.read_record(pid_path)
        if record is None:
            raise StepFailure(f"nothing is deployed in the {slot} slot of {self.name}")
        expected = record.meta.get("version")
        url = self.slot_url(slot) + self.env.health[0]
        started = self._clock.now()
        deadline = started + timeout
        last_error = "no answer yet"
        http = self._http()
        while True:
            if processes.find(pid_path) is None:
                self._raise_exited(slot, record)
            remaining = (deadline - self._clock.now()).total_seconds()
            if remaining <= 0:
                break
            try:
                response = http.get(url, timeout=httpx.Timeout(
                    min(5.0, remaining), connect=min(1.0, remaining)))
            except httpx.HTTPError as exc:
                last_error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            else:
                reported = _reported_version(response)
                if response.status_code != 200:
                    last_error = f"HTTP {response.status_code}"
                elif expected and reported and reported != expected:
                    last_error = f"answered by version {reported}, expected {expected}"
                else:
                    elapsed = (self._clock.now() - started).total_seconds()
                    return SlotStatus(slot, True, reported or expected, self.slot_url(slot),
                                      detail=f"pid {record.pid}, healthy after {elapsed:.1f} s")
            if self._clock.now() >= deadline:
                break
            self._sleep(POLL_INTERVAL)
        if processes.find(pid_path) is None:
            self._raise_exited(slot, record)
        raise StepFailure(
            f"the {slot} slot of {self.name} was not ready within {_seconds(timeout)}: "
            f"GET {url}: {last_error}",
            hint=self._log_hint(self._log_path(slot)),
        )

    def switch(self, slot: Slot) -> None:
        """Make the router send all traffic to ``slot``; verified by reading it back."""
        slot = Slot(slot)
        with self._locked():
            self._ensure_router()
            if processes.find(self._pid_path(slot)) is None:
                raise StepFailure(
                    f"refusing to switch {self.name} to the {slot} slot: nothing runs there",
                    hint="deploy a version into it and wait until it is ready first",
                )
            self._put_control({"live": slot.value})
            info = self._router_info(timeout=2.0)
            if info is None or info.get("live") != slot.value:
                raise StepFailure(
                    f"the router of {self.name} did not take the switch to {slot} "
                    f"(it reports {info.get('live') if info else 'nothing'})",
                    retryable=True,
                )

    def stop(self, slot: Slot) -> None:
        """Stop the slot's process (fine if it is already stopped); never the live slot."""
        slot = Slot(slot)
        with self._locked():
            info = self._ensure_router()
            if info.get("live") == slot.value:
                raise StepFailure(
                    f"refusing to stop the {slot} slot of {self.name}: it is the live slot",
                    hint=f"switch to {slot.other} first",
                )
            processes.stop(self._pid_path(slot), self._grace)

    def slot_url(self, slot: Slot) -> str:
        """Where ``slot`` answers directly, bypassing the router."""
        return f"http://127.0.0.1:{self._slot_port(Slot(slot))}"

    # -- maintenance mode (procedures.platforms.base.SupportsMaintenance) -------------------

    def set_maintenance(self, on: bool) -> None:
        """Make the router answer every public request with 503 ``{"maintenance": true}``
        (``on``) or forward again (``not on``); persisted by the router, verified by reading
        it back. The slots and the control plane are unaffected."""
        with self._locked():
            self._ensure_router()
            self._put_control({"maintenance": bool(on)})
            info = self._router_info(timeout=2.0)
            if info is None or info.get("maintenance") is not bool(on):
                raise StepFailure(
                    f"the router of {self.name} did not take maintenance mode "
                    f"{'on' if on else 'off'} (it reports "
                    f"{info.get('maintenance') if info else 'nothing'})",
                    retryable=True,
                )

    def maintenance(self) -> bool:
        """Whether the router is in maintenance mode (the router is started if needed)."""
        return bool(self.ensure_router().get("maintenance", False))

    # -- beyond the protocol ---------------------------------------------------------------

    def router_state(self) -> dict[str, Any] | None:
        """The router's control state (``live``, ``maintenance``, ``pid``, ``started``,
        ``stats``) if a router answers now, else None. Never starts the router: a reader of
        metrics must not bring a stopped router back."""
        return self._router_info(timeout=2.0)

    def ensure_router(self) -> dict[str, Any]:
        """Start the router on the environment's URL unless it runs; return its control state
        (``{"live", "upstreams", "pid"}``)."""
        with self._locked():
            return self._ensure_router()

    # -- SupportsBackup ----------------------------------------------------------------------

    def backup_target(self) -> str | None:
        """The environment's database (``database_url``, shown without its password), or None
        when it has none."""
        if not self.env.database_url:
            return None
        return _safe_url(self.env.database_url)

    def take_backup(self, name: str, *, report: Callable[[str], None],
                    sleep: Callable[[float], None]) -> DatabaseBackup:
        """``pg_dump --format=custom`` of ``database_url`` to ``<backups_dir>/<env>/<name>.dump``
        (``PgDump``: no shell, no password in argv, a 0600 file removed again on failure).
        A failing pg_dump raises StepFailure: no backup, so nothing is switched."""
        url = self.env.database_url
        if not url:
            return DatabaseBackup(False, reason="no database configured: nothing to back up")
        if not _BACKUP_NAME.fullmatch(name):
            raise StepFailure(f"{name!r} is not a backup name (letters, digits, -_.)")
        target = self.backups_dir / self.name / f"{name}.dump"
        started = self._clock.now()
        try:
            dump = self._pg_dump.dump(url, target, wait=lambda: sleep(0))
        except StepFailure as exc:
            raise StepFailure(exc.message, hint="No backup, so nothing was switched: the live "
                              "slot is untouched. Fix the database or pg_dump and deploy "
                              "again.") from None
        return DatabaseBackup(True, name=target.name, location=str(dump.path),
                              size_bytes=dump.size,
                              duration=self._clock.now() - started,
                              restore_hint=f"pg_restore --clean --dbname=<database> {dump.path}")

    def shutdown_all(self) -> None:
        """Stop the router and both slots, live or not (for tests and demos)."""
        with self._locked():
            processes.stop(self._router_pid_path, self._grace)
            for slot in Slot:
                processes.stop(self._pid_path(slot), self._grace)

    def close(self) -> None:
        """Release the HTTP client (processes keep running); the object stays usable."""
        with self._client_lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()

    def slot_argv(self, slot: Slot, version: str) -> list[str]:
        """The slot's argv: the policy's command with ``{port}``, ``{version}`` and ``{slot}``
        replaced literally in each element (one pass, so substituted text is never re-read)."""
        values = {"port": str(self._slot_port(slot)), "version": version,
                  "slot": Slot(slot).value}
        argv = [_PLACEHOLDER.sub(lambda match: values[match[1]], element)
                for element in self.settings.command]
        if argv[0] in ("python", "python3"):
            argv[0] = sys.executable  # the bot's own interpreter (and its virtualenv)
        return argv

    @property
    def router_url(self) -> str:
        """The public URL the router serves."""
        return self.env.url

    def pid_path(self, slot: Slot | None = None) -> Path:
        """The pid file of ``slot``, or of the router when ``slot`` is None."""
        return self._router_pid_path if slot is None else self._pid_path(Slot(slot))

    # -- the router ------------------------------------------------------------------------

    def _ensure_router(self) -> dict[str, Any]:
        pid_path = self._router_pid_path
        argv = self._router_argv()
        pid = processes.find(pid_path)
        if pid is not None:
            record = processes.read_record(pid_path)
            if record is not None and record.argv == argv:
                info = self._await_router(pid, ROUTER_START_TIMEOUT)
                if info is not None:
                    return info
            # Another configuration (ports, interpreter) or not answering: start afresh;
            # the state file keeps the live colour across the restart.
            processes.stop(pid_path, self._grace)
        if _port_in_use(self._connect_host, self._router_port):
            info = self._router_info(timeout=1.0)
            what = (f"a QLP router (pid {info.get('pid')}) not started from {self.directory}"
                    if info else "another process")
            raise StepFailure(
                f"cannot start the router of {self.name}: port {self._router_port} of "
                f"{self.env.url} is held by {what}",
                hint="stop it, or change the environment's url in the policy file",
            )
        self.directory.mkdir(parents=True, exist_ok=True)
        pid = processes.start(argv, self.directory / "router.log", pid_path,
                              env=self._child_env(), meta={"role": "router"})
        info = self._await_router(pid, ROUTER_START_TIMEOUT)
        if info is None:
            code = processes.exit_status(pid, wait=1.0)
            status = f"exited with status {code}" if code is not None else "is not answering"
            processes.stop(pid_path, self._grace)
            raise StepFailure(
                f"the router of {self.name} on {self.env.url} {status}",
                hint=self._log_hint(self.directory / "router.log"),
            )
        return info

    def _router_argv(self) -> list[str]:
        return [
            sys.executable, "-m", ROUTER_MODULE,
            "--listen", f"{self._bind_host}:{self._router_port}",
            "--state-file", str(self.directory / "router.json"),
            "--upstream", f"blue={self.settings.slots['blue']}",
            "--upstream", f"green={self.settings.slots['green']}",
        ]

    def _await_router(self, pid: int, timeout: float) -> dict[str, Any] | None:
        """Poll the control plane until the router with ``pid`` answers; None if it died or
        did not answer in time."""
        deadline = time.monotonic() + timeout
        while True:
            info = self._router_info(timeout=1.0)
            if info is not None and info.get("pid") == pid:
                return info
            if processes.find(self._router_pid_path) != pid or time.monotonic() >= deadline:
                return None
            time.sleep(0.05)

    def _put_control(self, change: dict[str, Any]) -> None:
        try:
            response = self._http().put(self._control_url, json=change, timeout=5.0)
        except httpx.HTTPError as exc:
            raise ExternalServiceError("local router", f"PUT {self._control_url}: {exc}",
                                       retryable=True) from exc
        if response.status_code != 200:
            raise ExternalServiceError(
                "local router",
                f"PUT {self._control_url} answered {response.status_code}: "
                f"{response.text[:200]}",
                retryable=response.status_code >= 500,
            )

    def _router_info(self, timeout: float) -> dict[str, Any] | None:
        try:
            response = self._http().get(self._control_url, timeout=timeout)
            data = response.json() if response.status_code == 200 else None
        except (httpx.HTTPError, ValueError):
            return None
        return data if isinstance(data, dict) and "live" in data else None

    # -- slots -----------------------------------------------------------------------------

    def _slot_status(self, slot: Slot) -> SlotStatus:
        pid_path = self._pid_path(slot)
        record = processes.read_record(pid_path)
        pid = processes.find(pid_path)
        url = self.slot_url(slot)
        if pid is None or record is None:
            detail = "not running"
            if record is not None:
                code = processes.exit_status(record.pid)
                detail = (f"exited with status {code}" if code is not None
                          else "not running (stale pid file)")
            return SlotStatus(slot, False, None, url, detail=detail)
        recorded = record.meta.get("version")
        try:
            response = self._http().get(url + self.env.health[0], timeout=1.0)
        except httpx.HTTPError as exc:
            return SlotStatus(slot, True, recorded, url,
                              detail=f"pid {pid}, health: {type(exc).__name__}")
        reported = _reported_version(response)
        health = "healthy" if response.status_code == 200 else f"health HTTP {response.status_code}"
        return SlotStatus(slot, True, reported or recorded, url, detail=f"pid {pid}, {health}")

    def _raise_exited(self, slot: Slot, record: processes.ProcessRecord) -> None:
        code = processes.exit_status(record.pid, wait=2.0)
        if code is None:
            status = "is no longer running"
        elif code < 0:
            status = f"was killed by signal {-code}"
        else:
            status = f"exited with status {code}"
        raise StepFailure(
            f"the {slot} slot of {self.name} ({record.meta.get('version', '?')}, pid "
            f"{record.pid}) {status}",
            hint=self._log_hint(self._log_path(slot)),
        )

    def _child_env(self, slot: Slot | None = None, version: str | None = None) -> dict[str, str]:
        env = {name: os.environ[name] for name in _INHERITED_ENV if name in os.environ}
        env["PYTHONUNBUFFERED"] = "1"  # so a crash's last words reach the log
        env["QLP_ENVIRONMENT"] = self.name
        if slot is not None and version is not None:
            env.update(self._extra_env)
            env.update(QLP_SLOT=slot.value, QLP_PORT=str(self._slot_port(slot)),
                       QLP_VERSION=version)
        return env

    def _slot_port(self, slot: Slot) -> int:
        return self.settings.slots[Slot(slot).value]

    def _pid_path(self, slot: Slot) -> Path:
        return self.directory / f"{slot.value}.pid"

    def _log_path(self, slot: Slot) -> Path:
        return self.directory / f"{slot.value}.log"

    @property
    def _router_pid_path(self) -> Path:
        return self.directory / "router.pid"

    @property
    def _connect_host(self) -> str:
        return urlsplit(self._control_url).hostname or "127.0.0.1"

    def _http(self) -> httpx.Client:
        # One client per platform: building one costs ~20 ms (its TLS context). No proxies
        # from the environment: these URLs are all on this machine.
        with self._client_lock:
            if self._client is None:
                self._client = httpx.Client(trust_env=False)
            return self._client

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """One change at a time per environment, across threads and bot processes."""
        self.directory.mkdir(parents=True, exist_ok=True)
        with open(self.directory / ".lock", "a+b") as handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)

    @staticmethod
    def _log_hint(log_path: Path) -> str | None:
        tail = processes.log_tail(log_path, LOG_TAIL_LINES)
        return f"last lines of {log_path}:\n{tail}" if tail else None


def _router_hosts(hostname: str) -> tuple[str, str]:
    """(address the router binds, address the bot uses for its loopback-only control plane).

    A loopback URL binds loopback only; any other host name means "reachable from elsewhere",
    so the router binds every interface and the bot still talks to it over loopback.
    """
    if hostname == "localhost":
        return "127.0.0.1", "127.0.0.1"
    try:
        address = ipaddress.ip_address(hostname)
    except ValueError:
        return "0.0.0.0", "127.0.0.1"  # noqa: S104 (a non-loopback URL asks to be reachable)
    if address.is_loopback:
        return hostname, f"[{hostname}]" if address.version == 6 else hostname
    if address.version == 6:
        return "::", "[::1]"
    return "0.0.0.0", "127.0.0.1"  # noqa: S104 (a non-loopback URL asks to be reachable)


def _port_in_use(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host.strip("[]"), port), timeout=0.3):
            return True
    except OSError:
        return False


def _reported_version(response: httpx.Response) -> str | None:
    try:
        data = response.json()
    except ValueError:
        return None
    version = data.get("version") if isinstance(data, dict) else None
    return str(version) if version is not None else None


def _check_version(version: str) -> None:
    # The bot validates versions against a strict pattern; this only keeps argv exec-able.
    if not version or len(version) > 128 or any(ord(ch) < 32 or ord(ch) == 127 for ch in version):
        raise StepFailure(f"{version!r} cannot be passed to a process as a version")


def _seconds(delta: timedelta) -> str:
    return f"{delta.total_seconds():g} s"


def _safe_url(url: str) -> str:
    """``url`` without its password (``postgresql://qlp@127.0.0.1:5432/qlp``)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = (f"{parts.username}@" if parts.username else "") + host
    if parts.port:
        netloc += f":{parts.port}"
    return parts._replace(netloc=netloc).geturl()
