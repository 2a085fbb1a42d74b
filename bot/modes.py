"""How the process runs in each mode: HTTP, Socket Mode, and the maintenance commands."""

from __future__ import annotations

import functools
import gc
import signal
import sys
import threading
import time
from typing import Any

from bot.app import create_app
from bot.graceful_stop import stop_gracefully
from bot.http_server import HttpServer, SlackWsgiApp, raise_open_files_limit
from bot.logging_setup import set_process_fields
from bot.policy_source import load_configured_policy
from bot.settings import Settings
from bot.undelivered import blocked_gauges
from bot.wiring import Services, build_services
from procedures.errors import ConfigError
from storage.db import Database


def health_report(services: Services) -> dict[str, Any]:
    """``GET /healthz`` (liveness) and ``GET /readyz`` (readiness), in one report.

    Live (``status: "ok"``): the database accepts a write and the worker's thread runs. A
    restart cures neither a read-only database nor a full disk, but an orchestrator has to know;
    it does cure a dead worker. Ready (``ready: true``): live, the schema at the code's head and
    the scheduler running (leader or standby). Slack's and Azure's state (a worker pass held up
    by a slow Slack shows as ``worker: "stalled"``, the outbox's backlog) are details: an outage
    of theirs is never a reason to restart or unroute a healthy bot.
    """
    database = services.database.write_problem() or "ok"
    worker = services.worker_health()
    scheduler = services.scheduler_health()
    migrations = _migrations_state(services)
    failing = []
    if database != "ok":
        failing.append(f"database: {database}")
    if worker == "stopped":
        failing.append("worker: stopped")
    not_ready = list(failing)
    if migrations != "ok":
        not_ready.append(f"migrations: {migrations}")
    if scheduler == "stopped":
        not_ready.append("scheduler: stopped")
    if services.engine.stopping.is_set():
        not_ready.append("stopping: handing its work over to the other replicas")
    details: dict[str, Any] = {}
    try:
        details["outbox_pending"] = services.outbox.pending_count()
        # Slack refusing delivery (a revoked token, the bot out of a channel): messages held.
        details["slack_delivery_blocked"] = blocked_gauges(services.database)
    except Exception as error:  # a detail must not fail the report
        details["unknown"] = f"{type(error).__name__}: Slack's state could not be read"
    if worker == "stalled":
        details["worker"] = ("a worker pass is taking long: a slow or unreachable Slack or "
                             "cloud API holds it; not a reason to restart")
    return {"status": "ok" if not failing else "failing", "ready": not not_ready,
            "database": database, "worker": worker, "scheduler": scheduler,
            "migrations": migrations, "problems": not_ready, "details": details}


@functools.cache
def _head_revision() -> str | None:
    from storage.migrate import head_revision

    return head_revision()


def _migrations_state(services: Services) -> str:
    from storage.migrate import current_revision

    try:
        current = current_revision(services.database)
    except Exception as error:  # reported, never raised
        return f"unknown ({type(error).__name__})"
    head = _head_revision()
    return "ok" if current == head else f"at {current or 'none'}, the code's head is {head}"


class CachedHealth:
    """``health_report`` at most once per ``ttl`` seconds, however often ``/healthz`` is hit
    (it is unauthenticated, and each report writes to the database)."""

    def __init__(self, services: Services, ttl: float = 1.0) -> None:
        self._services = services
        self._ttl = ttl
        self._lock = threading.Lock()
        self._report: dict[str, Any] | None = None
        self._at = 0.0

    def __call__(self) -> dict[str, Any]:
        with self._lock:
            now = time.monotonic()
            if self._report is None or now - self._at >= self._ttl:
                self._report, self._at = health_report(self._services), now
            return self._report


def open_writable_database(settings: Settings) -> Database:
    """The bot's database, checked to accept a write before anything else runs: if it does not
    (read-only, full, unreachable) this is one line and exit code 2, not a traceback from the
    middle of a migration."""
    database = Database(settings.database_url)
    problem = database.write_problem(timeout=5.0)
    if problem is not None:
        database.dispose()
        raise ConfigError(f"the database {database.url.render_as_string(hide_password=True)} "
                          f"does not accept writes: {problem}", key="QLP_DATABASE_URL")
    return database


def _require(settings: Settings, *names: str) -> None:
    missing = [n for n in names if not getattr(settings, n.lower())]
    if missing:
        raise ConfigError(f"{', '.join(missing)} must be set for this mode", key=missing[0])


def freeze_startup_objects() -> None:
    """Move everything built at start (SDKs, models, the app) out of the garbage collector's
    view: the collector's full passes then scan only what requests create, so they no longer
    stall every listener thread for tens of milliseconds (Slack's ack tail)."""
    gc.collect()
    gc.freeze()


def run_serve(settings: Settings, *, host: str, port: int, threads: int) -> int:
    """``qlp-bot serve``: blocks until SIGTERM/SIGINT."""
    _require(settings, "SLACK_BOT_TOKEN", "SLACK_SIGNING_SECRET")
    policy = load_configured_policy(settings, allow_demo=False)
    services = build_services(settings, policy=policy,
                              database=open_writable_database(settings))
    # Outbox, deployments, scheduler and Slack delivery figures: bot.metrics, bound to services.
    metrics = services.metrics
    set_process_fields(worker_id=services.worker_id)
    app = create_app(services, signing_secret=settings.slack_signing_secret)
    raise_open_files_limit()
    server = HttpServer(SlackWsgiApp(app, CachedHealth(services), metrics,
                                     signing_secret=settings.slack_signing_secret),
                        host, port, threads=threads)
    services.start_worker()
    services.start_scheduler()
    freeze_startup_objects()
    stop = threading.Event()

    def shutdown(*_: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, shutdown)
    signal.signal(signal.SIGINT, shutdown)
    server.start()
    print(f"qlp-bot serving on http://{host}:{server.port} (POST /slack/events, "
          "GET /healthz, /readyz, /metrics)", file=sys.stderr, flush=True)
    stop.wait()
    # Hand runs, the scheduler lease and outbox claims over, still answering Slack meanwhile
    # (/readyz says 503 "stopping", so the load balancer routes elsewhere).
    stop_gracefully(services, grace=settings.qlp_stop_grace)
    server.stop()
    services.close()
    return 0


def run_socket(settings: Settings) -> int:
    """``qlp-bot socket``: Socket Mode through slack_sdk's built-in client."""
    from slack_bolt.adapter.socket_mode import SocketModeHandler

    _require(settings, "SLACK_BOT_TOKEN", "SLACK_APP_TOKEN")
    policy = load_configured_policy(settings, allow_demo=False)
    services = build_services(settings, policy=policy,
                              database=open_writable_database(settings))
    set_process_fields(worker_id=services.worker_id)
    app = create_app(services, signing_secret=None, verify_requests=False)
    services.start_worker()
    services.start_scheduler()
    freeze_startup_objects()
    handler = SocketModeHandler(app, app_token=settings.slack_app_token)
    stop = threading.Event()

    def shutdown(*_: object) -> None:
        stop.set()

    # Not handler.start(): it blocks forever and leaves SIGTERM at its default, which kills the
    # process without closing the socket, the worker or the database.
    signal.signal(signal.SIGTERM, shutdown)
    signal.signal(signal.SIGINT, shutdown)
    try:
        handler.connect()
        print("qlp-bot connected in Socket Mode", file=sys.stderr, flush=True)
        stop.wait()
    finally:
        handler.close()  # first: Slack sends the events to the other replicas' sockets
        try:
            stop_gracefully(services, grace=settings.qlp_stop_grace)
        finally:
            services.close()
    return 0


def run_db(settings: Settings, action: str) -> int:
    """``qlp-bot db upgrade|current``."""
    from storage.db import Database
    from storage.migrate import current_revision, upgrade

    settings.qlp_home.mkdir(parents=True, exist_ok=True)
    database = Database(settings.database_url)
    try:
        if action == "upgrade":
            upgrade(database)
        print(f"schema revision: {current_revision(database) or 'none'}")
    finally:
        database.dispose()
    return 0


def run_audit_verify(settings: Settings) -> int:
    """``qlp-bot audit verify``: see :func:`bot.audit_cli.run_audit_verify`."""
    from bot.audit_cli import run_audit_verify as verify

    return verify(settings)
