"""The deployment-window calendar: is a standard deployment allowed at a given moment, and if
not, why not and when next?

All calendar reasoning (weekdays, hours, ISO weeks, freeze dates) happens in the policy's time
zone, whatever zone the question comes in (windows evaluated in the wrong zone are a classic
ChatOps bug, see spinnaker/halyard #1117). Nothing here reads the wall clock: every question
carries its moment.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from enum import StrEnum
from zoneinfo import ZoneInfo

import holidays

from procedures.policy import DAY_NAMES, Freeze, Policy, Windows

HORIZON_DAYS = 366
"""How far ahead :meth:`WindowPolicy.next_open` looks before giving up."""

_END_OF_DAY = time(23, 59, 59, 999999)  # how the policy model stores an end of 24:00
_DEFAULT_FREEZE_REASON = "deployment freeze"
_WEEKDAY_NAMES = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


class WindowRule(StrEnum):
    """Which rule decided a verdict: PREFERRED when open, otherwise the first rule that said no."""

    PREFERRED = "preferred"
    OUTSIDE_HOURS = "outside-hours"
    AVOIDED_DAY = "avoided-day"
    HOLIDAY_WEEK = "holiday-week"
    FREEZE = "freeze"


@dataclass(frozen=True)
class WindowVerdict:
    """The answer to "may a standard deployment run at ``at``?".

    ``rule`` is PREFERRED when ``open``; otherwise the first rule that says no, in the order
    FREEZE > HOLIDAY_WEEK > AVOIDED_DAY > OUTSIDE_HOURS. ``closes_at`` is set when open (end of
    the current window), ``next_open`` when closed (None if nothing opens within a year). All
    datetimes are in the policy's zone.
    """

    at: datetime
    open: bool
    rule: WindowRule
    reason: str
    holiday: str | None = None
    freeze: Freeze | None = None
    closes_at: datetime | None = None
    next_open: datetime | None = None


@dataclass(frozen=True)
class WindowOccurrence:
    """One preferred window on one local date, and whether standard deployments may use it.

    ``opens`` and ``closes`` are real instants in the policy zone (a contiguous stretch of
    overlapping or touching preferred windows is one occurrence). ``verdict`` is
    :meth:`WindowPolicy.verdict` at ``opens``: PREFERRED when the occurrence is allowed,
    otherwise the rule that blocks it (FREEZE with its ``freeze``, HOLIDAY_WEEK with the
    ``holiday`` names, AVOIDED_DAY) and its ``next_open``.
    """

    opens: datetime
    closes: datetime
    verdict: WindowVerdict

    @property
    def allowed(self) -> bool:
        return self.verdict.open

    @property
    def rule(self) -> WindowRule:
        return self.verdict.rule


def _hhmm(value: time) -> str:
    return "24:00" if value == _END_OF_DAY else value.strftime("%H:%M")


def _day_list(days: list[int]) -> str:
    """``[0, 1, 2, 3, 4]`` -> "Mon-Fri"; ``[1, 2]`` -> "Tue, Wed" (runs of three or more fold)."""
    ordered = sorted(set(days))
    runs: list[list[int]] = []
    for day in ordered:
        if runs and runs[-1][-1] == day - 1:
            runs[-1].append(day)
        else:
            runs.append([day])
    parts: list[str] = []
    for run in runs:
        names = [DAY_NAMES[d].capitalize() for d in run]
        parts.append(f"{names[0]}-{names[-1]}" if len(run) >= 3 else ", ".join(names))
    return ", ".join(parts)


def _zone_name(zone: ZoneInfo) -> str:
    return zone.key or str(zone)


class WindowPolicy:
    """The deployment-window calendar built from the policy's ``windows`` section.

    A standard deployment is open when the moment, read in the policy zone, falls inside a
    preferred window, on a day that is not avoided, in an ISO week (Mon-Sun) that holds no
    public holiday, and on a date covered by no freeze (freeze dates are whole local days,
    inclusive). Every method takes a timezone-aware datetime in any zone and answers in the
    policy zone; a naive datetime is refused with ``ValueError``.
    """

    def __init__(self, windows: Windows, zone: ZoneInfo) -> None:
        self._windows = windows
        self._zone = zone
        self._holiday_years: dict[int, holidays.HolidayBase] = {}
        # Per weekday, the preferred intervals merged where they overlap or touch, so that
        # closes_at is the end of the whole contiguous stretch, not of one listed window.
        self._intervals: dict[int, list[tuple[time, time]]] = {}
        for day in range(7):
            spans = sorted(
                (w.start, w.end) for w in windows.preferred if day in w.days
            )
            merged: list[tuple[time, time]] = []
            for start, end in spans:
                if merged and start <= merged[-1][1]:
                    merged[-1] = (merged[-1][0], max(merged[-1][1], end))
                else:
                    merged.append((start, end))
            self._intervals[day] = merged

    @classmethod
    def from_policy(cls, policy: Policy) -> WindowPolicy:
        """The calendar for a loaded policy file (its windows, in its time zone)."""
        return cls(policy.windows, policy.zone)

    @property
    def zone(self) -> ZoneInfo:
        """The zone all calendar reasoning happens in."""
        return self._zone

    # -- questions ----------------------------------------------------------------------------

    def verdict(self, at: datetime) -> WindowVerdict:
        """Whether a standard deployment may run at ``at``, why (not), and the next change."""
        local = self._local(at)
        day = local.date()

        freeze = self._freeze_on(day)
        if freeze is not None:
            return self._closed(local, WindowRule.FREEZE, self._freeze_reason(freeze),
                                freeze=freeze)

        found = self.holiday_week(local)
        if found:
            monday = day - timedelta(days=day.weekday())
            listed = ", ".join(f"{name} ({d.strftime('%a')} {d.isoformat()})"
                               for d, name in found)
            noun = "a public holiday" if len(found) == 1 else "public holidays"
            reason = f"the week of {monday.isoformat()} holds {noun}: {listed}"
            names = ", ".join(dict.fromkeys(name for _, name in found))
            return self._closed(local, WindowRule.HOLIDAY_WEEK, reason, holiday=names)

        if day.weekday() in self._windows.avoid_days:
            return self._closed(local, WindowRule.AVOIDED_DAY,
                                f"{_WEEKDAY_NAMES[day.weekday()]} is an avoided day")

        span = self._interval_at(local)
        if span is None:
            return self._closed(local, WindowRule.OUTSIDE_HOURS,
                                f"outside the preferred hours ({self.describe()})")
        return WindowVerdict(
            at=local,
            open=True,
            rule=WindowRule.PREFERRED,
            reason=f"inside the preferred hours ({self.describe()})",
            closes_at=self._wall(day, span[1], end=True),
        )

    def next_open(self, after: datetime) -> datetime | None:
        """The first moment at or after ``after`` when a standard deployment is open.

        If ``after`` itself is inside an open window, that is ``after`` (in the policy zone):
        the answer is always "the earliest moment you could start", never a later slot.
        Otherwise it is the wall-clock start of the next preferred window on a day that is
        not avoided, not in a holiday week and not frozen. Looks :data:`HORIZON_DAYS` days
        ahead, day by day, and returns None if nothing opens.
        """
        local = self._local(after)
        instant = local.astimezone(UTC)
        first = local.date()
        for offset in range(HORIZON_DAYS):
            day = first + timedelta(days=offset)
            if not self._day_allowed(day):
                continue
            for start, end in self._intervals[day.weekday()]:
                # Built from local date + wall time, so DST changes shift the UTC instant,
                # never the wall clock (10:00 Berlin is 08:00Z in summer, 09:00Z in winter).
                opens = self._wall(day, start)
                closes = self._wall(day, end, end=True)
                if closes.astimezone(UTC) <= instant:
                    continue
                if opens.astimezone(UTC) <= instant:
                    return local
                return opens
        return None

    def occurrences(self, start: datetime, end: datetime) -> list[WindowOccurrence]:
        """The preferred-window occurrences that overlap ``[start, end)``, in time order.

        Every occurrence on the local dates concerned is listed, allowed or not; each carries
        the verdict at its opening (the same rules as :meth:`verdict`, so a blocked occurrence
        names its freeze, holiday week or avoided day). A window whose wall-clock span falls
        entirely into a spring-forward gap does not occur that day.
        """
        first = self._local(start)
        last = self._local(end)
        begin, stop = first.astimezone(UTC), last.astimezone(UTC)
        found: list[WindowOccurrence] = []
        # One day either side: a window listed on a local date may reach past midnight (24:00).
        day = first.date() - timedelta(days=1)
        while day <= last.date():
            for start_at, end_at in self._intervals[day.weekday()]:
                opens = self._wall(day, start_at)
                closes = self._wall(day, end_at, end=True)
                if closes <= opens or closes.astimezone(UTC) <= begin \
                        or opens.astimezone(UTC) >= stop:
                    continue
                verdict = self.verdict(opens)
                if verdict.rule is WindowRule.OUTSIDE_HOURS:
                    continue  # normalised out of its own hours by a DST gap
                found.append(WindowOccurrence(opens, closes, verdict))
            day += timedelta(days=1)
        return found

    def in_freeze(self, at: datetime) -> Freeze | None:
        """The freeze covering ``at``'s local date (the first listed, if several), else None."""
        return self._freeze_on(self._local(at).date())

    def holiday_week(self, at: datetime) -> list[tuple[date, str]]:
        """The public holidays, by date, in the ISO week (Mon-Sun, policy zone) holding ``at``.

        Empty when the policy names no holiday calendar or the week holds none. Several
        holidays on one date are listed separately.
        """
        return self._holidays_in_week(self._local(at).date())

    def describe(self) -> str:
        """The preferred windows in one line, e.g. "Tue, Wed 10:00-14:00 UTC"."""
        parts = [
            f"{_day_list(w.days)} {_hhmm(w.start)}-{_hhmm(w.end)}"
            for w in self._windows.preferred
        ]
        return f"{'; '.join(parts)} {_zone_name(self._zone)}"

    # -- helpers ------------------------------------------------------------------------------

    def _local(self, moment: datetime) -> datetime:
        if moment.tzinfo is None or moment.utcoffset() is None:
            raise ValueError("WindowPolicy needs a timezone-aware datetime")
        return moment.astimezone(self._zone)

    def _wall(self, day: date, clock: time, *, end: bool = False) -> datetime:
        """The real instant of wall-clock ``clock`` on local ``day``, in the policy zone.

        An end of 24:00 is the next local midnight. A wall time skipped by a spring-forward
        change is normalised (02:30 on a 02:00->03:00 day reads 03:30), by going through UTC.
        """
        if end and clock == _END_OF_DAY:
            moment = datetime.combine(day + timedelta(days=1), time(0), tzinfo=self._zone)
        else:
            moment = datetime.combine(day, clock, tzinfo=self._zone)
        return moment.astimezone(UTC).astimezone(self._zone)

    def _interval_at(self, local: datetime) -> tuple[time, time] | None:
        now = local.time()
        for start, end in self._intervals[local.weekday()]:
            if start <= now and (now < end or end == _END_OF_DAY):
                return start, end
        return None

    def _day_allowed(self, day: date) -> bool:
        return (
            self._freeze_on(day) is None
            and day.weekday() not in self._windows.avoid_days
            and not self._holidays_in_week(day)
        )

    def _freeze_on(self, day: date) -> Freeze | None:
        for freeze in self._windows.freezes:
            if freeze.start <= day <= freeze.end:
                return freeze
        return None

    @staticmethod
    def _freeze_reason(freeze: Freeze) -> str:
        text = f"deployment freeze {freeze.start.isoformat()} to {freeze.end.isoformat()}"
        if freeze.reason and freeze.reason != _DEFAULT_FREEZE_REASON:
            text += f": {freeze.reason}"
        return text

    def _holidays_in_week(self, day: date) -> list[tuple[date, str]]:
        if self._windows.holidays is None:
            return []
        monday = day - timedelta(days=day.weekday())
        found: list[tuple[date, str]] = []
        for offset in range(7):
            current = monday + timedelta(days=offset)
            calendar = self._holidays_for(current.year)
            found.extend((current, name) for name in calendar.get_list(current))
        return found

    def _holidays_for(self, year: int) -> holidays.HolidayBase:
        cached = self._holiday_years.get(year)
        if cached is None:
            config = self._windows.holidays
            assert config is not None
            cached = holidays.country_holidays(
                config.country,
                subdiv=config.subdivision,
                years=year,
                language=self._holiday_language(config.country),
            )
            self._holiday_years[year] = cached
        return cached

    @staticmethod
    def _holiday_language(country: str) -> str | None:
        """English names where the package has them (the bot talks English); else its default."""
        calendar = holidays.country_holidays(country, years=[])
        default = getattr(calendar, "default_language", None)
        supported = getattr(calendar, "supported_languages", ()) or ()
        if default is None or str(default).startswith("en"):
            return None
        return "en_US" if "en_US" in supported else None

    def _closed(self, local: datetime, rule: WindowRule, reason: str, *,
                holiday: str | None = None, freeze: Freeze | None = None) -> WindowVerdict:
        return WindowVerdict(
            at=local,
            open=False,
            rule=rule,
            reason=reason,
            holiday=holiday,
            freeze=freeze,
            next_open=self.next_open(local),
        )
