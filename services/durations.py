"""Durations written the way people write them: `90s`, `30m`, `24h`, `7d`, `2w`."""

from __future__ import annotations

import re

MINUTE_MS = 60_000
HOUR_MS = 60 * MINUTE_MS
DAY_MS = 24 * HOUR_MS

MAX_DURATION_MS = 400 * DAY_MS
"""The longest duration a policy may hold (windows, cadences, cool-offs, gaps…): over a year of history."""

_UNITS_MS = {"s": 1000, "m": MINUTE_MS, "h": HOUR_MS, "d": DAY_MS, "w": 7 * DAY_MS}
_PATTERN = re.compile(r"^(\d+)([smhdw])$")


def parse_duration_ms(text: str, max_ms: int = MAX_DURATION_MS, *, allow_zero: bool = False) -> int:
    """`'7d'` -> 604800000, at most `max_ms` (400 days). Raises ValueError naming the accepted forms.
    `allow_zero`: `0` / `0d` too."""
    if allow_zero and isinstance(text, str) and text.strip() == "0":
        return 0
    match = _PATTERN.match(text.strip()) if isinstance(text, str) and len(text) <= 32 else None
    if not match:
        raise ValueError(f"{text!r} is not a duration; write a whole number and a unit s/m/h/d/w, e.g. 7d")
    value = int(match.group(1)) * _UNITS_MS[match.group(2)]
    if value <= 0 and not allow_zero:
        raise ValueError(f"{text!r} must be longer than zero")
    if value > max_ms:
        raise ValueError(f"{text!r} is longer than {format_duration(max_ms)}, the longest duration allowed")
    return value


def format_duration(ms: int) -> str:
    """The shortest exact label: 86400000 -> '24h' is kept as written by callers; this gives '1d'."""
    for unit in ("w", "d", "h", "m", "s"):
        size = _UNITS_MS[unit]
        if ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{ms}ms"
