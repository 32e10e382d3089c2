"""The retry policy for webhook deliveries, as pure functions of status codes and attempt numbers.

The notifier's scheduler (notifier/scheduler.py) retries durably: `next_delay_s` gives the wait
before the next attempt from the schedule (`retry_schedule_s`, default `DEFAULT_SCHEDULE_S`).

Retried: 5xx, 408 (timeout), 409 (conflict), 429 (rate limited), timeouts and connection errors.
Everything else that is not 2xx is permanent — including 3xx: redirects are not followed, so a
destination cannot point the notifier at an address the destination check would refuse.
"""

from __future__ import annotations

from collections.abc import Sequence

RETRIABLE_STATUSES = frozenset({408, 409, 429})


def is_success(status: int) -> bool:
    return 200 <= status < 300


def is_retriable_status(status: int) -> bool:
    """Whether a non-2xx response may succeed if sent again."""
    return status >= 500 or status in RETRIABLE_STATUSES


def status_class(status: int) -> str:
    """The metric label of a response: `2xx`, `3xx`, `4xx`, `5xx`."""
    return f"{status // 100}xx"


def parse_retry_after_s(value: str | None) -> float | None:
    """Seconds from a `Retry-After: <seconds>` header; None when absent or an HTTP date/garbage."""
    if value is None:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    if seconds != seconds or seconds < 0:  # NaN or negative
        return None
    return seconds


DEFAULT_SCHEDULE_S = (0.0, 5.0, 30.0, 120.0, 600.0, 3600.0, 14400.0)
"""Wait before each attempt: the first at once, then 5 s, 30 s, 2 min, 10 min, 1 h, 4 h."""
JITTER_FRACTION = 0.1


def next_delay_s(
    schedule_s: Sequence[float], attempts_made: int, jitter: float, retry_after_s: float | None = None
) -> float | None:
    """Wait before the next attempt after `attempts_made` failed ones; None when the schedule is spent.

    The step is `schedule_s[attempts_made]` plus up to 10 % (`jitter` uniform in [0, 1)); a
    `Retry-After` longer than that is honoured, capped at the longest step of the schedule.
    """
    if attempts_made >= len(schedule_s):
        return None
    step = schedule_s[attempts_made] * (1 + JITTER_FRACTION * jitter)
    if retry_after_s is None:
        return step
    return max(step, min(retry_after_s, max(schedule_s)))
