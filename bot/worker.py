"""The background worker: the only place long work runs (never a Bolt listener thread).

It loops over its tasks (deliver the outbox, run queued deployments, ...) until none has
anything to do, then waits to be woken or for the poll interval to pass.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Protocol

log = logging.getLogger(__name__)


class WorkerTask(Protocol):
    """One kind of background work."""

    name: str

    def run_once(self) -> bool:
        """Do one unit of work; return True if there was any (so the loop goes again)."""
        ...

    def busy(self) -> bool:
        """True while work is queued or under way (the shell waits for False)."""
        ...


class Worker:
    """Runs tasks on one background thread."""

    def __init__(self, tasks: list[WorkerTask], poll_interval: float = 0.25) -> None:
        self.tasks = tasks
        self.poll_interval = poll_interval
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_loop = 0.0
        self._last_error: str | None = None
        self._in_pass = threading.Event()

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="qlp-worker", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 10) -> bool:
        """Stop after the task in hand; False if the loop was still busy after ``timeout``
        seconds (a call that hangs: the process ends under it)."""
        self._stop.set()
        self._wake.set()
        ended = True
        if self._thread is not None:
            self._thread.join(timeout)
            ended = not self._thread.is_alive()
            self._thread = None
        return ended

    def wake(self) -> None:
        """Work was queued: look now instead of at the next poll."""
        self._wake.set()

    def health(self) -> str:
        """``ok`` while the loop turns, ``stopped`` or ``stalled`` otherwise."""
        if self._thread is None or not self._thread.is_alive():
            return "stopped"
        if time.monotonic() - self._last_loop > max(30.0, self.poll_interval * 20):
            return "stalled"
        return "ok"

    def busy(self) -> bool:
        return self._in_pass.is_set() or any(task.busy() for task in self.tasks)

    def wait_idle(self, timeout: float) -> bool:
        """Block until no task has work (the local shell's piped mode); False on timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.wake()
            if not self.busy():
                return True
            time.sleep(0.05)
        return False

    def run_pass(self) -> bool:
        """Run every task until none did anything; True if any did. (Tests call this.)"""
        did_any = False
        self._in_pass.set()
        try:
            while not self._stop.is_set():
                did = False
                for task in self.tasks:
                    try:
                        did = task.run_once() or did
                    except Exception as error:  # a failing task must not kill the worker
                        self._last_error = f"{task.name}: {error}"
                        log.exception("worker task %s failed", task.name)
                did_any = did_any or did
                if not did:
                    break
        finally:
            self._in_pass.clear()
        return did_any

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._last_loop = time.monotonic()
            self.run_pass()
            self._wake.wait(self.poll_interval)
            self._wake.clear()
