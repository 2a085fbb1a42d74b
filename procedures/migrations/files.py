"""Migration files on disk: finding one by name, safely, and reading what it does.

A migration ``<name>`` is the file ``<migrations_dir>/<name>.sql``; its optional down script
is ``<name>.down.sql`` next to it. The name must match :data:`MIGRATION_NAME` (letters,
digits, ``_ . -``; no ``..``) *and* the resolved path must stay inside the directory, so a
symbolic link pointing elsewhere is refused too. Nothing a person typed becomes a path any
other way.

The SQL is split into statements by a small lexer that knows what PostgreSQL and psql know
about where a statement ends: comments (``--``, nested ``/* */``), quoted strings (``'...'``,
``E'...'``), quoted identifiers and dollar-quoted bodies (``$$...$$``, ``$tag$...$tag$``),
parentheses and ``BEGIN ATOMIC ... END`` bodies of SQL functions. Splitting serves two checks:

- **Outside a transaction.** ``CREATE INDEX CONCURRENTLY``, ``DROP INDEX CONCURRENTLY``,
  ``REINDEX ... CONCURRENTLY``, ``ALTER TYPE ... ADD VALUE`` and ``VACUUM`` cannot run (or
  are not safe) inside a transaction block, and PostgreSQL wraps a multi-statement string in
  one implicitly. A file holding one of them must hold exactly that one statement; it then
  runs alone in autocommit (``MigrationScript.outside_transaction`` says why).
- **No transaction control.** ``BEGIN``/``COMMIT``/``ROLLBACK``/``SAVEPOINT``... in a file are
  refused: the runner owns the transaction, and a ``COMMIT`` inside a file would make the
  rolled-back validation commit for real.

**Header.** Comment lines ``-- qlp: key=value ...`` say what the seed's migration procedure
needs to know about a file (:func:`read_header`):

- ``type=schema|data|performance`` (the seed's migration types; default ``schema``). A ``data``
  migration runs under the longer ``data_statement`` timeout (still one transaction: a
  backfill that fails half-way leaves nothing behind).
- ``app-update=/path`` (the seed's step 7, ``deployment/migration-<version>-app-update.sh``):
  after the migration is verified, ``/qlp migrate`` POSTs to that path on the live slot, so the
  application can pick the new schema up (reload its schema cache, say); a non-2xx answer fails
  the run, which then rolls the migration back.

An unknown key or value is refused, so a typo never silently means "schema".
"""

from __future__ import annotations

import difflib
import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from procedures.errors import PolicyRefusal

__all__ = [
    "MIGRATION_NAME",
    "MigrationDirectory",
    "MigrationFile",
    "MigrationScript",
    "Statement",
    "analyse",
    "split_statements",
]

MIGRATION_NAME = re.compile(r"^[0-9A-Za-z][0-9A-Za-z_.-]{0,80}$")
DOWN_SUFFIX = ".down"
_MAX_BYTES = 5 * 1024 * 1024  # a migration is code, not data; bigger files are refused

MIGRATION_TYPES = ("schema", "data", "performance")
_HEADER = re.compile(r"^[ \t]*--[ \t]*qlp:(.*)$", re.MULTILINE)
_APP_UPDATE_PATH = re.compile(r"^/[A-Za-z0-9._~/%-]{0,200}$")

_TRANSACTION_CONTROL = {"BEGIN", "START", "COMMIT", "END", "ROLLBACK", "ABORT", "SAVEPOINT",
                        "RELEASE"}


@dataclass(frozen=True)
class Statement:
    """One top-level statement: its text (without the ``;``) and its keywords."""

    text: str
    start: int  # offset of the statement's first character in the file
    line: int  # 1-based line of ``start``
    words: tuple[tuple[str, int], ...]  # upper-cased bare words outside strings/comments

    @property
    def keywords(self) -> tuple[str, ...]:
        return tuple(word for word, _ in self.words)

    def without_word(self, word: str) -> str:
        """The text with the first bare ``word`` (e.g. CONCURRENTLY) cut out."""
        for candidate, offset in self.words:
            if candidate == word:
                return self.text[:offset] + self.text[offset + len(word):]
        return self.text


def _is_ident(char: str) -> bool:
    return char.isalnum() or char in "_$"


def split_statements(sql: str) -> list[Statement]:
    """The file's top-level statements, in order; empty ones (only comments) are dropped."""
    statements: list[Statement] = []
    words: list[tuple[str, int]] = []
    paren = 0
    atomic = 0  # depth inside BEGIN ATOMIC ... END of CREATE FUNCTION/PROCEDURE
    i, n = 0, len(sql)

    begin: int | None = None  # the statement's first character that is not a comment

    def finish(end: int) -> None:
        if words and begin is not None:
            statements.append(Statement(
                text=sql[begin:end].rstrip(), start=begin, line=sql.count("\n", 0, begin) + 1,
                words=tuple((w, offset - begin) for w, offset in words)))

    while i < n:
        char = sql[i]
        comment = sql.startswith("--", i) or sql.startswith("/*", i)
        if begin is None and not comment and not char.isspace() and char != ";":
            begin = i
        if char == "-" and sql.startswith("--", i):
            newline = sql.find("\n", i)
            i = n if newline < 0 else newline + 1
        elif char == "/" and sql.startswith("/*", i):
            depth, i = 1, i + 2
            while i < n and depth:
                if sql.startswith("/*", i):
                    depth, i = depth + 1, i + 2
                elif sql.startswith("*/", i):
                    depth, i = depth - 1, i + 2
                else:
                    i += 1
        elif char == "'":
            escapes = i > 0 and sql[i - 1] in "eE" and (i < 2 or not _is_ident(sql[i - 2]))
            i += 1
            while i < n:
                if escapes and sql[i] == "\\":
                    i += 2
                elif sql[i] == "'":
                    if sql.startswith("''", i):
                        i += 2
                    else:
                        i += 1
                        break
                else:
                    i += 1
        elif char == '"':
            i += 1
            while i < n:
                if sql.startswith('""', i):
                    i += 2
                elif sql[i] == '"':
                    i += 1
                    break
                else:
                    i += 1
            words.append(('"', i))  # a quoted identifier: a word that is never a keyword
        elif char == "$" and not (i > 0 and _is_ident(sql[i - 1])):
            match = re.match(r"\$([A-Za-z_][A-Za-z0-9_]*)?\$", sql[i:])
            if match is None:  # $1: a parameter, not a quote
                i += 1
                continue
            tag = match.group(0)
            close = sql.find(tag, i + len(tag))
            i = n if close < 0 else close + len(tag)
            words.append(("$", i))
        elif char.isalpha() or char == "_":
            j = i + 1
            while j < n and _is_ident(sql[j]):
                j += 1
            word = sql[i:j].upper()
            if _creates_routine([w for w, _ in words[:4]]):
                opens = word == "ATOMIC" and words and words[-1][0] == "BEGIN"
                if opens or (atomic and word == "CASE"):
                    atomic += 1
                elif atomic and word == "END":
                    atomic -= 1
            words.append((word, i))
            i = j
        elif char == "(":
            paren += 1
            i += 1
        elif char == ")":
            paren = max(paren - 1, 0)
            i += 1
        elif char == ";" and paren == 0 and atomic == 0:
            finish(i)
            words, begin = [], None
            i += 1
        else:
            i += 1
    finish(n)
    return statements


def _creates_routine(keywords: Sequence[str]) -> bool:
    head = list(keywords[:4])
    if head[:1] != ["CREATE"]:
        return False
    if head[1:3] == ["OR", "REPLACE"]:
        head = ["CREATE", *head[3:]]
    return len(head) > 1 and head[1] in ("FUNCTION", "PROCEDURE")


def outside_transaction_reason(statement: Statement) -> str | None:
    """Why ``statement`` must run outside a transaction block, or None."""
    words = statement.keywords
    head = words[:4]
    if head[:1] == ("CREATE",):
        rest = words[2:] if words[1:2] == ("UNIQUE",) else words[1:]
        if rest[:2] == ("INDEX", "CONCURRENTLY"):
            return "CREATE INDEX CONCURRENTLY"
    if head[:3] == ("DROP", "INDEX", "CONCURRENTLY"):
        return "DROP INDEX CONCURRENTLY"
    if head[:1] == ("REINDEX",) and "CONCURRENTLY" in words[:8]:
        return "REINDEX CONCURRENTLY"
    if head[:2] == ("ALTER", "TYPE") and _has_sequence(words, ("ADD", "VALUE")):
        return "ALTER TYPE ... ADD VALUE"
    if head[:1] == ("VACUUM",):
        return "VACUUM"
    return None


def _has_sequence(words: Sequence[str], wanted: tuple[str, ...]) -> bool:
    return any(tuple(words[i:i + len(wanted)]) == wanted for i in range(len(words)))


def _transaction_control(statement: Statement) -> str | None:
    words = statement.keywords
    first = words[0] if words else ""
    if first == "PREPARE" and words[1:2] == ("TRANSACTION",):
        return "PREPARE TRANSACTION"
    if first in ("COMMIT", "ROLLBACK") and words[1:2] == ("PREPARED",):
        return f"{first} PREPARED"
    if first == "START" and words[1:2] != ("TRANSACTION",):
        return None
    return first if first in _TRANSACTION_CONTROL else None


@dataclass(frozen=True)
class MigrationScript:
    """One SQL file, read and checked: its text, checksum and how it must run."""

    name: str
    path: Path
    sql: str
    checksum: str  # sha256 of the file's bytes, hex
    statements: tuple[Statement, ...]
    outside_transaction: str | None  # e.g. "CREATE INDEX CONCURRENTLY"; None: one transaction
    migration_type: str = "schema"  # the header's type= (MIGRATION_TYPES)
    app_update: str | None = None  # the header's app-update= path (POSTed on the live slot)

    @property
    def transactional(self) -> bool:
        return self.outside_transaction is None

    @property
    def statement(self) -> Statement:
        """The one statement of a file that runs outside a transaction."""
        return self.statements[0]


@dataclass(frozen=True)
class MigrationFile:
    """A migration and its optional down script."""

    up: MigrationScript
    down: MigrationScript | None

    @property
    def name(self) -> str:
        return self.up.name

    @property
    def checksum(self) -> str:
        return self.up.checksum


def analyse(name: str, path: Path, data: bytes) -> MigrationScript:
    """Check one file's text; a PolicyRefusal (rule ``migration-file``) says what is wrong."""
    where = path.name
    try:
        sql = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _refuse(f"{where} is not UTF-8 text (byte {exc.start})") from None
    if "\x00" in sql:
        raise _refuse(f"{where} contains a NUL byte")
    statements = split_statements(sql)
    if not statements:
        raise _refuse(f"{where} holds no SQL statement")
    for statement in statements:
        control = _transaction_control(statement)
        if control is not None:
            raise _refuse(
                f"{where} controls transactions itself ({control} on line {statement.line})",
                hint="Remove BEGIN/COMMIT and the like: the bot runs each file in one "
                     "transaction (or alone, outside one, for CONCURRENTLY and VACUUM).")
    reasons = [(s, outside_transaction_reason(s)) for s in statements]
    special = [(s, r) for s, r in reasons if r is not None]
    if special and len(statements) > 1:
        statement, reason = special[0]
        raise _refuse(
            f"{where} has {reason} (line {statement.line}), which cannot run inside a "
            f"transaction, so it must be the file's only statement; the file holds "
            f"{len(statements)}.",
            hint="Put it in a migration of its own (and make it idempotent, e.g. "
                 "`IF NOT EXISTS`); keep the other statements in another file.")
    outside = special[0][1] if special else None
    header = read_header(where, sql)
    return MigrationScript(name=name, path=path, sql=sql,
                           checksum=hashlib.sha256(data).hexdigest(),
                           statements=tuple(statements), outside_transaction=outside,
                           migration_type=header.get("type", "schema"),
                           app_update=header.get("app-update"))


def read_header(where: str, sql: str) -> dict[str, str]:
    """The ``-- qlp: key=value`` settings of a file (see the module docstring)."""
    settings: dict[str, str] = {}
    for match in _HEADER.finditer(sql):
        for item in match.group(1).replace(",", " ").split():
            key, sep, value = item.partition("=")
            key = key.strip().lower()
            if not sep or not value:
                raise _refuse(f"{where}: `-- qlp: {item[:40]}` is not key=value",
                              hint=_HEADER_HINT)
            if key == "type":
                if value.lower() not in MIGRATION_TYPES:
                    raise _refuse(f"{where}: migration type `{value[:40]}` is unknown",
                                  hint=_HEADER_HINT)
                value = value.lower()
            elif key == "app-update":
                if not _APP_UPDATE_PATH.match(value) or ".." in value:
                    raise _refuse(f"{where}: app-update `{value[:60]}` is not a path on the "
                                  "application", hint=_HEADER_HINT)
            else:
                raise _refuse(f"{where}: `-- qlp:` knows no key `{key[:40]}`",
                              hint=_HEADER_HINT)
            if key in settings and settings[key] != value:
                raise _refuse(f"{where}: `{key}` is set twice", hint=_HEADER_HINT)
            settings[key] = value
    return settings


_HEADER_HINT = ("A header line reads `-- qlp: type=schema|data|performance app-update=/path` "
                "(both optional).")


def _refuse(message: str, hint: str | None = None) -> PolicyRefusal:
    return PolicyRefusal(message, rule="migration-file", hint=hint)


class MigrationDirectory:
    """The migrations of one environment: ``<dir>/<name>.sql`` and ``<name>.down.sql``."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

    def names(self) -> list[str]:
        """Every migration name in the directory (down scripts excluded), sorted."""
        try:
            entries = sorted(self.root.iterdir())
        except OSError:
            return []
        names = []
        for entry in entries:
            if entry.suffix == ".sql" and entry.is_file():
                stem = entry.name[: -len(".sql")]
                if not stem.endswith(DOWN_SUFFIX) and MIGRATION_NAME.match(stem):
                    names.append(stem)
        return names

    def load(self, name: str) -> MigrationFile:
        """Read and check migration ``name``; PolicyRefusal when it is not a safe, known file."""
        root = self._root()
        if not MIGRATION_NAME.match(name) or ".." in name or name.endswith(DOWN_SUFFIX):
            raise PolicyRefusal(
                f"`{name[:60]}` is not a migration name.", rule="migration-name",
                hint="A migration name is letters, digits, `_`, `.` and `-` (no `..`), and "
                     "not a `.down` script.")
        path = self._inside(root, name + ".sql")
        if not path.is_file():
            raise PolicyRefusal(
                f"There is no migration `{name}` in the migrations directory.",
                rule="known-migrations",
                hint=self._nearest(name))
        up = analyse(name, path, self._read(path))
        down_path = self._inside(root, name + DOWN_SUFFIX + ".sql")
        down = (analyse(name + DOWN_SUFFIX, down_path, self._read(down_path))
                if down_path.is_file() else None)
        return MigrationFile(up=up, down=down)

    def _root(self) -> Path:
        root = self.root.resolve()
        if not root.is_dir():
            raise PolicyRefusal(f"The migrations directory {self.root} does not exist.",
                                rule="migration-config",
                                hint="Point `migrations_dir` at a directory of `.sql` files.")
        return root

    def _inside(self, root: Path, filename: str) -> Path:
        path = (root / filename).resolve()
        if not path.is_relative_to(root) or path.parent != root:
            raise PolicyRefusal(
                f"`{filename}` resolves outside the migrations directory {self.root}.",
                rule="migration-name",
                hint="Migrations must be plain files inside the migrations directory "
                     "(no links to elsewhere).")
        return path

    @staticmethod
    def _read(path: Path) -> bytes:
        size = path.stat().st_size
        if size > _MAX_BYTES:
            raise _refuse(f"{path.name} is {size} bytes; migrations over "
                          f"{_MAX_BYTES // (1024 * 1024)} MiB are refused")
        return path.read_bytes()

    def _nearest(self, name: str) -> str:
        available = self.names()
        if not available:
            return f"{self.root} holds no migrations (`<name>.sql` files)."
        near = difflib.get_close_matches(name, available, n=3, cutoff=0.4)
        if not near:
            near = [n for n in available if n.startswith(name[:4])][:3] or available[-3:]
        listing = ", ".join(f"`{n}`" for n in near)
        return f"Nearest available: {listing} ({len(available)} in all)."
