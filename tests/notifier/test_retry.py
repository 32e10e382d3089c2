from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from notifier.retry import (
    DEFAULT_SCHEDULE_S,
    JITTER_FRACTION,
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


@pytest.mark.parametrize(
    ("attempts_made", "jitter", "retry_after_s", "expected"),
    [
        (0, 0.0, None, 0.0),  # the first attempt: at once
        (0, 0.99, None, 0.0),  # no jitter on a zero step
        (1, 0.0, None, 5.0),  # after the first attempt: the 5 s step
        (2, 0.0, None, 30.0),
        (1, 0.99, None, 5.0 * 1.099),  # at most 10 % jitter
        (1, 0.0, 90.0, 90.0),  # a longer Retry-After is honoured
        (1, 0.0, 2.0, 5.0),  # a shorter one does not cut the step
        (1, 0.0, 10**9, 14400.0),  # capped at the longest step
        (1, 0.0, float("inf"), 14400.0),
        (5, 0.5, 7200.0, 7200.0),  # honoured below the cap too
        (5, 0.5, 10.0, 3600.0 * 1.05),  # the step with its jitter wins over a shorter Retry-After
        (6, 0.0, None, 14400.0),  # the last attempt, after 4 h
        (7, 0.0, None, None),  # schedule spent: dead letter
        (7, 0.0, 30.0, None),  # even when the receiver asked to come back later
        (8, 0.0, None, None),
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


def test_every_attempt_of_the_default_schedule_is_scheduled_then_it_is_spent() -> None:
    delays = [next_delay_s(DEFAULT_SCHEDULE_S, n, 0.0) for n in range(len(DEFAULT_SCHEDULE_S) + 1)]
    assert delays == [*DEFAULT_SCHEDULE_S, None]


@pytest.mark.parametrize(("schedule", "attempts_made"), [((), 0), ((0.0,), 1), ((1.0, 2.0), 2)])
def test_a_short_or_empty_schedule_is_spent(schedule: tuple[float, ...], attempts_made: int) -> None:
    assert next_delay_s(schedule, attempts_made, 0.5, retry_after_s=1.0) is None


@given(
    schedule=st.lists(st.floats(min_value=0, max_value=1e6), min_size=1, max_size=20),
    data=st.data(),
    jitter=st.floats(min_value=0, max_value=1, exclude_max=True),
    retry_after_s=st.none() | st.floats(min_value=0, allow_nan=False),
)
def test_every_delay_is_its_step_plus_at_most_10_percent_or_a_capped_retry_after(
    schedule: list[float], data: st.DataObject, jitter: float, retry_after_s: float | None
) -> None:
    attempts_made = data.draw(st.integers(min_value=0, max_value=len(schedule) - 1))
    step = schedule[attempts_made]
    delay = next_delay_s(schedule, attempts_made, jitter, retry_after_s)
    assert delay is not None
    assert step <= delay
    assert delay <= step * (1 + JITTER_FRACTION) or (
        retry_after_s is not None and delay == min(retry_after_s, max(schedule))
    )
    assert delay <= max(schedule) * (1 + JITTER_FRACTION)
    if retry_after_s is not None:
        assert delay >= min(retry_after_s, max(schedule))
