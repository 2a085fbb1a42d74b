"""Running a migration file against the application's PostgreSQL, safely (psycopg 3).

:class:`MigrationRunner` does four things, each on its own short-lived connection:

``validate``
    Runs the file in a transaction that is **always rolled back** (``force_rollback``), with
    ``SET LOCAL lock_timeout`` (5 s) and ``SET LOCAL statement_timeout`` (60 s) so a dry run
    never queues behind, or holds, locks for long. The down script, if any, runs after it in the
    same transaction, so a down script that does not undo the file is found now, not during an
    incident. Any error refuses the migration with PostgreSQL's own message and line; the
    database is unchanged. ``psql --dry-run`` (the seed's way) does not exist.

    A file that must run outside a transaction (see :mod:`procedures.migrations.files`) cannot
    be dry-run as it is. Its non-concurrent equivalent is validated instead: ``CONCURRENTLY``
    is cut out of ``CREATE INDEX`` / ``DROP INDEX`` / ``REINDEX INDEX|TABLE``, and ``ALTER TYPE
    ... ADD VALUE`` runs as it is (allowed in a transaction since PostgreSQL 12). This checks
    names, columns and syntax; note that the non-concurrent ``CREATE INDEX`` builds the index
    for real under a SHARE lock (writes to that table wait) for up to the statement timeout
    before it is rolled back, so keep validation on big tables for staging. ``VACUUM`` and
    ``REINDEX SCHEMA|DATABASE|SYSTEM`` cannot run in a transaction at all: they are checked for
    being alone in their file only, and the validation says so.

``apply``
    One connection for the whole migration: ``pg_try_advisory_lock(ADVISORY_LOCK_KEY)`` (a
    session lock: two migrations of the same database never overlap; the loser is told who
    holds it, from ``pg_stat_activity.application_name``, e.g. "another migration is running
    (#12)"), then ``schema_migrations`` is created if missing and checked (a name already
    applied with the same checksum is refused, with another checksum refused as changed), then
    the file runs and its row is written:

    - a transactional file and its ``schema_migrations`` row commit together, with ``SET
      LOCAL`` lock and statement timeouts; on error the transaction rolls back by itself and
      the database is as it was;
    - a file that runs outside a transaction runs alone in autocommit; then no new INVALID
      index may exist (a failed ``CREATE INDEX CONCURRENTLY`` leaves one); on error the down
      script runs (on a fresh connection), and the error says whether it did.

    The lock is released at the end (closing the connection would release it too).

``verify``
    Reads the ``schema_migrations`` row back and compares the checksum.

``roll_back``
    Runs the down script of a migration this run applied and removes its record, in one
    transaction when the down script is transactional (the seed's ``rollback-migration.sh``).

``schema_migrations`` may have qlp's layout or the seed's ``schema_migrations(version)``
(:mod:`procedures.migrations.ledger` reads and writes both). A file whose header says
``-- qlp: type=data`` runs with the longer ``data_statement`` timeout (seed: data migrations are
bulk transformations and imports); schema and performance migrations keep ``apply_statement``.

``cancel``
    Cancels whatever statement this runner's connection is executing (thread-safe), so a step
    that is cancelled or times out does not leave a migration running behind it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict
from psycopg.pq import TransactionStatus

from procedures.errors import ConflictError, ExternalServiceError, PolicyRefusal, StepFailure
from procedures.migrations import ledger
from procedures.migrations.files import MigrationFile, MigrationScript, Statement
from procedures.migrations.ledger import AppliedMigration

__all__ = [
    "ADVISORY_LOCK_KEY",
    "APPLICATION_NAME",
    "AppliedMigration",
    "ApplyResult",
    "MigrationAlreadyApplied",
    "MigrationBusy",
    "MigrationChanged",
    "MigrationFailed",
    "MigrationInvalid",
    "MigrationRunner",
    "MigrationTimeouts",
    "Validation",
    "libpq_url",
    "same_database",
]

# pg_try_advisory_lock(bigint) key of every qlp migration ("qlp_mig" in ASCII). Advisory locks
# are per database, so migrations of different databases never wait for each other.
ADVISORY_LOCK_KEY = 0x716C705F6D6967
APPLICATION_NAME = "qlp-migrate"
TABLE = ledger.LEDGER

_INVALID_INDEXES = """
SELECT c.oid::regclass::text FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
WHERE NOT i.indisvalid"""
_LOCK_HOLDER = """
SELECT a.application_name, a.pid FROM pg_locks l LEFT JOIN pg_stat_activity a ON a.pid = l.pid
WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
  AND l.classid::bigint = %s AND l.objid::bigint = %s
  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())"""


@dataclass(frozen=True)
class MigrationTimeouts:
    """Lock and statement timeouts (validation runs on production too, so it is kept short)."""

    lock: timedelta = timedelta(seconds=5)
    validate_statement: timedelta = timedelta(seconds=60)
    apply_statement: timedelta = timedelta(minutes=30)
    connect_seconds: int = 10
    # A file marked ``-- qlp: type=data`` (backfills, bulk imports, archiving) may run longer.
    data_statement: timedelta = timedelta(hours=2)

    def statement_for(self, script: MigrationScript) -> timedelta:
        """The statement timeout ``script`` is applied under (by its migration type)."""
        return self.data_statement if script.migration_type == "data" else self.apply_statement

    @property
    def longest_apply(self) -> timedelta:
        return max(self.apply_statement, self.data_statement)


@dataclass(frozen=True)
class Validation:
    """What validation did: ``executed`` is False when the file could not be run in a
    transaction at all (then ``note`` says what was checked instead)."""

    executed: bool
    note: str
    down_checked: bool = False


@dataclass(frozen=True)
class ApplyResult:
    """A migration applied (or found applied by this very run, when ``resumed``)."""

    name: str
    checksum: str
    transactional: bool
    applied_at: datetime | None
    applied_by: str
    resumed: bool = False


class MigrationBusy(ConflictError):
    """Another migration holds the advisory lock of this database."""

    def __init__(self, holder: str) -> None:
        super().__init__(f"another migration is running ({holder}); nothing was changed",
                         hint="Wait until it has finished, then ask again.")
        self.holder = holder


class MigrationAlreadyApplied(PolicyRefusal):
    """The migration is in ``schema_migrations`` with the same checksum."""

    def __init__(self, applied: AppliedMigration, where: str = "") -> None:
        super().__init__(f"{applied.name} was already applied{where} on {applied.describe()}",
                         rule="migration-once", hint="A migration runs once; nothing was done.")
        self.applied = applied


class MigrationChanged(PolicyRefusal):
    """The migration is in ``schema_migrations`` with another checksum: the file was edited."""

    def __init__(self, applied: AppliedMigration, checksum: str, where: str = "") -> None:
        super().__init__(
            f"{applied.name} changed since it was applied{where} on {applied.describe()} "
            f"(checksum then {applied.checksum[:12]}, now {checksum[:12]})",
            rule="migration-checksum",
            hint="Never edit an applied migration: put the change in a new one.")
        self.applied = applied


class MigrationInvalid(StepFailure):
    """The file failed validation; the database is unchanged."""


class MigrationFailed(StepFailure):
    """The file failed while being applied. ``rolled_back``: the database is as it was
    (transactional file); otherwise ``down`` says what the down script did."""

    def __init__(self, message: str, *, rolled_back: bool, down: str | None = None) -> None:
        super().__init__(message)
        self.rolled_back = rolled_back
        self.down = down


def libpq_url(url: str) -> str:
    """A libpq URL/DSN for psycopg (a SQLAlchemy ``postgresql+psycopg://`` is accepted too)."""
    for prefix in ("postgresql+psycopg2://", "postgresql+psycopg://", "postgres+psycopg://"):
        if url.startswith(prefix):
            return "postgresql://" + url[len(prefix):]
    return url


def same_database(first: str, second: str) -> bool:
    """Whether two URLs name the same host, port and database (users and passwords aside)."""
    try:
        a, b = conninfo_to_dict(libpq_url(first)), conninfo_to_dict(libpq_url(second))
    except psycopg.Error:
        return first == second

    def key(params: dict[str, Any]) -> tuple[str, str, str]:
        return (str(params.get("host") or "localhost"), str(params.get("port") or "5432"),
                str(params.get("dbname") or params.get("user") or ""))

    return key(a) == key(b)


def _ms(value: timedelta) -> str:
    return f"{int(value.total_seconds() * 1000)}ms"


def _one_line(text: str) -> str:
    return " ".join(text.split())


def pg_message(exc: psycopg.Error, *, text: str | None = None, first_line: int = 1) -> str:
    """PostgreSQL's message for ``exc`` with the line it points at and its SQLSTATE."""
    diag = exc.diag
    message = diag.message_primary or (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    where = ""
    position = diag.statement_position
    if text is not None and position and str(position).isdigit():
        where = f" (line {first_line + text.count(chr(10), 0, int(position) - 1)})"
    state = f" [SQLSTATE {exc.sqlstate}]" if exc.sqlstate else ""
    hint = f" Hint: {diag.message_hint}" if diag.message_hint else ""
    return _one_line(f"{message}{where}{state}{hint}")


class MigrationRunner:
    """Validates, applies and verifies migrations on one database (see the module docstring).

    ``label`` names the run in ``application_name`` (``qlp-migrate #12``), which is how a
    second migration learns who holds the lock. A runner may be used from one thread at a time;
    ``cancel`` may be called from any thread.
    """

    def __init__(self, url: str, *, label: str = "", timeouts: MigrationTimeouts | None = None,
                 where: str = "") -> None:
        self._url = libpq_url(url)
        self._label = label
        self.timeouts = timeouts or MigrationTimeouts()
        self._where = where  # " on staging" in messages about another environment's database
        self._current: psycopg.Connection[Any] | None = None
        self._guard = threading.Lock()

    # -- connections ----------------------------------------------------------------------------

    @contextmanager
    def _connection(self) -> Iterator[psycopg.Connection[Any]]:
        name = f"{APPLICATION_NAME} {self._label}".strip()[:63]
        try:
            conn = psycopg.connect(self._url, autocommit=True, application_name=name,
                                   connect_timeout=self.timeouts.connect_seconds)
        except psycopg.Error as exc:
            raise ExternalServiceError("postgresql", _one_line(str(exc)) or "cannot connect",
                                       retryable=True) from None
        with self._guard:
            self._current = conn
        try:
            yield conn
        finally:
            with self._guard:
                self._current = None
            conn.close()

    def cancel(self) -> None:
        """Cancel the statement running on this runner's connection, if any."""
        with self._guard:
            conn = self._current
        if conn is not None:
            with suppress(Exception):
                conn.cancel_safe(timeout=10)

    def _set_timeouts(self, conn: psycopg.Connection[Any], statement: timedelta, *,
                      local: bool) -> None:
        scope = sql.SQL("SET LOCAL" if local else "SET")
        for setting, value in (("lock_timeout", self.timeouts.lock),
                               ("statement_timeout", statement)):
            conn.execute(sql.SQL("{} {} = {}").format(scope, sql.Identifier(setting),
                                                      sql.Literal(_ms(value))))

    # -- reading --------------------------------------------------------------------------------

    def applied(self, name: str) -> AppliedMigration | None:
        """The ``schema_migrations`` row of ``name`` (None if absent or no table yet)."""
        with self._connection() as conn:
            return self._applied(conn, name)

    def _applied(self, conn: psycopg.Connection[Any], name: str) -> AppliedMigration | None:
        return ledger.read_applied(conn, name, self._where)

    def check_not_applied(self, up: MigrationScript, *,
                          applied_by: str | None = None) -> AppliedMigration | None:
        """Refuse if ``up`` was applied; return the row if ``applied_by`` itself applied it."""
        with self._connection() as conn:
            return self._check(conn, up, applied_by)

    def _check(self, conn: psycopg.Connection[Any], up: MigrationScript,
               applied_by: str | None) -> AppliedMigration | None:
        applied = self._applied(conn, up.name)
        if applied is None:
            return None
        if not applied.checksum_known:  # recorded by the seed's script or a person
            raise MigrationAlreadyApplied(applied, self._where)
        if applied.checksum != up.checksum:
            raise MigrationChanged(applied, up.checksum, self._where)
        if applied_by is not None and applied.applied_by == applied_by:
            return applied  # this very run applied it before a restart
        raise MigrationAlreadyApplied(applied, self._where)

    def invalid_indexes(self) -> frozenset[str]:
        """Indexes PostgreSQL marks INVALID (left by a failed CONCURRENTLY build)."""
        with self._connection() as conn:
            return self._invalid_indexes(conn)

    @staticmethod
    def _invalid_indexes(conn: psycopg.Connection[Any]) -> frozenset[str]:
        return frozenset(str(row[0]) for row in conn.execute(_INVALID_INDEXES).fetchall())

    def tables(self) -> list[str]:
        """``schema.table`` of every user table (for tests and reports)."""
        with self._connection() as conn:
            rows = conn.execute(
                "SELECT schemaname || '.' || tablename FROM pg_tables WHERE schemaname NOT IN "
                "('pg_catalog', 'information_schema') ORDER BY 1").fetchall()
            return [str(row[0]) for row in rows]

    # -- validating -----------------------------------------------------------------------------

    def validate(self, migration: MigrationFile) -> Validation:
        """Dry-run the file (and its down script) in a rolled-back transaction."""
        up_text, up_note = _validation_text(migration.up)
        if up_text is None:
            return Validation(executed=False, note=up_note)
        down = migration.down
        down_text, _ = _validation_text(down) if down is not None else (None, "")
        with self._connection() as conn, conn.transaction(force_rollback=True):
            self._set_timeouts(conn, self.timeouts.validate_statement, local=True)
            self._dry_run(conn, migration.up, up_text, "")
            if down is not None and down_text is not None:
                self._dry_run(conn, down, down_text, " (the down script, run after it)")
        checked = down is not None and down_text is not None
        note = up_note + (f"; then {down.path.name} ran after it" if checked and down else "")
        return Validation(executed=True, note=note + ", and all was rolled back",
                          down_checked=checked)

    def _dry_run(self, conn: psycopg.Connection[Any], script: MigrationScript, text: str,
                 what: str) -> None:
        first_line = 1 if script.transactional else script.statement.line
        try:
            conn.execute(text)
        except psycopg.Error as exc:
            raise MigrationInvalid(
                f"{script.path.name}{what} does not pass validation{self._where}: "
                f"{pg_message(exc, text=text, first_line=first_line)}. Nothing was changed.",
                hint="Fix the file and ask again.") from None
        if conn.info.transaction_status is not TransactionStatus.INTRANS:
            raise MigrationInvalid(f"{script.path.name} ended the validation transaction "
                                   "itself; refusing it")

    # -- applying -------------------------------------------------------------------------------

    def apply(self, migration: MigrationFile, *, applied_by: str,
              known_invalid: frozenset[str] = frozenset(),
              on_locked: Callable[[], None] | None = None) -> ApplyResult:
        """Lock, check, run and record ``migration`` (see the module docstring).

        ``known_invalid``: INVALID indexes that existed before (not this migration's doing).
        ``on_locked`` is called once the advisory lock is held (tests use it to race).
        """
        up = migration.up
        with self._connection() as conn:
            self._lock(conn)
            try:
                if on_locked is not None:
                    on_locked()
                layout = ledger.prepare(conn, self._where)
                earlier = self._check(conn, up, applied_by)
                if earlier is not None:
                    return ApplyResult(up.name, up.checksum, up.transactional,
                                       earlier.applied_at, earlier.applied_by, resumed=True)
                if up.transactional:
                    self._apply_in_transaction(conn, up, applied_by, layout)
                else:
                    self._apply_alone(conn, migration, applied_by, known_invalid, layout)
                recorded = self._applied(conn, up.name)
            finally:
                with suppress(psycopg.Error):
                    conn.execute("SELECT pg_advisory_unlock(%s)", (ADVISORY_LOCK_KEY,))
        if recorded is None:
            raise StepFailure(f"{up.name} ran but its {TABLE} row is missing")
        return ApplyResult(up.name, up.checksum, up.transactional, recorded.applied_at,
                           recorded.applied_by)

    def _lock(self, conn: psycopg.Connection[Any]) -> None:
        row = conn.execute("SELECT pg_try_advisory_lock(%s)", (ADVISORY_LOCK_KEY,)).fetchone()
        if row is not None and row[0]:
            return
        holder = conn.execute(_LOCK_HOLDER, (ADVISORY_LOCK_KEY >> 32,
                                             ADVISORY_LOCK_KEY & 0xFFFFFFFF)).fetchone()
        if holder is None:
            raise MigrationBusy("it finished just now; ask again")
        name, pid = str(holder[0] or ""), holder[1]
        if name.startswith(APPLICATION_NAME + " "):
            raise MigrationBusy(name[len(APPLICATION_NAME) + 1:] + self._where)
        raise MigrationBusy(f"pid {pid}" + (f", {name}" if name else "") + self._where)

    def _apply_in_transaction(self, conn: psycopg.Connection[Any], up: MigrationScript,
                              applied_by: str, layout: ledger.Layout) -> None:
        try:
            with conn.transaction():
                self._set_timeouts(conn, self.timeouts.statement_for(up), local=True)
                conn.execute(up.sql)
                if conn.info.transaction_status is not TransactionStatus.INTRANS:
                    raise MigrationFailed(f"{up.path.name} ended the transaction itself",
                                          rolled_back=False)
                ledger.record(conn, up.name, up.checksum, applied_by, layout)
        except psycopg.Error as exc:
            raise MigrationFailed(
                f"{up.path.name} failed{self._where}: {pg_message(exc, text=up.sql)}. It ran in "
                "one transaction, which rolled back by itself: the database is as it was.",
                rolled_back=True) from None

    def _apply_alone(self, conn: psycopg.Connection[Any], migration: MigrationFile,
                     applied_by: str, known_invalid: frozenset[str],
                     layout: ledger.Layout) -> None:
        up = migration.up
        statement: Statement = up.statement
        try:
            self._set_timeouts(conn, self.timeouts.statement_for(up), local=False)
            conn.execute(statement.text)
            left = sorted(self._invalid_indexes(conn) - known_invalid)
            if left:
                problem = (f"it left INVALID index{'es' if len(left) > 1 else ''} "
                           f"{', '.join(left)}")
            else:
                problem = ""
        except psycopg.Error as exc:
            problem = pg_message(exc, text=statement.text, first_line=statement.line)
        if problem:
            down = self._run_down(migration)
            raise MigrationFailed(
                f"{up.path.name} ({up.outside_transaction}) failed{self._where}: {problem}. It "
                f"ran outside a transaction, so nothing rolled it back; {down}.",
                rolled_back=False, down=down)
        with suppress(psycopg.Error):
            conn.execute("RESET lock_timeout")
            conn.execute("RESET statement_timeout")
        with conn.transaction():  # the seed layout writes two rows: both or neither
            ledger.record(conn, up.name, up.checksum, applied_by, layout)

    def _run_down(self, migration: MigrationFile) -> str:
        down = migration.down
        if down is None:
            return (f"there is no down script ({migration.name}.down.sql), so a person must "
                    "look (an INVALID index is dropped with DROP INDEX CONCURRENTLY IF EXISTS)")
        try:
            with self._connection() as conn:
                if down.transactional:
                    with conn.transaction():
                        self._set_timeouts(conn, self.timeouts.apply_statement, local=True)
                        conn.execute(down.sql)
                else:
                    self._set_timeouts(conn, self.timeouts.apply_statement, local=False)
                    conn.execute(down.statement.text)
        except (psycopg.Error, ExternalServiceError) as exc:
            reason = pg_message(exc) if isinstance(exc, psycopg.Error) else exc.message
            return (f"the down script {down.path.name} failed too ({reason}), so a person must "
                    "look")
        return f"the down script {down.path.name} ran to clean up"

    # -- rolling back ---------------------------------------------------------------------------

    def roll_back(self, migration: MigrationFile, *, applied_by: str) -> str:
        """Run the down script of ``migration`` and remove the record ``applied_by`` wrote
        (the seed's ``rollback-migration.sh``), under the advisory lock; what it did, in words.

        A transactional down script and the removal of the record commit together. One that
        runs outside a transaction (``DROP INDEX CONCURRENTLY``) runs alone, then the record
        goes: a crash between the two runs it again on resume, so keep such scripts idempotent
        (``IF EXISTS``). MigrationFailed when there is no down script or it fails.
        """
        down = migration.down
        if down is None:
            raise MigrationFailed(f"{migration.name} has no down script "
                                  f"({migration.name}.down.sql)", rolled_back=False)
        with self._connection() as conn:
            self._lock(conn)
            try:
                try:
                    if down.transactional:
                        with conn.transaction():
                            self._set_timeouts(conn, self.timeouts.apply_statement, local=True)
                            conn.execute(down.sql)
                            forgotten = ledger.forget(conn, migration.name, applied_by)
                    else:
                        self._set_timeouts(conn, self.timeouts.apply_statement, local=False)
                        conn.execute(down.statement.text)
                        conn.execute("RESET statement_timeout")
                        with conn.transaction():
                            forgotten = ledger.forget(conn, migration.name, applied_by)
                except psycopg.Error as exc:
                    raise MigrationFailed(
                        f"the down script {down.path.name} failed{self._where}: "
                        f"{pg_message(exc, text=down.sql)}", rolled_back=False) from None
            finally:
                with suppress(psycopg.Error):
                    conn.execute("SELECT pg_advisory_unlock(%s)", (ADVISORY_LOCK_KEY,))
        record = (f"removed its {TABLE} record" if forgotten else
                  f"{TABLE} had no record of it by this run")
        return f"ran {down.path.name}{self._where} and {record}"

    # -- verifying ------------------------------------------------------------------------------

    def verify(self, up: MigrationScript) -> AppliedMigration:
        """The ``schema_migrations`` row of ``up``, with its checksum; StepFailure otherwise."""
        applied = self.applied(up.name)
        if applied is None:
            raise StepFailure(f"{up.name} is not recorded in {TABLE}{self._where}")
        if applied.checksum != up.checksum:
            raise StepFailure(f"{up.name} is recorded{self._where} with checksum "
                              f"{applied.checksum[:12]}, not {up.checksum[:12]}")
        return applied


def _validation_text(script: MigrationScript) -> tuple[str | None, str]:
    """The SQL to dry-run for ``script`` and what that checks (None: cannot run in one)."""
    reason = script.outside_transaction
    if reason is None:
        return script.sql, "ran in a transaction"
    statement = script.statement
    words = statement.keywords
    if reason in ("CREATE INDEX CONCURRENTLY", "DROP INDEX CONCURRENTLY"):
        return (statement.without_word("CONCURRENTLY"),
                f"{reason} cannot run in a transaction: its non-concurrent form ran in one")
    if reason == "REINDEX CONCURRENTLY":
        if words[1:2] in (("INDEX",), ("TABLE",)) and words[2:3] == ("CONCURRENTLY",):
            return (statement.without_word("CONCURRENTLY"),
                    "REINDEX CONCURRENTLY cannot run in a transaction: its non-concurrent form "
                    "ran in one")
        return None, ("this REINDEX cannot run in a transaction, so it was not dry-run; it is "
                      "the file's only statement")
    if reason == "ALTER TYPE ... ADD VALUE":
        return statement.text, "ALTER TYPE ... ADD VALUE ran in a transaction"
    return None, (f"{reason} cannot run in a transaction, so it was not dry-run; it is the "
                  "file's only statement")
