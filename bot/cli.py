"""``qlp-bot``: the one entry point.

    qlp-bot                 socket mode if SLACK_APP_TOKEN is set, HTTP if SLACK_SIGNING_SECRET
                            is, else the local shell
    qlp-bot serve [--host H] [--port N]
    qlp-bot socket
    qlp-bot shell [--user U123] [--shared-database]
    qlp-bot db upgrade
    qlp-bot audit verify [--anchors FILE ...]
                            check the keyed audit chain and its anchors; exit 1 naming the
                            first altered row, 2 for a wrong or missing audit key
    qlp-bot audit anchor    anchor the audit chain head now (log, anchor file, audit channel)
    qlp-bot doctor [env]    check what a deployment needs; exit 0 only when one can run
"""

from __future__ import annotations

import argparse
import atexit
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from bot.log_redaction import install as redact_logs
from bot.log_redaction import settings_secrets
from bot.logging_setup import configure as configure_logging
from bot.settings import Settings
from procedures.errors import ConfigError, QlpError

EXIT_CONFIG = 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="qlp-bot", description="QLP deploy bot for Slack.")
    sub = parser.add_subparsers(dest="mode")
    serve = sub.add_parser("serve", help="HTTP mode: POST /slack/events, GET /healthz, /metrics")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=3000)
    serve.add_argument("--threads", type=int, default=16)
    sub.add_parser("socket", help="Socket Mode (needs SLACK_APP_TOKEN)")
    shell = sub.add_parser("shell", help="the local shell: a terminal stand-in for Slack")
    shell.add_argument("--user", default="U0DEV", help="the Slack user you are (default U0DEV)")
    shell.add_argument("--channel", default=None, help="the channel you type in")
    shell.add_argument("--color", action="store_true", help="colour the output")
    shell.add_argument("--shared-database", "--i-know-this-is-shared", dest="shared_database",
                       action="store_true",
                       help="start even though a served bot uses this database (refused "
                            "otherwise); only this shell's own messages are shown")
    db = sub.add_parser("db", help="the bot's own database")
    db.add_argument("action", choices=["upgrade", "current"])
    audit = sub.add_parser("audit", help="the audit log")
    audit.add_argument("action", choices=["verify", "anchor"])
    audit.add_argument("--anchors", action="append", default=[], type=Path, metavar="FILE",
                       help="verify: also compare with the anchors in FILE (a saved log or an "
                            "export of the audit channel); repeatable")
    doctor = sub.add_parser("doctor", help="check the policy, database, Slack and each "
                                           "environment's platform; exit 0 when a deployment "
                                           "can run")
    doctor.add_argument("environment", nargs="?", default=None,
                        help="one environment (default: all)")
    return parser


def choose_mode(settings: Settings) -> str:
    """Bare ``qlp-bot``: socket when an app token is set, serve when a signing secret is."""
    if settings.slack_app_token:
        return "socket"
    if settings.slack_signing_secret:
        return "serve"
    return "shell"


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = Settings()
        mode = args.mode or choose_mode(settings)
        # JSON lines in serve and socket modes, text elsewhere (QLP_LOG_FORMAT decides too).
        configure_logging(level=settings.qlp_log_level, mode=mode,
                          log_format=settings.qlp_log_format)
        redact_logs(settings_secrets(settings))  # no body, response_url or token in any log
        if mode in ("serve", "socket"):  # spans over OTLP when OTEL_EXPORTER_OTLP_ENDPOINT is set
            from bot.tracing_setup import setup_tracing, stop_tracing

            atexit.register(stop_tracing, setup_tracing(mode=mode))
        # Settings holds the bot token now: Bolt would read SLACK_BOT_TOKEN from the
        # environment again at App() and warn that it is unused next to the app's client
        # (its "As you gave `client`..."); nor should a child process inherit it.
        os.environ.pop("SLACK_BOT_TOKEN", None)
        if mode in ("shell", "serve", "socket"):
            from bot.audit_cli import install_audit_key

            install_audit_key(settings, mode)  # every audit row is signed with it
        if mode == "shell":
            from bot.shell.repl import run_shell

            return run_shell(settings, user=getattr(args, "user", "U0DEV"),
                             channel=getattr(args, "channel", None),
                             color=getattr(args, "color", False),
                             shared_database=getattr(args, "shared_database", False))
        if mode == "serve":
            from bot.modes import run_serve

            return run_serve(settings, host=getattr(args, "host", "127.0.0.1"),
                             port=getattr(args, "port", 3000),
                             threads=getattr(args, "threads", 16))
        if mode == "socket":
            from bot.modes import run_socket

            return run_socket(settings)
        if mode == "db":
            from bot.modes import run_db

            return run_db(settings, args.action)
        if mode == "doctor":
            from bot.doctor import main_doctor

            return main_doctor(settings, args.environment)
        if mode == "audit":
            from bot.audit_cli import run_audit_verify
            from bot.schedule.audit_anchor import run_audit_anchor

            if args.action == "anchor":
                return run_audit_anchor(settings)
            return run_audit_verify(settings, anchors=args.anchors)
    except ConfigError as error:
        print(f"qlp-bot: configuration error: {error.message}", file=sys.stderr)
        return EXIT_CONFIG
    except QlpError as error:
        print(f"qlp-bot: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
