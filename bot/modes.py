"""How the process runs in each mode: HTTP, Socket Mode, and the maintenance commands."""

from __future__ import annotations

import gc
import signal
import sys
import threading
from typing import Any

from bot.app import create_app
from bot.http_server import HttpServer, SlackWsgiApp
from bot.metrics import Metrics
from bot.policy_source import load_configured_policy
from bot.settings import Settings
from bot.wiring import Services, build_services
from procedures.errors import ConfigError


def health_report(services: Services) -> dict[str, Any]:
    """``GET /healthz``: the bot's own database, worker and scheduler."""
    database = "ok" if services.database.ping() else "unreachable"
    worker = services.worker_health()
    status = "ok" if database == "ok" and worker in ("ok", "idle") else "degraded"
    return {"status": status, "database": database, "worker": worker,
            "scheduler": services.scheduler_health()}


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
    services = build_services(settings, policy=policy)
    metrics = Metrics()
    metrics.gauge("qlp_outbox_pending", lambda: float(services.outbox.pending_count()))
    app = create_app(services, signing_secret=settings.slack_signing_secret)
    server = HttpServer(SlackWsgiApp(app, lambda: health_report(services), metrics),
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
    print(f"qlp-bot serving on http://{host}:{server.port} (POST /slack/events, GET /healthz)",
          file=sys.stderr, flush=True)
    stop.wait()
    server.stop()
    services.close()
    return 0


def run_socket(settings: Settings) -> int:
    """``qlp-bot socket``: Socket Mode through slack_sdk's built-in client."""
    from slack_bolt.adapter.socket_mode import SocketModeHandler

    _require(settings, "SLACK_BOT_TOKEN", "SLACK_APP_TOKEN")
    policy = load_configured_policy(settings, allow_demo=False)
    services = build_services(settings, policy=policy)
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
        handler.close()
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
