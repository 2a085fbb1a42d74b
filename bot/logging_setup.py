"""The process's logging: JSON lines in ``serve`` and ``socket`` modes, readable text in the
shell and the maintenance commands, or whatever ``QLP_LOG_FORMAT`` (``json``/``text``) says.

Every line carries what it is about: :class:`ContextFilter` copies the fields bound by
:func:`procedures.log_context.scope` (the engine binds a run's deployment id, kind,
environment and worker id, then each step's name; the listeners bind the Slack user and the
request id) and the process's own (its worker id) onto each record. The JSON formatter
(python-json-logger) writes them as keys; the text formatter appends them in brackets.

Redaction (``bot.log_redaction``) applies to both: records are redacted as they are made, and
the JSON formatter writes the redacted traceback text, never a freshly formatted one.

Third-party noise is handled at its cause: waitress warns "Task queue depth is N" for every
request that waits for a thread, which ``/metrics`` shows better (the requests' ack latency):
its ``waitress.queue`` logger is set to ERROR; azure-core logs every request at INFO: the
``azure`` loggers are set to WARNING.
"""

from __future__ import annotations

import copy
import logging
import sys
import threading
from typing import IO, Any

from pythonjsonlogger.json import JsonFormatter

from procedures.log_context import FIELDS, current

__all__ = ["ContextFilter", "QlpJsonFormatter", "QlpTextFormatter", "configure",
           "set_process_fields"]

JSON_MODES = frozenset({"serve", "socket"})
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

_process_fields: dict[str, Any] = {}
_lock = threading.Lock()


def set_process_fields(**fields: Any) -> None:
    """Fields every line of this process carries unless a scope says otherwise (the worker
    id, once the services are built)."""
    with _lock:
        _process_fields.update({k: v for k, v in fields.items() if v is not None})


class ContextFilter(logging.Filter):
    """Puts the bound fields (:data:`procedures.log_context.FIELDS`) on each record it
    passes; never drops one."""

    def filter(self, record: logging.LogRecord) -> bool:
        fields = {**_process_fields, **current()}
        for name in FIELDS:
            if name in fields and not hasattr(record, name):
                setattr(record, name, fields[name])
        return True


class QlpJsonFormatter(JsonFormatter):
    """One JSON object a line: ``time``, ``level``, ``logger``, ``thread``, ``message``, the
    context fields, and ``exc_info`` (the redacted traceback text) when there is one."""

    def __init__(self) -> None:
        super().__init__(
            "%(asctime)s %(levelname)s %(name)s %(threadName)s %(message)s",
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger",
                           "threadName": "thread"},
            datefmt="%Y-%m-%dT%H:%M:%S%z",
        )

    def format(self, record: logging.LogRecord) -> str:
        if record.exc_info and record.exc_text:
            # The redaction filter has already written the traceback as text without secrets:
            # use it rather than formatting the exception again.
            record = copy.copy(record)
            record.exc_info = None
        return super().format(record)


class QlpTextFormatter(logging.Formatter):
    """``time LEVEL logger: message [deployment_id=7 step=monitor ...]``."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        about = " ".join(f"{name}={getattr(record, name)}" for name in FIELDS
                         if getattr(record, name, None) is not None)
        if not about:
            return text
        first, newline, rest = text.partition("\n")
        return f"{first} [{about}]{newline}{rest}"


def wants_json(mode: str, log_format: str | None) -> bool:
    """JSON for ``serve`` and ``socket`` unless ``QLP_LOG_FORMAT`` says ``text``; text
    elsewhere unless it says ``json``."""
    chosen = (log_format or "").strip().lower()
    if chosen in ("json", "text"):
        return chosen == "json"
    return mode in JSON_MODES


def configure(*, level: str, mode: str, log_format: str | None = None,
              stream: IO[str] | None = None) -> logging.Handler | None:
    """Log to ``stream`` (stderr) in the format :func:`wants_json` picks, at ``level``;
    returns the handler. A handler an earlier call installed is replaced. Like
    ``logging.basicConfig``, no handler is added to a root logger that already has one of
    someone else's (a test runner's) unless ``stream`` is given."""
    root = logging.getLogger()
    root.setLevel(level.upper())
    quiet_third_parties()
    for old in [h for h in root.handlers if isinstance(h, _QlpHandler)]:
        root.removeHandler(old)
    if stream is None and root.handlers:
        return None
    handler = _QlpHandler(stream or sys.stderr)
    handler.setFormatter(QlpJsonFormatter() if wants_json(mode, log_format)
                         else QlpTextFormatter())
    handler.addFilter(ContextFilter())
    root.addHandler(handler)
    return handler


class _QlpHandler(logging.StreamHandler):
    """The handler :func:`configure` installs (so a second call replaces it)."""


def quiet_third_parties() -> None:
    """The levels that keep libraries' routine chatter out (see the module's docstring)."""
    logging.getLogger("azure").setLevel(logging.WARNING)  # azure-core logs every request
    logging.getLogger("waitress.queue").setLevel(logging.ERROR)  # one warning per queued task
