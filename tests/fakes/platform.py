"""A Platform in memory: records every call and fails named operations on demand.

``FakePlatform`` implements :class:`procedures.platforms.base.Platform` and the optional
:class:`procedures.platforms.base.SupportsMaintenance` for tests of the engine and the
playbooks. Each call is appended to ``calls`` (and, if given, to a shared ``log`` list so a
test can assert the order of platform calls and its own steps together).
``fail("switch", times=2, retryable=True)`` makes the next two ``switch`` calls raise.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass
from datetime import timedelta

from procedures.errors import ExternalServiceError, StepFailure
from procedures.model import Slot
from procedures.platforms.base import SlotStatus, TrafficState

OPERATIONS = frozenset({"traffic", "deploy", "wait_ready", "switch", "stop", "slot_url",
                        "set_maintenance", "maintenance"})


@dataclass(frozen=True)
class Fault:
    """One injected failure of one operation."""

    operation: str
    message: str
    retryable: bool = False
    external: bool = False  # ExternalServiceError instead of StepFailure
    retry_after: float | None = None

    def error(self) -> Exception:
        if self.external:
            return ExternalServiceError(
                "fake-platform", self.message, retryable=self.retryable,
                retry_after=self.retry_after,
            )
        return StepFailure(self.message, retryable=self.retryable)


@dataclass(frozen=True)
class Call:
    """One recorded call: the operation and its arguments."""

    operation: str
    args: tuple[object, ...] = ()

    def __str__(self) -> str:
        inner = ", ".join(str(a) for a in self.args)
        return f"{self.operation}({inner})"


class FakePlatform:
    """Blue-green in memory, with call recording and fault injection (thread-safe).

    ``in_maintenance`` is the maintenance mode (``set_maintenance`` / ``maintenance``); it
    changes nothing else here: a test's HTTP double decides what the public URL answers.
    """

    def __init__(
        self,
        *,
        live: Slot | None = Slot.BLUE,
        live_version: str | None = "1.0.0",
        log: list[str] | None = None,
        base_url: str = "http://fake.invalid",
    ) -> None:
        self.calls: list[Call] = []
        self.log = log
        self.base_url = base_url
        self.live = live
        self.slots: dict[Slot, SlotStatus] = {
            slot: SlotStatus(slot, running=False) for slot in Slot
        }
        if live is not None:
            self.slots[live] = SlotStatus(live, running=True, version=live_version,
                                          url=self.slot_url_of(live))
        self.in_maintenance = False
        self._faults: dict[str, deque[Fault]] = {}
        self._lock = threading.Lock()

    # -- fault injection ------------------------------------------------------------------------

    def fail(
        self,
        operation: str,
        times: int = 1,
        *,
        retryable: bool = False,
        external: bool = False,
        message: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        """Make the next ``times`` calls of ``operation`` raise (queued after earlier faults)."""
        if operation not in OPERATIONS:
            raise ValueError(f"unknown operation {operation!r}; one of {sorted(OPERATIONS)}")
        fault = Fault(operation, message or f"{operation} failed (injected)", retryable,
                      external, retry_after)
        with self._lock:
            self._faults.setdefault(operation, deque()).extend([fault] * times)

    def pending_faults(self, operation: str) -> int:
        """How many injected failures of ``operation`` are still to come."""
        with self._lock:
            return len(self._faults.get(operation, ()))

    def called(self, operation: str) -> list[Call]:
        """The recorded calls of one operation."""
        with self._lock:
            return [c for c in self.calls if c.operation == operation]

    def _enter(self, operation: str, *args: object) -> None:
        call = Call(operation, args)
        with self._lock:
            self.calls.append(call)
            if self.log is not None:
                self.log.append(f"platform.{call}")
            queue = self._faults.get(operation)
            fault = queue.popleft() if queue else None
        if fault is not None:
            raise fault.error()

    # -- Platform -------------------------------------------------------------------------------

    def slot_url_of(self, slot: Slot) -> str:
        return f"{self.base_url}/{slot.value}"

    def traffic(self) -> TrafficState:
        self._enter("traffic")
        with self._lock:
            return TrafficState(self.live, dict(self.slots))

    def deploy(self, slot: Slot, version: str) -> SlotStatus:
        self._enter("deploy", slot, version)
        status = SlotStatus(slot, running=True, version=version, url=self.slot_url_of(slot))
        with self._lock:
            self.slots[slot] = status
        return status

    def wait_ready(self, slot: Slot, timeout: timedelta) -> SlotStatus:
        self._enter("wait_ready", slot)
        with self._lock:
            status = self.slots[slot]
        if not status.running:
            raise StepFailure(f"{slot.value} is not running")
        return status

    def switch(self, slot: Slot) -> None:
        self._enter("switch", slot)
        with self._lock:
            self.live = slot

    def stop(self, slot: Slot) -> None:
        self._enter("stop", slot)
        with self._lock:
            self.slots[slot] = SlotStatus(slot, running=False)

    def slot_url(self, slot: Slot) -> str:
        self._enter("slot_url", slot)
        return self.slot_url_of(slot)

    # -- SupportsMaintenance --------------------------------------------------------------------

    def set_maintenance(self, on: bool) -> None:
        self._enter("set_maintenance", bool(on))
        with self._lock:
            self.in_maintenance = bool(on)

    def maintenance(self) -> bool:
        self._enter("maintenance")
        with self._lock:
            return self.in_maintenance
