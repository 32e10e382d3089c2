"""`fatigue backtest`: replay a history through the same pure core as the live scorer, offline.

    simulation.py  the replay with a simulated clock (arrivals, timers, the followed customer)
    report.py      the weekly report, a customer's timeline, JSON lines, two policies side by side
    plot.py        the PNG charts (weekly actions; one customer's timeline)
    command.py     the command: load, replay, write (Options, run)

Documented in docs/backtest.md.
"""

from scorer.backtest.command import Options, OptionsConflict, UnknownCustomer, run
from scorer.backtest.plot import OutputFailed, PlotUnavailable, timeline_series
from scorer.backtest.report import (
    action_record,
    differing_customers,
    json_lines,
    render_comparison,
    render_report,
    render_timeline,
    segments,
    weekly_counts,
)
from scorer.backtest.simulation import (
    Arrival,
    ProfileChange,
    Simulation,
    Step,
    simulate,
)
from scorer.core.timers import first_live_due_at_or_after, rules_due_ms

__all__ = [
    "Arrival", "Options", "OptionsConflict", "OutputFailed", "PlotUnavailable", "ProfileChange", "Simulation", "Step",
    "UnknownCustomer", "action_record", "differing_customers", "first_live_due_at_or_after", "json_lines",
    "render_comparison", "render_report", "render_timeline", "rules_due_ms", "run", "segments", "simulate",
    "timeline_series", "weekly_counts",
]
