"""``LeasedScheduler``: APScheduler 3 on the bot's database, run by one process at a time.

Jobs live in APScheduler's SQLAlchemy job store (table ``apscheduler_jobs``, created by our
Alembic migration), so they survive restarts. Which process runs them is decided by a lease in
the same database (``storage.leases``, lease ``"scheduler"``): a keeper thread renews it every
third of its time to live, and in a process that does not hold it keeps trying to take it, which
succeeds once the holder has stopped renewing (killed, hung, cut off). The holder's APScheduler
runs; every other process's APScheduler is started but paused, so two replicas never run jobs
at the same time and never remind twice (bolt-python #469, metabase #4397).

There are two kinds of job, both calling the module-level :func:`run_tick` (the job store
pickles a reference to it, so it cannot be a bound method):

* ``qlp-tick``: an interval job every ``QLP_SCHEDULER_TICK`` seconds;
* ``qlp-at-<moment>``: a date job for each moment a ``DueWork`` announces through
  ``upcoming()``, so that work due between two ticks is done on time, even after a restart.

A tick checks the lease is still ours, runs every ``DueWork`` with the injected clock's ``now``
(one failing work is logged and does not stop the others), then plans the date jobs.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.background import BackgroundScheduler

from bot.schedule.work import DueWork
from procedures.clock import Clock
from storage.db import Database
from storage.leases import LeaseRepository

log = logging.getLogger(__name__)

LEASE_NAME = "scheduler"
"""The lease's row in ``scheduler_leases``."""
TICK_JOB_ID = "qlp-tick"
MOMENT_JOB_PREFIX = "qlp-at-"
TICK_FUNCTION = "bot.schedule.scheduler:run_tick"
"""What the job store records as the jobs' callable."""
DEFAULT_HORIZON = timedelta(hours=1)
MAX_MOMENT_JOBS = 50
"""At most this many date jobs are planned per tick (later ones by later ticks)."""

HEALTH_LEADER = "leader"
HEALTH_STANDBY = "standby"
HEALTH_STOPPED = "stopped"

_active_lock = threading.Lock()
_active: LeasedScheduler | None = None


def active_scheduler() -> LeasedScheduler | None:
    """The scheduler of this process that holds the lease (the one whose jobs run), if any."""
    with _active_lock:
        return _active


def _set_active(scheduler: LeasedScheduler) -> None:
    global _active
    with _active_lock:
        _active = scheduler


def _clear_active(scheduler: LeasedScheduler) -> None:
    global _active
    with _active_lock:
        if _active is scheduler:
            _active = None


def run_tick() -> None:
    """The callable of every job: tick this process's leading scheduler."""
    scheduler = active_scheduler()
    if scheduler is None:
        log.info("scheduler: a job ran with no leading scheduler in this process; skipped")
        return
    scheduler.tick()


def moment_job_id(moment: datetime) -> str:
    """The date job's id for ``moment`` (one job per moment, whichever works announced it)."""
    return f"{MOMENT_JOB_PREFIX}{moment.astimezone(UTC):%Y%m%dT%H%M%S.%fZ}"


class _SharedEngineJobStore(SQLAlchemyJobStore):
    """APScheduler's SQLAlchemy job store on the bot's own engine.

    Its ``shutdown`` would dispose the engine, which belongs to the bot's ``Database`` and is
    still in use by everything else; the ``Database`` disposes it at the very end.
    """

    def shutdown(self) -> None:
        pass


class LeasedScheduler:
    """APScheduler 3.x (``BackgroundScheduler``) that runs jobs only while holding the lease.

    ``start()`` starts APScheduler paused and the lease keeper; ``stop()`` shuts both down and
    releases the lease, so a standby takes over at its next attempt instead of after expiry.
    ``health()`` is ``"leader"``, ``"standby"`` or ``"stopped"``.

    ``keep(now)`` (one keeper step) and ``tick()`` are public so that tests can drive them with
    an injected clock; ``open()`` starts APScheduler paused without the keeper thread.
    """

    def __init__(self, *, database: Database, works: Sequence[DueWork], clock: Clock,
                 holder: str, tick: timedelta, lease: timedelta,
                 horizon: timedelta = DEFAULT_HORIZON,
                 leases: LeaseRepository | None = None) -> None:
        if tick <= timedelta(0) or lease <= timedelta(0):
            raise ValueError("the scheduler's tick and lease must be positive")
        self._database = database
        self._works = tuple(works)
        self._clock = clock
        self._holder = holder
        self._tick = tick
        self._lease = lease
        self._horizon = horizon
        self._leases = leases or LeaseRepository(database, clock)
        # A job may run this late and still run (a takeover, a busy process); lateness is
        # harmless because a tick does what is due at its own ``now``.
        self._grace = max(1, math.ceil((tick + lease).total_seconds()))
        self._state = threading.RLock()
        self._ticking = threading.Lock()
        self._scheduler: BackgroundScheduler | None = None
        self._leader = False
        self._stopping = threading.Event()
        self._keeper: threading.Thread | None = None

    # -- reading ------------------------------------------------------------------------------

    @property
    def holder(self) -> str:
        """This process's name in the lease row (the worker id: host:pid:random)."""
        return self._holder

    @property
    def works(self) -> tuple[DueWork, ...]:
        return self._works

    @property
    def is_leader(self) -> bool:
        return self._leader

    def health(self) -> str:
        """``"leader"`` (runs the jobs), ``"standby"`` (ready to take over) or ``"stopped"``."""
        with self._state:
            if self._scheduler is None:
                return HEALTH_STOPPED
            return HEALTH_LEADER if self._leader else HEALTH_STANDBY

    def jobs(self) -> list[tuple[str, datetime | None]]:
        """The job store's jobs as (id, next run time); empty when not started."""
        with self._state:
            if self._scheduler is None:
                return []
            return [(job.id, job.next_run_time) for job in self._scheduler.get_jobs()]

    # -- running ------------------------------------------------------------------------------

    def open(self) -> None:
        """Start APScheduler paused on the bot's database (no keeper thread)."""
        with self._state:
            if self._scheduler is not None:
                return
            scheduler = BackgroundScheduler(
                jobstores={"default": _SharedEngineJobStore(engine=self._database.engine)},
                # One thread: the ticks of one process never overlap.
                executors={"default": ThreadPoolExecutor(max_workers=1)},
                job_defaults={"coalesce": True, "max_instances": 1,
                              "misfire_grace_time": self._grace},
                timezone=UTC,
                daemon=True,
            )
            scheduler.start(paused=True)
            self._scheduler = scheduler

    def start(self) -> None:
        """Start APScheduler (paused) and the lease keeper, which resumes it on winning.

        The first attempt at the lease is made before this returns, so a lone process is the
        leader as soon as it serves.
        """
        self.open()
        with self._state:
            if self._keeper is not None:
                return
            self._stopping.clear()
            keeper = threading.Thread(target=self._keep_loop, name="qlp-scheduler-lease",
                                      daemon=True)
            self._keeper = keeper
        self.keep()
        keeper.start()

    def stop(self) -> bool:
        """Stop the keeper, let a running tick finish, shut APScheduler down, free the lease;
        True if this process held the lease and released it (a standby takes it at once)."""
        self._stopping.set()
        keeper = self._keeper
        if keeper is not None:
            keeper.join(timeout=max(5.0, self._lease.total_seconds()))
        with self._state:
            self._keeper = None
            scheduler, self._scheduler = self._scheduler, None
            self._leader = False
            _clear_active(self)
        if scheduler is not None:
            try:
                scheduler.pause()
                scheduler.shutdown(wait=True)
            except Exception:
                log.warning("scheduler: shutting APScheduler down failed", exc_info=True)
        try:
            if self._leases.release(LEASE_NAME, self._holder):
                log.info("scheduler: %s released the lease", self._holder)
                return True
        except Exception:
            log.warning("scheduler: could not release the lease (it expires by itself)",
                        exc_info=True)
        return False

    def _keep_loop(self) -> None:
        every = self._lease.total_seconds() / 3
        while not self._stopping.wait(every):
            self.keep()

    def keep(self, now: datetime | None = None) -> bool:
        """One keeper step: renew or take the lease, then lead or follow; True if leading.

        Never raises: a database error counts as not holding the lease (stop running jobs at
        once; another process can only take over after the lease has expired anyway).
        """
        now = now or self._clock.now()
        try:
            held = self._leases.try_acquire(LEASE_NAME, self._holder, self._lease, now)
        except Exception:
            log.warning("scheduler: could not renew the lease; not running jobs", exc_info=True)
            held = False
        with self._state:
            if self._stopping.is_set() and self._keeper is not None:
                return False  # stop() is under way and will release the lease
            if held and not self._leader:
                try:
                    self._lead()
                except Exception:
                    log.exception("scheduler: could not start running jobs; retrying")
                    self._follow()
                    return False
            elif not held and self._leader:
                self._follow()
        return held

    def _lead(self) -> None:
        log.info("scheduler: %s holds the lease; running jobs", self._holder)
        self._leader = True
        _set_active(self)
        scheduler = self._scheduler
        if scheduler is None:
            return
        # Replaced on every takeover; the first tick is now, so nothing waits a whole period.
        scheduler.add_job(TICK_FUNCTION, "interval", seconds=self._tick.total_seconds(),
                          id=TICK_JOB_ID, name="qlp scheduler tick", replace_existing=True,
                          coalesce=True, max_instances=1, misfire_grace_time=self._grace,
                          next_run_time=datetime.now(UTC))
        scheduler.resume()

    def _follow(self) -> None:
        if self._leader:
            log.warning("scheduler: %s lost the lease; not running jobs", self._holder)
        self._leader = False
        _clear_active(self)
        scheduler = self._scheduler
        if scheduler is not None:
            scheduler.pause()

    # -- a tick -------------------------------------------------------------------------------

    def tick(self) -> int:
        """Run every ``DueWork`` at the clock's ``now`` if the lease is ours; plan date jobs.

        Returns how many things the works did. Nothing runs when another process holds the
        lease (this process was paused, or cut off, longer than the lease lives).
        """
        with self._ticking:
            now = self._clock.now()
            try:
                holder = self._leases.holder(LEASE_NAME, now)
            except Exception:
                log.warning("scheduler: could not read the lease; tick skipped", exc_info=True)
                return 0
            if holder != self._holder:
                log.info("scheduler: the lease is %s's, not ours; tick skipped", holder)
                return 0
            done = 0
            for work in self._works:
                try:
                    done += work.run_due(now)
                except Exception:
                    log.exception("scheduler: %s failed at %s", work.name, now.isoformat())
            self._plan(now)
            return done

    def _plan(self, now: datetime) -> None:
        """A date job for each moment the works announce within the horizon."""
        moments: set[datetime] = set()
        for work in self._works:
            try:
                moments.update(m for m in work.upcoming(now, self._horizon)
                               if now < m <= now + self._horizon)
            except Exception:
                log.exception("scheduler: %s could not say what comes next", work.name)
        with self._state:
            scheduler = self._scheduler
            if scheduler is None or not moments:
                return
            try:
                planned = {job.id for job in scheduler.get_jobs()}
                wall = datetime.now(UTC)
                for moment in sorted(moments)[:MAX_MOMENT_JOBS]:
                    job_id = moment_job_id(moment)
                    if job_id in planned:
                        continue
                    # The moment is on the injected clock; APScheduler waits on the wall
                    # clock. Under the system clock the two are the same moment.
                    scheduler.add_job(TICK_FUNCTION, "date", run_date=wall + (moment - now),
                                      id=job_id, name=f"qlp tick at {moment.isoformat()}",
                                      replace_existing=True, coalesce=True, max_instances=1,
                                      misfire_grace_time=self._grace)
            except Exception:
                log.warning("scheduler: could not plan the next ticks", exc_info=True)

    def __repr__(self) -> str:
        return f"LeasedScheduler({self._holder!r}, {self.health()})"

