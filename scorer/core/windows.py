"""Event-time sliding windows over compact time buckets, with bounded memory.

Each series (e.g. touches on email of kind promo) keeps counts in sparse buckets: 1-minute buckets
for the most recent `fine_horizon_ms` (48 h) and 1-hour buckets before that. As time advances,
minute buckets older than the horizon fold into their hour bucket; buckets older than the
retention fall off. So a customer's memory is bounded by the number of buckets, never by traffic.

Window semantics (the reference a brute-force recount must match, see `bucket_of`): an event is
inside the window `W` at time `now` while the end of its bucket is after `now - W`. Windows up to
48 h are therefore exact to the minute, longer ones to the hour (an event may stay counted up to
one bucket longer, never shorter).
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from itertools import accumulate

from services.durations import HOUR_MS, MINUTE_MS

FINE_MS = MINUTE_MS
COARSE_MS = HOUR_MS
FINE_HORIZON_MS = 48 * HOUR_MS


def bucket_of(ts_ms: int, now_ms: int) -> tuple[int, int]:
    """(start_ms, size_ms) of the bucket that holds an event at `ts_ms` when the clock reads `now_ms`."""
    fine_start = ts_ms - ts_ms % FINE_MS
    if fine_start + FINE_MS > now_ms - FINE_HORIZON_MS:
        return fine_start, FINE_MS
    return ts_ms - ts_ms % COARSE_MS, COARSE_MS


def in_window(bucket_start_ms: int, bucket_size_ms: int, window_ms: int, now_ms: int) -> bool:
    return bucket_start_ms + bucket_size_ms > now_ms - window_ms


def leaves_window_at(bucket_start_ms: int, bucket_size_ms: int, window_ms: int) -> int:
    """When a bucket's events leave the window, counting the fold into hour buckets on the way:
    a minute bucket still inside a window longer than the fine horizon is an hour bucket by the
    time it leaves, so it leaves at the end of that hour."""
    if bucket_size_ms == FINE_MS and window_ms >= FINE_HORIZON_MS:
        bucket_start_ms, bucket_size_ms = bucket_start_ms - bucket_start_ms % COARSE_MS, COARSE_MS
    return bucket_start_ms + bucket_size_ms + window_ms


def _end_of(bucket: tuple[int, int, int]) -> int:
    return bucket[0] + bucket[1]


@dataclass(slots=True)
class _ByEnd:
    """A series' buckets ordered by their end, with running totals: windows by bisection."""

    items: list[tuple[int, int, int]]
    """(start_ms, size_ms, count), ascending by end (start + size)."""
    ends: list[int]
    before: list[int]
    """before[i]: the count of items[:i]."""


@dataclass
class Series:
    """Counts of one series in fine (minute) and coarse (hour) buckets, keyed by bucket start ms."""

    fine: dict[int, int] = field(default_factory=dict)
    coarse: dict[int, int] = field(default_factory=dict)
    _by_end: _ByEnd | None = field(default=None, repr=False, compare=False)
    """Derived from the buckets on first use after a change (add and advance drop it)."""

    def __init__(self, fine: dict[int, int] | None = None, coarse: dict[int, int] | None = None) -> None:
        self.fine = {} if fine is None else fine
        self.coarse = {} if coarse is None else coarse
        self._by_end = None

    def add(self, ts_ms: int, now_ms: int, count: int = 1) -> None:
        start, size = bucket_of(ts_ms, now_ms)
        target = self.fine if size == FINE_MS else self.coarse
        target[start] = target.get(start, 0) + count
        self._by_end = None

    def advance(self, now_ms: int, retention_ms: int) -> None:
        """Fold minute buckets that left the fine horizon; drop buckets past the retention."""
        horizon = now_ms - FINE_HORIZON_MS
        folded = [s for s in self.fine if s + FINE_MS <= horizon]
        for start in folded:
            hour = start - start % COARSE_MS
            self.coarse[hour] = self.coarse.get(hour, 0) + self.fine.pop(start)
        oldest = now_ms - retention_ms
        dropped = [s for s in self.coarse if s + COARSE_MS <= oldest]
        for start in dropped:
            del self.coarse[start]
        if folded or dropped:
            self._by_end = None

    def by_end(self) -> _ByEnd:
        """The buckets in end order with running totals; built once after each change. A state read
        from Redis starts with none built, so this runs for every series of every customer of a
        batch: most series hold one bucket, and that case skips the sort."""
        if self._by_end is None:
            fine, coarse = self.fine, self.coarse
            if len(fine) + len(coarse) == 1:
                ((start, count),), size = (fine.items(), FINE_MS) if fine else (coarse.items(), COARSE_MS)
                self._by_end = _ByEnd([(start, size, count)], [start + size], [0, count])
            else:
                items = [(s, FINE_MS, c) for s, c in fine.items()] + [(s, COARSE_MS, c) for s, c in coarse.items()]
                items.sort(key=_end_of)
                ends = [s + size for s, size, _ in items]
                self._by_end = _ByEnd(items, ends, [0, *accumulate(c for _, _, c in items)])
        return self._by_end

    def buckets(self) -> Iterator[tuple[int, int, int]]:
        """(start_ms, size_ms, count) of every non-empty bucket."""
        for start, count in self.fine.items():
            yield start, FINE_MS, count
        for start, count in self.coarse.items():
            yield start, COARSE_MS, count

    def count(self, window_ms: int, now_ms: int) -> int:
        """Events in buckets that end after `now_ms - window_ms` (see `in_window`)."""
        index = self.by_end()
        return index.before[-1] - index.before[bisect_right(index.ends, now_ms - window_ms)]

    def counts(self, windows_ms: tuple[int, ...], now_ms: int) -> list[int]:
        """`count` for every window of `windows_ms`."""
        index = self.by_end()
        total = index.before[-1]
        return [total - index.before[bisect_right(index.ends, now_ms - w)] for w in windows_ms]

    def next_expiry_ms(self, windows_ms: Iterable[int], now_ms: int) -> int | None:
        """The earliest moment after `now_ms` at which this series leaves one of the windows.

        When a bucket leaves a window grows with the bucket's end (`leaves_window_at` rounds a minute
        to its hour, which keeps that order), so the first bucket in end order still to leave is found
        by bisection."""
        items = self.by_end().items
        soonest: int | None = None
        for window_ms in windows_ms:
            i = bisect_right(items, now_ms, key=lambda b, w=window_ms: leaves_window_at(b[0], b[1], w))  # type: ignore[misc]
            if i < len(items):
                leaves_at = leaves_window_at(items[i][0], items[i][1], window_ms)
                soonest = leaves_at if soonest is None else min(soonest, leaves_at)
        return soonest

    def leaving(self, window_ms: int, now_ms: int) -> list[tuple[int, int]]:
        """(when it leaves the window, count) of every bucket now inside it, soonest first."""
        index = self.by_end()
        first = bisect_right(index.ends, now_ms - window_ms)
        return [(leaves_window_at(start, size, window_ms), c) for start, size, c in index.items[first:]]

    def is_empty(self) -> bool:
        return not self.fine and not self.coarse

    def to_json(self) -> list[list[int]]:
        """Compact form: [[start_minute, size_minutes, count], ...]."""
        return [[s // MINUTE_MS, size // MINUTE_MS, c] for s, size, c in self.buckets()]

    @classmethod
    def from_json(cls, rows: list[list[int]]) -> Series:
        series = cls()  # nothing derived yet: by_end is built on first use
        for start_min, size_min, count in rows:
            target = series.fine if size_min * MINUTE_MS == FINE_MS else series.coarse
            target[start_min * MINUTE_MS] = count
        return series


@dataclass(frozen=True, slots=True)
class SeriesKey:
    """What a series counts: `touch` or `response`, on which channel, of which kind (or '-')."""

    type: str
    channel: str
    kind: str

    def __reduce__(self) -> tuple[Callable[..., SeriesKey], tuple[str, str, str]]:
        """Copied and pickled by its constructor: a frozen class's `__setstate__` cannot set its fields
        once mypyc compiled it (copy.deepcopy of a state)."""
        return SeriesKey, (self.type, self.channel, self.kind)

    def __hash__(self) -> int:
        return hash((self.type, self.channel, self.kind))

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not SeriesKey:
            return NotImplemented
        assert isinstance(other, SeriesKey)
        return self.type == other.type and self.channel == other.channel and self.kind == other.kind

    def encode(self) -> str:
        return f"{self.type}|{self.channel}|{self.kind}"

    @classmethod
    def decode(cls, text: str) -> SeriesKey:
        type_, channel, kind = text.split("|")
        return cls(type_, channel, kind)


@dataclass
class WindowCounts:
    """All series of one customer."""

    series: dict[SeriesKey, Series] = field(default_factory=dict)

    def add(self, key: SeriesKey, ts_ms: int, now_ms: int) -> None:
        series = self.series.get(key)
        if series is None:
            series = self.series[key] = Series()
        series.add(ts_ms, now_ms)

    def advance(self, now_ms: int, retention_ms: int) -> None:
        for key in list(self.series):
            series = self.series[key]
            series.advance(now_ms, retention_ms)
            if series.is_empty():
                del self.series[key]

    def count(
        self,
        window_ms: int,
        now_ms: int,
        *,
        type_: str,
        channel: str | None = None,
        exclude_kinds: frozenset[str] = frozenset(),
    ) -> int:
        return sum(
            series.count(window_ms, now_ms)
            for key, series in self.series.items()
            if key.type == type_
            and (channel is None or key.channel == channel)
            and key.kind not in exclude_kinds
        )

    def breakdown(self, window_ms: int, now_ms: int, *, type_: str, by: str) -> dict[str, int]:
        """Counts of one type per channel (`by="channel"`) or per kind (`by="kind"`), zeros left out."""
        totals: dict[str, int] = {}
        for key, series in self.series.items():
            if key.type == type_:
                n = series.count(window_ms, now_ms)
                if n:
                    group = getattr(key, by)
                    totals[group] = totals.get(group, 0) + n
        return dict(sorted(totals.items()))

    def table(self, windows_ms: tuple[int, ...], now_ms: int) -> dict[SeriesKey, list[int]]:
        """Every series' counts in every window (ascending `windows_ms`), one pass per series: what a
        snapshot needs, instead of a pass per window, type, channel and kind."""
        return {key: series.counts(windows_ms, now_ms) for key, series in self.series.items()}

    def next_expiry_ms(self, windows_ms: Iterable[int], now_ms: int) -> int | None:
        windows = list(windows_ms)
        times = [t for s in self.series.values() if (t := s.next_expiry_ms(windows, now_ms)) is not None]
        return min(times) if times else None

    def bucket_count(self) -> int:
        return sum(len(s.fine) + len(s.coarse) for s in self.series.values())

    def to_json(self) -> dict[str, list[list[int]]]:
        return {key.encode(): series.to_json() for key, series in self.series.items()}

    @classmethod
    def from_json(cls, data: dict[str, list[list[int]]]) -> WindowCounts:
        return cls({SeriesKey.decode(k): Series.from_json(v) for k, v in data.items()})
