"""The retry policy for webhook deliveries, as pure functions of status codes and attempt numbers.

Retried: 5xx, 408 (timeout), 409 (conflict), 429 (rate limited), timeouts and connection errors.
Everything else that is not 2xx is permanent — including 3xx: redirects are not followed, so a
destination cannot point the notifier at an address the destination check would refuse.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

RETRIABLE_STATUSES = frozenset({408, 409, 429})
MAX_BACKOFF_S = 60.0
MAX_RETRY_AFTER_S = 60.0


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


@dataclass(frozen=True)
class RetryPolicy:
    """`attempts` HTTP attempts at most; before attempt n+1 wait about `base_s * 2**(n-1)`.

    The wait is "equal jitter": half of the exponential step fixed, half random, capped at
    `max_backoff_s`. A `Retry-After` in seconds replaces it, capped at `max_retry_after_s`.
    """

    attempts: int
    base_s: float
    max_backoff_s: float = MAX_BACKOFF_S
    max_retry_after_s: float = MAX_RETRY_AFTER_S

    def backoff_s(self, attempt: int, jitter: float) -> float:
        """Wait after failed attempt number `attempt` (1-based); `jitter` is uniform in [0, 1)."""
        step = min(self.base_s * 2 ** (attempt - 1), self.max_backoff_s)
        return step / 2 + step / 2 * jitter

    def delay_s(self, attempt: int, jitter: float, retry_after_s: float | None = None) -> float:
        if retry_after_s is not None:
            return min(retry_after_s, self.max_retry_after_s)
        return self.backoff_s(attempt, jitter)

    def bounds_s(self) -> list[tuple[float, float]]:
        """(min, max) wait before each retry, for docs and tests."""
        return [(self.backoff_s(n, 0.0), self.backoff_s(n, 1.0)) for n in range(1, self.attempts)]


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
