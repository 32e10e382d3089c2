"""Windowed counts equal a brute-force recount of the raw events, whatever the order and timing."""

from __future__ import annotations

import copy
import pickle

from hypothesis import given, settings
from hypothesis import strategies as st

from scorer.core.windows import (
    FINE_HORIZON_MS,
    Series,
    SeriesKey,
    WindowCounts,
    bucket_of,
    in_window,
    leaves_window_at,
)
from services.durations import DAY_MS, HOUR_MS, MINUTE_MS

T0 = 1_790_000_000_000
WINDOWS_MS = (24 * HOUR_MS, 7 * DAY_MS, 30 * DAY_MS, 90 * DAY_MS)
RETENTION_MS = 90 * DAY_MS


def recount(timestamps: list[int], window_ms: int, now_ms: int) -> int:
    """The reference: count raw events whose bucket (as defined by bucket_of) is inside the window."""
    return sum(1 for ts in timestamps if in_window(*bucket_of(ts, now_ms), window_ms, now_ms))


offsets = st.integers(min_value=-100 * DAY_MS, max_value=5 * MINUTE_MS)


@settings(max_examples=300, deadline=None)
@given(
    arrivals=st.lists(st.tuples(offsets, st.integers(min_value=0, max_value=3 * DAY_MS)), max_size=60),
    query_after=st.integers(min_value=0, max_value=120 * DAY_MS),
)
def test_counts_equal_brute_force_recount(arrivals: list[tuple[int, int]], query_after: int) -> None:
    """Events arrive in any order (clock moves forward by `gap` between arrivals)."""
    series = Series()
    now = T0
    kept: list[int] = []
    for offset, gap in arrivals:
        now += gap
        ts = now + offset
        series.add(ts, now)
        series.advance(now, RETENTION_MS)
        kept.append(ts)
    now += query_after
    series.advance(now, RETENTION_MS)
    for window in WINDOWS_MS:
        assert series.count(window, now) == recount(kept, window, now)


def test_24h_window_is_exact_to_the_minute() -> None:
    series = Series()
    now = T0
    series.add(now - 24 * HOUR_MS + 2 * MINUTE_MS, now)  # inside
    series.add(now - 24 * HOUR_MS - 2 * MINUTE_MS, now)  # outside
    assert series.count(24 * HOUR_MS, now) == 1


def test_old_minute_buckets_fold_into_hours_and_expire() -> None:
    series = Series()
    series.add(T0, T0)
    assert series.fine and not series.coarse
    series.advance(T0 + FINE_HORIZON_MS + MINUTE_MS, RETENTION_MS)
    assert not series.fine and sum(series.coarse.values()) == 1
    series.advance(T0 + RETENTION_MS + 2 * HOUR_MS, RETENTION_MS)
    assert series.is_empty()


def test_memory_is_bounded_by_buckets_not_traffic() -> None:
    """10,000 touches within one minute take one bucket."""
    series = Series()
    for i in range(10_000):
        series.add(T0 + i % 1000, T0 + 1000)
    assert len(series.fine) == 1 and series.count(24 * HOUR_MS, T0 + 1000) == 10_000


def test_next_expiry_is_when_a_count_changes() -> None:
    series = Series()
    series.add(T0, T0)
    expiry = series.next_expiry_ms([24 * HOUR_MS], T0)
    assert expiry is not None
    assert series.count(24 * HOUR_MS, expiry - 1) == 1
    assert series.count(24 * HOUR_MS, expiry) == 0


def test_breakdown_and_json_round_trip() -> None:
    counts = WindowCounts()
    counts.add(SeriesKey("touch", "email", "promo"), T0, T0)
    counts.add(SeriesKey("touch", "sms", "value"), T0 - 3 * DAY_MS, T0)
    counts.add(SeriesKey("response", "email", "open"), T0, T0)
    again = WindowCounts.from_json(counts.to_json())
    assert again.breakdown(7 * DAY_MS, T0, type_="touch", by="channel") == {"email": 1, "sms": 1}
    assert again.breakdown(24 * HOUR_MS, T0, type_="touch", by="kind") == {"promo": 1}
    assert again.count(7 * DAY_MS, T0, type_="touch", exclude_kinds=frozenset({"promo"})) == 1



def test_window_counts_survive_a_deep_copy_and_pickle() -> None:
    """What a replay from a copied state needs, compiled (mypyc) or not: the keys of a frozen class too."""
    counts = WindowCounts()
    counts.add(SeriesKey("touch", "email", "promo"), T0, T0)
    for again in (copy.deepcopy(counts), pickle.loads(pickle.dumps(counts))):
        assert again.to_json() == counts.to_json()
        assert again.count(7 * DAY_MS, T0, type_="touch") == 1
        assert list(again.series) == [SeriesKey("touch", "email", "promo")]

@settings(max_examples=200, deadline=None)
@given(
    offsets_ms=st.lists(st.integers(min_value=-40 * DAY_MS, max_value=0), min_size=1, max_size=30),
    window=st.sampled_from(WINDOWS_MS),
)
def test_leave_times_are_exact_including_the_fold_into_hours(offsets_ms: list[int], window: int) -> None:
    """Each event stops being counted exactly when leaves_window_at says, as time moves on."""
    from scorer.core.windows import leaves_window_at

    series = Series()
    for offset in offsets_ms:
        series.add(T0 + offset, T0)
    series.advance(T0, RETENTION_MS)
    for start, size, count in list(series.buckets()):
        if not in_window(start, size, window, T0):
            continue
        leaves = leaves_window_at(start, size, window)
        before, at = Series.from_json(series.to_json()), Series.from_json(series.to_json())
        before.advance(leaves - 1, RETENTION_MS)
        at.advance(leaves, RETENTION_MS)
        assert before.count(window, leaves - 1) - at.count(window, leaves) >= count


@settings(max_examples=300, deadline=None)
@given(
    arrivals=st.lists(st.tuples(offsets, st.integers(min_value=0, max_value=3 * DAY_MS)), max_size=60),
    query_after=st.integers(min_value=0, max_value=120 * DAY_MS),
    windows=st.lists(st.integers(min_value=MINUTE_MS, max_value=400 * DAY_MS), min_size=1, max_size=6, unique=True),
)
def test_all_windows_in_one_pass_equal_one_window_at_a_time(
    arrivals: list[tuple[int, int]], query_after: int, windows: list[int]
) -> None:
    """`Series.counts` (one pass for every window, what snapshots use) equals `count` per window and
    the brute-force recount."""
    series, now, kept = Series(), T0, []
    for offset, gap in arrivals:
        now += gap
        series.add(now + offset, now)
        series.advance(now, 400 * DAY_MS)
        kept.append(now + offset)
    now += query_after
    ordered = tuple(sorted(windows))
    assert series.counts(ordered, now) == [series.count(w, now) for w in ordered]


def brute_next_expiry(series: Series, windows: list[int], now: int) -> int | None:
    times = [leaves_window_at(start, size, w) for w in windows for start, size, _ in series.buckets()
             if leaves_window_at(start, size, w) > now]
    return min(times) if times else None


@settings(max_examples=300, deadline=None)
@given(
    arrivals=st.lists(st.tuples(offsets, st.integers(min_value=0, max_value=3 * DAY_MS)), max_size=60),
    query_after=st.integers(min_value=0, max_value=120 * DAY_MS),
    windows=st.lists(st.integers(min_value=MINUTE_MS, max_value=400 * DAY_MS), min_size=1, max_size=6, unique=True),
)
def test_expiry_and_leave_times_found_by_bisection_equal_a_scan_of_every_bucket(
    arrivals: list[tuple[int, int]], query_after: int, windows: list[int]
) -> None:
    series, now = Series(), T0
    for offset, gap in arrivals:
        now += gap
        series.add(now + offset, now)
        series.advance(now, 400 * DAY_MS)
    now += query_after
    assert series.next_expiry_ms(windows, now) == brute_next_expiry(series, windows, now)
    for w in windows:
        expected = sorted((leaves_window_at(s, size, w), c) for s, size, c in series.buckets()
                          if in_window(s, size, w, now))
        assert sorted(series.leaving(w, now)) == expected
        assert [t for t, _ in series.leaving(w, now)] == sorted(t for t, _ in expected)  # soonest first
