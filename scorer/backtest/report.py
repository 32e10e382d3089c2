"""What `fatigue backtest` prints: the weekly report, one customer's timeline, one JSON object per
action, and two policies side by side (`--compare`). Pure text from a `Simulation`."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from scorer.backtest.simulation import CAP_TOUCHES, Simulation, at_ms
from scorer.core.advice import plural
from scorer.core.timefmt import format_ms
from services.actions import Action
from services.names import ACTION_RE_ENGAGE, ACTION_RECOVERED, ACTION_THROTTLE

ACTION_COLUMNS = ((ACTION_THROTTLE, "throttled"), (ACTION_RE_ENGAGE, "re-engaged"), (ACTION_RECOVERED, "recovered"))
TOP_RULES = 3
MAX_DIFFERENCES_SHOWN = 50


def action_record(action: Action, policy: str | None = None, delivered: bool | None = None) -> dict[str, Any]:
    """The `--json` line of one action (`policy`: A or B with `--compare`; `delivered`: whether the
    live scorer would have sent it to the rep, when known)."""
    profile = action.get("profile") or {}
    record = {
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
    if delivered is not None:
        record["delivered"] = delivered
    return record if policy is None else {"policy": policy, **record}


def json_lines(actions: Iterable[Action], policy: str | None = None,
               delivered: set[str] | None = None) -> Iterator[str]:
    """One JSON line per action; with `delivered` (action ids), each says whether it was sent."""
    for action in actions:
        sent = None if delivered is None else action["action_id"] in delivered
        yield json.dumps(action_record(action, policy, sent), ensure_ascii=False, separators=(",", ":")) + "\n"


def delivered_ids(sim: Simulation) -> set[str]:
    return {a["action_id"] for a in sim.delivered}


def iso_week(ms: int) -> str:
    year, week, _ = datetime.fromtimestamp(ms / 1000, UTC).isocalendar()
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
        key = (iso_week(at_ms(action)), profile.get("tier") or "-", profile.get("stage") or "-")
        rows.setdefault(key, Segment()).add(action)
        total.add(action)
    return dict(sorted(rows.items())), total


def _table(rows: list[list[str]], numeric: set[int]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
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


def _events_line(sim: Simulation, inputs: Inputs) -> str:
    o = sim.outcomes
    return (f"  events           {inputs.rows} valid rows: {o['counted']} recorded "
            f"({plural(o[CAP_TOUCHES], 'touch', 'touches')} counted toward the cap), "
            f"{o['duplicate']} duplicate, {o['late']} late; "
            f"{inputs.skipped} invalid rows skipped; {sim.after_until} after --until")


def _span(sim: Simulation) -> str:
    if sim.start_ms is None or sim.end_ms is None:
        return "-"
    return f"{format_ms(sim.start_ms)} .. {format_ms(sim.end_ms)}"


def _action_counts(actions: list[Action]) -> str:
    kinds = Counter(a["type"] for a in actions)
    return ", ".join(f"{kinds[t]} {t}" for t, _ in ACTION_COLUMNS)


def _withheld(sim: Simulation) -> str:
    """Why transitions were not sent (scorer/core/delivery.py)."""
    if not sim.withheld:
        return ""
    return " (withheld: " + ", ".join(f"{n} {reason}" for reason, n in sorted(sim.withheld.items())) + ")"


def render_report(sim: Simulation, inputs: Inputs) -> str:
    by_segment, total = segments(sim.actions)
    lines = [
        f"Backtest of {inputs.events} with policy {inputs.policy}",
        f"  simulated clock  {_span(sim)}",
        _events_line(sim, inputs),
        f"  customers        {len(sim.customers)} ({inputs.profiles} profile rows); "
        f"{sim.timers_fired} timers fired",
        "  actions          " + _action_counts(sim.actions),
        "  reps would get   " + _action_counts(sim.delivered) + _withheld(sim),
        "",
        "Customers per ISO week (UTC, of the action) x tier x stage:",
    ]
    header = ["week", "tier", "stage", *(label for _, label in ACTION_COLUMNS), "top rules (actions)"]
    table = [header, *([*key, *seg.cells()] for key, seg in by_segment.items()), ["all weeks", "", "", *total.cells()]]
    lines += _table(table, {3, 4, 5})
    return "\n".join(lines) + "\n"


def render_timeline(sim: Simulation, customer_id: str) -> str:
    steps = sorted(sim.timeline, key=lambda s: s.at_ms)  # stable: same-time steps keep their order
    events = sum(1 for s in steps if s.kind == "event")
    actions = sum(1 for s in steps if s.kind == "action")
    lines = [f"Timeline of {customer_id}: {plural(events, 'event')}, {plural(actions, 'action')}"]
    for step in steps:
        label = step.kind.upper() if step.kind == "action" else step.kind
        lines.append(f"{format_ms(step.at_ms)}  {label:<7}  {step.text}")
        lines += [f"{'':24}  {'':<7}    {d}" for d in step.detail]
    return "\n".join(lines) + "\n"


def week_range(*action_lists: list[Action]) -> list[str]:
    """Every ISO week from the first action's to the last's (empty weeks too)."""
    times = [at_ms(a) for actions in action_lists for a in actions]
    if not times:
        return []
    first = datetime.fromtimestamp(min(times) / 1000, UTC)
    week_start = (first - timedelta(days=first.weekday())).replace(hour=0, minute=0, second=0, microsecond=0)
    last = datetime.fromtimestamp(max(times) / 1000, UTC)
    weeks: list[str] = []
    while week_start <= last:
        weeks.append(iso_week(int(week_start.timestamp() * 1000)))
        week_start += timedelta(days=7)
    return weeks


def weekly_counts(actions: list[Action]) -> tuple[list[str], dict[str, list[int]]]:
    """Every ISO week from the first action's to the last's (empty weeks too), actions per type."""
    weeks = week_range(actions)
    index = {w: i for i, w in enumerate(weeks)}
    counts = {t: [0] * len(weeks) for t, _ in ACTION_COLUMNS}
    for action in actions:
        counts.setdefault(action["type"], [0] * len(weeks))[index[iso_week(at_ms(action))]] += 1
    return weeks, counts


# ---- two policies on the same history ----


def _weekly_cells(actions: list[Action], weeks: list[str]) -> dict[str, list[str]]:
    """week -> ["actions/customers" per action type]."""
    acted: dict[tuple[str, str], list[str]] = {}
    for action in actions:
        acted.setdefault((iso_week(at_ms(action)), action["type"]), []).append(action["customer_id"])
    return {week: [f"{len(acted.get((week, t), []))}/{len(set(acted.get((week, t), [])))}"
                   for t, _ in ACTION_COLUMNS] for week in weeks}


def _short(action: Action) -> str:
    return f"{action['type'].removeprefix('fatigue.')} {action['at'][5:16]}"


def differing_customers(a: Simulation, b: Simulation) -> dict[str, tuple[list[Action], list[Action]]]:
    """Customers whose actions (type, moment, rules) differ between the two replays."""
    def by_customer(sim: Simulation) -> dict[str, list[Action]]:
        out: dict[str, list[Action]] = {}
        for action in sim.actions:
            out.setdefault(action["customer_id"], []).append(action)
        return out

    def key(actions: list[Action]) -> list[tuple[str, str, list[str]]]:
        return [(x["type"], x["at"], [r["rule"] for r in x["reasons"]]) for x in actions]

    left, right = by_customer(a), by_customer(b)
    return {c: (left.get(c, []), right.get(c, [])) for c in sorted(set(left) | set(right))
            if key(left.get(c, [])) != key(right.get(c, []))}


def render_comparison(a: Simulation, b: Simulation, inputs: Inputs, other_policy: str) -> str:
    weeks = week_range(a.actions, b.actions)
    cells_a, cells_b = _weekly_cells(a.actions, weeks), _weekly_cells(b.actions, weeks)
    lines = [
        f"Backtest of {inputs.events}: A = policy {inputs.policy}, B = policy {other_policy}",
        f"  simulated clock  {_span(a)}",
        _events_line(a, inputs).replace("  events   ", "  events A "),
        _events_line(b, inputs).replace("  events   ", "  events B "),
        f"  customers        {len(a.customers | b.customers)} ({inputs.profiles} profile rows)",
        "  actions A        " + _action_counts(a.actions),
        "  actions B        " + _action_counts(b.actions),
        "",
        "Actions / distinct customers per ISO week (UTC, of the action):",
    ]
    labels = [label for _, label in ACTION_COLUMNS]
    header = ["week", *(f"A {label}" for label in labels), *(f"B {label}" for label in labels)]
    rows = [header, *([week, *cells_a[week], *cells_b[week]] for week in weeks), _all_weeks(a.actions, b.actions)]
    lines += _table(rows, set(range(1, len(header))))
    differ = differing_customers(a, b)
    lines += ["", f"Customers whose actions differ: {len(differ)} of {len(a.customers | b.customers)}"]
    for customer, (left, right) in list(differ.items())[:MAX_DIFFERENCES_SHOWN]:
        shown_a = ", ".join(_short(x) for x in left) or "none"
        shown_b = ", ".join(_short(x) for x in right) or "none"
        lines.append(f"  {customer}  A: {shown_a}  |  B: {shown_b}")
    if len(differ) > MAX_DIFFERENCES_SHOWN:
        lines.append(f"  ... and {len(differ) - MAX_DIFFERENCES_SHOWN} more")
    return "\n".join(lines) + "\n"


def _all_weeks(a: list[Action], b: list[Action]) -> list[str]:
    def cells(actions: list[Action]) -> list[str]:
        out = []
        for action_type, _ in ACTION_COLUMNS:
            of_type = [x["customer_id"] for x in actions if x["type"] == action_type]
            out.append(f"{len(of_type)}/{len(set(of_type))}")
        return out

    return ["all weeks", *cells(a), *cells(b)]
