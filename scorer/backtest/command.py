"""`fatigue backtest`: load a history, replay it (twice with `--compare`), write what was asked.

Documented in docs/backtest.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import IO

from scorer.backtest.plot import matplotlib_classes, write_plot, write_timeline_plot
from scorer.backtest.report import (
    Inputs,
    delivered_ids,
    json_lines,
    render_comparison,
    render_report,
    render_timeline,
)
from scorer.backtest.simulation import Arrival, ProfileChange, Simulation, simulate
from scorer.core.state import ContactEvent
from scorer.history import EventRow, Loaded, ProfileRow, contact_event, load_events, load_profiles
from services.errors import FatigueError
from services.policy.model import DEFAULT_POLICY_FILE, Policy, load_policy
from services.settings import DEFAULT_TIMER_SETTLE_S

MAX_SKIPPED_SHOWN = 20


class UnknownCustomer(FatigueError):
    """`--customer` names a customer the replayed history does not hold."""

    operator_action = "Pass a customer_id that appears in the events or profiles (before --until)."


class OptionsConflict(FatigueError):
    """Two options that do not go together."""

    operator_action = "Run the backtest twice, once with each option."


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
    compare: Path | None = None
    settle_s: float = DEFAULT_TIMER_SETTLE_S
    """As the live scorer's FATIGUE_TIMER_SETTLE_S: how long a customer's timers wait after their latest
    arrival, and how old events must be to be history (told once caught up)."""


def _profile_changes(loaded: Loaded[ProfileRow]) -> list[ProfileChange]:
    return [ProfileChange(r.value.customer_id, r.value.profile(), r.value.updated_at_ms) for r in loaded.rows]


def arrivals(loaded: Loaded[EventRow], producer: str) -> list[ContactEvent | Arrival]:
    """Each row's event, arriving at its `received_at` when the row has one."""
    out: list[ContactEvent | Arrival] = []
    for row in loaded.rows:
        event = contact_event(row.value, producer)
        received = row.value.received_at_ms
        out.append(event if received is None else Arrival(event, received))
    return out


def _policy_name(path: Path | None) -> str:
    return str(path) if path else f"{DEFAULT_POLICY_FILE.name} (packaged default)"


def run(options: Options, out: IO[str], err: IO[str]) -> None:
    """Load, replay and write the requested output. FatigueError (exit 2) on bad input."""
    if options.compare is not None and (options.customer is not None or options.plot is not None):
        raise OptionsConflict("--compare shows two policies side by side; it does not go with --customer or --plot")
    if options.plot is not None:
        matplotlib_classes()  # fail before any output
    policy = load_policy(options.policy)
    other = load_policy(options.compare) if options.compare is not None else None
    events = load_events(options.events, options.fmt, skip_invalid=options.skip_invalid)
    profiles = (load_profiles(options.profiles, options.fmt, skip_invalid=options.skip_invalid)
                if options.profiles else Loaded[ProfileRow]())
    skipped = events.skipped + profiles.skipped
    for problem in skipped[:MAX_SKIPPED_SHOWN]:
        err.write(f"skipped invalid row {problem}\n")
    if len(skipped) > MAX_SKIPPED_SHOWN:
        err.write(f"... and {len(skipped) - MAX_SKIPPED_SHOWN} more invalid rows skipped\n")
    history, changes = arrivals(events, options.producer), _profile_changes(profiles)
    sim = _replay(history, changes, policy, options)
    inputs = Inputs(str(options.events), _policy_name(options.policy), len(events.rows), len(skipped),
                    len(profiles.rows))
    if other is not None:
        _write_comparison(sim, _replay(history, changes, other, options), inputs, options, out)
        return
    actions = [a for a in sim.actions if options.customer in (None, a["customer_id"])]
    if options.json:
        out.writelines(json_lines(actions, delivered=delivered_ids(sim)))
    elif options.customer is not None:
        out.write(render_timeline(sim, options.customer))
    else:
        out.write(render_report(sim, inputs))
    if options.plot is not None:
        title = f"Backtest of {options.events.name}"
        if options.customer is not None:
            write_timeline_plot(sim, options.customer, policy, options.plot, f"{title} - {options.customer}")
        else:
            write_plot(actions, options.plot, title)


def _replay(history: list[ContactEvent | Arrival], changes: list[ProfileChange], policy: Policy,
            options: Options) -> Simulation:
    sim = simulate(history, changes, policy, until_ms=options.until_ms, follow=options.customer,
                   settle_ms=int(options.settle_s * 1000))
    if options.customer is not None and options.customer not in sim.customers:
        raise UnknownCustomer(f"customer {options.customer!r} has no events or profile in the replayed history")
    return sim


def _write_comparison(a: Simulation, b: Simulation, inputs: Inputs, options: Options, out: IO[str]) -> None:
    if options.json:
        out.writelines(json_lines(a.actions, "A", delivered_ids(a)))
        out.writelines(json_lines(b.actions, "B", delivered_ids(b)))
    else:
        out.write(render_comparison(a, b, inputs, _policy_name(options.compare)))
