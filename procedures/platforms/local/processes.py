"""Start, find and stop detached processes, tracked by pid files.

A pid file is JSON: ``{"pid", "argv", "start_ticks", "started_at", "meta"}``. ``find`` trusts it
only if a process with that pid is alive, its ``/proc/<pid>/cmdline`` equals the recorded argv and
its start time (``/proc/<pid>/stat`` field 22) equals the recorded one, so a pid reused by
another program after a reboot or a crash is never signalled.

Detaching and reaping. Each process is started with ``start_new_session=True``: it leads its own
session and process group, so a Ctrl-C or the bot's exit does not reach it, and ``stop`` can
signal the whole group (the process and anything it forked). We do *not* double-fork: the bot
stays the parent of what it started, which is what lets ``wait_ready`` report a crashed slot's
real exit status. To avoid zombies, every ``Popen`` is kept in a registry and ``reap`` polls them
with a non-blocking ``waitpid`` (``Popen.poll``); ``find``, ``exit_status`` and ``stop`` call it,
so dead children are collected whenever the platform looks at them. Nothing ever blocks on a
child except ``stop``, for at most its grace period. A process started by an earlier bot process
is re-parented to init (or a subreaper) when that bot exits, which reaps it.

POSIX only (sessions, process groups, ``/proc``); on a system without ``/proc`` the cmdline and
start-time guards are skipped and only liveness is checked.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

__all__ = [
    "ProcessRecord",
    "exit_status",
    "find",
    "log_tail",
    "read_record",
    "reap",
    "start",
    "stop",
]

_PROC = Path("/proc")
_registry_lock = threading.Lock()
_children: dict[int, subprocess.Popen[bytes]] = {}
_exit_codes: dict[int, int] = {}


@dataclass(frozen=True)
class ProcessRecord:
    """What a pid file says about the process it tracks."""

    pid: int
    argv: list[str]
    start_ticks: int | None = None
    started_at: str = ""
    meta: dict[str, Any] = field(default_factory=dict)


def start(
    argv: Sequence[str],
    log_path: Path,
    pid_path: Path,
    env: Mapping[str, str] | None = None,
    *,
    cwd: Path | str | None = None,
    meta: Mapping[str, Any] | None = None,
) -> int:
    """Start ``argv`` detached (new session, no shell), logging to ``log_path``; return its pid.

    The previous log, if any, is kept as ``<log>.1``. The pid file is written atomically and
    records the argv (and ``meta``) so ``find`` can tell this process from a reused pid.
    """
    argv = [str(arg) for arg in argv]
    if not argv:
        raise ValueError("argv is empty")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    pid_path.parent.mkdir(parents=True, exist_ok=True)
    if log_path.exists():
        os.replace(log_path, log_path.with_name(log_path.name + ".1"))
    reap()
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            close_fds=True,
            start_new_session=True,
            env=dict(env) if env is not None else None,
            cwd=cwd,
        )
    with _registry_lock:
        _children[proc.pid] = proc
        _exit_codes.pop(proc.pid, None)
    record = {
        "pid": proc.pid,
        "argv": argv,
        "start_ticks": _start_ticks(proc.pid),
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "meta": dict(meta or {}),
    }
    _write_atomically(pid_path, json.dumps(record, indent=1) + "\n")
    return proc.pid


def read_record(pid_path: Path) -> ProcessRecord | None:
    """The pid file's record, or None if it is missing or unreadable (not proof of life)."""
    try:
        data = json.loads(pid_path.read_text(encoding="utf-8"))
        pid = int(data["pid"])
        argv = [str(arg) for arg in data["argv"]]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    ticks = data.get("start_ticks")
    meta = data.get("meta")
    return ProcessRecord(
        pid=pid,
        argv=argv,
        start_ticks=int(ticks) if isinstance(ticks, int) else None,
        started_at=str(data.get("started_at", "")),
        meta=dict(meta) if isinstance(meta, dict) else {},
    )


def find(pid_path: Path) -> int | None:
    """The pid recorded in ``pid_path`` if that very process is still alive, else None."""
    record = read_record(pid_path)
    if record is None or record.pid <= 1:
        return None
    return record.pid if _is_recorded_process(record) else None


def exit_status(pid: int, wait: float = 0.0) -> int | None:
    """Exit status of a child this process started and reaped (negative: killed by signal N).

    ``wait`` gives a child that is on its way out (``find`` already disowns a process whose
    ``/proc`` entry is being torn down) up to that many seconds to finish. None if it is still
    running or was not started by this process (its status is unknowable).
    """
    reap()
    with _registry_lock:
        proc = _children.get(pid)
        if proc is None:
            return _exit_codes.get(pid)
    if wait > 0:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=wait)
        reap()
    with _registry_lock:
        return _exit_codes.get(pid)


def reap() -> None:
    """Collect every finished child started by ``start`` (non-blocking); no zombies remain."""
    with _registry_lock:
        for pid, proc in list(_children.items()):
            code = proc.poll()
            if code is not None:
                _exit_codes[pid] = code
                del _children[pid]


def stop(pid_path: Path, grace: float = 5.0) -> bool:
    """SIGTERM the recorded process group, SIGKILL it after ``grace`` seconds; remove the pid file.

    Returns True if a live process was stopped. A pid file that does not describe a live
    process of ours (dead, or the pid now belongs to another program) is just removed.
    """
    pid = find(pid_path)
    stopped = False
    if pid is not None:
        _signal_group(pid, signal.SIGTERM)
        if not _wait_gone(pid, grace):
            _signal_group(pid, signal.SIGKILL)
            _wait_gone(pid, 5.0)
        stopped = True
    with contextlib.suppress(FileNotFoundError):
        pid_path.unlink()
    return stopped


def log_tail(log_path: Path, lines: int = 15, max_bytes: int = 8192) -> str:
    """The last ``lines`` lines of a log file ("" if there is none)."""
    try:
        with open(log_path, "rb") as log:
            log.seek(0, os.SEEK_END)
            size = log.tell()
            log.seek(max(0, size - max_bytes))
            data = log.read()
    except OSError:
        return ""
    text = data.decode("utf-8", errors="replace")
    return "\n".join(text.splitlines()[-lines:])


def _is_recorded_process(record: ProcessRecord) -> bool:
    reap()
    with _registry_lock:
        if record.pid in _exit_codes and record.pid not in _children:
            return False  # our child, already dead and reaped
    if not _alive(record.pid):
        return False
    cmdline = _cmdline(record.pid)
    if cmdline is not None and cmdline != record.argv:
        return False
    if record.start_ticks is not None:
        ticks = _start_ticks(record.pid)
        if ticks is not None and ticks != record.start_ticks:
            return False
    return True


def _alive(pid: int) -> bool:
    """True if ``pid`` exists and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, belongs to someone else; the cmdline check decides
    stat = _stat_fields(pid)
    return stat is None or stat[0] != "Z"


def _cmdline(pid: int) -> list[str] | None:
    try:
        raw = (_PROC / str(pid) / "cmdline").read_bytes()
    except FileNotFoundError:
        return [] if _PROC.is_dir() else None  # gone meanwhile / no procfs here
    except OSError:
        return None
    return [part.decode("utf-8", errors="surrogateescape") for part in raw.split(b"\0")[:-1]]


def _stat_fields(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name: [state, ppid, pgrp, ...]."""
    try:
        raw = (_PROC / str(pid) / "stat").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may itself contain spaces or ')'.
    return raw[raw.rfind(")") + 2 :].split()


def _start_ticks(pid: int) -> int | None:
    fields = _stat_fields(pid)
    if fields is None or len(fields) < 20:
        return None
    try:
        return int(fields[19])  # field 22 overall: starttime, in clock ticks since boot
    except ValueError:
        return None


def _signal_group(pid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pid, sig)  # started with start_new_session: its pgid is its pid
    except ProcessLookupError:
        return
    except PermissionError:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def _wait_gone(pid: int, timeout: float) -> bool:
    with _registry_lock:
        proc = _children.get(pid)
    if proc is not None:
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return False
        with _registry_lock:
            _exit_codes[pid] = code
            _children.pop(pid, None)
        return True
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.05)
    return not _alive(pid)


def _write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
