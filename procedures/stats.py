"""Deployment figures for ``/qlp stats``: the seed's dashboard and the four DORA keys.

Pure computation: the figures come from a period's :class:`PeriodTotals`, which the database
computes for the bot (``storage.stats_queries``, in SQL, exact over any number of deployments)
and :func:`totals_of` computes from plain records (:class:`DeploymentFacts`), the reference the
SQL is tested against. Nothing here reads a clock or a database: ``now`` is passed in.

Definitions (each figure is ``None`` when there is nothing to compute it over):

* The period is ``[now - days, now]``; a deployment belongs to it when it was *requested* in it.
  ``deployments`` counts every kind; ``requests`` only changes.
* A *change* is any deployment that is not a rollback procedure; rollbacks restore, they do not
  change. All figures but the rollback count are about changes.
* A change is *completed* when it ran to an outcome: SUCCEEDED, or a *failure* (FAILED,
  ROLLED_BACK, NEEDS_ATTENTION) that was not a person's cancel (NEEDS_ATTENTION always is: an
  undo failed). Cancelled runs (CANCELLED, or undone because someone cancelled them) are
  counted apart, as are REJECTED and EXPIRED
  requests and those still in progress.
* Success rate = succeeded / completed; change failure rate = failures / completed.
* Mean duration: start to finish, over completed changes that started.
* Rollbacks: automatic (a change ROLLED_BACK, not by a cancel) plus manual (a rollback
  procedure that SUCCEEDED); also given per week.
* Deployment frequency: changes that SUCCEEDED in the frequency environment (production
  unless one is asked for), per day and per week of the period.
* Lead time: request to success, median over succeeded changes (the bot does not see commits).
* Time to restore: per environment, in order of finishing, an *incident* opens at the first
  failure of a change after a success and closes at the next success of anything (a rollback
  procedure restores too); its length is closing success's finish minus opening failure's
  finish. The median over closed incidents; open ones are counted apart.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from procedures.model import DeploymentState, ProcedureKind

FAILURE_STATES = frozenset({DeploymentState.FAILED, DeploymentState.ROLLED_BACK,
                            DeploymentState.NEEDS_ATTENTION})
NOT_RUN_STATES = frozenset({DeploymentState.REJECTED, DeploymentState.EXPIRED})


class _Classified:
    """How a deployment (or a group of alike ones) counts: the definitions of the docstring.

    Needs ``is_change``, ``state`` and ``cancelled``."""

    is_change: bool
    state: DeploymentState
    cancelled: bool

    @property
    def succeeded(self) -> bool:
        return self.state is DeploymentState.SUCCEEDED

    @property
    def failed(self) -> bool:
        if self.state is DeploymentState.NEEDS_ATTENTION:
            return True  # an undo failed: a failure whoever started the undo
        return self.state in FAILURE_STATES and not self.cancelled

    @property
    def was_cancelled(self) -> bool:
        return self.state is DeploymentState.CANCELLED or (
            self.cancelled and self.state in (DeploymentState.ROLLED_BACK,
                                              DeploymentState.FAILED))

    @property
    def is_outcome(self) -> bool:
        """An event of time to restore: a success of anything, or a failed change."""
        return self.succeeded or (self.is_change and self.failed)


@dataclass(frozen=True)
class DeploymentFacts(_Classified):
    """What the figures need to know about one deployment.

    ``cancelled`` is True when a person cancelled it (its error says so), whatever state the
    cancel left it in.
    """

    id: int
    kind: ProcedureKind
    environment: str
    state: DeploymentState
    requested_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    cancelled: bool = False

    @property
    def is_change(self) -> bool:  # type: ignore[override]
        return self.kind is not ProcedureKind.ROLLBACK

    @property
    def duration(self) -> timedelta | None:
        """Start to finish, when it started and finished."""
        if self.started_at is None or self.finished_at is None:
            return None
        return self.finished_at - self.started_at


@dataclass(frozen=True)
class FactsGroup(_Classified):
    """Deployments alike for every count (environment, change or not, state, cancelled): how
    many, and the sum and number of their start-to-finish durations. What the summary table
    ``stats_days`` keeps per day (``storage.stats_summary``)."""

    environment: str
    is_change: bool
    state: DeploymentState
    cancelled: bool
    deployments: int = 0
    duration_total: timedelta = timedelta()
    durations: int = 0


@dataclass(frozen=True)
class OutcomeSegment:
    """One environment's outcomes over a stretch of time, in finishing order, reduced to what
    time to restore needs (see :func:`segment_of`); consecutive segments fold
    (:func:`fold_segments`) to the restores of the whole, so a day's segment can be kept.

    * ``head_failure``: the first failure before the first success (the first failure when
      there is no success): it opens an incident unless one is already open;
    * ``first_success``: closes the incident open when the segment starts, if any;
    * ``restores``: incidents opened and closed after the first success;
    * ``tail_failure``: the first failure after the last success, open at the end.
    """

    head_failure: datetime | None = None
    first_success: datetime | None = None
    restores: tuple[timedelta, ...] = ()
    tail_failure: datetime | None = None


@dataclass(frozen=True)
class DeploymentStats:
    """The figures for one period (see the module docstring for the definitions)."""

    since: datetime
    until: datetime
    days: int
    frequency_environment: str
    deployments: int
    requests: int
    completed: int
    succeeded: int
    failed: int
    cancelled: int
    not_run: int
    in_progress: int
    success_rate: float | None
    mean_duration: timedelta | None
    automatic_rollbacks: int
    manual_rollbacks: int
    rollbacks_per_week: float
    production_successes: int
    deployments_per_day: float
    deployments_per_week: float
    lead_time_median: timedelta | None
    change_failure_rate: float | None
    restore_median: timedelta | None
    restored_incidents: int
    open_incidents: int

    @property
    def empty(self) -> bool:
        return self.deployments == 0

    @property
    def rollbacks(self) -> int:
        return self.automatic_rollbacks + self.manual_rollbacks


@dataclass(frozen=True)
class PeriodTotals:
    """The counts, sums and medians the figures are made of, over one period's deployments.

    Computed here from records (:func:`totals_of`) or by the database
    (``storage.stats_queries``, exact over any number of rows); either way
    :func:`stats_from_totals` turns them into the figures, so the definitions live once.
    """

    deployments: int = 0
    requests: int = 0
    succeeded: int = 0
    failed: int = 0
    cancelled: int = 0
    not_run: int = 0
    in_progress: int = 0
    duration_total: timedelta = timedelta()
    durations: int = 0
    automatic_rollbacks: int = 0
    manual_rollbacks: int = 0
    production_successes: int = 0
    lead_time_median: timedelta | None = None
    restore_median: timedelta | None = None
    restored_incidents: int = 0
    open_incidents: int = 0


def period_start(now: datetime, days: int) -> datetime:
    """The first moment of the ``days`` before ``now`` (the period is ``[start, now]``)."""
    if days < 1:
        raise ValueError("days must be at least 1")
    return now - timedelta(days=days)


def compute_stats(records: Iterable[DeploymentFacts], *, now: datetime, days: int,
                  frequency_environment: str) -> DeploymentStats:
    """The figures over the deployments requested in the ``days`` before ``now``."""
    since = period_start(now, days)
    period = [r for r in records if since <= r.requested_at <= now]
    return stats_from_totals(totals_of(period, frequency_environment), now=now, days=days,
                             frequency_environment=frequency_environment)


def totals_of(period: Sequence[DeploymentFacts], frequency_environment: str) -> PeriodTotals:
    """The totals of the deployments of one period (already chosen by the caller)."""
    lead_times = [r.finished_at - r.requested_at for r in period
                  if r.is_change and r.succeeded and r.finished_at is not None]
    restores, still_open = fold_segments(
        [segment_of(outcomes_of(period, environment))]
        for environment in sorted({r.environment for r in period}))
    return replace(counts_of(groups_of(period), frequency_environment),
                   lead_time_median=median(lead_times), restore_median=median(restores),
                   restored_incidents=len(restores), open_incidents=still_open)


def groups_of(records: Iterable[DeploymentFacts]) -> list[FactsGroup]:
    """``records`` grouped by what counts about them (see :class:`FactsGroup`)."""
    # [deployments, duration total, durations] per key: plain lists, as this runs over the
    # rows /qlp stats reads from the deployments.
    sums: dict[tuple[str, bool, DeploymentState, bool], list[Any]] = {}
    for r in records:
        key = (r.environment, r.is_change, DeploymentState(r.state), r.cancelled)
        totals = sums.get(key)
        if totals is None:
            totals = sums[key] = [0, timedelta(), 0]
        totals[0] += 1
        if r.started_at is not None and r.finished_at is not None:
            totals[1] += r.finished_at - r.started_at
            totals[2] += 1
    return [FactsGroup(*key, deployments=n, duration_total=total, durations=k)
            for key, (n, total, k) in sorted(sums.items())]


def counts_of(groups: Iterable[FactsGroup], frequency_environment: str) -> PeriodTotals:
    """The counts and duration sums of :class:`PeriodTotals` (no medians) over ``groups``."""
    t: dict[str, int] = dict.fromkeys(
        ("deployments", "requests", "succeeded", "failed", "cancelled", "not_run",
         "in_progress", "durations", "automatic_rollbacks", "manual_rollbacks",
         "production_successes"), 0)
    duration_total = timedelta()
    for g in groups:
        n = g.deployments
        t["deployments"] += n
        if not g.is_change:
            t["manual_rollbacks"] += n if g.succeeded else 0
            continue
        t["requests"] += n
        t["succeeded"] += n if g.succeeded else 0
        t["failed"] += n if g.failed else 0
        t["cancelled"] += n if g.was_cancelled else 0
        t["not_run"] += n if g.state in NOT_RUN_STATES else 0
        t["in_progress"] += n if not g.state.terminal else 0
        if g.succeeded or g.failed:
            duration_total += g.duration_total
            t["durations"] += g.durations
        if g.state is DeploymentState.ROLLED_BACK and not g.cancelled:
            t["automatic_rollbacks"] += n
        if g.succeeded and g.environment == frequency_environment:
            t["production_successes"] += n
    return PeriodTotals(
        deployments=t["deployments"], requests=t["requests"], succeeded=t["succeeded"],
        failed=t["failed"], cancelled=t["cancelled"], not_run=t["not_run"],
        in_progress=t["in_progress"], duration_total=duration_total,
        durations=t["durations"], automatic_rollbacks=t["automatic_rollbacks"],
        manual_rollbacks=t["manual_rollbacks"],
        production_successes=t["production_successes"])


def stats_from_totals(totals: PeriodTotals, *, now: datetime, days: int,
                      frequency_environment: str) -> DeploymentStats:
    """The figures of a period from its totals (see the module docstring)."""
    since = period_start(now, days)
    t = totals
    completed = t.succeeded + t.failed
    weeks = days / 7
    return DeploymentStats(
        since=since, until=now, days=days, frequency_environment=frequency_environment,
        deployments=t.deployments, requests=t.requests,
        completed=completed, succeeded=t.succeeded, failed=t.failed,
        cancelled=t.cancelled, not_run=t.not_run, in_progress=t.in_progress,
        success_rate=_ratio(t.succeeded, completed),
        mean_duration=t.duration_total / t.durations if t.durations else None,
        automatic_rollbacks=t.automatic_rollbacks, manual_rollbacks=t.manual_rollbacks,
        rollbacks_per_week=(t.automatic_rollbacks + t.manual_rollbacks) / weeks,
        production_successes=t.production_successes,
        deployments_per_day=t.production_successes / days,
        deployments_per_week=t.production_successes / weeks,
        lead_time_median=t.lead_time_median,
        change_failure_rate=_ratio(t.failed, completed),
        restore_median=t.restore_median, restored_incidents=t.restored_incidents,
        open_incidents=t.open_incidents,
    )


def outcomes_of(records: Iterable[DeploymentFacts], environment: str) -> list[DeploymentFacts]:
    """The outcomes (:attr:`~_Classified.is_outcome`, finished) of one environment, in
    finishing order (ties by id)."""
    return sorted((r for r in records if r.environment == environment
                   and r.finished_at is not None and r.is_outcome),
                  key=lambda r: (r.finished_at, r.id))


def segment_of(outcomes: Sequence[DeploymentFacts]) -> OutcomeSegment:
    """The segment of ``outcomes`` (one environment's, in finishing order)."""
    head: datetime | None = None
    first_success: datetime | None = None
    opened: datetime | None = None
    restores: list[timedelta] = []
    for record in outcomes:
        assert record.finished_at is not None
        if record.succeeded:
            if first_success is None:
                first_success = record.finished_at
            elif opened is not None:
                restores.append(record.finished_at - opened)
            opened = None
        elif first_success is None:
            head = head or record.finished_at
        elif opened is None:
            opened = record.finished_at
    return OutcomeSegment(head_failure=head, first_success=first_success,
                          restores=tuple(restores), tail_failure=opened)


class SegmentInMicroseconds(NamedTuple):
    """An :class:`OutcomeSegment` with its moments and restores in integer microseconds since
    the epoch, as the summary table ``stats_outcome_days`` keeps them: a year of days folds
    (:func:`fold_segments_us`) without making a datetime of each."""

    head_failure: int | None
    first_success: int | None
    restores: tuple[int, ...]
    tail_failure: int | None


def fold_segments(
        environments: Iterable[Iterable[OutcomeSegment]]) -> tuple[list[timedelta], int]:
    """Lengths of closed incidents, and how many are still open, over every environment's
    consecutive segments (in finishing order): an incident opens at the first failure after
    a success (or at the first failure) and closes at the next success."""
    return _fold(environments)


def fold_segments_us(environments: Iterable[Iterable[SegmentInMicroseconds]]
                     ) -> tuple[list[int], int]:
    """:func:`fold_segments` over segments in microseconds; the lengths in microseconds."""
    return _fold(environments)


def _fold(environments: Iterable[Iterable[Any]]) -> tuple[list[Any], int]:
    # One fold for both forms: their moments subtract (datetimes, or integer microseconds,
    # where 0 is a moment too, hence the "is None" tests).
    restores: list[Any] = []
    still_open = 0
    for segments in environments:
        opened: Any = None
        for segment in segments:
            if segment.first_success is None:
                if opened is None:
                    opened = segment.head_failure
                continue
            start = segment.head_failure if opened is None else opened
            if start is not None:
                restores.append(segment.first_success - start)
            restores.extend(segment.restores)
            opened = segment.tail_failure
        still_open += opened is not None
    return restores, still_open


def _ratio(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def median(values: Sequence[timedelta]) -> timedelta | None:
    """The median (mean of the two middle values of an even count), ``None`` when empty."""
    if not values:
        return None
    ordered = sorted(values)
    middle = len(ordered) // 2
    if len(ordered) % 2:
        return ordered[middle]
    return (ordered[middle - 1] + ordered[middle]) / 2
