"""`fatigue backtest`: replay a history through the same pure core as the live scorer, offline.

The clock is simulated: events are replayed in event-time order (ties in input order), each with
`now` = its `occurred_at`; before an event at time t every due timer at or before t fires, in due
order, exactly like the live scorer's due-time index would fire it (`engine.on_due` at the due
time, then the customer's next due time is scheduled again). After the last event the timers keep
firing up to `until`. No Faust, Kafka or Redis: the same input gives the same output, byte for byte.

Only the live timers that can change an outcome are fired (`rules_due_ms`): the live due time also
follows every window bucket leaving every window (for the snapshot), and most of those firings
change nothing — no action, no rule's state. `simulate(..., every_timer=True)` fires every live
timer instead; both emit the same actions at the same moments (tests/scorer/test_backtest_timers.py).

Outputs: a report per ISO week x tier x stage (`render_report`), one customer's timeline
(`render_timeline`), one JSON object per action (`json_lines`) and a weekly chart (`write_plot`).
Documented in docs/backtest.md.
"""

from __future__ import annotations

import heapq
import json
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any

from scorer.core import engine, signals
from scorer.core.state import THROTTLED, ContactEvent, CustomerState
from scorer.core.timefmt import format_ms
from scorer.core.windows import FINE_HORIZON_MS
from scorer.history import Loaded, ProfileRow, contact_event, load_events, load_profiles
from services.actions import Action, Reason
from services.durations import HOUR_MS
from services.errors import FatigueError
from services.names import ACTION_RE_ENGAGE, ACTION_RECOVERED, ACTION_THROTTLE
from services.policy.model import DEFAULT_POLICY_FILE, Policy, load_policy

ACTION_COLUMNS = ((ACTION_THROTTLE, "throttled"), (ACTION_RE_ENGAGE, "re-engaged"), (ACTION_RECOVERED, "recovered"))
TOP_RULES = 3
MAX_SKIPPED_SHOWN = 20


class PlotUnavailable(FatigueError):
    """`--plot` needs matplotlib, which is an optional extra."""

    operator_action = "Install the plot extra: .venv/bin/pip install -c constraints.txt -e '.[plot]'"


class UnknownCustomer(FatigueError):
    """`--customer` names a customer the replayed history does not hold."""

    operator_action = "Pass a customer_id that appears in the events or profiles (before --until)."


class OutputFailed(FatigueError):
    """An output file could not be written."""

    operator_action = "Check that the directory of the output file exists and is writable."


# ---- simulation ----


@dataclass(frozen=True)
class ProfileChange:
    customer_id: str
    profile: dict[str, Any]
    at_ms: int | None = None
    """When the profile took effect; None: in force from the customer's first event on."""


@dataclass(frozen=True)
class Step:
    """One line of a customer's timeline."""

    at_ms: int
    kind: str  # "profile" | "event" | "action"
    text: str
    detail: tuple[str, ...] = ()


@dataclass
class Simulation:
    """What a replay produced: every action in the order it happened, and what it took."""

    actions: list[Action] = field(default_factory=list)
    outcomes: Counter[str] = field(default_factory=Counter)
    customers: set[str] = field(default_factory=set)
    start_ms: int | None = None
    end_ms: int | None = None
    timers_fired: int = 0
    after_until: int = 0
    timeline: list[Step] = field(default_factory=list)
    """Steps of the followed customer (`follow`), in time order."""


@dataclass(frozen=True, order=True)
class _Item:
    at_ms: int
    order: int  # at the same moment: untimed profiles, timed profiles, events; then input order
    seq: int
    payload: ContactEvent | ProfileChange = field(compare=False)


def rules_due_ms(state: CustomerState, policy: Policy, evaluated_ms: int) -> int | None:
    """A lower bound of the first moment after `evaluated_ms` (the customer's last evaluation) at
    which `engine.on_due` could decide otherwise than then, if no event or profile comes in between;
    None: never. Until then an `on_due` emits nothing and leaves the rules' state as it is.

    What on_due reads that changes with time alone, the state being otherwise fixed:
      - re_engage: the cadence / silence deadline (not filtered, like the live due time);
      - recovery: the end of the minimum throttle;
      - frequency_cap: while active, the moment the counted touches in its window fall to
        `recover_at_or_below` (counts only fall with time: buckets leave the windows, see
        `_counts_only_fall`); while inactive it cannot become active without a touch;
      - complaint: the end of the cool-off after the latest complaint;
      - reply_latency_slowdown: a baseline sample leaving the baseline window;
      - response_rate_drop / engagement_drop: read `min(now, watermark)`, fixed once now >= the
        watermark (always, replaying in event-time order).
    unanswered_streak does not depend on time.
    """
    policy = policy.for_profile(state.profile)
    if not _hysteresis_settles(policy):
        return evaluated_ms  # a rule may flip at every evaluation: due at once, every live timer counts
    times = [engine.re_engage_due_ms(state, policy)]
    if state.status == THROTTLED:
        times.append(engine._throttle_held_until(state, policy))
    times.append(signals.complaint_ends_ms(state, policy))
    if "frequency_cap" in state.active_rules:  # at once if it fell already (after a duplicate event)
        times.append(max(engine.pause_until_ms(state, state.clock_ms, policy), evaluated_ms + 1))
    if policy.signals.latency_enabled:
        baseline_ms = policy.signals.latency_baseline.ms
        times += [ts + baseline_ms for ts, _ in state.latency_samples]
    times.append(state.watermark_ms)
    later = [t for t in times if t is not None and t > evaluated_ms]
    if (re_engage := times[0]) is not None and re_engage <= evaluated_ms:
        later.append(re_engage)  # overdue already (do-not-contact or not normal: None)
    return min(later) if later else None


def _hysteresis_settles(policy: Policy) -> bool:
    """A rule with hysteresis gives the same answer when evaluated twice at the same moment only if
    its recovery threshold is below its trigger (the policy schema insists on it)."""
    s = policy.signals
    return policy.recover_at_or_below < policy.throttle_above and s.latency_recover_factor < s.latency_slowdown_factor


def _counts_only_fall(policy: Policy) -> bool:
    """True when a window count can only fall between two events and every future moment it falls
    at is already a live due time (`leaves_window_at`). A window between 47 h and 48 h is the
    exception: a minute bucket folded into its hour may come back into it (the fold at the 48 h
    horizon extends the bucket to the end of its hour)."""
    return all(not (FINE_HORIZON_MS - HOUR_MS <= w.ms < FINE_HORIZON_MS) for w in policy.windows)


def first_live_due_at_or_after(state: CustomerState, policy: Policy, at_ms: int) -> int | None:
    """The first due time >= at_ms the live scorer's timers would reach, skipping no-op firings:
    with nothing changing in between, its successive due times are the candidates of
    `engine.next_due_ms` in order (window expiries, the end of the minimum throttle, the cadence
    deadline, the end of a complaint's cool-off)."""
    policy = policy.for_profile(state.profile)
    complaint_ends = signals.complaint_ends_ms(state, policy)
    candidates = [
        engine._throttle_held_until(state, policy) if state.status == THROTTLED else None,
        state.counts.next_expiry_ms([w.ms for w in policy.windows], at_ms - 1),
        engine.re_engage_due_ms(state, policy),
        complaint_ends,
    ]
    times = [t for t in candidates if t is not None and t >= at_ms]
    return min(times) if times else None


class _Replay:
    def __init__(self, policy: Policy, follow: str | None, every_timer: bool) -> None:
        self.policy = policy
        self.follow = follow
        self.every_timer = every_timer or not _counts_only_fall(policy)
        self.states: dict[str, CustomerState] = {}
        self.heap: list[tuple[int, str, bool]] = []
        self.due: dict[str, tuple[int, bool]] = {}
        """customer -> (due time, exact): not exact, the first live due time at or after it is
        looked up when it comes (`first_live_due_at_or_after`; often an event comes first)."""
        self.evaluated: dict[str, int] = {}
        """customer -> the clock of its last rule evaluation (events, profiles, timers)."""
        self.result = Simulation()

    def state(self, customer_id: str) -> CustomerState:
        if customer_id not in self.states:
            self.states[customer_id] = CustomerState(customer_id)
            self.result.customers.add(customer_id)
        return self.states[customer_id]

    def schedule(self, state: CustomerState, not_before_ms: int) -> None:
        """Index the customer's next due time (one entry per customer, like the live sorted set).

        The live due time, or, unless `every_timer`, the first live due time at which a rule's
        outcome can change (`rules_due_ms`): the live timers before it would change nothing. When
        that is after the clock, the live timers from the clock on are the candidates of
        `next_due_ms` in order, all after the clock; when it is not, it is the live due time itself."""
        if self.every_timer:
            self._enqueue(state.customer_id, self._live_due(state, not_before_ms), exact=True)
            return
        rules_due = rules_due_ms(state, self.policy, self.evaluated.get(state.customer_id, -1))
        if rules_due is not None and rules_due <= state.clock_ms:
            self._enqueue(state.customer_id, self._live_due(state, not_before_ms), exact=True)
        else:
            self._enqueue(state.customer_id, rules_due, exact=False)

    def _live_due(self, state: CustomerState, not_before_ms: int) -> int | None:
        due = engine.next_due_ms(state, self.policy)
        return None if due is None else max(due, not_before_ms)

    def _enqueue(self, customer_id: str, due: int | None, *, exact: bool) -> None:
        if due is None:
            self.due.pop(customer_id, None)
        elif self.due.get(customer_id) != (due, exact):
            self.due[customer_id] = (due, exact)
            heapq.heappush(self.heap, (due, customer_id, exact))

    def fire_until(self, now_ms: int) -> None:
        while self.heap and self.heap[0][0] <= now_ms:
            due_ms, customer_id, exact = heapq.heappop(self.heap)
            if self.due.get(customer_id) != (due_ms, exact):
                continue  # superseded by a later schedule
            del self.due[customer_id]
            state = self.states[customer_id]
            if not exact:  # the state has not changed since it was scheduled
                self._enqueue(customer_id, first_live_due_at_or_after(state, self.policy, due_ms), exact=True)
                continue
            self.result.timers_fired += 1
            self.emit(state, engine.on_due(state, due_ms, self.policy))
            self.evaluated[customer_id] = state.clock_ms
            self.schedule(state, due_ms + 1)  # time moves on even if a rule asked for now again

    def apply_profile(self, change: ProfileChange, now_ms: int) -> None:
        self.fire_until(now_ms)
        state = self.state(change.customer_id)
        actions = engine.apply_profile(state, change.profile, now_ms, self.policy)
        self.evaluated[change.customer_id] = state.clock_ms
        if change.customer_id == self.follow:
            self.result.timeline.append(Step(state.clock_ms, "profile", _profile_text(change.profile)))
        self.emit(state, actions)
        self.schedule(state, now_ms)

    def apply_event(self, event: ContactEvent) -> None:
        now_ms = event.occurred_at_ms
        self.fire_until(now_ms)
        state = self.state(event.customer_id)
        outcome = engine.apply_event(state, event, now_ms, self.policy)
        if outcome.result == engine.COUNTED:  # duplicates and late events are not evaluated
            self.evaluated[event.customer_id] = state.clock_ms
        self.result.outcomes[outcome.result] += 1
        if event.customer_id == self.follow:
            self.result.timeline.append(_event_step(state, event, outcome, self.policy))
        self.emit(state, outcome.actions)
        self.schedule(state, now_ms)

    def emit(self, state: CustomerState, actions: list[Action]) -> None:
        self.result.actions.extend(actions)
        if state.customer_id == self.follow:
            self.result.timeline.extend(_action_step(a) for a in actions)


def simulate(
    events: Iterable[ContactEvent],
    profiles: Iterable[ProfileChange],
    policy: Policy,
    *,
    until_ms: int | None = None,
    follow: str | None = None,
    every_timer: bool = False,
) -> Simulation:
    """Replay events and profiles with a simulated clock; `follow` records one customer's timeline.

    The clock runs to `until_ms` (default: the last event or timed profile); events and profiles
    after it are left out (`after_until` counts the events). `every_timer`: fire every live timer,
    also those that cannot change an outcome (the reference the tests compare with; slower).
    """
    replay = _Replay(policy, follow, every_timer)
    events, profiles = list(events), list(profiles)
    times = [e.occurred_at_ms for e in events] + [p.at_ms for p in profiles if p.at_ms is not None]
    end_ms = until_ms if until_ms is not None else max(times, default=None)
    if end_ms is None:
        return replay.result
    start_ms = min(min(times, default=end_ms), end_ms)
    replay.result.start_ms, replay.result.end_ms = start_ms, end_ms
    for item in _replay_order(events, profiles, start_ms):
        if item.at_ms > end_ms:
            replay.result.after_until += isinstance(item.payload, ContactEvent)
        elif isinstance(item.payload, ContactEvent):
            replay.apply_event(item.payload)
        else:
            replay.apply_profile(item.payload, item.at_ms)
    replay.fire_until(end_ms)
    return replay.result


def _replay_order(events: list[ContactEvent], profiles: list[ProfileChange], start_ms: int) -> list[_Item]:
    """Events by event time (ties in input order); a profile with a time just before the events of
    that moment; one without just before the customer's first event or timed profile, or at the
    start of the history for a customer that has neither."""
    first: dict[str, int] = {}
    for e in events:
        first[e.customer_id] = min(e.occurred_at_ms, first.get(e.customer_id, e.occurred_at_ms))
    for p in profiles:
        if p.at_ms is not None:
            first[p.customer_id] = min(p.at_ms, first.get(p.customer_id, p.at_ms))
    items = [_Item(e.occurred_at_ms, 2, seq, e) for seq, e in enumerate(events)]
    for seq, p in enumerate(profiles):
        if p.at_ms is None:
            items.append(_Item(first.get(p.customer_id, start_ms), 0, seq, p))
        else:
            items.append(_Item(p.at_ms, 1, seq, p))
    return sorted(items)


# ---- timeline steps ----


def _profile_text(profile: dict[str, Any]) -> str:
    shown = [f"{key} {value}" for key, value in profile.items() if key != "do_not_contact" or value]
    return "profile: " + (", ".join(shown) or "(empty)")


def _event_step(state: CustomerState, event: ContactEvent, outcome: engine.Outcome, policy: Policy) -> Step:
    policy = policy.for_profile(state.profile)  # the customer's segment may have its own window and cap
    counted = engine.counted_touches(state, state.clock_ms, policy)
    text = (f"{event.type} {event.channel} {event.kind or '-'} {event.event_id} [{outcome.result}]: "
            f"{counted} touches toward the cap in {policy.frequency_window.label}, status {state.status}")
    return Step(event.occurred_at_ms, "event", text, (outcome.reason,) if outcome.reason else ())


def _action_step(action: Action) -> Step:
    at_ms = _at_ms(action)
    text = f"{action['type']}: {action['previous_status']} -> {action['status']}"
    return Step(at_ms, "action", text, ("reasons: " + reasons_text(action["reasons"]), action["suggestion"]))


def reasons_text(reasons: list[Reason]) -> str:
    return "; ".join(f"{r['rule']} {r['window']} observed {r['observed']:g} threshold {r['threshold']:g}"
                     for r in reasons)


def _at_ms(action: Action) -> int:
    return int(datetime.fromisoformat(action["at"]).timestamp() * 1000)


# ---- outputs ----


def action_record(action: Action) -> dict[str, Any]:
    """The `--json` line of one action."""
    profile = action.get("profile") or {}
    return {
        "customer_id": action["customer_id"],
        "action": action["type"],
        "at": action["at"],
        "reasons": action["reasons"],
        "status": action["status"],
        "previous_status": action["previous_status"],
        "tier": profile.get("tier"),
        "stage": profile.get("stage"),
        "suggestion": action["suggestion"],
    }


def json_lines(actions: Iterable[Action]) -> Iterator[str]:
    for action in actions:
        yield json.dumps(action_record(action), ensure_ascii=False, separators=(",", ":")) + "\n"


def iso_week(at_ms: int) -> str:
    year, week, _ = datetime.fromtimestamp(at_ms / 1000, UTC).isocalendar()
    return f"{year}-W{week:02d}"


@dataclass
class Segment:
    """Distinct customers per action type and the rules behind the actions, for one report row."""

    customers: dict[str, set[str]] = field(default_factory=lambda: {t: set() for t, _ in ACTION_COLUMNS})
    rules: Counter[str] = field(default_factory=Counter)

    def add(self, action: Action) -> None:
        self.customers.setdefault(action["type"], set()).add(action["customer_id"])
        self.rules.update({r["rule"] for r in action["reasons"]})

    def cells(self) -> list[str]:
        counts = [str(len(self.customers[t])) for t, _ in ACTION_COLUMNS]
        top = sorted(self.rules.items(), key=lambda kv: (-kv[1], kv[0]))[:TOP_RULES]
        return [*counts, ", ".join(f"{rule} {n}" for rule, n in top) or "-"]


def segments(actions: Iterable[Action]) -> tuple[dict[tuple[str, str, str], Segment], Segment]:
    """Per (ISO week, tier, stage) of each action, and the total over all of them."""
    rows: dict[tuple[str, str, str], Segment] = {}
    total = Segment()
    for action in actions:
        profile = action.get("profile") or {}
        key = (iso_week(_at_ms(action)), profile.get("tier") or "-", profile.get("stage") or "-")
        rows.setdefault(key, Segment()).add(action)
        total.add(action)
    return dict(sorted(rows.items())), total


def _table(rows: list[list[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    numeric = {3, 4, 5}
    lines = []
    for row in rows:
        pairs = enumerate(zip(row, widths, strict=True))
        cells = [cell.rjust(w) if i in numeric else cell.ljust(w) for i, (cell, w) in pairs]
        lines.append("  ".join(cells).rstrip())
    return lines


@dataclass(frozen=True)
class Inputs:
    """Where the replay came from, for the report header."""

    events: str
    policy: str
    rows: int
    skipped: int
    profiles: int = 0


def render_report(sim: Simulation, inputs: Inputs) -> str:
    by_segment, total = segments(sim.actions)
    kinds = Counter(a["type"] for a in sim.actions)
    span = "-"
    if sim.start_ms is not None and sim.end_ms is not None:
        span = f"{format_ms(sim.start_ms)} .. {format_ms(sim.end_ms)}"
    lines = [
        f"Backtest of {inputs.events} with policy {inputs.policy}",
        f"  simulated clock  {span}",
        f"  events           {inputs.rows} valid rows: {sim.outcomes['counted']} counted, "
        f"{sim.outcomes['duplicate']} duplicate, {sim.outcomes['late']} late; "
        f"{inputs.skipped} invalid rows skipped; {sim.after_until} after --until",
        f"  customers        {len(sim.customers)} ({inputs.profiles} profile rows); "
        f"{sim.timers_fired} timers fired",
        "  actions          " + ", ".join(f"{kinds[t]} {t}" for t, _ in ACTION_COLUMNS),
        "",
        "Customers per ISO week (UTC, of the action) x tier x stage:",
    ]
    header = ["week", "tier", "stage", *(label for _, label in ACTION_COLUMNS), "top rules (actions)"]
    table = [header, *([*key, *seg.cells()] for key, seg in by_segment.items()), ["all weeks", "", "", *total.cells()]]
    lines += _table(table)
    return "\n".join(lines) + "\n"


def render_timeline(sim: Simulation, customer_id: str) -> str:
    steps = sorted(sim.timeline, key=lambda s: s.at_ms)  # stable: same-time steps keep their order
    events = sum(1 for s in steps if s.kind == "event")
    actions = sum(1 for s in steps if s.kind == "action")
    lines = [f"Timeline of {customer_id}: {events} events, {actions} actions"]
    for step in steps:
        label = step.kind.upper() if step.kind == "action" else step.kind
        lines.append(f"{format_ms(step.at_ms)}  {label:<7}  {step.text}")
        lines += [f"{'':24}  {'':<7}    {d}" for d in step.detail]
    return "\n".join(lines) + "\n"


def weekly_counts(actions: list[Action]) -> tuple[list[str], dict[str, list[int]]]:
    """Every ISO week from the first action's to the last's (empty weeks too), actions per type."""
    if not actions:
        return [], {t: [] for t, _ in ACTION_COLUMNS}
    times = [_at_ms(a) for a in actions]
    first = datetime.fromtimestamp(min(times) / 1000, UTC)
    monday = (first - timedelta(days=first.weekday())).replace(hour=0, minute=0, second=0, microsecond=0)
    weeks: list[str] = []
    week_start = monday
    last = datetime.fromtimestamp(max(times) / 1000, UTC)
    while week_start <= last:
        weeks.append(iso_week(int(week_start.timestamp() * 1000)))
        week_start += timedelta(days=7)
    index = {w: i for i, w in enumerate(weeks)}
    counts = {t: [0] * len(weeks) for t, _ in ACTION_COLUMNS}
    for action, at_ms in zip(actions, times, strict=True):
        counts.setdefault(action["type"], [0] * len(weeks))[index[iso_week(at_ms)]] += 1
    return weeks, counts


def _matplotlib() -> tuple[Any, Any]:
    """(Figure, FigureCanvasAgg), or PlotUnavailable saying which extra to install."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise PlotUnavailable(f"--plot needs matplotlib, which is not installed ({exc})") from None
    return Figure, FigureCanvasAgg


def write_plot(actions: list[Action], path: Path, title: str) -> None:
    """A weekly stacked bar chart of actions by type, as PNG (matplotlib, Agg backend, no pyplot)."""
    Figure, FigureCanvasAgg = _matplotlib()
    weeks, counts = weekly_counts(actions)
    fig = Figure(figsize=(max(6.0, 0.5 * len(weeks) + 2), 4.5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    bottom = [0] * len(weeks)
    for action_type, _ in ACTION_COLUMNS:
        ax.bar(range(len(weeks)), counts[action_type], bottom=bottom, label=action_type)
        bottom = [b + c for b, c in zip(bottom, counts[action_type], strict=True)]
    ax.set_xticks(range(len(weeks)), weeks, rotation=60, ha="right", fontsize=8)
    ax.set_ylabel("actions per ISO week (UTC)")
    ax.yaxis.get_major_locator().set_params(integer=True)
    ax.set_title(title if weeks else f"{title}: no actions")
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    try:
        fig.savefig(path, format="png", metadata={"Software": None})
    except OSError as exc:
        raise OutputFailed(f"cannot write {path}: {exc}") from exc


# ---- the command ----


@dataclass(frozen=True)
class Options:
    events: Path
    policy: Path | None = None
    profiles: Path | None = None
    fmt: str | None = None
    until_ms: int | None = None
    producer: str = "backtest"
    skip_invalid: bool = False
    customer: str | None = None
    json: bool = False
    plot: Path | None = None


def _profile_changes(loaded: Loaded[ProfileRow]) -> list[ProfileChange]:
    return [ProfileChange(r.value.customer_id, r.value.profile(), r.value.updated_at_ms) for r in loaded.rows]


def run(options: Options, out: IO[str], err: IO[str]) -> None:
    """Load, replay and write the requested output. FatigueError (exit 2) on bad input."""
    if options.plot is not None:
        _matplotlib()  # fail before any output
    policy = load_policy(options.policy)
    events = load_events(options.events, options.fmt, skip_invalid=options.skip_invalid)
    profiles = (load_profiles(options.profiles, options.fmt, skip_invalid=options.skip_invalid)
                if options.profiles else Loaded[ProfileRow]())
    skipped = events.skipped + profiles.skipped
    for problem in skipped[:MAX_SKIPPED_SHOWN]:
        err.write(f"skipped invalid row {problem}\n")
    if len(skipped) > MAX_SKIPPED_SHOWN:
        err.write(f"... and {len(skipped) - MAX_SKIPPED_SHOWN} more invalid rows skipped\n")
    sim = simulate(
        (contact_event(row.value, options.producer) for row in events.rows),
        _profile_changes(profiles),
        policy,
        until_ms=options.until_ms,
        follow=options.customer,
    )
    if options.customer is not None and options.customer not in sim.customers:
        raise UnknownCustomer(f"customer {options.customer!r} has no events or profile in the replayed history")
    actions = [a for a in sim.actions if options.customer in (None, a["customer_id"])]
    if options.json:
        out.writelines(json_lines(actions))
    elif options.customer is not None:
        out.write(render_timeline(sim, options.customer))
    else:
        policy_name = str(options.policy) if options.policy else f"{DEFAULT_POLICY_FILE.name} (packaged default)"
        inputs = Inputs(str(options.events), policy_name, len(events.rows), len(skipped), len(profiles.rows))
        out.write(render_report(sim, inputs))
    if options.plot is not None:
        title = f"Backtest of {options.events.name}" + (f" - {options.customer}" if options.customer else "")
        write_plot(actions, options.plot, title)
