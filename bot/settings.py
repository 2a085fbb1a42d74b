"""Settings from the environment, read once by the composition root (``bot.wiring``)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

SLACK_DEFAULT_API_URL = "https://slack.com/api/"


class Settings(BaseSettings):
    """Everything the process reads from its environment. Nothing else reads ``os.environ``."""

    model_config = SettingsConfigDict(env_prefix="", extra="ignore", case_sensitive=False)

    slack_bot_token: str | None = Field(default=None, alias="SLACK_BOT_TOKEN")
    slack_signing_secret: str | None = Field(default=None, alias="SLACK_SIGNING_SECRET")
    slack_app_token: str | None = Field(default=None, alias="SLACK_APP_TOKEN")
    slack_api_url: str = Field(default=SLACK_DEFAULT_API_URL, alias="SLACK_API_URL")
    # The bot's own workspace (and Enterprise Grid org): clicks from any other are refused.
    # Unset, the workspace of the token's install (auth.test) is used (bot/workspace.py).
    slack_team_id: str | None = Field(default=None, alias="SLACK_TEAM_ID")
    slack_enterprise_id: str | None = Field(default=None, alias="SLACK_ENTERPRISE_ID")
    qlp_home: Path = Field(default=Path(".qlp"), alias="QLP_HOME")
    qlp_database_url: str | None = Field(default=None, alias="QLP_DATABASE_URL")
    qlp_config: Path | None = Field(default=None, alias="QLP_CONFIG")
    qlp_log_level: str = Field(default="WARNING", alias="QLP_LOG_LEVEL")
    # json or text; unset: JSON lines in serve and socket modes, text elsewhere
    qlp_log_format: str | None = Field(default=None, alias="QLP_LOG_FORMAT")
    # A run whose worker has not heartbeaten for this long is taken over by another worker
    # (or by this process after a restart).
    qlp_stale_after: float = Field(default=30.0, gt=0, alias="QLP_STALE_AFTER")
    # SIGTERM: how long the runs under way may take to reach a point where they can be handed
    # over (below Kubernetes' 30 s terminationGracePeriodSeconds); bot.graceful_stop.
    qlp_stop_grace: float = Field(default=25.0, ge=0, alias="QLP_STOP_GRACE")
    # The sample service of the demo: a version containing "unhealthy" stays healthy for this
    # many health checks (enough to pass readiness and smoke tests), then fails in monitoring.
    qlp_sample_healthy_for: int = Field(default=6, ge=0, alias="QLP_SAMPLE_HEALTHY_FOR")
    # GitHub token for final_validation's CI status check (an environment's `ci:` section names
    # it with `token_env: GITHUB_TOKEN`); optional for public repositories.
    github_token: str | None = Field(default=None, alias="GITHUB_TOKEN")
    # The scheduler (reminders, scheduled deployments): a tick every this many seconds, run by
    # the one process holding the scheduler lease, which lives this many seconds unless renewed
    # (a standby takes over within about that long after the holder dies).
    qlp_scheduler_tick: float = Field(default=30.0, gt=0, alias="QLP_SCHEDULER_TICK")
    qlp_scheduler_lease: float = Field(default=30.0, gt=0, alias="QLP_SCHEDULER_LEASE")
    # The SMTP password for `notifications.email.username` in the policy (never in the file).
    smtp_password: str | None = Field(default=None, alias="SMTP_PASSWORD", repr=False)
    # The audit chain's HMAC key (README "Audit key"): never stored in the database. Unset, a
    # key generated in QLP_HOME/audit.key is used (serve and socket modes warn). Rotation: the
    # previous keys in QLP_AUDIT_OLD_KEYS ("key" or "id:key", comma-separated) still verify.
    qlp_audit_key: str | None = Field(default=None, alias="QLP_AUDIT_KEY", repr=False)
    qlp_audit_key_id: str | None = Field(default=None, alias="QLP_AUDIT_KEY_ID")
    qlp_audit_old_keys: str | None = Field(default=None, alias="QLP_AUDIT_OLD_KEYS", repr=False)
    # The chain head is anchored (posted here, logged, appended to the anchor file) this often.
    qlp_audit_channel: str | None = Field(default=None, alias="QLP_AUDIT_CHANNEL")
    qlp_audit_anchor_every: float = Field(default=900.0, gt=0, alias="QLP_AUDIT_ANCHOR_EVERY")
    qlp_audit_anchor_file: Path | None = Field(default=None, alias="QLP_AUDIT_ANCHOR_FILE")

    @property
    def database_url(self) -> str:
        """The bot's own database: ``QLP_DATABASE_URL`` or a SQLite file under ``QLP_HOME``."""
        if self.qlp_database_url:
            return self.qlp_database_url
        return f"sqlite:///{(self.qlp_home / 'qlp.db').resolve()}"

    @property
    def api_url(self) -> str:
        """The Web API base URL with the trailing slash slack_sdk expects."""
        return self.slack_api_url if self.slack_api_url.endswith("/") else self.slack_api_url + "/"
