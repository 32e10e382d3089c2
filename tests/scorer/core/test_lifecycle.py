"""The lifecycle state machine: every transition of `lifecycle.TRANSITIONS`, in the pure decision
(`next_move` over facts) and end to end through the engine, and a property over random histories:
nobody stays throttled, cooling off or neglected longer than the policy says without a move, and
every non-normal customer is on a list."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scorer.core import engine, lifecycle
from scorer.core.lifecycle import COOLING_OFF, NORMAL, THROTTLED, TO_ACTIVATE, Facts, next_move
from scorer.core.state import STATUS_OF_PHASE, TIME_BOUND_RULES, ContactEvent, CustomerState
from scorer.core.views import snapshot
from services.actions import Action
from services.durations import DAY_MS, HOUR_MS, MINUTE_MS
from services.names import ACTION_RE_ENGAGE, ACTION_RECOVERED, ACTION_THROTTLE
from services.policy.model import Policy, default_policy, parse_policy

POLICY = default_policy()
T0 = 1_790_000_000_000
PAIRS = {(t.source, t.target, t.cause) for t in lifecycle.TRANSITIONS}


# ---- the pure decision: facts -> move ----

FACTS_TABLE: list[tuple[Facts, tuple[str, str, str | None] | None]] = [
    # normal
    (Facts(NORMAL, ("frequency_cap",)), (lifecycle.THROTTLE, THROTTLED, ACTION_THROTTLE)),
    (Facts(NORMAL, ("frequency_cap", "unanswered_streak")), (lifecycle.THROTTLE, THROTTLED, ACTION_THROTTLE)),
    (Facts(NORMAL, ("unanswered_streak",)), (lifecycle.THROTTLE, COOLING_OFF, ACTION_THROTTLE)),
    (Facts(NORMAL, (), overdue=("cadence_overdue",), timer=True), (lifecycle.NEGLECTED, TO_ACTIVATE, ACTION_RE_ENGAGE)),
    (Facts(NORMAL, (), overdue=("cadence_overdue",), timer=True, may_re_engage=False),
     (lifecycle.NEGLECTED, TO_ACTIVATE, None)),
    (Facts(NORMAL, (), overdue=("cadence_overdue",), timer=False), None),  # only a timer re-engages
    (Facts(NORMAL, (), overdue=("no_response",), timer=True, may_activate=False), None),  # do not contact
    (Facts(NORMAL, ()), None),
    # throttled
    (Facts(THROTTLED, ("frequency_cap",), escalations=("complaint",)),
     (lifecycle.ESCALATE, THROTTLED, ACTION_THROTTLE)),
    (Facts(THROTTLED, ("frequency_cap",)), None),
    (Facts(THROTTLED, ("unanswered_streak",)), (lifecycle.SHIFT, COOLING_OFF, None)),
    (Facts(THROTTLED, ("unanswered_streak",), held=True), (lifecycle.SHIFT, COOLING_OFF, None)),
    (Facts(THROTTLED, (), held=True, overdue=("cadence_overdue",)), None),  # min_throttle first
    (Facts(THROTTLED, ()), (lifecycle.RECOVER, NORMAL, ACTION_RECOVERED)),
    (Facts(THROTTLED, (), overdue=("cadence_overdue",)), (lifecycle.LIFT_TO_ACTIVATE, TO_ACTIVATE, ACTION_RE_ENGAGE)),
    (Facts(THROTTLED, (), overdue=("cadence_overdue",), may_re_engage=False),
     (lifecycle.LIFT_TO_ACTIVATE, TO_ACTIVATE, ACTION_RECOVERED)),  # still one message
    (Facts(THROTTLED, (), overdue=("cadence_overdue",), may_activate=False), (lifecycle.RECOVER, NORMAL,
                                                                                ACTION_RECOVERED)),
    # cooling off
    (Facts(COOLING_OFF, ("complaint", "unanswered_streak"), escalations=("complaint",)),
     (lifecycle.ESCALATE, THROTTLED, ACTION_THROTTLE)),
    (Facts(COOLING_OFF, ("frequency_cap", "unanswered_streak")), (lifecycle.SHIFT, THROTTLED, None)),  # told lately
    (Facts(COOLING_OFF, ("unanswered_streak",)), None),
    (Facts(COOLING_OFF, ("unanswered_streak",), rest_over=True), (lifecycle.LIFT_TO_ACTIVATE, TO_ACTIVATE,
                                                                 ACTION_RE_ENGAGE)),
    (Facts(COOLING_OFF, ("unanswered_streak",), rest_over=True, held=True), None),
    (Facts(COOLING_OFF, ("unanswered_streak",), rest_over=True, may_activate=False),
     (lifecycle.RECOVER, NORMAL, ACTION_RECOVERED)),
    (Facts(COOLING_OFF, ("unanswered_streak",), overdue=("no_response",)), (lifecycle.LIFT_TO_ACTIVATE, TO_ACTIVATE,
                                                                           ACTION_RE_ENGAGE)),
    (Facts(COOLING_OFF, ("unanswered_streak",), overdue=("cadence_overdue",)), None),  # cooling off: no cadence
    (Facts(COOLING_OFF, ()), (lifecycle.RECOVER, NORMAL, ACTION_RECOVERED)),
    (Facts(COOLING_OFF, (), overdue=("cadence_overdue",)), (lifecycle.LIFT_TO_ACTIVATE, TO_ACTIVATE, ACTION_RE_ENGAGE)),
    # to activate
    (Facts(TO_ACTIVATE, ()), None),
    (Facts(TO_ACTIVATE, (), woke=True), (lifecycle.WAKE, NORMAL, None)),
    (Facts(TO_ACTIVATE, (), may_activate=False), (lifecycle.WAKE, NORMAL, None)),
    (Facts(TO_ACTIVATE, ("complaint",)), (lifecycle.THROTTLE, THROTTLED, ACTION_THROTTLE)),
    (Facts(TO_ACTIVATE, ("unanswered_streak",)), (lifecycle.THROTTLE, COOLING_OFF, ACTION_THROTTLE)),
]


@pytest.mark.parametrize(("facts", "expected"), FACTS_TABLE)
def test_next_move(facts: Facts, expected: tuple[str, str, str | None] | None) -> None:
    move = next_move(facts)
    assert (None if move is None else (move.cause, move.target, move.told)) == expected
    if move is not None:
        assert (facts.phase, move.target, move.cause) in PAIRS, "a move the TRANSITIONS table does not document"


def test_the_table_covers_every_transition() -> None:
    seen = {(f.phase, e[1], e[0]) for f, e in FACTS_TABLE if e is not None}
    assert seen == PAIRS
    assert set(SCENARIOS) == {(t.source, t.target) for t in lifecycle.TRANSITIONS}


# ---- every transition end to end, through the engine ----


def touch(n: int, at: int, channel: str = "phone", kind: str = "value") -> ContactEvent:
    return ContactEvent(f"t{n}", "touch", "c1", channel, at, kind=kind, producer="p")


def answer(n: int, at: int, kind: str = "reply") -> ContactEvent:
    return ContactEvent(f"r{n}", "response", "c1", "phone", at, kind=kind, producer="p")


class Life:
    """One customer driven like the live scorer: events at their time, every due timer at its time."""

    def __init__(self, policy: Policy = POLICY, profile: dict | None = None) -> None:
        self.policy, self.state = policy, CustomerState("c1")
        self.actions: list[Action] = []
        self.moves: list[tuple[str, str, str | None]] = []
        if profile is not None:
            self._track(lambda: engine.apply_profile(self.state, profile, T0, self.policy))

    def _track(self, step: Callable[[], list[Action]]) -> None:
        before = self.state.phase
        actions = step()
        assert len(actions) <= 1, "one evaluation, one message"
        if before != self.state.phase or actions:
            self.moves.append((before, self.state.phase, actions[0]["type"] if actions else None))
        self.actions += actions

    def run_until(self, until_ms: int) -> None:
        for _ in range(500):
            due = engine.next_due_ms(self.state, self.policy)
            if due is None or due > until_ms:
                return
            at = max(due, self.state.clock_ms)
            self._track(lambda at=at: engine.on_due(self.state, at, self.policy))
        raise AssertionError("the timers never settle")

    def event(self, event: ContactEvent) -> None:
        self.run_until(event.occurred_at_ms)
        self._track(lambda: engine.apply_event(self.state, event, event.occurred_at_ms, self.policy).actions)

    def events(self, events: list[ContactEvent]) -> None:
        for e in events:
            self.event(e)

    def went(self, source: str, target: str) -> str | None:
        """The action type of the first move source -> target ('' when silent); AssertionError if none."""
        found = [told for a, b, told in self.moves if (a, b) == (source, target)]
        assert found, f"no {source} -> {target} in {self.moves}"
        return found[0] or ""


def unanswered(n: int, start: int, step: int = DAY_MS, first: int = 0) -> list[ContactEvent]:
    return [touch(first + i, start + i * step) for i in range(n)]


def answered(n: int, start: int, step: int) -> list[ContactEvent]:
    out = []
    for i in range(n):
        out += [touch(i, start + i * step), answer(i, start + i * step + MINUTE_MS)]
    return out


def _normal_throttled() -> Life:
    life = Life(profile={"stage": "customer"})
    life.events(answered(13, T0, 8 * HOUR_MS))
    return life


def _normal_cooling() -> Life:
    life = Life(profile={"stage": "customer"})
    life.events(unanswered(5, T0))
    return life


def _normal_to_activate() -> Life:
    life = Life(profile={"stage": "intent"})
    life.events(answered(1, T0, DAY_MS))
    life.run_until(T0 + 9 * DAY_MS)
    return life


def _throttled_update() -> Life:
    life = _normal_throttled()
    life.event(answer(99, T0 + 5 * DAY_MS, kind="complaint"))
    return life


def _throttled_cooling() -> Life:
    policy = parse_policy("signals:\n  unanswered_streak: {rest: 60d}\n", "long-rest")
    life = Life(policy, {"stage": "customer"})
    life.events(unanswered(13, T0))  # cooling off at the 5th, throttled (cap) at the 13th
    life.run_until(T0 + 40 * DAY_MS)  # the cap clears as touches leave the 30 days; the streak holds
    return life


def _throttled_normal() -> Life:
    life = _normal_throttled()
    life.run_until(T0 + 40 * DAY_MS)  # loyal-like: the cadence (customer, 30 d) not passed at the lift
    return life


def _throttled_to_activate() -> Life:
    life = Life(profile={"stage": "intent"})
    life.events(answered(13, T0, 8 * HOUR_MS))
    life.run_until(T0 + 40 * DAY_MS)
    return life


def _cooling_throttled() -> Life:
    life = _normal_cooling()
    life.events(unanswered(8, T0 + 5 * DAY_MS, HOUR_MS, first=10))
    return life


def _cooling_normal() -> Life:
    life = _normal_cooling()
    life.event(answer(1, T0 + 5 * DAY_MS))
    life.run_until(T0 + 7 * DAY_MS)
    return life


def _cooling_to_activate() -> Life:
    life = _normal_cooling()
    life.run_until(T0 + 30 * DAY_MS)
    return life


def _to_activate_normal() -> Life:
    life = _normal_to_activate()
    life.event(touch(50, T0 + 10 * DAY_MS))
    return life


def _to_activate_throttled() -> Life:
    life = _normal_to_activate()
    life.event(answer(50, T0 + 10 * DAY_MS, kind="complaint"))
    return life


def _to_activate_cooling() -> Life:
    life = Life(profile={"stage": "loyal"})  # never answers: gone quiet at 90 days (before the 91-day cadence)
    life.run_until(T0 + 95 * DAY_MS)
    life.events(unanswered(5, T0 + 96 * DAY_MS))  # touches do not end the customer's silence
    return life


SCENARIOS: dict[tuple[str, str], Callable[[], Life]] = {
    (NORMAL, THROTTLED): _normal_throttled,
    (NORMAL, COOLING_OFF): _normal_cooling,
    (NORMAL, TO_ACTIVATE): _normal_to_activate,
    (THROTTLED, THROTTLED): _throttled_update,
    (THROTTLED, COOLING_OFF): _throttled_cooling,
    (THROTTLED, NORMAL): _throttled_normal,
    (THROTTLED, TO_ACTIVATE): _throttled_to_activate,
    (COOLING_OFF, THROTTLED): _cooling_throttled,
    (COOLING_OFF, NORMAL): _cooling_normal,
    (COOLING_OFF, TO_ACTIVATE): _cooling_to_activate,
    (TO_ACTIVATE, NORMAL): _to_activate_normal,
    (TO_ACTIVATE, THROTTLED): _to_activate_throttled,
    (TO_ACTIVATE, COOLING_OFF): _to_activate_cooling,
}
def told_for(source: str, target: str) -> set[str]:
    return {told for t in lifecycle.TRANSITIONS if (t.source, t.target) == (source, target) for told in t.told}


@pytest.mark.parametrize(("source", "target"), sorted(SCENARIOS))
def test_every_transition_happens_and_tells_the_rep_what_the_table_says(source: str, target: str) -> None:
    life = SCENARIOS[(source, target)]()
    told = life.went(source, target)
    assert told in told_for(source, target), (told, told_for(source, target))
    if told_for(source, target) != {lifecycle.SILENT}:
        assert told, f"{source} -> {target} said nothing"


def test_an_update_says_what_got_worse_and_lists_every_active_reason() -> None:
    life = _throttled_update()
    update = life.actions[-1]
    assert (update["type"], update["previous_status"], update["escalation"]) == ("fatigue.throttle", "throttled",
                                                                                ["complaint"])
    assert [r["rule"] for r in update["reasons"]] == ["frequency_cap", "complaint"]
    assert update["suggestion"].startswith("Throttle update: the customer complained.")
    view = snapshot(life.state, life.state.clock_ms, POLICY)  # the snapshot lists every active reason
    assert [r["rule"] for r in view["lifecycle"]["reasons"]] == ["frequency_cap", "complaint"]
    assert view["signals"]["active"] == ["frequency_cap", "complaint"] and view["lifecycle"]["list"] == "throttled"
    assert view["lifecycle"]["until"] == update["pause_until"]


def test_the_cap_by_a_large_margin_is_an_update_of_its_own_and_no_more() -> None:
    life = Life(profile={"stage": "customer"})
    life.events(answered(63, T0, 5 * HOUR_MS))  # 63 answered touches in 13 days
    throttles = [a for a in life.actions if a["type"] == "fatigue.throttle"]
    assert [a.get("escalation") for a in throttles] == [None, ["frequency_cap_severe"]]
    assert throttles[1]["reasons"][0]["observed"] == 24  # 2x the cap of 12


def test_a_rested_customer_is_judged_afresh() -> None:
    """After the rest the rep reaches out as told: that touch does not throttle again at once (the
    old streak was rested off); five new unanswered touches do."""
    life = _cooling_to_activate()
    assert life.state.phase == TO_ACTIVATE
    life.event(touch(60, T0 + 30 * DAY_MS))
    assert life.state.phase == NORMAL and life.actions[-1]["type"] == "fatigue.re_engage"
    life.events(unanswered(4, T0 + 31 * DAY_MS, first=61))
    assert life.state.phase == COOLING_OFF


# ---- the property: no one falls off the radar ----

CHANNELS = ("email", "sms", "phone")
TOUCH_KINDS = ("value", "promo", "transactional")
RESPONSE_KINDS = ("reply", "open", "click", "complaint", "unsubscribe", "bounce")
SHORT = parse_policy("""
cadence: {default: 6d, by_stage: {prospect: 2d, loyal: 20d}, silence: 25d, tolerance: 12h}
signals:
  unanswered_streak: {touches: 3, rest: 5d}
  reply_latency_slowdown: {recent: 2, min_baseline_samples: 2, rest: 4d}
  response_rate_drop: {recent_touches: 2, min_baseline_touches: 3, settle: 1d, rest: 6d}
  engagement_drop: {recent_touches: 2, min_baseline_touches: 3, settle: 1d, rest: 3d}
  complaint: {cool_off: 5d}
frequency: {throttle_above: 6, recover_at_or_below: 3}
cooldowns: {min_throttle: 12h, re_engage: 3d, throttle_update: 2d}
""", "short")


@st.composite
def lives(draw: st.DrawFn) -> tuple[list[tuple[int, object]], int]:
    """A customer's history: events with gaps from minutes to weeks, profile changes on the way."""
    steps: list[tuple[int, object]] = []
    at = T0
    for i in range(draw(st.integers(min_value=1, max_value=45))):
        at += draw(st.sampled_from((0, MINUTE_MS, HOUR_MS, 7 * HOUR_MS, DAY_MS, 3 * DAY_MS, 9 * DAY_MS, 30 * DAY_MS)))
        what = draw(st.sampled_from(("touch", "touch", "touch", "response", "response", "profile")))
        if what == "touch":
            steps.append((at, ContactEvent(f"t{i}", "touch", "c1", draw(st.sampled_from(CHANNELS)), at,
                                           kind=draw(st.sampled_from(TOUCH_KINDS)), producer="p")))
        elif what == "response":
            steps.append((at, ContactEvent(f"r{i}", "response", "c1", draw(st.sampled_from(CHANNELS)), at,
                                           kind=draw(st.sampled_from(RESPONSE_KINDS)), producer="p")))
        else:
            steps.append((at, {"stage": draw(st.sampled_from(("prospect", "intent", "loyal"))),
                               "do_not_contact": draw(st.booleans())}))
    return steps, at + draw(st.sampled_from((0, 10 * DAY_MS, 60 * DAY_MS)))


def check(state: CustomerState, policy: Policy) -> None:
    """What must hold after every evaluation, once the timers due by then have fired."""
    again = copy.deepcopy(state)  # settled: looking again at the same moment changes nothing
    assert engine.on_due(again, state.clock_ms, policy) == [] and again.phase == state.phase
    policy = policy.for_profile(state.profile)
    assert state.status == STATUS_OF_PHASE[state.phase]
    entry = lifecycle.list_entry(state)
    assert (entry is None) == (state.phase == NORMAL), "every non-normal customer is on a list"
    clock = state.clock_ms
    if state.phase in (NORMAL, COOLING_OFF):  # neither neglected nor resting past the policy without a move
        due = engine.lifecycle_due_ms(state, policy)
        assert due is None or clock < due, (state.phase, clock, due)
    if state.phase == NORMAL and not (state.profile or {}).get("do_not_contact") and state.first_seen_ms is not None:
        touched = state.last_touch_ms if state.last_touch_ms is not None else state.first_seen_ms
        stage = (state.profile or {}).get("stage")
        assert clock <= touched + policy.cadence_ms(stage) + policy.cadence_tolerance_ms, "neglected, and normal"
    if state.phase == COOLING_OFF:
        rest = lifecycle.rest_end_ms(state, policy, state.active_rules)
        held_until = (state.status_since_ms or 0) + policy.min_throttle_ms
        assert rest is None or clock < max(rest, held_until), "rested, and still cooling off"
    if state.phase == THROTTLED:
        held_until = (state.status_since_ms or 0) + policy.min_throttle_ms
        assert TIME_BOUND_RULES & set(state.active_rules) or clock < held_until, "throttled with nothing time-bound"


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(life=lives(), policy=st.sampled_from((POLICY, SHORT)))
def test_no_one_stays_throttled_or_neglected_without_a_move_or_a_list(
    life: tuple[list[tuple[int, object]], int], policy: Policy
) -> None:
    steps, until = life
    driver = Life(policy, {"stage": "intent"})
    for at, step in steps:
        if isinstance(step, ContactEvent):
            driver.event(step)
        else:
            driver.run_until(at)
            driver._track(lambda step=step, at=at: engine.apply_profile(driver.state, step, at, policy))  # type: ignore[misc]
        driver.run_until(driver.state.clock_ms)
        check(driver.state, policy)
    driver.run_until(until)
    driver.state.clock_ms = max(driver.state.clock_ms, until)
    check(driver.state, policy)
    for source, target, told in driver.moves:
        assert (told or lifecycle.SILENT) in told_for(source, target), f"undocumented {source} -> {target}: {told}"


def test_docs_policy_md_lists_every_transition_as_the_code_has_it() -> None:
    text = (Path(__file__).parents[3] / "docs" / "policy.md").read_text(encoding="utf-8")
    rows = []
    for line in text.splitlines():
        cells = [c.strip() for c in line.split("|")]
        if len(cells) > 4 and cells[1] in lifecycle.PHASES and cells[2] in lifecycle.PHASES:
            rows.append((cells[1], cells[2]))
    assert len(rows) == len(set(rows))  # one row per move (alternatives in its "told")
    assert set(rows) == {(t.source, t.target) for t in lifecycle.TRANSITIONS}


def test_a_do_not_contact_customer_who_rested_recovers_quietly_and_stays_normal() -> None:
    """Nobody is to re-engage a do-not-contact customer: the rest ends the cool-off with a recovery
    that says so, and the rested-off streak does not throttle them again at the next look."""
    life = Life(profile={"stage": "customer", "do_not_contact": True})
    life.events(unanswered(5, T0))
    life.run_until(T0 + 30 * DAY_MS)
    assert life.went(COOLING_OFF, NORMAL) == "fatigue.recovered"
    recovered = life.actions[-1]
    assert [r["rule"] for r in recovered["reasons"]] == ["unanswered_streak_rested"]
    assert "do not contact" in recovered["suggestion"]
    assert engine.on_due(life.state, T0 + 31 * DAY_MS, POLICY) == [] and life.state.phase == NORMAL
