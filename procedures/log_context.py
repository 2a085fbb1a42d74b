"""What the current thread is working on, for logs and metrics, without a logging library.

:func:`scope` binds fields (``deployment_id``, ``step``, ``environment``, ``kind``,
``slack_user``, ``request_id``, ``worker_id``) in a :class:`~contextvars.ContextVar` for the
duration of a block: the engine binds a run's and then each step's, the bot's listeners a
request's. A logging filter on the bot's side (``bot.logging_setup``) copies them onto every
record, so each log line says what it is about. Nested scopes add to the outer one and are
undone on exit.

The same scope may carry an :class:`Observer`: the bot's metrics. Code deep in a run (a
platform's Azure call, the monitoring loop) reports through :func:`observer` without knowing
who counts; nothing here imports a metrics library.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from types import MappingProxyType
from typing import Any, Protocol, runtime_checkable

__all__ = ["FIELDS", "Observer", "current", "notify", "observer", "scope"]

log = logging.getLogger(__name__)

FIELDS = ("deployment_id", "kind", "environment", "step", "slack_user", "request_id",
          "worker_id")
"""The fields a scope may bind, in the order a text log line shows them."""

_FIELDS: ContextVar[Mapping[str, Any]] = ContextVar(
    "qlp_log_fields", default=MappingProxyType({}))
_OBSERVER: ContextVar[Observer | None] = ContextVar("qlp_observer", default=None)


@runtime_checkable
class Observer(Protocol):
    """What a run reports for metrics. Label values are the code's own words (a step's name,
    a kind, an outcome), never a person's text. Every method must return quickly and never
    raise (:func:`notify` guards the calls anyway)."""

    def run_finished(self, *, kind: str, environment: str, outcome: str) -> None:
        """A run reached a terminal state (``succeeded``, ``rolled_back``, ``failed``...)."""

    def step_finished(self, *, kind: str, step: str, outcome: str, seconds: float) -> None:
        """A step ended (``succeeded``, ``failed``, ``undone``, ``undo_failed``)."""

    def rollback_started(self, *, kind: str, environment: str, trigger: str) -> None:
        """A run started rolling back (``monitoring``, ``step_failed``, ``cancelled``), or a
        rollback run started (``command``)."""

    def monitoring_check(self, *, environment: str, result: str) -> None:
        """One monitoring check of a new version (``ok`` or ``failed``)."""

    def monitoring_warning(self, *, environment: str, reason: str) -> None:
        """Monitoring said something is wrong or unknown (``inconclusive``, ``rollback``...)."""

    def run_claimed(self, *, kind: str, environment: str) -> None:
        """This process's worker claimed a queued run."""

    def azure_call(self, *, service: str, operation: str, result: str,
                   seconds: float) -> None:
        """One Azure SDK call (``ok``, ``throttled``, ``server_error``, ``error``...)."""


def current() -> Mapping[str, Any]:
    """The fields bound in this context (empty outside any scope)."""
    return _FIELDS.get()


def observer() -> Observer | None:
    """The observer bound in this context, if any."""
    return _OBSERVER.get()


@contextlib.contextmanager
def scope(observer: Observer | None = None, **fields: Any) -> Iterator[None]:
    """Bind ``fields`` (None values are left out) and, if given, ``observer`` until the block
    ends."""
    merged = {**_FIELDS.get(), **{k: v for k, v in fields.items() if v is not None}}
    token = _FIELDS.set(merged)
    observer_token = _OBSERVER.set(observer) if observer is not None else None
    try:
        yield
    finally:
        if observer_token is not None:
            _OBSERVER.reset(observer_token)
        _FIELDS.reset(token)


def notify(method: str, target: Observer | None = None, **values: Any) -> None:
    """Call ``method`` of ``target`` (default: the context's observer) with ``values``;
    nothing when there is no observer, and an observer's error is logged, never raised."""
    target = target if target is not None else _OBSERVER.get()
    if target is None:
        return
    try:
        getattr(target, method)(**values)
    except Exception:  # metrics must never break a run
        log.debug("observer %s failed", method, exc_info=True)
