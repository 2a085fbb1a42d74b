"""The emergency playbook: the seed's ``emergency-deployment.sh`` as durable, undoable steps.

An emergency deploys 24/7, even in a freeze, once a second person (``approvals.emergency``,
never the requester) has pressed Approve; the bot records who, nobody types a name. What the
run does depends on the category (``options["category"]``)::

    seed                                          step               security   critical-bug
                                                                     outage     compliance
    create-snapshot.sh (emergency backup)         snapshot           yes        yes
    fast-deploy.sh / blue-green-deploy.sh 300     deploy_idle_slot   yes        yes
                                                  wait_healthy       60 s       5 min
    (blue-green's smoke tests)                    smoke_tests        skipped    yes
    (front door update)                           switch_traffic     yes        yes
    timeout 60 ... curl $PRODUCTION_URL/health    verify             60 s       60 s
    monitor-deployment.sh --duration 300          stability          skipped    5 min
    "Schedule post-emergency review"              follow_up          yes        yes

No final validation (the live system may be the thing that is down), no extended health
check, no baseline: that is what "skip normal validation" means here. The blue-green path
keeps the seed's ``blue-green-deploy.sh`` 5-minute stability monitor after the switch
(``stability``): the standard monitor's decision matrix (``monitoring`` thresholds) over 5
minutes; an automatic trigger switches back, as a failure at any step does. The fast track
has none: the seed's ``fast-deploy.sh`` switches and verifies only. A failure
at any step is compensated as in the standard playbook (the switch is undone first, then the
new slot is stopped). The previous slot keeps running after a success, so going back is one
``/qlp rollback`` away; the post-emergency review decides when it goes.

The emergency backup is the seed's ``create-snapshot.sh emergency-backup-<date>``: the live slot
and version are recorded (that slot keeps running, so the previous version stays one switch
away) and the database is backed up first, through the platform's ``SupportsBackup``
(``procedures.platforms.base``): locally a ``pg_dump`` of ``database_url`` into the bot's
backups directory, on Azure an on-demand backup of the PostgreSQL flexible server named by
``postgres_server``. A backup that fails fails the step: nothing is deployed or switched
without it (the run fails closed; break glass is fixing the database or pg_dump). Where no
backup can be taken by design (no database configured, a server tier without on-demand
backups) the step says so, and on a platform that can read the age of the newest backup
(``SupportsBackupAge``) it reports that age, broadcast when stale, missing or unknown.

What the seed wrote to ``emergency-deployments.log`` is the deployment row and the audit log;
the notification of the on-call route, the review due within 24 hours and the checklist are
written by the ``/qlp emergency`` command (``bot.commands.emergency``) when the request is made,
and ``follow_up`` repeats them in the thread once the version is live.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from procedures.checks.http import HttpChecker
from procedures.durations import format_duration
from procedures.errors import ExternalServiceError, StepFailure
from procedures.model import ProcedureKind, Slot
from procedures.platforms.base import SupportsBackupAge
from procedures.playbook import Playbook, RetryPolicy, Step, StepContext, StepResult
from procedures.playbooks.standard import (
    BACKUP_TIMEOUT,
    MONITOR_GRACE,
    SWITCH_TIMEOUT,
    StandardSteps,
    database_backup,
    wait_ready_platform,
    wait_until_healthy,
)
from procedures.policy import Monitoring

__all__ = [
    "BLUE_GREEN_CATEGORIES",
    "BLUE_GREEN_READY",
    "EMERGENCY_CATEGORIES",
    "EMERGENCY_CHECKLIST",
    "FAST_TRACK_CATEGORIES",
    "FAST_TRACK_READY",
    "REVIEW_WITHIN",
    "VERIFY_WITHIN",
    "EmergencySteps",
    "PublicHealthVerification",
    "checklist_items",
    "emergency_playbook",
    "is_fast_track",
]

FAST_TRACK_CATEGORIES = ("security", "outage")
BLUE_GREEN_CATEGORIES = ("critical-bug", "compliance")
EMERGENCY_CATEGORIES = FAST_TRACK_CATEGORIES + BLUE_GREEN_CATEGORIES
FAST_TRACK_READY = timedelta(seconds=60)
BLUE_GREEN_READY = timedelta(minutes=5)
VERIFY_WITHIN = timedelta(seconds=60)
VERIFY_EVERY = timedelta(seconds=5)
REVIEW_WITHIN = timedelta(hours=24)
STEP_GRACE = timedelta(seconds=30)  # a step's own limit must end it before the engine's does

EMERGENCY_CHECKLIST: tuple[tuple[str, str], ...] = (
    ("Emergency Authorization", "Emergency approval obtained"),
    ("Emergency Authorization", "Business impact assessed"),
    ("Emergency Authorization", "Technical risk evaluated"),
    ("Emergency Authorization", "Communication plan activated"),
    ("Emergency Deployment", "Emergency backup created"),
    ("Emergency Deployment", "Fast-track deployment executed"),
    ("Emergency Deployment", "Critical functionality verified"),
    ("Emergency Deployment", "Emergency notification sent"),
    ("Emergency Deployment", "Incident tracking updated"),
    ("Post-Emergency", "Full system verification"),
    ("Post-Emergency", "Performance monitoring extended"),
    ("Post-Emergency", "Post-emergency review scheduled"),
    ("Post-Emergency", "Process improvement items identified"),
    ("Post-Emergency", "Documentation updated"),
)
"""The seed's "Emergency Deployment Checklist", as (section, item), in its order."""


def checklist_items() -> list[dict[str, str | None]]:
    """The checklist as stored on a deployment (``options["checklist"]``), nothing done yet."""
    return [{"section": section, "item": item, "done_by": None}
            for section, item in EMERGENCY_CHECKLIST]


def is_fast_track(category: str) -> bool:
    """security and outage skip the smoke tests and get 60 s to become ready."""
    if category not in EMERGENCY_CATEGORIES:
        raise ValueError(f"{category!r} is not an emergency category")
    return category in FAST_TRACK_CATEGORIES


def _category(ctx: StepContext) -> str:
    category = str(ctx.options.get("category") or "")
    if category not in EMERGENCY_CATEGORIES:
        raise StepFailure(
            f"emergency #{ctx.deployment_id} has no known category ({category or 'none'})",
            hint=f"categories: {', '.join(EMERGENCY_CATEGORIES)}",
        )
    return category


def _blue_green(ctx: StepContext) -> bool:
    return not is_fast_track(_category(ctx))


def _target(ctx: StepContext) -> Slot:
    target = ctx.result_of("snapshot").get("target_slot")
    if not target:
        raise StepFailure("the snapshot step has not run: no target slot is known")
    return Slot(target)


def _when(moment: datetime, ctx: StepContext) -> str:
    local = moment.astimezone(ctx.policy.zone)
    return f"{local:%a %Y-%m-%d %H:%M} {local.tzname()}"


class PublicHealthVerification:
    """The public URL's health paths answer 2xx within ``within``, tried every ``every``.

    The seed's ``timeout 60 bash -c 'until curl -f $PRODUCTION_URL/health; do sleep 5; done'``.
    Raises StepFailure (the run compensates) when the time is up.
    """

    def __init__(self, http: HttpChecker, *, within: timedelta = VERIFY_WITHIN,
                 every: timedelta = VERIFY_EVERY, what: str = "Minimal verification") -> None:
        self.http = http
        self.within = within
        self.every = every
        self.what = what

    def __call__(self, ctx: StepContext) -> StepResult:
        env = ctx.environment
        return wait_until_healthy(ctx, self.http, env.url, env.health, within=self.within,
                                  every=self.every, what=self.what,
                                  hint="traffic goes back to the previous slot")


class EmergencySteps:
    """The emergency's own steps; the rest are :class:`StandardSteps`'."""

    def __init__(self, http: HttpChecker) -> None:
        self.http = http
        self.standard = StandardSteps(http)
        self.verify = PublicHealthVerification(http)

    def snapshot(self, ctx: StepContext) -> StepResult:
        """The seed's ``create-snapshot.sh emergency-backup-<date>``: the live slot and version,
        then a real backup of the database (:func:`database_backup`); when none could be taken
        by design (no database, a tier without on-demand backups), what the platform can tell
        about the newest backup."""
        result = dict(self.standard.snapshot(ctx) or {})
        stamp = ctx.now().astimezone(UTC).strftime("%Y%m%d-%H%M%S")
        backup = database_backup(ctx, f"emergency-backup-{ctx.deployment_id}-{stamp}")
        if not backup.get("taken"):
            newest = _newest_backup(ctx)
            if newest is not None:
                backup["newest"] = newest
        result["database_backup"] = backup
        return result

    def wait_healthy(self, ctx: StepContext) -> StepResult:
        """Wait for the new slot: 60 s on the fast track, 5 minutes for a blue-green one."""
        category = _category(ctx)
        target = _target(ctx)
        timeout = BLUE_GREEN_READY if _blue_green(ctx) else FAST_TRACK_READY
        remaining = ctx.deadline - ctx.now()
        if remaining < timeout:  # never outlive the step's own deadline
            timeout = max(remaining, timedelta(seconds=1))
        status = wait_ready_platform(ctx, target, timeout)
        ctx.report(f"{target} is ready ({category}: up to {format_duration(timeout)}): "
                   f"{status.version or ctx.version} ({status.detail}).")
        return {"slot": target.value, "version": status.version, "detail": status.detail,
                "timeout_s": timeout.total_seconds()}

    def stability(self, ctx: StepContext) -> StepResult:
        """The blue-green path's stability monitor (seed ``blue-green-deploy.sh``, 5 minutes):
        the standard monitor over ``monitoring.emergency_stability``; an automatic trigger
        raises and the engine switches back."""
        return self.standard.monitor_for(ctx, ctx.policy.monitoring.emergency_stability)

    def follow_up(self, ctx: StepContext) -> StepResult:
        """Say what is still owed: the review within 24 hours and the checklist."""
        options = ctx.options
        due = _parse(options.get("review_due")) or ctx.now() + REVIEW_WITHIN
        checklist = options.get("checklist") or []
        previous = ctx.result_of("snapshot")
        kept = ""
        if previous.get("live_slot"):
            kept = (f" The previous version ({previous.get('live_version') or 'unknown'} on "
                    f"{previous['live_slot']}) keeps running for a quick way back.")
        ctx.report(
            f"Post-emergency review due by {_when(due, ctx)}. The emergency checklist "
            f"({len(checklist)} items) is attached: `/qlp checklist {ctx.deployment_id}`."
            f"{kept}")
        return {"review_due": due.isoformat(), "checklist_items": len(checklist)}


def _newest_backup(ctx: StepContext) -> dict[str, object] | None:
    """The newest database backup where the platform can read it, when none was taken now;
    never fails the step: the thread says plainly what is known."""
    platform = ctx.platform
    if not isinstance(platform, SupportsBackupAge):
        return None
    try:
        found = platform.newest_backup(ctx.now())
    except ExternalServiceError as error:
        ctx.report(f"The newest database backup is unknown: {error.message}.", broadcast=True)
        return {"checked": False, "error": error.message}
    if found is None:
        return None
    ctx.report(f"Newest database backup: {found.describe()}.", broadcast=not found.fresh)
    return {"checked": True, "fresh": found.fresh, "detail": found.describe()}


def _parse(value: object) -> datetime | None:
    if isinstance(value, datetime):
        return value
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            return None
    return None


def emergency_playbook(*, http: HttpChecker, monitoring: Monitoring | None = None) -> Playbook:
    """The emergency deployment (``ProcedureKind.EMERGENCY``); see the module docstring.

    ``monitoring`` (the policy's section) only sizes the stability step's timeout."""
    emergency = EmergencySteps(http)
    stability = (monitoring or Monitoring()).emergency_stability
    standard = emergency.standard
    return Playbook(
        kind=ProcedureKind.EMERGENCY,
        title="Emergency deployment",
        steps=(
            Step("snapshot", "Emergency backup: the database, the live slot and version",
                 emergency.snapshot, timeout=BACKUP_TIMEOUT,
                 retry=RetryPolicy(attempts=3)),
            Step("deploy_idle_slot", "Deploy the new version to the idle slot",
                 standard.deploy_idle_slot, undo=standard.undo_deploy_idle_slot,
                 timeout=timedelta(minutes=5),
                 retry=RetryPolicy(attempts=2, backoff=timedelta(seconds=2))),
            Step("wait_healthy", "Wait until the new slot is healthy (60 s fast track, "
                 "5 min blue-green)", emergency.wait_healthy,
                 timeout=BLUE_GREEN_READY + STEP_GRACE),
            Step("smoke_tests", "Smoke tests on the new slot (blue-green only)",
                 standard.smoke_tests, timeout=timedelta(minutes=2),
                 retry=RetryPolicy(attempts=2, backoff=timedelta(seconds=5)),
                 when=_blue_green),
            Step("switch_traffic", "Switch traffic to the new slot", standard.switch_traffic,
                 undo=standard.undo_switch_traffic, timeout=SWITCH_TIMEOUT,
                 retry=RetryPolicy(attempts=3, backoff=timedelta(seconds=2))),
            Step("verify", "Minimal verification: healthy within 60 s", emergency.verify,
                 timeout=VERIFY_WITHIN + STEP_GRACE),
            Step("stability", "Stability monitor: 5 minutes (blue-green only)",
                 emergency.stability, timeout=stability + MONITOR_GRACE,
                 retry=RetryPolicy(attempts=1), when=_blue_green),
            Step("follow_up", "Post-emergency review and checklist", emergency.follow_up,
                 timeout=timedelta(minutes=1)),
        ),
    )
