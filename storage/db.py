"""The bot's database handle: one engine, built from a URL by the composition root."""

from __future__ import annotations

import itertools
import logging
import os
import random
import shutil
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.pool import StaticPool
from sqlmodel import Session

from procedures.errors import ConfigError

log = logging.getLogger(__name__)

DEFAULT_URL = "sqlite:///.qlp/qlp.db"
"""Used when no URL is given: a SQLite file under ``.qlp`` in the working directory."""

SQLITE_BUSY_TIMEOUT_MS = 5000

_READ_ONLY = "qlp_read_only"
_BOOKKEEPING = "qlp_bookkeeping"  # writes no read cache depends on (audit rows)
_WROTE = "qlp_wrote"  # connection.info: this transaction changed rows
_WAL_ATTEMPTS = 50


def _enable_wal(cursor: Any) -> None:
    """Switch the file to WAL (persistent, so normally a no-op after the first connection).

    Switching needs a moment of exclusive access and SQLite answers "database is locked" at
    once instead of waiting on ``busy_timeout`` when connections race on a new file, so the
    switch is retried briefly.
    """
    for attempt in range(_WAL_ATTEMPTS):
        try:
            mode = cursor.execute("PRAGMA journal_mode").fetchone()[0]
            if str(mode).lower() == "wal":
                return
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or attempt == _WAL_ATTEMPTS - 1:
                raise
            time.sleep(0.05 + random.random() * 0.05)


MIN_FREE_DISK = 4 * 1024 * 1024
"""Below this much free space on a SQLite file's disk, the database counts as not writable."""

_PROBES = itertools.count(1)


def _one_line(error: BaseException) -> str:
    """An exception as one line: the driver's own message if there is one, no SQL."""
    original = getattr(error, "orig", None) or error
    lines = str(original).strip().splitlines()
    return lines[0] if lines else type(original).__name__


# Connections per process: 16 HTTP threads, the worker's runs and its tasks, with room.
POOL_SIZE = 20
POOL_OVERFLOW = 10

class Database:
    """An engine plus a transactional ``session()``; SQLite or PostgreSQL (psycopg 3).

    SQLite runs in WAL mode with ``busy_timeout`` and foreign keys on. sqlite3's own
    transaction handling is switched off and every write transaction starts with
    ``BEGIN IMMEDIATE``: the writer lock is taken up front, so a read-then-write transaction
    waits its turn instead of failing to upgrade its lock ("database is locked") halfway.
    Read-only sessions (``session(read_only=True)``) use a plain ``BEGIN`` and run beside a
    writer. PostgreSQL uses ``pool_pre_ping`` so a restarted server costs no failed request.

    There is deliberately no module-level instance: ``bot.wiring`` builds one from settings.
    """

    def __init__(self, url: str | URL = DEFAULT_URL, *, echo: bool = False) -> None:
        self.url = make_url(url)
        backend = self.url.get_backend_name()
        if backend == "sqlite":
            self._engine = self._sqlite_engine(echo)
        elif backend == "postgresql":
            if self.url.get_driver_name() != "psycopg":
                raise ConfigError(
                    f"unsupported PostgreSQL driver {self.url.get_driver_name()!r}: "
                    "use postgresql+psycopg://",
                    key="QLP_DATABASE_URL",
                )
            self._engine = create_engine(self.url, pool_pre_ping=True, echo=echo,
                                         pool_size=POOL_SIZE, max_overflow=POOL_OVERFLOW)
        else:
            raise ConfigError(
                f"unsupported database {backend!r}: use sqlite:///path or "
                "postgresql+psycopg://user@host:5432/dbname",
                key="QLP_DATABASE_URL",
            )
        self._read_engine = self._engine.execution_options(**{_READ_ONLY: True})
        self._bookkeeping_engine = self._engine.execution_options(**{_BOOKKEEPING: True})
        self._write_generation = 0
        event.listen(self._engine, "after_cursor_execute", self._on_execute)
        event.listen(self._engine, "commit", self._on_commit)
        event.listen(self._engine, "rollback", self._on_rollback)

    @staticmethod
    def _on_execute(connection: Connection, _cursor: Any, _statement: str, _parameters: Any,
                    context: Any, _many: bool) -> None:
        # Only a transaction that changed rows advances the generation: the worker's idle
        # polls (a claim that found nothing) leave read caches warm.
        if context is not None and (context.isinsert or context.isupdate or context.isdelete):
            connection.info[_WROTE] = True

    def _on_commit(self, connection: Connection) -> None:
        wrote = connection.info.pop(_WROTE, False)
        options = connection.get_execution_options()
        if wrote and not options.get(_READ_ONLY) and not options.get(_BOOKKEEPING):
            self._write_generation += 1  # an int bump under the GIL: no lock needed

    @staticmethod
    def _on_rollback(connection: Connection) -> None:
        connection.info.pop(_WROTE, None)

    @property
    def write_generation(self) -> int:
        """Goes up with every transaction this process commits that changed rows (read caches
        compare it); audit-only transactions (``bookkeeping``) do not count."""
        return self._write_generation

    # -- construction -------------------------------------------------------------------------

    def _sqlite_engine(self, echo: bool) -> Engine:
        database = self.url.database or ""
        in_memory = database in ("", ":memory:") or database.startswith("file::memory:")
        kwargs: dict[str, Any] = {
            "echo": echo,
            "connect_args": {
                "check_same_thread": False,
                "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000,
            },
        }
        if in_memory:
            # One shared connection, or every pooled connection would see its own empty db.
            kwargs["poolclass"] = StaticPool
        else:
            # Enough connections for every HTTP thread and the worker's runs at once: a
            # listener must never queue for a connection behind Slack's 3 s ack.
            kwargs.update(pool_size=POOL_SIZE, max_overflow=POOL_OVERFLOW)
            if not database.startswith("file:"):  # a URI (``?mode=ro&uri=true``) names a file
                Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(self.url, **kwargs)

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_connection: Any, _record: Any) -> None:
            # Let SQLAlchemy's "begin" event below emit BEGIN instead of sqlite3's legacy mode.
            dbapi_connection.isolation_level = None
            cursor = dbapi_connection.cursor()
            try:
                cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS:d}")
                cursor.execute("PRAGMA foreign_keys=ON")
                if not in_memory:
                    _enable_wal(cursor)
                cursor.execute("PRAGMA synchronous=NORMAL")
            finally:
                cursor.close()

        @event.listens_for(engine, "begin")
        def _on_begin(connection: Connection) -> None:
            if connection.get_execution_options().get(_READ_ONLY):
                connection.exec_driver_sql("BEGIN")
            else:
                connection.exec_driver_sql("BEGIN IMMEDIATE")

        return engine

    # -- use ----------------------------------------------------------------------------------

    @property
    def engine(self) -> Engine:
        """The SQLAlchemy engine (for migrations and repositories; not for the domain)."""
        return self._engine

    @property
    def dialect(self) -> str:
        """``"sqlite"`` or ``"postgresql"``."""
        return self._engine.dialect.name

    @property
    def is_postgresql(self) -> bool:
        return self.dialect == "postgresql"

    @contextmanager
    def session(self, *, read_only: bool = False,
                bookkeeping: bool = False) -> Iterator[Session]:
        """A unit of work: commits when the block ends, rolls back if it raises.

        Objects stay usable after the block (``expire_on_commit=False``); they are detached.
        ``read_only=True`` lets SQLite readers run beside a writer (no ``BEGIN IMMEDIATE``).
        ``bookkeeping=True`` marks a write that no read cache depends on (the audit flusher's):
        it does not advance :attr:`write_generation`.
        """
        bind = self._read_engine if read_only else \
            self._bookkeeping_engine if bookkeeping else self._engine
        with Session(bind, expire_on_commit=False) as session:
            try:
                yield session
                session.commit()
            except BaseException:
                session.rollback()
                raise

    @contextmanager
    def using(self, session: Session | None, *, read_only: bool = False) -> Iterator[Session]:
        """Join the caller's open ``session`` if given, else run in a new one of our own.

        Repositories take an optional session so a state change and its audit row or outbox
        message commit atomically; when they get one, the caller commits.
        """
        if session is not None:
            yield session
        else:
            with self.session(read_only=read_only) as own:
                yield own

    def connect(self, *, read_only: bool = False) -> Connection:
        """A Core connection (use it as a context manager); for migrations and raw SQL."""
        return (self._read_engine if read_only else self._engine).connect()

    @contextmanager
    def report(self) -> Iterator[Connection]:
        """A read-only connection for a report over many rows (``/qlp stats``), in one
        transaction whose statements all see one snapshot: REPEATABLE READ on PostgreSQL
        (SQLite's read transaction is one already), so figures read by several statements
        agree with each other.

        PostgreSQL plans each statement for its own values here: psycopg prepares a statement
        run five times, and PostgreSQL's generic plan for a range whose width it cannot see
        (a day, or a year) scans an index over the whole range with a filter: 16 ms where the
        planned one takes 0.2 ms (``benchmarks/scale.py``). Only here: planning every
        execution would cost the bot's small statements more than it saves them.
        """
        connection = self._read_engine.connect()
        try:
            if self.is_postgresql:
                connection = connection.execution_options(isolation_level="REPEATABLE READ")
            with connection.begin():
                if self.is_postgresql:
                    connection.exec_driver_sql("SET LOCAL plan_cache_mode = force_custom_plan")
                yield connection
        finally:
            connection.close()

    def ping(self) -> bool:
        """True if the database answers ``SELECT 1`` (for ``/healthz``); never raises."""
        try:
            with self.connect(read_only=True) as connection:
                connection.execute(text("SELECT 1"))
            return True
        except Exception:  # a health check reports; it does not raise
            log.warning("database ping failed", exc_info=True)
            return False

    def write_problem(self, *, timeout: float = 2.0) -> str | None:
        """None if the database accepts a write now; else why not, in one line (for liveness
        and the start-up check). Never raises.

        A table is created and a row inserted in a transaction that is then rolled back: nothing
        stays, but the database has to accept the write, which a read-only file or mount,
        ``default_transaction_read_only``, a standby after a failover, or (PostgreSQL extends
        the table's file) a full disk refuse. SQLite writes its WAL only at commit, so for a
        SQLite file the free space of its disk is checked too. Another writer holding the lock
        past ``timeout`` is not a failure: writes work, they are merely queued.
        """
        name = f"qlp_write_probe_{os.getpid()}_{next(_PROBES)}"
        try:
            with self._engine.connect() as connection:
                sqlite = connection.dialect.name == "sqlite"
                raw: Any = connection.connection.driver_connection if sqlite else None
                if sqlite:
                    raw.execute(f"PRAGMA busy_timeout={int(timeout * 1000):d}")
                try:
                    transaction = connection.begin()
                    if not sqlite:
                        connection.exec_driver_sql(
                            f"SET LOCAL lock_timeout = {int(timeout * 1000):d}")
                        connection.exec_driver_sql(
                            f"SET LOCAL statement_timeout = {int(timeout * 1500):d}")
                    # ``name`` is made of two integers: nothing from outside.
                    connection.exec_driver_sql(f"CREATE TABLE {name} (beat INTEGER)")
                    connection.exec_driver_sql(
                        f"INSERT INTO {name} (beat) VALUES (1)")  # noqa: S608
                    transaction.rollback()
                finally:
                    if sqlite:
                        raw.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS:d}")
        except Exception as error:  # a health check reports; it does not raise
            reason = _one_line(error)
            if "database is locked" in reason or "lock timeout" in reason:
                return None
            return reason
        return self._disk_problem()

    def _disk_problem(self) -> str | None:
        if self.dialect != "sqlite":
            return None
        database = self.url.database or ""
        if database in ("", ":memory:") or database.startswith("file:"):
            return None
        try:
            free = shutil.disk_usage(Path(database).expanduser().resolve().parent).free
        except OSError as error:
            return _one_line(error)
        if free < MIN_FREE_DISK:
            return f"disk full: {free // 1024} KiB free where the database file is"
        return None

    def dispose(self) -> None:
        """Close every pooled connection (at shutdown, and in tests before dropping a db)."""
        self._engine.dispose()

    def __repr__(self) -> str:
        return f"Database({self.url.render_as_string(hide_password=True)!r})"
