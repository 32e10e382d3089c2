"""Property: whatever the order and the duplicates, the snapshot's windows equal a brute-force
recount of the distinct events (within the grace period, nothing is late)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from scorer.core import engine
from scorer.core.state import ContactEvent, CustomerState
from scorer.core.views import snapshot
from scorer.core.windows import bucket_of, in_window
from services.durations import DAY_MS, HOUR_MS
from services.policy.model import default_policy

POLICY = default_policy()
NOW = 1_790_000_000_000
CHANNELS = ("email", "sms", "phone")

raw_events = st.lists(
    st.tuples(
        st.sampled_from(("touch", "response")),
        st.sampled_from(CHANNELS),
        st.integers(min_value=-6 * DAY_MS, max_value=0),  # inside the 7-day grace period
    ),
    min_size=1,
    max_size=40,
)


@settings(max_examples=150, deadline=None)
@given(raw=raw_events, data=st.data())
def test_windows_equal_a_recount_whatever_the_order_and_duplicates(raw: list[tuple[str, str, int]], data) -> None:
    distinct = [ContactEvent(f"e{i}", t, "c1", ch, NOW + off, kind=None, producer="p") for i, (t, ch, off) in
                enumerate(raw)]
    duplicates = data.draw(st.lists(st.sampled_from(distinct), max_size=20))
    stream = data.draw(st.permutations(distinct + duplicates))
    clock_steps = data.draw(st.lists(st.integers(min_value=0, max_value=HOUR_MS), min_size=len(stream),
                                     max_size=len(stream)))
    state = CustomerState("c1")
    now = NOW
    results = []
    for event, step in zip(stream, clock_steps, strict=True):
        now += step
        results.append(engine.apply_event(state, event, now, POLICY).result)
    assert results.count(engine.COUNTED) == len(distinct)
    view = snapshot(state, now, POLICY)
    for window in POLICY.windows:
        for type_, plural in (("touch", "touches"), ("response", "responses")):
            for channel in CHANNELS:
                expected = sum(
                    1 for e in distinct
                    if e.type == type_ and e.channel == channel
                    and in_window(*bucket_of(e.occurred_at_ms, now), window.ms, now)
                )
                assert view["windows"][window.label][plural]["by_channel"].get(channel, 0) == expected
