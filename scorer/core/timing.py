"""Where and when a customer answers: the channel and the hour of the week ("golden window").

Pure: response times are kept as a histogram of UTC hour-of-week (168 bins at most) and turned
into the customer's local time with their profile's time zone when a suggestion is made.
"""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from scorer.core.state import CustomerState
from services.durations import HOUR_MS

POSITIVE_KINDS = frozenset({"reply", "open", "click", "call_answered", "meeting_attended", "-"})
WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
MIN_RESPONSES = 3


def hour_of_week_utc(ts_ms: int) -> int:
    moment = datetime.fromtimestamp(ts_ms / 1000, UTC)
    return moment.weekday() * 24 + moment.hour


def record_response_time(state: CustomerState, ts_ms: int, kind: str | None) -> None:
    if (kind or "-") in POSITIVE_KINDS:
        key = str(hour_of_week_utc(ts_ms))
        state.response_hours[key] = state.response_hours.get(key, 0) + 1


def best_channel(state: CustomerState, window_ms: int, now_ms: int) -> tuple[str, int] | None:
    """The channel with the most positive responses in the window, and how many."""
    totals: dict[str, int] = {}
    for key, series in state.counts.series.items():
        if key.type == "response" and key.kind in POSITIVE_KINDS:
            totals[key.channel] = totals.get(key.channel, 0) + series.count(window_ms, now_ms)
    ranked = sorted(((n, channel) for channel, n in totals.items() if n), key=lambda x: (-x[0], x[1]))
    return (ranked[0][1], ranked[0][0]) if ranked else None


def golden_window(state: CustomerState, timezone: str | None, now_ms: int) -> tuple[str, str] | None:
    """('Thu 15:00', 'Asia/Shanghai'): the local hour of the week the customer answers most."""
    if sum(state.response_hours.values()) < MIN_RESPONSES:
        return None
    how_utc = min(state.response_hours, key=lambda k: (-state.response_hours[k], int(k)))
    try:
        zone = ZoneInfo(timezone) if timezone else ZoneInfo("UTC")
    except (ZoneInfoNotFoundError, ValueError):
        zone, timezone = ZoneInfo("UTC"), "UTC"
    # The offset in force now stands for the whole week (DST shifts by an hour at most).
    week_start = now_ms - hour_of_week_utc(now_ms) * HOUR_MS - now_ms % HOUR_MS
    local = datetime.fromtimestamp((week_start + int(how_utc) * HOUR_MS) / 1000, zone)
    return f"{WEEKDAYS[local.weekday()]} {local.hour:02d}:00", timezone or "UTC"
