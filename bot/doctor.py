"""``qlp-bot doctor [env]`` and ``/qlp doctor [env]``: the checks, composed and delivered.

:func:`doctor_checks` lists the checks in the order a deployment needs them: the policy file,
the bot's database (reachable, and at the schema head), Slack (the token, the manifest's scopes
from ``auth.test``'s ``x-oauth-scopes`` header, the bot in the deployment channel) and then each
environment's platform (local: a short line; Azure: ``procedures.platforms.azure.doctor``).
:func:`run_doctor` runs them (``procedures.doctor.run_checks``) with the services of a running
bot, or, from the command line, with what it builds itself and closes afterwards.

``/qlp doctor`` must not touch the network before its ack: the listener only queues a
:class:`DoctorRequest` on the :class:`DoctorTask` (a worker task) and answers at once; the task
runs the checks on its own thread and puts the result in the outbox as an ephemeral message,
which the outbox sender delivers like every other message.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from bot.formatting import escape
from bot.settings import Settings
from procedures.clock import Clock, SystemClock
from procedures.doctor import (
    Check,
    CheckResult,
    DoctorReport,
    Verdict,
    fail,
    ok,
    run_checks,
    skipped,
    warn,
)
from procedures.errors import ConfigError, QlpError
from procedures.policy import Policy

if TYPE_CHECKING:
    from bot.platforms import AzureFactory, PlatformRegistry
    from bot.ports import DoctorServices, HasWorkerTasks
    from storage.db import Database

log = logging.getLogger(__name__)

__all__ = [
    "MANIFEST_BOT_SCOPES",
    "DoctorRequest",
    "DoctorTask",
    "doctor_blocks",
    "doctor_checks",
    "doctor_task",
    "run_doctor",
]

MANIFEST_BOT_SCOPES: tuple[str, ...] = (
    "commands", "chat:write", "chat:write.public", "usergroups:read", "users:read",
    "channels:read", "groups:read", "channels:history", "groups:history", "channels:join",
    "files:write")
"""The bot scopes of ``manifest.yml`` (``oauth_config.scopes.bot``; a test keeps them equal).
Kept in code because the manifest is not part of the installed package."""

SCOPE_USE = {
    "commands": "the /qlp slash command",
    "chat:write": "deployment cards, thread replies and their updates",
    "chat:write.public": "posting in public channels the bot was not invited to",
    "usergroups:read": "approver rules that name a Slack user group",
    "users:read": "names on the cards",
    "channels:read": "checking that the bot is in the deployment channel",
    "groups:read": "the same for a private deployment channel",
    "channels:history": "looking up a post whose answer was lost, so it is not posted twice",
    "groups:history": "the same in a private deployment channel",
    "channels:join": "rejoining a public channel the bot was removed from",
    "files:write": "the monitoring chart in a deployment's thread",
}


# -- the checks ----------------------------------------------------------------------------------


def _policy_check(settings: Settings, *, allow_demo: bool, loaded: list[Policy],
                  running: Policy | None = None) -> Check:
    """The policy file, loaded as the bot loads it. In a running bot (``running``), the
    environments are checked with the policy it runs on; its file is still re-read when there
    is one, so an edit that would not load is caught before the next restart."""

    def run() -> CheckResult:
        from bot.policy_source import load_configured_policy

        if running is not None:
            loaded.append(running)
            if settings.qlp_config is None:
                return ok("policy", "policy file", "the running bot's policy is valid: "
                          + _environments(running))
        where = str(settings.qlp_config) if settings.qlp_config else "the built-in demo policy"
        try:
            policy = load_configured_policy(settings, allow_demo=allow_demo)
        except ConfigError as error:
            fix = f"fix {error.key} in {where}" if error.key else f"fix {where}"
            if running is not None:
                fix += " (the running bot keeps the policy it started with until it restarts)"
            return fail("policy", "policy file", error.message, fix)
        if running is None:
            loaded.append(policy)
        return ok("policy", "policy file", f"{where} is valid: {_environments(policy)}")

    return Check("policy", "policy file", run)


def _environments(policy: Policy) -> str:
    return ", ".join(f"{name} ({env.platform})" for name, env in policy.environments.items())


def _database_check(database: Callable[[], Database]) -> Check:
    def run() -> CheckResult:
        from storage.migrate import current_revision, head_revision

        db = database()
        try:
            current = current_revision(db)
        except Exception as error:
            first = (str(error).strip().splitlines() or [type(error).__name__])[0][:300]
            return fail("database", "database", f"not reachable: {first}",
                        "check QLP_DATABASE_URL and that the server accepts the bot")
        head = head_revision()
        if current == head:
            return ok("database", "database", f"reachable, schema at head ({head})")
        if current is None:
            return warn("database", "database", "reachable, never migrated: the bot migrates "
                        "it to the head when it starts", "or run `qlp-bot db upgrade` now")
        return warn("database", "database", f"reachable, schema at {current}, head is {head}: "
                    "the bot migrates it when it starts", "or run `qlp-bot db upgrade` now")

    return Check("database", "database", run)


def _slack_checks(token: str | None, client: Callable[[], WebClient],
                  channel: Callable[[], str | None]) -> list[Check]:
    state: dict[str, Any] = {}

    def auth() -> CheckResult:
        if not token:
            return skipped("slack", "Slack token", "skipped: no SLACK_BOT_TOKEN (local shell)")
        try:
            response = client().auth_test()
        except SlackApiError as error:
            code = str(error.response.get("error", "error"))
            return fail("slack", "Slack token", f"auth.test answered {code}",
                        "set SLACK_BOT_TOKEN to the app's Bot User OAuth Token (xoxb-...) "
                        "from OAuth & Permissions")
        except Exception as error:
            return fail("slack", "Slack token", f"Slack is not reachable: {error}",
                        "check SLACK_API_URL and the network")
        headers = {str(k).lower(): v for k, v in (response.headers or {}).items()}
        raw = headers.get("x-oauth-scopes")
        if isinstance(raw, list):
            raw = ",".join(str(item) for item in raw)
        state["scopes"] = None if raw is None else {
            scope.strip() for scope in str(raw).split(",") if scope.strip()}
        return ok("slack", "Slack token", f"valid: bot {response.get('user', '?')} "
                  f"({response.get('user_id', '?')}) in {response.get('team', '?')}")

    def scopes() -> CheckResult:
        if not token:
            return skipped("slack", "Slack scopes", "skipped: no SLACK_BOT_TOKEN (local shell)")
        if "scopes" not in state:
            return skipped("slack", "Slack scopes", "not checked: the token is not valid")
        granted = state["scopes"]
        if granted is None:
            return warn("slack", "Slack scopes", "auth.test sent no x-oauth-scopes header",
                        "compare the app's scopes with manifest.yml by hand")
        missing = [scope for scope in MANIFEST_BOT_SCOPES if scope not in granted]
        if missing:
            uses = "; ".join(f"{scope} ({SCOPE_USE.get(scope, 'in manifest.yml')})"
                             for scope in missing)
            return fail("slack", "Slack scopes", f"the token lacks {uses}",
                        "add the scopes under OAuth & Permissions (or recreate the app from "
                        "manifest.yml) and reinstall the app to the workspace")
        return ok("slack", "Slack scopes", ", ".join(MANIFEST_BOT_SCOPES))

    def membership() -> CheckResult:
        name = "deployment channel"
        if not token:
            return skipped("slack", name, "skipped: no SLACK_BOT_TOKEN (local shell)")
        if "scopes" not in state:
            return skipped("slack", name, "not checked: the token is not valid")
        where = channel()
        if not where:
            return skipped("slack", name, "not checked: no valid policy names the channel")
        try:
            response = client().conversations_info(channel=where)
        except SlackApiError as error:
            code = str(error.response.get("error", "error"))
            if code == "missing_scope":
                needed = error.response.get("needed") or "channels:read"
                return warn("slack", name, f"not checked: conversations.info needs {needed}, "
                            "which the manifest does not ask for",
                            f"add {needed} (and groups:read for a private channel) to see "
                            "membership here")
            if code == "channel_not_found":
                return fail("slack", name, f"{where} does not exist or the bot cannot see it",
                            "fix channel in the policy file, or invite the bot "
                            "(/invite @qlp) to the private channel")
            return fail("slack", name, f"conversations.info answered {code}")
        info = response.get("channel") or {}
        label = f"#{info.get('name')} ({where})" if info.get("name") else where
        if info.get("is_member"):
            return ok("slack", name, f"the bot is a member of {label}")
        granted = state.get("scopes") or set()
        if not info.get("is_private") and "chat:write.public" in granted:
            return ok("slack", name, f"the bot is not a member of {label}; it posts there "
                      "with chat:write.public")
        return fail("slack", name, f"the bot is not a member of {label}",
                    f"invite it: /invite @qlp in {label}")

    return [Check("slack", "Slack token", auth), Check("slack", "Slack scopes", scopes),
            Check("slack", "deployment channel", membership)]


def _environment_checks(policy: Policy, environment: str | None,
                        platforms: Callable[[], PlatformRegistry], clock: Clock,
                        closers: list[Callable[[], None]]) -> list[Check]:
    if environment is not None and environment not in policy.environments:
        known = ", ".join(policy.environments)
        return [Check(environment, "environment", lambda: fail(
            environment, "environment", f"no environment {environment} in the policy",
            f"one of: {known}"))]
    names = [environment] if environment else list(policy.environments)
    checks: list[Check] = []
    for name in names:
        env = policy.environments[name]
        if env.platform == "local":
            checks.append(Check(name, "platform", _local_check(name, policy)))
            continue
        checks += _azure_checks(name, platforms, clock, closers)
    return checks


def _local_check(name: str, policy: Policy) -> Callable[[], CheckResult]:
    def run() -> CheckResult:
        env = policy.environments[name]
        slots = getattr(env.local, "slots", None)
        ports = (f"; slots blue:{slots.blue}, green:{slots.green}"
                 if slots is not None and hasattr(slots, "blue") else "")
        return ok(name, "platform", f"local platform, public URL {env.url}{ports}")

    return run


def _azure_checks(name: str, platforms: Callable[[], PlatformRegistry], clock: Clock,
                  closers: list[Callable[[], None]]) -> list[Check]:
    from procedures.platforms.azure.doctor import azure_checks
    from procedures.platforms.azure.monitoring import AzureMetrics
    from procedures.platforms.azure.platform import AzurePlatform

    registry = platforms()
    try:
        platform = registry.platform_for(name)
        metrics = registry.metrics_for(name)
    except QlpError as error:
        result = fail(name, "platform", error.message, error.hint)
        return [Check(name, "platform", lambda: result)]
    if not isinstance(platform, AzurePlatform):
        return [Check(name, "platform", lambda: fail(
            name, "platform", f"{name}'s platform is not an Azure platform"))]
    checks, close = azure_checks(name, platform,
                                 metrics if isinstance(metrics, AzureMetrics) else None,
                                 now=clock.now)
    closers.append(close)
    return checks


def doctor_checks(settings: Settings, *, environment: str | None = None,
                  allow_demo: bool = False, database: Callable[[], Database],
                  slack: Callable[[], WebClient],
                  platforms: Callable[[Policy], PlatformRegistry],
                  clock: Clock, closers: list[Callable[[], None]],
                  running: Policy | None = None) -> list[Check]:
    """Every check, in order. The environments' checks are listed once the policy is loaded
    (so they run after the policy, database and Slack lines)."""
    loaded: list[Policy] = []
    policy_check = _policy_check(settings, allow_demo=allow_demo, loaded=loaded,
                                 running=running)

    def channel() -> str | None:
        return loaded[0].channel if loaded else None

    def environments() -> list[CheckResult]:
        if not loaded:
            return [skipped("platforms", "environments", "not checked: the policy is not "
                            "valid")]
        policy = loaded[0]
        registry: list[PlatformRegistry] = []

        def registry_of() -> PlatformRegistry:
            if not registry:
                registry.append(platforms(policy))
            return registry[0]

        try:
            checks = _environment_checks(policy, environment, registry_of, clock, closers)
        except QlpError as error:  # e.g. an azure: section that does not validate
            return [fail("platforms", "environments", error.message, error.hint)]
        return list(run_checks(checks).results)

    from bot.audit_cli import audit_key_check

    return [policy_check, _database_check(database),
            audit_key_check(settings, served=not allow_demo),
            *_slack_checks(settings.slack_bot_token, slack, channel),
            Check("platforms", "environments", environments)]


def run_doctor(settings: Settings, environment: str | None = None, *,
               services: DoctorServices | None = None, allow_demo: bool | None = None,
               azure_factory: AzureFactory | None = None,
               clock: Clock | None = None) -> DoctorReport:
    """Run every check. With ``services`` (``/qlp doctor``): the running bot's database, Slack
    client and platforms. Without (``qlp-bot doctor``): built here, closed afterwards;
    ``azure_factory`` points Azure environments elsewhere (tests). ``allow_demo`` (default:
    when no Slack token is set, as the local shell does) accepts the built-in demo policy."""
    from bot.platforms import PlatformRegistry
    from bot.slack_client import make_web_client

    if allow_demo is None:
        allow_demo = not (settings.slack_bot_token or settings.slack_app_token
                          or settings.slack_signing_secret)
    clock = clock or (services.clock if services is not None else SystemClock())
    closers: list[Callable[[], None]] = []
    built: dict[str, Any] = {}

    def database() -> Database:
        if services is not None:
            return services.database
        if "database" not in built:
            from storage.db import Database

            settings.qlp_home.mkdir(parents=True, exist_ok=True)
            built["database"] = Database(settings.database_url)
            closers.append(built["database"].dispose)
        db: Database = built["database"]
        return db

    def slack() -> WebClient:
        if services is not None:
            return services.slack
        return make_web_client(settings.slack_bot_token or "", settings.api_url)

    def platforms(policy: Policy) -> PlatformRegistry:
        if services is not None:
            return services.platforms
        registry = PlatformRegistry(policy, settings.qlp_home / "platform", clock,
                                    azure_factory=azure_factory)
        closers.append(registry.close)
        return registry

    try:
        checks = doctor_checks(settings, environment=environment, allow_demo=allow_demo,
                               database=database, slack=slack, platforms=platforms,
                               clock=clock, closers=closers,
                               running=services.policy if services is not None else None)
        return run_checks(checks)
    finally:
        for close in reversed(closers):
            try:
                close()
            except Exception:  # closing must not hide the report
                log.warning("doctor: closing failed", exc_info=True)


# -- Slack rendering -----------------------------------------------------------------------------

_ICONS = {Verdict.OK: ":white_check_mark:", Verdict.WARN: ":warning:", Verdict.FAIL: ":x:",
          Verdict.SKIPPED: ":heavy_minus_sign:"}
SECTION_LIMIT = 2900  # Block Kit allows 3000 characters of text per section
MAX_SECTIONS = 45  # and 50 blocks per message


def _mrkdwn_line(result: CheckResult) -> str:
    line = (f"{_ICONS[result.verdict]} *{escape(result.area)}* {escape(result.name)}: "
            f"{escape(result.detail)}")
    if result.fix and result.verdict in (Verdict.FAIL, Verdict.WARN):
        line += f"\n      _fix:_ {escape(result.fix)}"
    return line


def doctor_blocks(report: DoctorReport, title: str) -> tuple[str, list[dict[str, Any]]]:
    """The fallback text and the Block Kit blocks of ``report``."""
    sections: list[str] = []
    current = ""
    for result in report.results:
        line = _mrkdwn_line(result)[:SECTION_LIMIT]
        if current and len(current) + 1 + len(line) > SECTION_LIMIT:
            sections.append(current)
            current = line
        else:
            current = f"{current}\n{line}" if current else line
    if current:
        sections.append(current)
    verdict = ":white_check_mark:" if report.ok else ":x:"
    header = f"{verdict} *{escape(title)}*: {escape(report.summary())}"
    blocks: list[dict[str, Any]] = [{"type": "section", "text": {"type": "mrkdwn",
                                                                  "text": header}}]
    blocks += [{"type": "section", "text": {"type": "mrkdwn", "text": text}}
               for text in sections[:MAX_SECTIONS]]
    fallback = f"{title}: {report.summary()}"
    failures = [f"{r.area} {r.name}: {r.detail}" for r in report.failures]
    if failures:
        fallback += " Failed: " + "; ".join(failures)
    return escape(fallback[:3000]), blocks


# -- /qlp doctor: the worker task ------------------------------------------------------------------


@dataclass(frozen=True)
class DoctorRequest:
    """Who asked, where to answer, and which environment (None: all)."""

    user: str
    channel: str
    environment: str | None


class DoctorTask:
    """Worker task: runs queued ``/qlp doctor`` requests on a thread of its own (the checks take
    seconds; outbox delivery must not wait) and puts each report in the outbox as an ephemeral
    message to the person who asked. Requests live in memory: a restart drops a queued one, and
    asking again is the remedy."""

    name = "doctor"

    def __init__(self, services: DoctorServices,
                 run: Callable[[DoctorServices, str | None], DoctorReport] | None = None,
                 ) -> None:
        self._services = services
        self._run = run or (lambda svc, env: run_doctor(svc.settings, env, services=svc))
        self._queue: deque[DoctorRequest] = deque()
        self._running: list[Future[None]] = []
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="qlp-doctor")

    def submit(self, request: DoctorRequest) -> None:
        with self._lock:
            self._queue.append(request)

    def run_once(self) -> bool:
        with self._lock:
            self._running = [f for f in self._running if not f.done()]
            if not self._queue:
                return False
            request = self._queue.popleft()
            self._running.append(self._pool.submit(self._complete, request))
        return True

    def _complete(self, request: DoctorRequest) -> None:
        services = self._services
        where = request.environment or "every environment"
        title = f"qlp doctor ({where})"
        try:
            report = self._run(services, request.environment)
            text, blocks = doctor_blocks(report, title)
        except Exception as error:  # the person who asked hears why
            log.exception("doctor: the checks could not run")
            text, blocks = escape(f"{title}: the checks could not run: {error}"[:3000]), []
        payload: dict[str, Any] = {"user": request.user, "text": text}
        if blocks:
            payload["blocks"] = blocks
        services.outbox.enqueue(request.channel, "ephemeral", payload)
        services.wake_worker()

    def busy(self) -> bool:
        with self._lock:
            return bool(self._queue) or any(not f.done() for f in self._running)

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)




def doctor_task(services: HasWorkerTasks) -> DoctorTask:
    """The services' doctor task (one of the worker's tasks, see ``Services.worker_tasks``)."""
    for task in services.worker_tasks():
        if isinstance(task, DoctorTask):
            return task
    raise RuntimeError("the worker has no doctor task")  # pragma: no cover: wiring adds it


def main_doctor(settings: Settings, environment: str | None) -> int:
    """``qlp-bot doctor [env]``: print the report, exit 0 only when a deployment can run."""
    report = run_doctor(settings, environment)
    print(report.text())
    return report.exit_code
