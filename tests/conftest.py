"""Shared fixtures: the bot's database on SQLite and on PostgreSQL.

``database`` is parametrised (ids ``sqlite`` and ``postgres``): a test that uses it runs on
both. It is migrated to head and private to the test: a temporary SQLite file, or a scratch
PostgreSQL database cloned from a migrated template (``CREATE DATABASE ... TEMPLATE`` is a
file copy, much faster than migrating each time), emptied after the test for the worker's next
one (``tests.pg_recycle``) or dropped when more than its rows changed.
``empty_database`` is the same without migrations. ``sqlite_database`` is a migrated SQLite
database alone, for tests that do not need to cover both backends.

PostgreSQL is expected on 127.0.0.1:5432 (trust auth, user postgres; override with
``QLP_TEST_POSTGRES_URL``). If it is unreachable the postgres tests FAIL, so a broken setup
never passes quietly; set ``QLP_SKIP_POSTGRES=1`` to skip them instead. Deselect them with
``-m "not postgres"``.
"""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from procedures.clock import FixedClock
from storage.db import Database
from storage.migrate import upgrade
from tests.fakes.bot_harness import BOT_TOKEN, BotHarness
from tests.fakes.policies import make_policy
from tests.fakes.slack_double import SlackDouble
from tests.pg_recycle import RecycledDatabases

POSTGRES_URL = os.environ.get(
    "QLP_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
SCRATCH_PREFIX = "qlp_test_"


def _libpq_dsn(dbname: str) -> str:
    """The admin URL as a libpq DSN for ``dbname`` (psycopg does not speak SQLAlchemy URLs)."""
    from sqlalchemy.engine import make_url

    url = make_url(POSTGRES_URL).set(drivername="postgresql", database=dbname)
    return url.render_as_string(hide_password=False)


def _sqlalchemy_url(dbname: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(POSTGRES_URL).set(database=dbname).render_as_string(hide_password=False)


class PostgresServer:
    """Creates and drops scratch databases on the test server (autocommit admin connection)."""

    def __init__(self) -> None:
        self._admin = psycopg.connect(_libpq_dsn("postgres"), autocommit=True, connect_timeout=5)
        self._recycled: RecycledDatabases | None = None

    def take_migrated(self, template: str) -> str:
        """A database in the migrated template's state (tests.pg_recycle)."""
        if self._recycled is None:
            self._recycled = RecycledDatabases(self._admin, _libpq_dsn, template)
        return self._recycled.take(lambda: self.create(template))

    def give_back(self, name: str) -> None:
        """A migrated database a test is done with: kept for the next test, or dropped."""
        if self._recycled is None:
            self.drop(name)
        else:
            self._recycled.give_back(name, self.drop)

    def create(self, template: str | None = None) -> str:
        # The name is generated hex, never user input; still composed as an identifier.
        name = SCRATCH_PREFIX + secrets.token_hex(6)
        if template is None:
            self._admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        else:
            self._admin.execute(
                sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                    sql.Identifier(name), sql.Identifier(template)
                )
            )
        return name

    def drop(self, name: str) -> None:
        self._admin.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )

    def close(self) -> None:
        for name in self._recycled.names() if self._recycled else []:
            self.drop(name)
        self._admin.close()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """The PostgreSQL test server; fails (or skips with QLP_SKIP_POSTGRES=1) if unreachable."""
    try:
        server = PostgresServer()
    except psycopg.OperationalError as exc:
        message = (
            f"PostgreSQL is not reachable at {POSTGRES_URL}: {exc}. Start it, or set "
            "QLP_SKIP_POSTGRES=1 to skip the postgres tests, or deselect with -m 'not postgres'."
        )
        if os.environ.get("QLP_SKIP_POSTGRES") == "1":
            pytest.skip(message)
        pytest.fail(message, pytrace=False)
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(scope="session")
def postgres_template(postgres_server: PostgresServer) -> Iterator[str]:
    """A database migrated to head, cloned for each test; nobody stays connected to it."""
    name = postgres_server.create()
    database = Database(_sqlalchemy_url(name))
    try:
        upgrade(database)
    finally:
        database.dispose()
    yield name
    postgres_server.drop(name)


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite file migrated to head once per session; each test gets a copy of it (a file
    copy is much faster than running the migrations again)."""
    path = tmp_path_factory.mktemp("sqlite-template") / "qlp.db"
    database = Database(f"sqlite:///{path}")
    try:
        upgrade(database)
    finally:
        database.dispose()
    return path


def _migrated_sqlite(request: pytest.FixtureRequest, path: Path) -> str:
    """A private SQLite database at ``path``, copied from the migrated template."""
    template: Path = request.getfixturevalue("sqlite_template")
    shutil.copyfile(template, path)
    return f"sqlite:///{path}"


ON_POSTGRES_ONLY = pytest.mark.parametrize(
    "backend", [pytest.param("postgres", id="postgres", marks=pytest.mark.postgres)])
"""For an end-to-end test whose subject is not the bot's database (real processes, a real
platform): run it on PostgreSQL, production's database, only; the repositories, the engine and
the commands run on both backends in their own tests. Keeps CI inside its time budget."""


@pytest.fixture(
    params=[
        pytest.param("sqlite", id="sqlite"),
        pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
    ]
)
def backend(request: pytest.FixtureRequest) -> str:
    """Which backend the test runs on."""
    return str(request.param)


@pytest.fixture
def database_factory(
    request: pytest.FixtureRequest, backend: str, tmp_path: Path
) -> Iterator[_Factory]:
    """Makes private databases on ``backend`` (migrated or empty); all dropped after the test."""
    factory = _Factory(request, backend, tmp_path)
    try:
        yield factory
    finally:
        factory.close()


class _Factory:
    def __init__(self, request: pytest.FixtureRequest, backend: str, tmp_path: Path) -> None:
        self._request = request
        self.backend = backend
        self._tmp_path = tmp_path
        self._databases: list[Database] = []
        self._scratch: list[str] = []  # dropped after the test
        self._recycle: list[str] = []  # given back to the worker's pool (tests.pg_recycle)
        self._server: PostgresServer | None = None

    def url(self, *, migrated: bool) -> str:
        """The URL of a new private database."""
        if self.backend == "sqlite":
            path = self._tmp_path / f"qlp-{secrets.token_hex(4)}.db"
            return _migrated_sqlite(self._request, path) if migrated else f"sqlite:///{path}"
        server: PostgresServer = self._request.getfixturevalue("postgres_server")
        self._server = server
        if migrated:
            name = server.take_migrated(self._request.getfixturevalue("postgres_template"))
            self._recycle.append(name)
        else:
            name = server.create(None)
            self._scratch.append(name)
        return _sqlalchemy_url(name)

    def open(self, url: str) -> Database:
        """A Database on ``url``, disposed after the test (open several to mimic processes)."""
        database = Database(url)
        self._databases.append(database)
        return database

    def new(self, *, migrated: bool = True) -> Database:
        return self.open(self.url(migrated=migrated))

    def close(self) -> None:
        for database in self._databases:
            database.dispose()
        if self._server is not None:
            for name in self._scratch:
                self._server.drop(name)
            for name in self._recycle:
                self._server.give_back(name)


@pytest.fixture
def database(database_factory: _Factory) -> Database:
    """A private database migrated to head, on SQLite and on PostgreSQL."""
    return database_factory.new(migrated=True)


@pytest.fixture
def empty_database(database_factory: _Factory) -> Database:
    """A private database with no tables, on SQLite and on PostgreSQL."""
    return database_factory.new(migrated=False)


@pytest.fixture
def sqlite_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    """A migrated SQLite database only (for tests that need no PostgreSQL coverage)."""
    database = Database(_migrated_sqlite(request, tmp_path / "qlp.db"))
    try:
        yield database
    finally:
        database.dispose()


@pytest.fixture
def slack() -> Iterator[SlackDouble]:
    """The Slack Web API double, with the release group and three named users."""
    double = SlackDouble(token=BOT_TOKEN, groups={"S0RELEASE": ["U0LEAD2"]},
                         users={"U0DEV": "dev", "U0LEAD1": "lead1", "U0LEAD2": "lead2"})
    double.start()
    yield double
    double.stop()


@pytest.fixture
def bot(database: Database, clock: FixedClock, slack: SlackDouble,
        tmp_path: Path) -> Iterator[BotHarness]:
    """The real bot over HTTP with the test policy; each test module supplies ``clock``."""
    harness = BotHarness(database=database, policy=make_policy(), clock=clock,
                         home=tmp_path / "home", slack=slack)
    yield harness
    harness.close()


@pytest.fixture(autouse=True)
def _process_audit_keyring() -> Iterator[None]:
    """The audit keyring is process-wide (``storage.audit.use_keyring``, set by the composition
    root from the settings): put back what it was after each test, so a bot built with a key
    in one test does not sign another test's chain in the same worker."""
    from storage.audit import process_keyring, use_keyring

    before = process_keyring()
    try:
        yield
    finally:
        use_keyring(before)
