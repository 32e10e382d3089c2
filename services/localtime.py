"""Wall-clock time in a customer's own time zone: pure functions of epoch milliseconds and a zone.

Used by the scorer's core (the golden hour is binned in the customer's local hour of the week at
the moment of each reply) and by the pre-send decision (quiet hours in local time). Every
conversion goes through `zoneinfo` at the instant in question, so daylight saving time is right on
both sides of a change. No clock is read here.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from services.durations import HOUR_MS

WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
HOURS_PER_WEEK = 168
_EPOCH_HOUR_OF_WEEK = 72  # 1970-01-01 00:00 UTC was a Thursday: 3 days into a Monday-based week


@lru_cache(maxsize=1024)
def zone_of(name: str | None) -> ZoneInfo | None:
    """The IANA zone named `name`; None when absent or unknown (callers then fall back to UTC)."""
    if not name:
        return None
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None


def local_datetime(ts_ms: int, zone: ZoneInfo | None) -> datetime:
    return datetime.fromtimestamp(ts_ms / 1000, zone or UTC)


def local_hour_of_week(ts_ms: int, zone: ZoneInfo | None) -> int:
    """0 = Monday 00:00-00:59 on the wall clock of `zone` (UTC when None) at that instant."""
    if zone is None:
        return (ts_ms // HOUR_MS + _EPOCH_HOUR_OF_WEEK) % HOURS_PER_WEEK
    moment = datetime.fromtimestamp(ts_ms / 1000, zone)
    return moment.weekday() * 24 + moment.hour


def hour_of_week_label(hour_of_week: int) -> str:
    """`52` -> `'Wed 04:00'`."""
    return f"{WEEKDAYS[hour_of_week // 24]} {hour_of_week % 24:02d}:00"


def _to_ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def first_instant_at_wall(day: date, minute_of_day: int, zone: ZoneInfo) -> int:
    """The first instant (epoch ms) at which the wall clock in `zone` reads `day` `HH:MM` or later.

    Usually the one instant with that wall time; on a repeated hour (clocks go back) the first of
    the two; on a skipped hour (clocks go forward) the moment the clock jumps past it.
    """
    wall = datetime.combine(day, time(minute_of_day // 60, minute_of_day % 60))
    first = _to_ms(wall.replace(tzinfo=zone, fold=0))
    if datetime.fromtimestamp(first / 1000, zone).replace(tzinfo=None) == wall:
        return min(first, _to_ms(wall.replace(tzinfo=zone, fold=1)))
    # A skipped wall time: the clock jumps over it somewhere between the two readings.
    low, high = sorted((first, _to_ms(wall.replace(tzinfo=zone, fold=1))))
    while low < high:
        middle = (low + high) // 2
        if datetime.fromtimestamp(middle / 1000, zone).replace(tzinfo=None) >= wall:
            high = middle
        else:
            low = middle + 1
    return low


def quiet_until_ms(now_ms: int, zone: ZoneInfo, start_minute: int, end_minute: int) -> int | None:
    """When the daily wall-clock range [start, end) of `zone` that holds `now_ms` ends; None when
    `now_ms` is outside it. A range whose end is before its start runs over midnight (21:00-08:00)."""
    local = datetime.fromtimestamp(now_ms / 1000, zone)
    minute = local.hour * 60 + local.minute
    if start_minute < end_minute:
        if not start_minute <= minute < end_minute:
            return None
        end_day = local.date()
    else:
        if end_minute <= minute < start_minute:
            return None
        end_day = local.date() if minute < end_minute else local.date() + timedelta(days=1)
    return first_instant_at_wall(end_day, end_minute, zone)


def minute_label(minute_of_day: int) -> str:
    return f"{minute_of_day // 60:02d}:{minute_of_day % 60:02d}"
