"""The audit key from the settings, and ``qlp-bot audit verify|anchor``.

The key (``QLP_AUDIT_KEY``, at least 32 characters) signs every audit row (HMAC-SHA256, see
``storage.audit``); it is never written to the database. Without it, the bot uses a key it
generates once in ``QLP_HOME/audit.key`` (mode 0600): enough for the local shell and the demo,
which say nothing about it; ``serve`` and ``socket`` warn loudly at start, and ``doctor`` too,
because that file sits beside the data (a container's is lost when it is replaced). Old keys
(``QLP_AUDIT_OLD_KEYS``) verify the rows they signed before a rotation.

Anchors: chain heads kept outside the database. The scheduled ``bot.schedule.audit_anchor``
appends them to the anchor file (``QLP_AUDIT_ANCHOR_FILE``, default
``QLP_HOME/audit-anchors.jsonl``), writes them to the log and posts them to
``QLP_AUDIT_CHANNEL`` through the outbox. ``verify`` compares the chain with the anchor file,
with the anchors the outbox posted, and with any file given by ``--anchors`` (a saved log or an
export of the audit channel: every line with ``audit anchor: row #N hash H`` counts).
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from bot.settings import Settings
from procedures.errors import ConfigError
from storage.audit import Anchor, AuditKey, AuditKeyring, use_keyring

if TYPE_CHECKING:
    from procedures.doctor import Check, CheckResult
    from storage.db import Database

log = logging.getLogger(__name__)

KEY_FILE = "audit.key"
ANCHOR_FILE = "audit-anchors.jsonl"
ANCHOR_DEDUP_PREFIX = "audit-anchor:"
EXIT_BROKEN = 1
EXIT_KEY = 2

_ANCHOR_LINE = re.compile(r"audit anchor: row #(\d+),? hash `?([0-9a-f]{64})`?")


@dataclass(frozen=True)
class KeySource:
    """The keyring to sign and verify with, and where its current key came from."""

    keyring: AuditKeyring | None
    origin: str
    from_settings: bool


def key_file(settings: Settings) -> Path:
    return settings.qlp_home / KEY_FILE


def anchor_file(settings: Settings) -> Path:
    return settings.qlp_audit_anchor_file or settings.qlp_home / ANCHOR_FILE


def _key(secret: str, key_id: str | None, name: str) -> AuditKey:
    try:
        return AuditKey.of(secret.strip(), key_id)
    except ValueError as error:
        raise ConfigError(f"{name}: {error}", key=name) from None


def _old_keys(text: str | None) -> list[AuditKey]:
    keys = []
    for item in (text or "").split(","):
        item = item.strip()
        if not item:
            continue
        key_id, sep, secret = item.partition(":")
        if sep and 1 <= len(key_id) <= 16 and len(secret) >= 32:
            keys.append(_key(secret, key_id, "QLP_AUDIT_OLD_KEYS"))
        else:
            keys.append(_key(item, None, "QLP_AUDIT_OLD_KEYS"))
    return keys


def _read_key_file(path: Path, *, create: bool) -> str | None:
    try:
        return path.read_text(encoding="utf-8").strip() or None
    except FileNotFoundError:
        if not create:
            return None
    path.parent.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_hex(32)
    try:  # O_EXCL: two processes starting together keep the first one's key
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text(encoding="utf-8").strip() or None
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(secret + "\n")
    return secret


def audit_keyring(settings: Settings, *, create: bool) -> KeySource:
    """The keyring of the settings: ``QLP_AUDIT_KEY`` (``QLP_AUDIT_KEY_ID``) and
    ``QLP_AUDIT_OLD_KEYS``; without a key, the generated key file (made if ``create``)."""
    old = _old_keys(settings.qlp_audit_old_keys)
    if settings.qlp_audit_key:
        current = _key(settings.qlp_audit_key, settings.qlp_audit_key_id, "QLP_AUDIT_KEY")
        origin, from_settings = "QLP_AUDIT_KEY", True
    else:
        path = key_file(settings)
        secret = _read_key_file(path, create=create)
        if secret is None:
            return KeySource(AuditKeyring(None, old) if old else None, "none", False)
        current = _key(secret, settings.qlp_audit_key_id, str(path))
        origin, from_settings = f"the generated key file {path}", False
    try:
        return KeySource(AuditKeyring(current, old), origin, from_settings)
    except ValueError as error:
        raise ConfigError(f"QLP_AUDIT_OLD_KEYS: {error}", key="QLP_AUDIT_OLD_KEYS") from None


def no_key_warning(settings: Settings) -> str | None:
    """What ``serve``/``socket`` print at start and ``doctor`` shows when no audit key is set."""
    if settings.qlp_audit_key:
        return None
    return (f"QLP_AUDIT_KEY is not set: the audit log is signed with a key generated in "
            f"{key_file(settings)}, beside the data. Whoever can read that file can rewrite "
            "the audit log undetected, and a replaced container loses it (verify then fails). "
            "Set QLP_AUDIT_KEY to a secret of 32+ characters (`openssl rand -hex 32`): see "
            "the README, \"Audit key\".")


_pending_warning: list[str] = []


def install_audit_key(settings: Settings, mode: str) -> KeySource:
    """Make the settings' keyring the process's (every audit row is signed with it). In
    ``serve`` and ``socket`` modes without ``QLP_AUDIT_KEY``, a warning is due: it is printed
    by :func:`announce_audit_key` once the bot has started (a bad policy stays one line)."""
    source = audit_keyring(settings, create=True)
    use_keyring(source.keyring)
    _pending_warning.clear()
    if mode in ("serve", "socket"):  # anchors reach the log whatever QLP_LOG_LEVEL says
        logging.getLogger("qlp.audit").setLevel(logging.INFO)
        warning = no_key_warning(settings)
        if warning:
            _pending_warning.append(warning)
    return source


def announce_audit_key(err: TextIO | None = None) -> None:
    """Print (stderr) and log the warning :func:`install_audit_key` left, once."""
    while _pending_warning:
        warning = _pending_warning.pop()
        print(f"qlp-bot: WARNING: {warning}", file=err or sys.stderr, flush=True)
        log.warning("%s", warning)


# -- anchors ------------------------------------------------------------------------------------

def anchor_text(event_id: int, digest: str, key_id: str | None, at: datetime) -> str:
    """One anchor as it is logged and posted; :func:`parse_anchor_lines` reads it back."""
    return (f"audit anchor: row #{event_id} hash {digest} (key {key_id or 'unkeyed'}, "
            f"{at.isoformat(timespec='seconds')})")


def parse_anchor_lines(lines: Iterable[str], source: str) -> list[Anchor]:
    """Every ``audit anchor: row #N hash H`` in a log, a channel export or the anchor file."""
    anchors = []
    for number, line in enumerate(lines, 1):
        if line.lstrip().startswith("{"):
            try:
                record = json.loads(line)
                anchors.append(Anchor(int(record["event_id"]), str(record["hash"]),
                                      f"{source}:{number}", record.get("at")))
                continue
            except (ValueError, KeyError, TypeError):
                pass
        for found in _ANCHOR_LINE.finditer(line):
            anchors.append(Anchor(int(found.group(1)), found.group(2), f"{source}:{number}"))
    return anchors


def append_anchor_file(path: Path, event_id: int, digest: str, key_id: str | None,
                       at: datetime) -> None:
    """One JSON line per anchor, appended (the file only grows)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {"at": at.isoformat(), "event_id": event_id, "hash": digest, "key_id": key_id}
    with path.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(record, sort_keys=True) + "\n")


def read_anchor_file(path: Path) -> list[Anchor]:
    try:
        with path.open(encoding="utf-8", errors="replace") as handle:
            return parse_anchor_lines(handle, str(path))
    except FileNotFoundError:
        return []


def outbox_anchors(database: Database) -> list[Anchor]:
    """The anchors posted to the audit channel, as the outbox holds them."""
    from sqlmodel import col, select

    from storage.models import Notification

    with database.session(read_only=True) as s:
        rows = s.exec(select(Notification)
                      .where(col(Notification.dedup_key).startswith(ANCHOR_DEDUP_PREFIX))
                      .order_by(col(Notification.id))).all()
    anchors = []
    for row in rows:
        text = str(row.payload.get("text", ""))
        anchors += parse_anchor_lines([text], f"outbox message {row.id} to {row.channel}")
    return anchors


# -- qlp-bot audit verify / anchor ----------------------------------------------------------------

def _summary(checked: int, unkeyed: int, signed: dict[str, int]) -> str:
    parts = [f"{n} signed with key {key_id}" for key_id, n in sorted(signed.items())]
    if unkeyed:
        parts.append(f"{unkeyed} unkeyed (written before the audit key: sealed by the first "
                     "signed row after them)")
    return f"{checked} rows checked" + (f" ({'; '.join(parts)})" if parts else "")


def run_audit_verify(settings: Settings, anchors: Sequence[Path] = (),
                     out: TextIO | None = None) -> int:
    """``qlp-bot audit verify``: walk the keyed chain and compare it with every anchor kept
    outside it; exit 0 when intact, 1 naming the first bad row, 2 for a wrong or missing key."""
    from procedures.clock import SystemClock
    from storage.audit import AuditLog
    from storage.db import Database

    out = out or sys.stdout
    source = audit_keyring(settings, create=False)
    if source.keyring is None or source.keyring.current is None:
        print(f"qlp-bot: no audit key: QLP_AUDIT_KEY is not set and {key_file(settings)} does "
              "not exist; rows signed with a key cannot be checked", file=out)
    database = Database(settings.database_url)
    try:
        audit = AuditLog(database, SystemClock(), source.keyring)
        result = audit.verify(source.keyring)
        found = read_anchor_file(anchor_file(settings)) + outbox_anchors(database)
        for path in anchors:
            if not path.is_file():
                raise ConfigError(f"--anchors {path}: no such file", key="--anchors")
            found += read_anchor_file(path)
        anchor_count, anchor_problems = audit.check_anchors(found)
    finally:
        database.dispose()
    signed = dict(result.signed)
    if result.wrong_key:
        keys = source.keyring.describe() if source.keyring else "none"
        print(f"audit key wrong or missing at row {result.first_bad_id}: {result.problem} "
              f"(keys given: {keys}, from {source.origin})", file=out)
        return EXIT_KEY
    ok = result.ok and not anchor_problems
    if result.ok:
        line = "audit chain intact" if ok else "audit chain signatures intact"
        print(f"{line}: {_summary(result.checked, result.unkeyed, signed)}", file=out)
    else:
        print(f"audit chain broken at row {result.first_bad_id}: {result.problem} "
              f"({result.checked} rows checked before it)", file=out)
    if anchor_problems:
        first = anchor_problems[0][0]
        if result.ok:
            print(f"audit chain broken at row {first} or before: the chain no longer matches "
                  "its anchors", file=out)
        for _, problem in anchor_problems[:20]:
            print(f"  anchor: {problem}", file=out)
        if len(anchor_problems) > 20:
            print(f"  ... and {len(anchor_problems) - 20} more anchors", file=out)
    elif anchor_count:
        print(f"anchors: {anchor_count} checked, every anchored row still has its hash",
              file=out)
    else:
        print("anchors: none found (the scheduler anchors the chain head every "
              f"{settings.qlp_audit_anchor_every:g} s; see QLP_AUDIT_CHANNEL)", file=out)
    return 0 if ok else EXIT_BROKEN


def audit_key_check(settings: Settings, *, served: bool) -> Check:
    """``doctor``'s line about the audit key: a warning when a served bot (``served``: Slack
    tokens are set) has no ``QLP_AUDIT_KEY``, a failure when the keys given are invalid."""
    from procedures.doctor import Check, fail, ok, warn

    def run() -> CheckResult:
        try:
            source = audit_keyring(settings, create=False)
        except ConfigError as error:
            return fail("audit", "audit key", error.message,
                        "QLP_AUDIT_KEY: 32+ characters, e.g. `openssl rand -hex 32`")
        keyring = source.keyring
        ids = keyring.describe() if keyring else "none"
        if settings.qlp_audit_key:
            return ok("audit", "audit key", f"QLP_AUDIT_KEY is set (keys: {ids})")
        if not served:
            return ok("audit", "audit key", f"the local shell's generated key in "
                                            f"{key_file(settings)} (keys: {ids})")
        return warn("audit", "audit key", no_key_warning(settings) or "",
                    "set QLP_AUDIT_KEY on every replica (README: Audit key)")

    return Check("audit", "audit key", run)
