"""Where and when a customer answers: the channel and the hour of the week ("golden window").

Pure. Each positive response is binned at the moment it happens in the customer's local hour of the
week — their wall clock then, in the time zone their profile had then (services/localtime.py) — so a
reply at Tuesday 09:00 in New York counts as Tuesday 09:00 in winter and in summer time alike, and
the bins of a customer who moved keep the hours they had where they were. At most 168 bins.
"""

from __future__ import annotations

from collections.abc import Collection

from scorer.core.state import CustomerState
from services.localtime import hour_of_week_label, local_hour_of_week, zone_of

POSITIVE_KINDS = frozenset({"reply", "open", "click", "call_answered", "meeting_attended", "-"})
MIN_RESPONSES = 3


def record_response_time(state: CustomerState, ts_ms: int, kind: str | None) -> None:
    if (kind or "-") in POSITIVE_KINDS:
        zone = zone_of((state.profile or {}).get("timezone"))
        key = str(local_hour_of_week(ts_ms, zone))
        state.response_hours[key] = state.response_hours.get(key, 0) + 1


def best_channel(
    state: CustomerState, window_ms: int, now_ms: int, closed: Collection[str] = ()
) -> tuple[str, int] | None:
    """The open channel with the most positive responses in the window, and how many: a closed
    (unsubscribed) channel is never suggested, the next best one is."""
    totals: dict[str, int] = {}
    for key, series in state.counts.series.items():
        if key.type == "response" and key.kind in POSITIVE_KINDS and key.channel not in closed:
            totals[key.channel] = totals.get(key.channel, 0) + series.count(window_ms, now_ms)
    ranked = sorted(((n, channel) for channel, n in totals.items() if n), key=lambda x: (-x[0], x[1]))
    return (ranked[0][1], ranked[0][0]) if ranked else None


def golden_window(state: CustomerState) -> tuple[str, str] | None:
    """('Thu 15:00', 'Asia/Shanghai'): the local hour of the week the customer answers most, and
    the time zone of their profile now (UTC when it has none or an unknown one)."""
    if sum(state.response_hours.values()) < MIN_RESPONSES:
        return None
    how = min(state.response_hours, key=lambda k: (-state.response_hours[k], int(k)))
    timezone = (state.profile or {}).get("timezone")
    return hour_of_week_label(int(how)), str(timezone) if zone_of(timezone) is not None else "UTC"
