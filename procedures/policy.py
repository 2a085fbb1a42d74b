"""The policy file (``qlp.example.yml`` documents every key): environments, windows, approvers,
monitoring thresholds and notification routes.

Loaded and validated once at start. A bad file raises :class:`ConfigError` whose message names
the key and the problem, so the bot can stop with one line instead of a traceback.
"""

from __future__ import annotations

import difflib
import re
from datetime import date, time, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from procedures.durations import parse_duration
from procedures.errors import ConfigError

DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
# The keys of ``approvals``: the procedure kinds, plus ``override`` (who grants a break-glass
# request) and ``lock`` (who may ``/qlp lock`` an environment or lift another person's lock).
PROCEDURE_KINDS = ("standard", "hotfix", "emergency", "rollback", "override", "migration",
                   "lock")
_SLACK_USER = re.compile(r"^[UW][A-Z0-9]{2,}$")
_SLACK_GROUP = re.compile(r"^S[A-Z0-9]{2,}$")
_SLACK_CHANNEL = re.compile(r"^[CG][A-Z0-9]{2,}$")


def _day(value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 6:
        return value
    text = str(value).strip().lower()[:3]
    if text not in DAY_NAMES:
        raise ValueError(f"{value!r} is not a day; use one of {', '.join(DAY_NAMES)}")
    return DAY_NAMES.index(text)


def _duration(value: Any) -> timedelta:
    if isinstance(value, timedelta):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return timedelta(seconds=value)
    return parse_duration(str(value))


def _clock_time(value: Any) -> time:
    if isinstance(value, time):
        return value
    if isinstance(value, int):  # YAML reads 10:00 as sexagesimal 600
        hours, minutes = divmod(value, 60)
        return time(hours, minutes)
    match = re.fullmatch(r"(\d{1,2}):(\d{2})", str(value).strip())
    if not match or int(match[1]) > 24 or int(match[2]) > 59:
        raise ValueError(f"{value!r} is not a time of day; write HH:MM, e.g. 10:00")
    hour, minute = int(match[1]), int(match[2])
    if hour == 24:
        if minute:
            raise ValueError(f"{value!r} is past midnight; the latest end is 24:00")
        return time(23, 59, 59, 999999)
    return time(hour, minute)


Day = Annotated[int, BeforeValidator(_day)]
Duration = Annotated[timedelta, BeforeValidator(_duration)]
ClockTime = Annotated[time, BeforeValidator(_clock_time)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LocalPlatformSettings(_Strict):
    """How the local platform starts a slot: an argv template, never a shell string."""

    command: list[str] = Field(min_length=1)
    slots: dict[Literal["blue", "green"], int]
    ready_timeout: Duration = timedelta(seconds=30)
    workdir: str | None = None

    @field_validator("slots")
    @classmethod
    def _both_colours(cls, slots: dict[str, int]) -> dict[str, int]:
        if set(slots) != {"blue", "green"}:
            raise ValueError("needs both colours: {blue: PORT, green: PORT}")
        if slots["blue"] == slots["green"]:
            raise ValueError("blue and green need different ports")
        for colour, port in slots.items():
            if not 1 <= port <= 65535:
                raise ValueError(f"{colour}: {port} is not a TCP port (1-65535)")
        return slots


class CiSettings(_Strict):
    """Where ``final_validation`` reads the CI status: a GitHub Actions workflow on a branch.

    ``token_env`` names the token the bot's settings hold (``GITHUB_TOKEN``); the token itself
    never lives in the policy file.
    """

    repository: str
    workflow: str
    branch: str = "main"
    token_env: str = "GITHUB_TOKEN"  # noqa: S105 (a variable name, not a secret)
    api_url: str = "https://api.github.com"

    @field_validator("repository")
    @classmethod
    def _repository(cls, value: str) -> str:
        from procedures.checks.ci_status import validate_repository

        validate_repository(value)
        return value

    @field_validator("workflow", mode="before")
    @classmethod
    def _workflow(cls, value: Any) -> str:
        from procedures.checks.ci_status import validate_workflow

        return validate_workflow(str(value))

    @field_validator("branch")
    @classmethod
    def _branch(cls, value: str) -> str:
        from procedures.checks.ci_status import validate_branch

        return validate_branch(value)

    @field_validator("token_env")
    @classmethod
    def _token_env(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Z_][A-Z0-9_]*", value):
            raise ValueError(f"{value!r} is not an environment variable name (e.g. GITHUB_TOKEN)")
        return value

    @field_validator("api_url")
    @classmethod
    def _api_url(cls, value: str) -> str:
        if not re.match(r"^https?://[^\s/]+", value):
            raise ValueError(f"{value!r} is not an http(s) URL")
        return value.rstrip("/")


class Rehearsal(_Strict):
    """How a deployment is rehearsed on the environment it is promoted from (seed 2.2).

    ``compare_for`` is the seed's ``compare-performance.sh --duration 300s``; the rehearsal
    stops the deployment when the rehearsed version's response time (p95) is more than
    ``max_slowdown`` times production's over the same period.
    """

    compare_for: Duration = timedelta(seconds=300)
    max_slowdown: float = Field(default=1.5, gt=1)


class Environment(_Strict):
    """One deployment target."""

    platform: Literal["local", "azure"]
    url: str
    local: LocalPlatformSettings | None = None
    azure: dict[str, Any] | None = None
    health: list[str] = Field(default_factory=lambda: ["/health"])
    smoke: list[str] = Field(default_factory=list)
    database_url: str | None = None
    migrations_dir: str | None = None
    ci: CiSettings | None = None
    slow_query_ms: float | None = Field(default=None, gt=0)
    # This environment's own deployment windows and approval rules (e.g. staging: any time,
    # one approval from the team); without them the policy's top-level ones apply.
    windows: Windows | None = None
    approvals: dict[str, ApprovalRule] | None = None
    # The environment this one is promoted from (seed 2.2: production from staging). A standard
    # deployment here first rehearses the same version there; a migration is applied there first.
    promoted_from: str | None = None
    rehearsal: Rehearsal | None = None

    @field_validator("url")
    @classmethod
    def _http_url(cls, url: str) -> str:
        if not re.match(r"^https?://[^\s/]+", url):
            raise ValueError(f"{url!r} is not an http(s) URL")
        return url.rstrip("/")

    @field_validator("health", "smoke")
    @classmethod
    def _paths(cls, paths: list[str]) -> list[str]:
        for path in paths:
            if not path.startswith("/"):
                raise ValueError(f"{path!r} must be a path starting with /")
        return paths

    @model_validator(mode="after")
    def _platform_settings(self) -> Environment:
        if self.platform == "local" and self.local is None:
            raise ValueError("platform local needs a 'local:' section (command, slots)")
        if self.platform == "azure" and self.azure is None:
            raise ValueError("platform azure needs an 'azure:' section")
        if self.slow_query_ms is not None and not self.database_url:
            raise ValueError("slow_query_ms needs the environment's database_url")
        return self


class PreferredWindow(_Strict):
    """Days and hours, in the policy's time zone, when standard deployments are preferred."""

    days: list[Day] = Field(min_length=1)
    start: ClockTime = time(0, 0)
    end: ClockTime = time(23, 59, 59, 999999)

    @model_validator(mode="after")
    def _ordered(self) -> PreferredWindow:
        if self.end <= self.start:
            raise ValueError("end must be after start (windows do not cross midnight)")
        return self


class HolidayCalendar(_Strict):
    """Public holidays from the ``holidays`` package; a week that holds one is avoided."""

    country: str
    subdivision: str | None = None

    @field_validator("country")
    @classmethod
    def _known_country(cls, country: str) -> str:
        import holidays

        supported = holidays.list_supported_countries()
        if country.upper() not in supported:
            near = difflib.get_close_matches(country.upper(), list(supported), n=3)
            hint = f" (did you mean {', '.join(near)}?)" if near else ""
            raise ValueError(f"{country!r} is not a country code the holidays package knows{hint}")
        return country.upper()


class Freeze(_Strict):
    """A period (both days inclusive) in which nothing but emergencies deploys."""

    start: date
    end: date
    reason: str = "deployment freeze"

    @model_validator(mode="after")
    def _ordered(self) -> Freeze:
        if self.end < self.start:
            raise ValueError("end is before start")
        return self


class Windows(_Strict):
    """When standard deployments may run."""

    preferred: list[PreferredWindow] = Field(min_length=1)
    avoid_days: list[Day] = Field(default_factory=list)
    holidays: HolidayCalendar | None = None
    freezes: list[Freeze] = Field(default_factory=list)
    # A time that is neither preferred nor avoided (seed 3.1: "prefer Tue/Wed 10-14"): allowed
    # and marked "outside the preferred window" (the seed's default), one more approval, or
    # refused unless broken glass.
    outside_preferred: Literal["allow", "extra-approval", "refuse"] = "allow"
    # How long a deployment takes (seed 3.1: 30-60 minutes): a start closer than this to the
    # window's close is marked "may overrun the window".
    planned_duration: Duration = timedelta(minutes=45)


class ApprovalRule(_Strict):
    """Who may approve a procedure kind, and how many must. Never the requester."""

    users: list[str] = Field(default_factory=list)
    groups: list[str] = Field(default_factory=list)
    required: int = Field(default=1, ge=1, le=10)

    @field_validator("users")
    @classmethod
    def _user_ids(cls, users: list[str]) -> list[str]:
        for user in users:
            if not _SLACK_USER.match(user):
                raise ValueError(f"{user!r} is not a Slack user ID (U… or W…)")
        return users

    @field_validator("groups")
    @classmethod
    def _group_ids(cls, groups: list[str]) -> list[str]:
        for group in groups:
            if not _SLACK_GROUP.match(group):
                raise ValueError(f"{group!r} is not a Slack user group ID (S…)")
        return groups

    @model_validator(mode="after")
    def _someone(self) -> ApprovalRule:
        if not self.users and not self.groups:
            raise ValueError("name at least one approver in users or groups")
        return self


def _check_paths(paths: list[str]) -> list[str]:
    for path in paths:
        if not path.startswith("/"):
            raise ValueError(f"{path!r} must be a path starting with /")
    return paths


class Monitoring(_Strict):
    """How long and how closely a new version is watched: the seed's post-deployment
    monitoring (4.1) and its rollback decision matrix, with the seed's values as defaults.

    Automatic rollback: more than ``health_failure_ratio`` of the health checks failed within
    ``health_window``; ``health_failures`` failed health checks in total (the seed's
    ``ALERT_THRESHOLD``); an error rate over ``error_rate_ratio`` times the previous version's
    recorded baseline; a ``database_health`` path (database connection failures) or a smoke path
    (critical functionality) failing ``critical_failures`` checks in a row.

    Warnings (counted, never a rollback; more than ``warnings_investigate`` says to investigate
    before the next deployment): a response slower than ``response_time_ms``, more than
    ``error_threshold`` errors within ``error_window``, an average database query time over
    ``db_query_ms`` (where the platform measures it), and no error data (``no_data``).

    Manual (the thread asks the rollback approvers, nothing rolls back by itself): responses
    slower than ``response_time_ratio`` times the baseline.
    """

    duration: Duration = timedelta(minutes=30)
    interval: Duration = timedelta(seconds=30)
    # automatic rollback
    health_failure_ratio: float = Field(default=0.5, gt=0, le=1)
    health_window: Duration = timedelta(minutes=5)
    health_failures: int = Field(default=10, ge=1)
    error_rate_ratio: float | None = Field(default=10.0, gt=1)
    database_health: list[str] = Field(default_factory=list)
    critical_failures: int = Field(default=2, ge=1)
    # warnings
    response_time_ms: int = Field(default=2000, gt=0)
    error_threshold: int = Field(default=5, ge=0)
    error_window: Duration = timedelta(minutes=5)
    db_query_ms: float = Field(default=100, gt=0)
    warnings_investigate: int = Field(default=20, ge=0)
    no_data: Literal["warn", "rollback"] = "warn"
    # manual
    response_time_ratio: float | None = Field(default=2.0, gt=1)
    # after a rollback (automatic or /qlp rollback): the public URL's health paths must answer
    # 2xx within this long (the seed's `timeout 120 ... until curl -f $PRODUCTION_URL/health`)
    rollback_verify: Duration = timedelta(minutes=2)
    # an emergency on the blue-green path (critical-bug, compliance) is watched this long after
    # its switch (the seed's blue-green-deploy.sh: monitor-deployment.sh --duration 300)
    emergency_stability: Duration = timedelta(minutes=5)
    # the extended health check after the switch keeps trying this long for its streak of
    # healthy answers (the seed's HEALTH_CHECK_TIMEOUT=300, health-check-extended.sh)
    extended_health: Duration = timedelta(seconds=300)

    @field_validator("database_health")
    @classmethod
    def _paths(cls, paths: list[str]) -> list[str]:
        return _check_paths(paths)

    @model_validator(mode="after")
    def _interval_fits(self) -> Monitoring:
        if self.interval <= timedelta(0):
            raise ValueError("interval must be positive")
        if self.interval > self.duration:
            raise ValueError("interval is longer than duration")
        for name in ("health_window", "error_window"):
            if getattr(self, name) <= timedelta(0):
                raise ValueError(f"{name} must be positive")
        if not timedelta(seconds=3) <= self.extended_health <= timedelta(minutes=30):
            raise ValueError("extended_health must be between 3s and 30m (the seed: 300s)")
        if not timedelta(seconds=1) <= self.emergency_stability <= timedelta(minutes=30):
            raise ValueError("emergency_stability must be between 1s and 30m (the seed: 5m)")
        if not timedelta(seconds=10) <= self.rollback_verify <= timedelta(minutes=10):
            raise ValueError("rollback_verify must be between 10s and 10m (the seed: 2m)")
        return self


GateOrWarn = Literal["gate", "warn"]


class Validation(_Strict):
    """How each check of the final validation (the seed's 1.3 and 2.1) acts: ``gate`` stops
    the deployment, ``warn`` shows the finding amber on the card and in the thread and goes on.
    The seed's values are the defaults: its ``exit 1`` checks gate, its "consider postponing"
    ones warn.
    """

    health: GateOrWarn = "gate"  # the live URL's health paths answer 2xx
    ci: GateOrWarn = "gate"  # the newest CI run succeeded
    backup: GateOrWarn = "gate"  # the newest database backup is recent
    backup_max_age: Duration = timedelta(hours=6)  # seed: verify-backups.sh --age-limit 6h
    errors: GateOrWarn = "warn"  # failed requests on the live slot over the last hour
    errors_per_hour: int = Field(default=10, ge=0)
    slow_queries: GateOrWarn = "warn"  # statements slower on average than slow_query_ms
    slow_queries_max: int = Field(default=5, ge=0)
    no_data: GateOrWarn = "warn"  # the platform had no error data ("no data", never "0")

    @model_validator(mode="after")
    def _positive_age(self) -> Validation:
        if self.backup_max_age <= timedelta(0):
            raise ValueError("backup_max_age must be positive (e.g. 6h)")
        return self


_ROUTING_KEY = re.compile(r"^[A-Za-z0-9]{32}$")
_HOST = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                   r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$")


def _address(value: str) -> str:
    from procedures.notifiers.email import validate_address

    return validate_address(value)


class PagerDutyRoute(_Strict):
    """Where pages go: one PagerDuty service's Events API v2 integration.

    The routing key is added to each event when it is sent, never stored with it.
    """

    routing_key: str
    events_url: str = "https://events.pagerduty.com/v2/enqueue"

    @field_validator("routing_key")
    @classmethod
    def _routing_key(cls, value: str) -> str:
        if not _ROUTING_KEY.match(value):
            # The key is a secret of sorts: say what is wrong, not what it is.
            raise ValueError(
                f"is not an Events API v2 integration key ({len(value)} characters); it is "
                "32 letters and digits, from the service's Integrations tab in PagerDuty")
        return value

    @field_validator("events_url")
    @classmethod
    def _events_url(cls, value: str) -> str:
        if not re.match(r"^https?://[^\s/]+", value):
            raise ValueError(f"{value!r} is not an http(s) URL")
        return value


class EmailRoute(_Strict):
    """Where e-mail goes: one SMTP server, incident recipients and audience lists.

    ``to`` receives a copy of every page (trigger and resolve); ``audiences`` maps an audience
    (the names of ``notifications.audiences``, or others) to its addresses. The password is
    the bot's ``SMTP_PASSWORD`` setting, never a key of this file.
    """

    host: str
    port: int = Field(default=587, ge=1, le=65535)
    from_: str = Field(alias="from")
    starttls: bool = True
    username: str | None = None
    to: list[str] = Field(default_factory=list)
    audiences: dict[str, list[str]] = Field(default_factory=dict)

    @field_validator("host")
    @classmethod
    def _host(cls, value: str) -> str:
        if not _HOST.match(value):
            raise ValueError(f"{value!r} is not a host name (e.g. smtp.example.com)")
        return value

    @field_validator("from_")
    @classmethod
    def _from(cls, value: str) -> str:
        return _address(value)

    @field_validator("to")
    @classmethod
    def _to(cls, addresses: list[str]) -> list[str]:
        return [_address(a) for a in addresses]

    @field_validator("audiences")
    @classmethod
    def _audience_addresses(cls, audiences: dict[str, list[str]]) -> dict[str, list[str]]:
        for name, addresses in audiences.items():
            if not addresses:
                raise ValueError(f"{name}: list at least one address (or leave {name} out)")
            for address in addresses:
                try:
                    _address(address)
                except ValueError as exc:
                    raise ValueError(f"{name}: {exc}") from None
        return audiences

    @model_validator(mode="after")
    def _no_clear_text_password(self) -> EmailRoute:
        if self.username and not self.starttls:
            raise ValueError("username needs starttls: true (the password never travels in "
                             "clear text)")
        return self


class Notifications(_Strict):
    """Where notices go: audiences to Slack channels, PagerDuty, e-mail."""

    audiences: dict[str, str] = Field(default_factory=dict)
    pagerduty: PagerDutyRoute | None = None
    email: EmailRoute | None = None

    @model_validator(mode="before")
    @classmethod
    def _renamed(cls, data: Any) -> Any:
        if isinstance(data, dict) and "pagerduty_routing_key" in data:
            raise ValueError("pagerduty_routing_key is now written "
                             "pagerduty: {routing_key: ...} (with an optional events_url)")
        return data

    @field_validator("audiences")
    @classmethod
    def _channels(cls, audiences: dict[str, str]) -> dict[str, str]:
        for name, channel in audiences.items():
            if not _SLACK_CHANNEL.match(channel):
                raise ValueError(f"{name}: {channel!r} is not a Slack channel ID (C… or G…)")
        return audiences


_FOREVER = ("forever", "never", "off")
_RETENTION_MINIMUM = timedelta(days=1)


def _kept_for(value: Any) -> timedelta | None:
    """A retention period: a duration of at least a day, or ``forever`` (never purged)."""
    if value is None or (isinstance(value, str) and value.strip().lower() in _FOREVER):
        return None
    period = _duration(value)
    if period < _RETENTION_MINIMUM:
        raise ValueError(f"{value!r} is too short: keep rows at least 1d, or write forever")
    return period


KeptFor = Annotated[timedelta | None, BeforeValidator(_kept_for)]


class Retention(_Strict):
    """How long old rows are kept before the scheduled retention job deletes them.

    The audit log is not here: it is never purged.
    """

    processed_requests: KeptFor = timedelta(days=30)
    sent_notifications: KeptFor = timedelta(days=90)
    step_results: KeptFor = timedelta(days=365)

    @model_validator(mode="before")
    @classmethod
    def _no_audit(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for key in data:
                if str(key).lower().startswith("audit"):
                    raise ValueError(f"{key}: the audit log is never purged; remove this key")
        return data


class Policy(_Strict):
    """The whole policy file."""

    timezone: str = "UTC"
    channel: str
    environments: dict[str, Environment] = Field(min_length=1)
    default_environment: str | None = None
    windows: Windows
    approvals: dict[str, ApprovalRule]
    monitoring: Monitoring = Monitoring()
    validation: Validation = Validation()
    notifications: Notifications = Notifications()
    lock_max_age: Duration = timedelta(hours=8)
    # An unscheduled request nobody approved expires after this long, or sooner when its
    # window closes (bot.schedule.pending_requests).
    pending_max_age: Duration = timedelta(hours=24)
    retention: Retention = Retention()

    @field_validator("timezone")
    @classmethod
    def _zone(cls, name: str) -> str:
        try:
            ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"{name!r} is not an IANA time zone (e.g. UTC, Europe/Berlin)"
            ) from None
        return name

    @field_validator("channel")
    @classmethod
    def _channel(cls, channel: str) -> str:
        if not _SLACK_CHANNEL.match(channel):
            raise ValueError(f"{channel!r} is not a Slack channel ID (C… or G…)")
        return channel

    @field_validator("environments")
    @classmethod
    def _env_names(cls, envs: dict[str, Environment]) -> dict[str, Environment]:
        for name in envs:
            if not re.fullmatch(r"[a-z][a-z0-9-]{0,30}", name):
                raise ValueError(f"{name!r}: environment names are lowercase letters, digits, -")
        return envs

    @field_validator("approvals")
    @classmethod
    def _kinds(cls, rules: dict[str, ApprovalRule]) -> dict[str, ApprovalRule]:
        for kind in rules:
            if kind not in PROCEDURE_KINDS:
                near = difflib.get_close_matches(kind, PROCEDURE_KINDS, n=1)
                hint = f" (did you mean {near[0]}?)" if near else ""
                raise ValueError(
                    f"{kind!r} is not a procedure kind{hint}; kinds: {', '.join(PROCEDURE_KINDS)}"
                )
        if "standard" not in rules:
            raise ValueError("approvals.standard is required (other kinds fall back to it)")
        lock = rules.get("lock")
        if lock is not None and lock.required != 1:
            raise ValueError("approvals.lock names who may lock an environment; it counts no "
                             "approvals, so leave out required")
        return rules

    @model_validator(mode="after")
    def _environment_approvals(self) -> Policy:
        for name, env in self.environments.items():
            for kind in env.approvals or {}:
                if kind not in PROCEDURE_KINDS:
                    near = difflib.get_close_matches(kind, PROCEDURE_KINDS, n=1)
                    hint = f" (did you mean {near[0]}?)" if near else ""
                    raise ValueError(f"environments.{name}.approvals: {kind!r} is not a "
                                     f"procedure kind{hint}; kinds: {', '.join(PROCEDURE_KINDS)}")
        return self

    @model_validator(mode="after")
    def _promotion_chain(self) -> Policy:
        for name, env in self.environments.items():
            if env.promoted_from is None:
                if env.rehearsal is not None:
                    raise ValueError(f"environments.{name}.rehearsal needs promoted_from")
                continue
            if env.promoted_from == name:
                raise ValueError(f"environments.{name}.promoted_from names itself")
            if env.promoted_from not in self.environments:
                raise ValueError(
                    f"environments.{name}.promoted_from: {env.promoted_from!r} is not one of the "
                    f"environments ({', '.join(self.environments)})")
            source = self.environments[env.promoted_from]
            if source.promoted_from is not None:
                raise ValueError(
                    f"environments.{name}.promoted_from: {env.promoted_from!r} is itself promoted "
                    f"from {source.promoted_from!r}; one rehearsal stage is supported")
        return self

    @model_validator(mode="after")
    def _default_env(self) -> Policy:
        if self.default_environment and self.default_environment not in self.environments:
            raise ValueError(
                f"default_environment {self.default_environment!r} is not one of the environments"
            )
        return self

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def approval_rule(self, kind: str, environment: str | None = None) -> ApprovalRule:
        """The rule for ``kind`` (in ``environment``); a kind without its own rule uses the
        standard one. An environment with its own ``approvals`` uses those (its ``standard``
        for a kind it does not name), else the top-level ones."""
        env = self.environments.get(environment) if environment else None
        if env is not None and env.approvals:
            own = env.approvals.get(kind) or env.approvals.get("standard")
            if own is not None:
                return own
        return self.approvals.get(kind) or self.approvals["standard"]

    def windows_for(self, environment: str | None) -> Windows:
        """The deployment windows of ``environment``: its own, else the top-level ones."""
        env = self.environments.get(environment) if environment else None
        return env.windows if env is not None and env.windows is not None else self.windows

    def promoted_from(self, environment: str) -> str | None:
        """The environment ``environment`` is promoted from (rehearsed on first), if any."""
        env = self.environments.get(environment)
        return env.promoted_from if env is not None else None

    def rehearsal_of(self, environment: str) -> Rehearsal:
        """The rehearsal settings of ``environment`` (the seed's defaults when it has none)."""
        env = self.environments.get(environment)
        return (env.rehearsal if env is not None and env.rehearsal is not None
                else Rehearsal())

    def environment_name(self, requested: str | None) -> str:
        """Resolve an optional environment name: the default, else production, else the only."""
        if requested:
            return requested
        if self.default_environment:
            return self.default_environment
        if "production" in self.environments:
            return "production"
        return next(iter(self.environments))


def _key_path(loc: tuple[int | str, ...]) -> str:
    parts: list[str] = []
    for item in loc:
        if isinstance(item, int):
            parts.append(f"[{item}]")
        elif str(item).startswith(("function-", "literal[")):
            continue
        else:
            parts.append(("." if parts else "") + str(item))
    return "".join(parts) or "(top level)"


def _describe(error: dict[str, Any], model_fields: dict[str, type[BaseModel] | None]) -> str:
    loc = tuple(error.get("loc", ()))
    key = _key_path(loc)
    kind = error.get("type", "")
    message = str(error.get("msg", "invalid")).removeprefix("Value error, ")
    if kind == "extra_forbidden":
        return f"{key}: unknown key{_did_you_mean(loc, model_fields)}"
    if kind == "missing":
        return f"{key}: required key is missing"
    return f"{key}: {message}"


def _did_you_mean(
    loc: tuple[int | str, ...], model_fields: dict[str, type[BaseModel] | None]
) -> str:
    name = str(loc[-1]) if loc else ""
    known = [k for k, v in model_fields.items() if v is not None] + list(model_fields)
    near = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    return f" (did you mean {near[0]}?)" if near else ""


def _all_field_names() -> dict[str, type[BaseModel] | None]:
    names: dict[str, type[BaseModel] | None] = {}
    for model in (Policy, Environment, LocalPlatformSettings, PreferredWindow, HolidayCalendar,
                  Freeze, Windows, ApprovalRule, Monitoring, Validation, Notifications,
                  PagerDutyRoute, EmailRoute, Retention):
        for field, info in model.model_fields.items():
            names.setdefault(info.alias or field, None)
    return names


def parse_policy(data: Any, *, source: str = "policy") -> Policy:
    """Validate already-parsed YAML; raise ConfigError naming the first bad key."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a mapping of keys", key="(top level)")
    try:
        return Policy.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors()
        first = _describe(dict(errors[0]), _all_field_names())
        extra = len(errors) - 1
        more = f" (and {extra} more problem{'s' if extra > 1 else ''})" if extra else ""
        key = _key_path(tuple(errors[0].get("loc", ())))
        raise ConfigError(f"{source}: {first}{more}", key=key) from None


def load_policy(path: Path) -> Policy:
    """Read and validate a policy file."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"policy file {path} does not exist", key="QLP_CONFIG") from None
    except OSError as exc:
        raise ConfigError(f"policy file {path} cannot be read: {exc.strerror}",
                          key="QLP_CONFIG") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "not valid YAML"
        raise ConfigError(f"{path}: {problem}{where}", key="(yaml)") from None
    return parse_policy(data, source=str(path))


Environment.model_rebuild()  # its windows and approvals are defined below it
