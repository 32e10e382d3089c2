from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from notifier.retry import (
    DEFAULT_SCHEDULE_S,
    MAX_BACKOFF_S,
    MAX_RETRY_AFTER_S,
    RetryPolicy,
    is_retriable_status,
    is_success,
    next_delay_s,
    parse_retry_after_s,
    status_class,
)


@pytest.mark.parametrize(
    ("status", "success", "retriable"),
    [
        (200, True, False),
        (202, True, False),
        (204, True, False),
        (301, False, False),  # redirects are not followed
        (302, False, False),
        (307, False, False),
        (400, False, False),
        (401, False, False),
        (403, False, False),
        (404, False, False),
        (410, False, False),
        (413, False, False),
        (422, False, False),
        (408, False, True),
        (409, False, True),
        (429, False, True),
        (500, False, True),
        (502, False, True),
        (503, False, True),
        (504, False, True),
    ],
)
def test_status_classification(status: int, success: bool, retriable: bool) -> None:
    assert is_success(status) is success
    if not success:
        assert is_retriable_status(status) is retriable


@pytest.mark.parametrize(("status", "label"), [(200, "2xx"), (302, "3xx"), (404, "4xx"), (503, "5xx")])
def test_status_class_labels(status: int, label: str) -> None:
    assert status_class(status) == label


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        (None, None),
        ("5", 5.0),
        (" 2.5 ", 2.5),
        ("0", 0.0),
        ("-1", None),
        ("nan", None),
        ("Wed, 21 Oct 2015 07:28:00 GMT", None),
        ("soon", None),
    ],
)
def test_parse_retry_after(header: str | None, seconds: float | None) -> None:
    assert parse_retry_after_s(header) == seconds


def test_backoff_schedule_doubles_with_equal_jitter() -> None:
    policy = RetryPolicy(attempts=4, base_s=1.0)
    assert policy.bounds_s() == [(0.5, 1.0), (1.0, 2.0), (2.0, 4.0)]


def test_backoff_is_capped() -> None:
    policy = RetryPolicy(attempts=20, base_s=1.0)
    assert policy.bounds_s()[-1] == (MAX_BACKOFF_S / 2, MAX_BACKOFF_S)


def test_retry_after_replaces_backoff_and_is_capped() -> None:
    policy = RetryPolicy(attempts=4, base_s=1.0)
    assert policy.delay_s(1, jitter=0.5, retry_after_s=7) == 7
    assert policy.delay_s(1, jitter=0.5, retry_after_s=3600) == MAX_RETRY_AFTER_S
    assert policy.delay_s(1, jitter=0.5, retry_after_s=float("inf")) == MAX_RETRY_AFTER_S


def test_zero_base_retries_at_once() -> None:
    assert RetryPolicy(attempts=3, base_s=0.0).bounds_s() == [(0.0, 0.0), (0.0, 0.0)]


@given(
    attempt=st.integers(min_value=1, max_value=20),
    base_s=st.floats(min_value=0, max_value=100),
    jitter=st.floats(min_value=0, max_value=1, exclude_max=True),
)
def test_every_delay_is_bounded_and_not_below_half_the_step(attempt: int, base_s: float, jitter: float) -> None:
    policy = RetryPolicy(attempts=20, base_s=base_s)
    delay = policy.delay_s(attempt, jitter)
    step = min(base_s * 2 ** (attempt - 1), MAX_BACKOFF_S)
    assert step / 2 <= delay <= step <= MAX_BACKOFF_S


@pytest.mark.parametrize(
    ("attempts_made", "jitter", "retry_after_s", "expected"),
    [
        (1, 0.0, None, 5.0),  # after the first attempt: the 5 s step
        (2, 0.0, None, 30.0),
        (1, 0.99, None, 5.0 * 1.099),  # at most 10 % jitter
        (1, 0.0, 90.0, 90.0),  # a longer Retry-After is honoured
        (1, 0.0, 2.0, 5.0),  # a shorter one does not cut the step
        (1, 0.0, 10**9, 14400.0),  # capped at the longest step
        (6, 0.0, None, 14400.0),  # the last attempt, after 4 h
        (7, 0.0, 30.0, None),  # schedule spent: dead letter
    ],
)
def test_next_delay_follows_the_schedule(
    attempts_made: int, jitter: float, retry_after_s: float | None, expected: float | None
) -> None:
    delay = next_delay_s(DEFAULT_SCHEDULE_S, attempts_made, jitter, retry_after_s)
    if expected is None:
        assert delay is None
    else:
        assert delay == pytest.approx(expected)
