"""Redaction of every log record: no request body, ``response_url``, token or signing secret
reaches a log, at any level, from our code or a library's (Bolt logs a refused request's body
at INFO, slack_sdk its requests at DEBUG).

A ``response_url`` is a capability: whoever reads it may post into the channel for 30 minutes.
A form-encoded Slack body carries one, and a token.

:func:`install` puts :class:`RedactingFilter` in front of every record of the process: a
filter on the root logger alone would not do, since Python consults a logger's filters only for
records logged on that very logger, not for those its children propagate to it. So the filter
is installed as the record factory's last step (every record, whichever logger, is redacted as
it is made) and also on the root logger and its handlers, for records made by hand.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterable
from typing import Any

REDACTED = "[redacted]"

_PATTERNS: list[tuple[re.Pattern[str], str]] = [
    # Slack tokens: bot, user, app-level, configuration, refresh...
    (re.compile(r"\bx(?:ox[a-z]|app)-[0-9A-Za-z-]{6,}"), "xox?-" + REDACTED),
    # Incoming-webhook and response URLs, plain, percent-encoded or JSON-escaped.
    (re.compile(r"(?:https?(?::|%3A)(?://|%2F%2F|\\/\\/))?hooks\.slack(?:-gov)?\.com"
                r"[^\s\"'&<>)]*", re.IGNORECASE), "[redacted response_url]"),
    # A form-encoded body: three or more key=value pairs joined by '&'.
    (re.compile(r"(?:[A-Za-z_][A-Za-z0-9_.\[\]%-]*=[^\s&]*&){2,}"
                r"[A-Za-z_][A-Za-z0-9_.\[\]%-]*=[^\s&)]*"), "[redacted request body]"),
    # An interactivity body: payload=<JSON, percent-encoded>.
    (re.compile(r"\bpayload=(?:%7B|\{)\S*", re.IGNORECASE), "payload=" + REDACTED),
    # Keyed values in JSON, Python reprs, form or header notation.
    (re.compile(r"""(["']?\b(?:response_url|response_urls|token|access_token|bot_token|"""
                r"""signing_secret|client_secret|trigger_id|authorization)\b["']?"""
                r"""\s*(?:=|:)\s*)(?:"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|[^\s,;&}\])]+)""",
                re.IGNORECASE), r"\1" + REDACTED),
    # A parsed Slack body as a dict's repr (Bolt's warnings about a request end with it).
    (re.compile(r"""\{\s*['"](?:token|type|api_app_id|team_id|user_id|command|payload|team|"""
                r"""user|actions|enterprise|is_enterprise_install|container)['"]\s*:.*""",
                re.DOTALL), "[redacted request body]"),
    # "... body: <anything>" (Bolt's messages about a request end with its body).
    (re.compile(r"(\b(?:request )?body\s*[:=]\s*).+", re.IGNORECASE | re.DOTALL),
     r"\1" + REDACTED),
]


class RedactingFilter(logging.Filter):
    """Rewrites a record's message (arguments merged in), traceback and stack text with every
    secret and request body taken out. Never drops a record."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self._secrets: tuple[str, ...] = ()
        self.add_secrets(secrets)

    def add_secrets(self, secrets: Iterable[str]) -> None:
        """Also take these exact strings out (the signing secret, the tokens of the settings);
        short or empty ones are ignored (they would blank out ordinary words)."""
        with self._lock:
            known = set(self._secrets) | {s for s in secrets if s and len(s) >= 8}
            self._secrets = tuple(sorted(known, key=len, reverse=True))

    def redact(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, REDACTED)
        for pattern, replacement in _PATTERNS:
            text = pattern.sub(replacement, text)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "_qlp_redacted", False):
            return True
        try:
            message = record.getMessage()
        except Exception:  # a broken format string: keep what logging would have shown
            message = str(record.msg)
        record.msg = self.redact(message)
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        if record.stack_info:
            record.stack_info = self.redact(record.stack_info)
        record._qlp_redacted = True
        return True


_SECRET_FIELD = re.compile(r"token|secret|password|(?<!_id)key$|keys$")


def settings_secrets(settings: Any) -> list[str]:
    """The values of every secret-looking field of ``settings`` (tokens, secrets, passwords,
    keys; comma-separated lists split), for :func:`install`."""
    values: list[str] = []
    for name in type(settings).model_fields:
        if not _SECRET_FIELD.search(name) or name.endswith("_id"):
            continue
        value = getattr(settings, name, None)
        if isinstance(value, str):
            values.append(value)
            values.extend(part.split(":", 1)[-1].strip() for part in value.split(","))
    return values


_installed: RedactingFilter | None = None
_previous_factory: Any = None
_install_lock = threading.Lock()


def install(secrets: Iterable[str] = ()) -> RedactingFilter:
    """Redact every log record of this process from now on (idempotent; later calls only add
    ``secrets``). Returns the filter."""
    global _installed, _previous_factory
    with _install_lock:
        if _installed is None:
            redacting = RedactingFilter(secrets)
            previous = _previous_factory = logging.getLogRecordFactory()

            def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
                record = previous(*args, **kwargs)
                redacting.filter(record)
                return record

            logging.setLogRecordFactory(factory)
            _installed = redacting
        else:
            _installed.add_secrets(secrets)
        root = logging.getLogger()
        for target in (root, *root.handlers):
            if _installed not in target.filters:
                target.addFilter(_installed)
        return _installed


def uninstall() -> None:
    """Undo :func:`install` (tests)."""
    global _installed, _previous_factory
    with _install_lock:
        if _installed is None:
            return
        logging.setLogRecordFactory(_previous_factory)
        root = logging.getLogger()
        for target in (root, *root.handlers):
            if _installed in target.filters:
                target.removeFilter(_installed)
        _installed = _previous_factory = None
