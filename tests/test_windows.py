"""The deployment-window calendar, against the real ``holidays`` package and real tz data.

Dates used (2026): Tue 2026-12-01 is in an ordinary US week; Thanksgiving is Thu 2026-11-26;
Europe/Berlin leaves summer time on Sun 2026-10-25 and enters it on Sun 2026-03-29.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from procedures.policy import Freeze, PreferredWindow, Windows, parse_policy
from procedures.windows import HORIZON_DAYS, WindowPolicy, WindowRule

BERLIN = ZoneInfo("Europe/Berlin")


def policy_from(windows: dict[str, Any], timezone: str = "UTC") -> WindowPolicy:
    """A WindowPolicy through the real policy parser, as the bot builds it."""
    data = {
        "timezone": timezone,
        "channel": "C0123ABCD",
        "environments": {
            "production": {
                "platform": "local",
                "url": "http://127.0.0.1:8080",
                "local": {"command": ["app"], "slots": {"blue": 8081, "green": 8082}},
            }
        },
        "windows": windows,
        "approvals": {"standard": {"users": ["U0123ABCD"]}},
    }
    return WindowPolicy.from_policy(parse_policy(data))


STANDARD = {
    "preferred": [{"days": ["tue", "wed"], "start": "10:00", "end": "14:00"}],
    "avoid_days": ["mon", "fri"],
    "holidays": {"country": "US"},
}


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0,
        microsecond: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, second, microsecond, tzinfo=UTC)


def berlin(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=BERLIN)


@pytest.fixture
def standard() -> WindowPolicy:
    return policy_from(STANDARD)


# -- the ordinary week -------------------------------------------------------------------------


def test_inside_the_window_is_open_until_it_closes(standard: WindowPolicy) -> None:
    verdict = standard.verdict(utc(2026, 12, 1, 11, 0))
    assert verdict.open
    assert verdict.rule is WindowRule.PREFERRED
    assert verdict.closes_at == utc(2026, 12, 1, 14, 0)
    assert verdict.next_open is None
    assert verdict.holiday is None and verdict.freeze is None
    assert verdict.at.utcoffset() == timedelta(0)


def test_before_the_window_opens_later_that_day(standard: WindowPolicy) -> None:
    verdict = standard.verdict(utc(2026, 12, 1, 9, 0))
    assert not verdict.open
    assert verdict.rule is WindowRule.OUTSIDE_HOURS
    assert verdict.reason == "outside the preferred hours (Tue, Wed 10:00-14:00 UTC)"
    assert verdict.next_open == utc(2026, 12, 1, 10, 0)
    assert verdict.closes_at is None


def test_window_start_is_inclusive_and_end_exclusive(standard: WindowPolicy) -> None:
    assert standard.verdict(utc(2026, 12, 1, 10, 0)).open
    assert standard.verdict(utc(2026, 12, 1, 13, 59, 59)).open
    at_end = standard.verdict(utc(2026, 12, 1, 14, 0))
    assert not at_end.open
    assert at_end.rule is WindowRule.OUTSIDE_HOURS
    assert at_end.next_open == utc(2026, 12, 2, 10, 0)


def test_after_wednesdays_window_next_is_tuesday(standard: WindowPolicy) -> None:
    # Wed 2026-12-02 15:00 -> Thu, Fri (avoided), weekend, Mon (avoided) -> Tue 2026-12-08.
    assert standard.verdict(utc(2026, 12, 2, 15, 0)).next_open == utc(2026, 12, 8, 10, 0)


def test_avoided_day(standard: WindowPolicy) -> None:
    verdict = standard.verdict(utc(2026, 12, 4, 11, 0))  # Friday
    assert not verdict.open
    assert verdict.rule is WindowRule.AVOIDED_DAY
    assert verdict.reason == "Friday is an avoided day"
    assert verdict.next_open == utc(2026, 12, 8, 10, 0)


def test_avoided_day_that_is_also_a_window_day_is_avoided() -> None:
    policy = policy_from({
        "preferred": [{"days": ["mon", "tue"], "start": "10:00", "end": "14:00"}],
        "avoid_days": ["mon"],
    })
    verdict = policy.verdict(utc(2026, 11, 30, 11, 0))  # Monday
    assert verdict.rule is WindowRule.AVOIDED_DAY
    assert verdict.next_open == utc(2026, 12, 1, 10, 0)


def test_a_day_without_window_is_outside_hours(standard: WindowPolicy) -> None:
    verdict = standard.verdict(utc(2026, 12, 3, 11, 0))  # Thursday: neither window nor avoided
    assert verdict.rule is WindowRule.OUTSIDE_HOURS
    assert verdict.next_open == utc(2026, 12, 8, 10, 0)


def test_input_in_another_zone_is_converted(standard: WindowPolicy) -> None:
    no_holidays = policy_from({**STANDARD, "holidays": None})
    new_york_morning = datetime.fromisoformat("2026-11-24T06:00:00-05:00")  # = 11:00 UTC
    verdict = no_holidays.verdict(new_york_morning)
    assert verdict.open
    assert verdict.at == utc(2026, 11, 24, 11, 0)
    assert verdict.at.utcoffset() == timedelta(0)
    # 23:00 Monday in Los Angeles is already Tuesday 07:00 UTC: not avoided, just early.
    late_monday = datetime(2026, 11, 30, 23, 0, tzinfo=ZoneInfo("America/Los_Angeles"))
    early = standard.verdict(late_monday)
    assert early.rule is WindowRule.OUTSIDE_HOURS
    assert early.next_open == utc(2026, 12, 1, 10, 0)


def test_naive_datetimes_are_refused(standard: WindowPolicy) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        standard.verdict(datetime(2026, 11, 24, 11, 0))
    with pytest.raises(ValueError, match="timezone-aware"):
        standard.next_open(datetime(2026, 11, 24, 11, 0))


# -- holiday weeks -----------------------------------------------------------------------------


def test_thanksgiving_week_is_avoided(standard: WindowPolicy) -> None:
    verdict = standard.verdict(utc(2026, 11, 25, 11, 0))  # Wednesday before Thanksgiving
    assert not verdict.open
    assert verdict.rule is WindowRule.HOLIDAY_WEEK
    assert verdict.holiday is not None and "Thanksgiving" in verdict.holiday
    assert verdict.reason == (
        "the week of 2026-11-23 holds a public holiday: Thanksgiving Day (Thu 2026-11-26)"
    )
    assert verdict.next_open == utc(2026, 12, 1, 10, 0)


def test_holiday_week_lists_the_holidays(standard: WindowPolicy) -> None:
    assert standard.holiday_week(utc(2026, 11, 29, 23, 0)) == [
        (date(2026, 11, 26), "Thanksgiving Day")
    ]
    assert standard.holiday_week(utc(2026, 11, 30, 0, 0)) == []  # the next ISO week


def test_holiday_week_spanning_new_year(standard: WindowPolicy) -> None:
    # ISO week Mon 2026-12-28 .. Sun 2027-01-03 holds New Year's Day 2027 (a Friday).
    verdict = standard.verdict(utc(2026, 12, 29, 11, 0))
    assert verdict.rule is WindowRule.HOLIDAY_WEEK
    assert verdict.holiday == "New Year's Day"
    assert "(Fri 2027-01-01)" in verdict.reason
    assert verdict.next_open == utc(2027, 1, 5, 10, 0)


def test_several_holidays_in_a_week_are_all_named() -> None:
    policy = policy_from({**STANDARD, "holidays": {"country": "DE"}}, timezone="Europe/Berlin")
    verdict = policy.verdict(berlin(2026, 12, 22, 11, 0))
    assert verdict.rule is WindowRule.HOLIDAY_WEEK
    assert verdict.reason == (
        "the week of 2026-12-21 holds public holidays: Christmas Day (Fri 2026-12-25), "
        "Second Day of Christmas (Sat 2026-12-26)"
    )
    assert verdict.holiday == "Christmas Day, Second Day of Christmas"


def test_holiday_names_are_english_where_the_package_has_them() -> None:
    # German Unity Day, Sat 2026-10-03 (the package's own default language is German).
    policy = policy_from({**STANDARD, "holidays": {"country": "DE", "subdivision": "BY"}},
                         timezone="Europe/Berlin")
    assert policy.holiday_week(berlin(2026, 9, 29, 11, 0)) == [
        (date(2026, 10, 3), "German Unity Day")
    ]


def test_holiday_week_is_read_in_the_policy_zone() -> None:
    # Sun 2026-11-22 23:30 UTC is already Mon 2026-11-23 in Berlin: Thanksgiving week there.
    policy = policy_from(STANDARD, timezone="Europe/Berlin")
    assert policy.holiday_week(utc(2026, 11, 22, 23, 30)) == [
        (date(2026, 11, 26), "Thanksgiving Day")
    ]
    assert policy_from(STANDARD).holiday_week(utc(2026, 11, 22, 23, 30)) == []


# -- freezes -----------------------------------------------------------------------------------


YEAR_END = {**STANDARD, "freezes": [
    {"start": "2026-12-21", "end": "2027-01-04", "reason": "year-end freeze"}
]}


def test_freeze_wins_over_the_holiday_week() -> None:
    policy = policy_from(YEAR_END)
    verdict = policy.verdict(utc(2026, 12, 22, 11, 0))  # Christmas week, and frozen
    assert not verdict.open
    assert verdict.rule is WindowRule.FREEZE
    assert verdict.reason == "deployment freeze 2026-12-21 to 2027-01-04: year-end freeze"
    assert verdict.freeze == Freeze(start=date(2026, 12, 21), end=date(2027, 1, 4),
                                    reason="year-end freeze")
    assert verdict.holiday is None
    # First Tue/Wed after the freeze in a week without a US holiday.
    assert verdict.next_open == utc(2027, 1, 5, 10, 0)


def test_freeze_dates_are_inclusive_local_days() -> None:
    policy = policy_from(
        {**STANDARD, "freezes": [{"start": "2026-12-01", "end": "2026-12-02"}]},
        timezone="Europe/Berlin",
    )
    assert policy.in_freeze(berlin(2026, 12, 1, 0, 0)) is not None
    assert policy.in_freeze(berlin(2026, 12, 2, 23, 59)) is not None
    assert policy.in_freeze(berlin(2026, 11, 30, 23, 59)) is None
    assert policy.in_freeze(berlin(2026, 12, 3, 0, 0)) is None
    # 2026-12-02 23:30 UTC is already Dec 3 in Berlin; 22:30 UTC is still Dec 2.
    assert policy.in_freeze(utc(2026, 12, 2, 23, 30)) is None
    assert policy.in_freeze(utc(2026, 12, 2, 22, 30)) is not None
    verdict = policy.verdict(berlin(2026, 12, 1, 11, 0))
    assert verdict.reason == "deployment freeze 2026-12-01 to 2026-12-02"  # default reason
    assert verdict.next_open == berlin(2026, 12, 8, 10, 0)


def test_freeze_ending_before_a_holiday_week_skips_both() -> None:
    policy = policy_from({**STANDARD, "freezes": [{"start": "2026-11-10", "end": "2026-11-20"}]})
    verdict = policy.verdict(utc(2026, 11, 11, 11, 0))
    assert verdict.rule is WindowRule.FREEZE
    assert verdict.next_open == utc(2026, 12, 1, 10, 0)  # Nov 24/25 is Thanksgiving week


def test_in_freeze_outside_the_window_still_reports_the_freeze() -> None:
    # Hotfixes may run outside the window but not in a freeze: they ask in_freeze directly.
    policy = policy_from(YEAR_END)
    assert policy.in_freeze(utc(2026, 12, 26, 3, 0)) is not None  # Saturday night
    assert policy.in_freeze(utc(2027, 1, 5, 3, 0)) is None


def test_nothing_open_within_a_year_gives_none() -> None:
    policy = policy_from({**STANDARD, "freezes": [{"start": "2026-11-01", "end": "2027-12-05"}]})
    verdict = policy.verdict(utc(2026, 11, 24, 11, 0))
    assert verdict.rule is WindowRule.FREEZE
    assert verdict.next_open is None
    assert policy.next_open(utc(2026, 11, 24, 11, 0)) is None


def test_horizon_is_a_year() -> None:
    # A freeze whose end is just inside the horizon still lets next_open find the slot after.
    policy = policy_from({
        "preferred": [{"days": ["tue"], "start": "10:00", "end": "14:00"}],
        "freezes": [{"start": "2026-11-24", "end": "2027-11-22"}],
    })
    assert HORIZON_DAYS == 366
    assert policy.next_open(utc(2026, 11, 24, 11, 0)) == utc(2027, 11, 23, 10, 0)
    policy = policy_from({
        "preferred": [{"days": ["tue"], "start": "10:00", "end": "14:00"}],
        "freezes": [{"start": "2026-11-24", "end": "2027-11-29"}],
    })
    assert policy.next_open(utc(2026, 11, 24, 11, 0)) is None


# -- daylight saving ---------------------------------------------------------------------------


def test_autumn_change_moves_the_utc_start_not_the_wall_clock() -> None:
    policy = policy_from({"preferred": [{"days": ["tue", "wed"], "start": "10:00", "end": "14:00"}],
                          "avoid_days": ["mon", "fri"]}, timezone="Europe/Berlin")
    # Fri 2026-10-23 is CEST (UTC+2); the clocks go back on Sun 2026-10-25.
    friday = policy.verdict(utc(2026, 10, 23, 9, 0))
    assert friday.rule is WindowRule.AVOIDED_DAY
    assert friday.next_open == berlin(2026, 10, 27, 10, 0)
    assert friday.next_open is not None
    assert friday.next_open.astimezone(UTC) == utc(2026, 10, 27, 9, 0)
    assert friday.next_open.tzinfo == BERLIN
    # Tue 2026-10-27 is CET (UTC+1): 09:30Z is 10:30 local, 08:30Z is 09:30 local.
    inside = policy.verdict(utc(2026, 10, 27, 9, 30))
    assert inside.open
    assert inside.closes_at is not None
    assert inside.closes_at.astimezone(UTC) == utc(2026, 10, 27, 13, 0)
    before = policy.verdict(utc(2026, 10, 27, 8, 30))
    assert not before.open and before.rule is WindowRule.OUTSIDE_HOURS
    assert before.next_open is not None
    assert before.next_open.astimezone(UTC) == utc(2026, 10, 27, 9, 0)
    # The week before, in summer time, the same window started at 08:00Z.
    assert policy.verdict(utc(2026, 10, 20, 8, 30)).open


def test_spring_change_moves_the_utc_start_not_the_wall_clock() -> None:
    policy = policy_from({"preferred": [{"days": ["tue", "wed"], "start": "10:00", "end": "14:00"}],
                          "avoid_days": ["mon", "fri"]}, timezone="Europe/Berlin")
    # Fri 2026-03-27 is CET (UTC+1); the clocks go forward on Sun 2026-03-29.
    friday = policy.verdict(utc(2026, 3, 27, 9, 0))
    assert friday.next_open is not None
    assert friday.next_open == berlin(2026, 3, 31, 10, 0)
    assert friday.next_open.astimezone(UTC) == utc(2026, 3, 31, 8, 0)
    # Tue 2026-03-31 is CEST (UTC+2): 08:30Z is 10:30 local, 07:30Z is 09:30 local.
    assert policy.verdict(utc(2026, 3, 31, 8, 30)).open
    assert not policy.verdict(utc(2026, 3, 31, 7, 30)).open
    # 12:30Z is 14:30 local: closed in summer, though it was open in winter (13:30 local).
    assert not policy.verdict(utc(2026, 3, 31, 12, 30)).open
    assert policy.verdict(utc(2026, 3, 25, 12, 30)).open


def test_window_starting_in_the_skipped_hour() -> None:
    # 02:30 does not exist in Berlin on Sun 2026-03-29; the slot opens at the first real
    # instant after the gap (03:30 CEST, 01:30Z) and is shown as a real wall time.
    policy = policy_from({"preferred": [{"days": ["sun"], "start": "02:30", "end": "04:00"}]},
                         timezone="Europe/Berlin")
    opens = policy.next_open(berlin(2026, 3, 28, 12, 0))
    assert opens is not None
    assert opens.astimezone(UTC) == utc(2026, 3, 29, 1, 30)
    assert opens.time() == time(3, 30)


# -- next_open details -------------------------------------------------------------------------


def test_next_open_inside_an_open_window_is_now(standard: WindowPolicy) -> None:
    moment = datetime.fromisoformat("2026-12-01T12:15:00+01:00")  # 11:15 UTC
    assert standard.next_open(moment) == utc(2026, 12, 1, 11, 15)
    assert standard.next_open(utc(2026, 12, 1, 9, 59)) == utc(2026, 12, 1, 10, 0)


def test_overlapping_windows_close_at_the_end_of_the_stretch() -> None:
    policy = policy_from({"preferred": [
        {"days": ["tue"], "start": "10:00", "end": "14:00"},
        {"days": ["tue", "thu"], "start": "13:00", "end": "16:00"},
    ]})
    verdict = policy.verdict(utc(2026, 11, 24, 11, 0))
    assert verdict.closes_at == utc(2026, 11, 24, 16, 0)
    assert policy.verdict(utc(2026, 11, 24, 15, 0)).open
    assert policy.next_open(utc(2026, 11, 24, 17, 0)) == utc(2026, 11, 26, 13, 0)
    assert policy.describe() == "Tue 10:00-14:00; Tue, Thu 13:00-16:00 UTC"


def test_a_later_window_the_same_day() -> None:
    policy = policy_from({"preferred": [
        {"days": ["tue"], "start": "08:00", "end": "09:00"},
        {"days": ["tue"], "start": "15:00", "end": "16:00"},
    ]})
    assert policy.next_open(utc(2026, 11, 24, 10, 0)) == utc(2026, 11, 24, 15, 0)


def test_whole_day_window_ends_at_midnight() -> None:
    policy = policy_from({"preferred": [{"days": ["mon", "tue", "wed", "thu", "fri"]}]})
    late = policy.verdict(utc(2026, 11, 24, 23, 59, 59, 999999))
    assert late.open
    assert late.closes_at == utc(2026, 11, 25, 0, 0)
    assert policy.describe() == "Mon-Fri 00:00-24:00 UTC"
    saturday = policy.verdict(utc(2026, 11, 28, 12, 0))
    assert saturday.next_open == utc(2026, 11, 30, 0, 0)


# -- the bare minimum policy and Windows built directly ----------------------------------------


def test_no_holidays_no_freezes_no_avoided_days() -> None:
    # Day names, not ints: the model's day validator reads its input as a name.
    windows = Windows(
        preferred=[PreferredWindow(days=["tue", "wed"], start=time(10), end=time(14))]
    )
    policy = WindowPolicy(windows, ZoneInfo("UTC"))
    assert policy.holiday_week(utc(2026, 11, 25, 11, 0)) == []
    assert policy.in_freeze(utc(2026, 12, 25, 11, 0)) is None
    assert policy.verdict(utc(2026, 11, 25, 11, 0)).open  # Thanksgiving week is fine here
    friday = policy.verdict(utc(2026, 11, 27, 11, 0))
    assert friday.rule is WindowRule.OUTSIDE_HOURS
    assert friday.next_open == utc(2026, 12, 1, 10, 0)
    assert policy.describe() == "Tue, Wed 10:00-14:00 UTC"


def test_describe_names_the_zone() -> None:
    policy = policy_from(STANDARD, timezone="Europe/Berlin")
    assert policy.describe() == "Tue, Wed 10:00-14:00 Europe/Berlin"
    verdict = policy.verdict(berlin(2026, 12, 1, 9, 0))
    assert verdict.reason == "outside the preferred hours (Tue, Wed 10:00-14:00 Europe/Berlin)"


def test_a_year_of_verdicts_is_consistent(standard: WindowPolicy) -> None:
    # Sweep every hour of 2027: a closed verdict's next_open lies ahead and is open, and an
    # open verdict closes later.
    moment = utc(2027, 1, 1, 0, 30)
    end = utc(2028, 1, 1, 0, 0)
    while moment < end:
        verdict = standard.verdict(moment)
        if not verdict.open:
            assert verdict.next_open is not None
            assert standard.verdict(verdict.next_open).open
            assert verdict.next_open > moment
        else:
            assert verdict.closes_at is not None and verdict.closes_at > moment
        moment += timedelta(hours=1)


# -- occurrences (what the window reminders walk) ----------------------------------------------


def test_occurrences_list_each_window_with_what_blocks_it(standard: WindowPolicy) -> None:
    # Thanksgiving week (Tue 24th, Wed 25th blocked), then an ordinary week (Tue 1st, Wed 2nd).
    found = standard.occurrences(utc(2026, 11, 23), utc(2026, 12, 3))
    assert [(o.opens, o.closes) for o in found] == [
        (utc(2026, 11, 24, 10), utc(2026, 11, 24, 14)),
        (utc(2026, 11, 25, 10), utc(2026, 11, 25, 14)),
        (utc(2026, 12, 1, 10), utc(2026, 12, 1, 14)),
        (utc(2026, 12, 2, 10), utc(2026, 12, 2, 14)),
    ]
    assert [o.allowed for o in found] == [False, False, True, True]
    assert found[0].rule is WindowRule.HOLIDAY_WEEK
    assert found[0].verdict.holiday == "Thanksgiving Day"
    assert found[0].verdict.next_open == utc(2026, 12, 1, 10)
    assert found[2].rule is WindowRule.PREFERRED
    assert found[2].verdict.closes_at == utc(2026, 12, 1, 14)


def test_occurrences_overlap_the_interval(standard: WindowPolicy) -> None:
    # A window already open at the start counts; one opening exactly at the end does not.
    found = standard.occurrences(utc(2026, 12, 1, 13, 59), utc(2026, 12, 2, 10))
    assert [o.opens for o in found] == [utc(2026, 12, 1, 10)]
    assert standard.occurrences(utc(2026, 12, 1, 14), utc(2026, 12, 2, 10)) == []


def test_occurrences_name_the_freeze_and_the_avoided_day() -> None:
    policy = policy_from({
        "preferred": [{"days": ["mon", "tue"], "start": "10:00", "end": "14:00"}],
        "avoid_days": ["mon"],
        "freezes": [{"start": "2026-12-08", "end": "2026-12-08", "reason": "audit"}],
    })
    found = policy.occurrences(utc(2026, 12, 7), utc(2026, 12, 9))
    assert [o.rule for o in found] == [WindowRule.AVOIDED_DAY, WindowRule.FREEZE]
    assert found[1].verdict.freeze is not None
    assert found[1].verdict.freeze.reason == "audit"
    assert found[1].verdict.next_open == utc(2026, 12, 15, 10)


def test_occurrences_follow_the_wall_clock_across_a_dst_change() -> None:
    policy = policy_from({"preferred": [{"days": ["tue"], "start": "10:00", "end": "14:00"}]},
                         timezone="Europe/Berlin")
    found = policy.occurrences(utc(2026, 10, 19), utc(2026, 10, 28))
    assert [o.opens.astimezone(UTC) for o in found] == [utc(2026, 10, 20, 8),
                                                       utc(2026, 10, 27, 9)]
    assert all(o.opens.tzinfo == BERLIN and o.opens.hour == 10 for o in found)


def test_occurrences_merge_touching_windows_and_reach_midnight() -> None:
    policy = policy_from({"preferred": [
        {"days": ["tue"], "start": "10:00", "end": "14:00"},
        {"days": ["tue"], "start": "14:00", "end": "24:00"},
    ]})
    found = policy.occurrences(utc(2026, 12, 1, 23), utc(2026, 12, 2, 1))
    assert [(o.opens, o.closes) for o in found] == [(utc(2026, 12, 1, 10), utc(2026, 12, 2))]


def test_a_window_inside_the_skipped_hour_does_not_occur() -> None:
    policy = policy_from({"preferred": [{"days": ["sun"], "start": "02:00", "end": "02:45"}]},
                         timezone="Europe/Berlin")
    assert policy.occurrences(utc(2026, 3, 28), utc(2026, 3, 30)) == []
    assert len(policy.occurrences(utc(2026, 3, 21), utc(2026, 3, 23))) == 1
