"""Wall-clock time in the customer's zone, across both daylight-saving transitions (IANA tz data:
America/New_York moved to summer time on 2026-03-08 02:00 and back on 2026-11-01 02:00)."""

from __future__ import annotations

from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.contract import to_ms
from services.localtime import (
    first_instant_at_wall,
    hour_of_week_label,
    local_hour_of_week,
    quiet_until_ms,
    zone_of,
)

NY = ZoneInfo("America/New_York")


def ny(*args: int, fold: int = 0) -> int:
    return to_ms(datetime(*args, tzinfo=NY, fold=fold))  # type: ignore[misc]


@given(st.integers(min_value=0, max_value=4_102_444_800_000))
def test_the_utc_fast_path_is_the_utc_zone(ts: int) -> None:
    assert local_hour_of_week(ts, None) == local_hour_of_week(ts, ZoneInfo("UTC"))


def test_hour_of_week_is_local_on_both_sides_of_a_change() -> None:
    assert local_hour_of_week(ny(2026, 3, 3, 9, 0), NY) == local_hour_of_week(ny(2026, 3, 10, 9, 0), NY) == 24 + 9
    assert hour_of_week_label(24 + 9) == "Tue 09:00"


@pytest.mark.parametrize(("day", "minute", "expected"), [
    (date(2026, 7, 1), 8 * 60, to_ms(datetime(2026, 7, 1, 12, 0, tzinfo=UTC))),  # EDT
    (date(2026, 11, 1), 90, to_ms(datetime(2026, 11, 1, 5, 30, tzinfo=UTC))),  # 01:30 twice: the first (EDT)
    (date(2026, 3, 8), 150, to_ms(datetime(2026, 3, 8, 7, 0, tzinfo=UTC))),  # 02:30 skipped: 03:00 EDT
])
def test_first_instant_at_a_wall_time(day: date, minute: int, expected: int) -> None:
    assert first_instant_at_wall(day, minute, NY) == expected


NIGHT = (21 * 60, 8 * 60)
LUNCH = (12 * 60, 13 * 60 + 30)


@pytest.mark.parametrize(("now", "quiet", "until"), [
    (ny(2026, 3, 7, 22, 0), NIGHT, ny(2026, 3, 8, 8, 0)),  # the night clocks go forward: 08:00 EDT
    (ny(2026, 3, 8, 7, 59), NIGHT, ny(2026, 3, 8, 8, 0)),
    (ny(2026, 3, 8, 8, 0), NIGHT, None),
    (ny(2026, 10, 31, 23, 0), NIGHT, ny(2026, 11, 1, 8, 0)),  # the night clocks go back: 08:00 EST
    (ny(2026, 11, 1, 1, 30, fold=1), NIGHT, ny(2026, 11, 1, 8, 0)),  # the second 01:30
    (ny(2026, 11, 1, 20, 59), NIGHT, None),
    (ny(2026, 11, 2, 12, 0), LUNCH, ny(2026, 11, 2, 13, 30)),
    (ny(2026, 11, 2, 13, 30), LUNCH, None),
    (ny(2026, 11, 2, 11, 59), LUNCH, None),
])
def test_quiet_until(now: int, quiet: tuple[int, int], until: int | None) -> None:
    assert quiet_until_ms(now, NY, *quiet) == until


def test_a_quiet_range_ending_in_the_skipped_hour_ends_when_the_clock_jumps() -> None:
    assert quiet_until_ms(ny(2026, 3, 8, 1, 0), NY, 0, 150) == to_ms(datetime(2026, 3, 8, 7, 0, tzinfo=UTC))


def test_unknown_zones_are_none() -> None:
    assert zone_of("Mars/Olympus") is None and zone_of(None) is None and zone_of("Asia/Shanghai") is not None
