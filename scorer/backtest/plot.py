"""`fatigue backtest --plot`: PNG charts drawn with matplotlib's Agg backend (no pyplot, no display).

Without `--customer`: actions per ISO week, stacked by type. With `--customer ID`: that customer's
timeline — touches and responses per channel, the rolling count of touches toward the cap against
the cap and the recovery level, and every action as a marker with its rules. Written without a
timestamp, so the same input gives the same PNG.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from scorer.backtest.report import ACTION_COLUMNS, weekly_counts
from scorer.backtest.simulation import Simulation, at_ms
from scorer.core.recording import NEGATIVE_KINDS
from services.actions import Action
from services.errors import FatigueError
from services.names import ACTION_RE_ENGAGE, ACTION_RECOVERED, ACTION_THROTTLE
from services.policy.model import Policy

ACTION_COLOURS = {ACTION_THROTTLE: "tab:red", ACTION_RE_ENGAGE: "tab:blue", ACTION_RECOVERED: "tab:green"}


class PlotUnavailable(FatigueError):
    """`--plot` needs matplotlib, which is an optional extra."""

    operator_action = "Install the plot extra: .venv/bin/pip install -c constraints.txt -e '.[plot]'"


class OutputFailed(FatigueError):
    """An output file could not be written."""

    operator_action = "Check that the directory of the output file exists and is writable."


def matplotlib_classes() -> tuple[Any, Any]:
    """(Figure, FigureCanvasAgg), or PlotUnavailable saying which extra to install."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise PlotUnavailable(f"--plot needs matplotlib, which is not installed ({exc})") from None
    return Figure, FigureCanvasAgg


def _save(fig: Any, path: Path) -> None:
    fig.tight_layout()
    try:
        fig.savefig(path, format="png", metadata={"Software": None})
    except OSError as exc:
        raise OutputFailed(f"cannot write {path}: {exc}") from exc


def write_plot(actions: list[Action], path: Path, title: str) -> None:
    """A weekly stacked bar chart of actions by type."""
    Figure, FigureCanvasAgg = matplotlib_classes()
    weeks, counts = weekly_counts(actions)
    fig = Figure(figsize=(max(6.0, 0.5 * len(weeks) + 2), 4.5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    bottom = [0] * len(weeks)
    for action_type, _ in ACTION_COLUMNS:  # one fixed colour per type: the same in every chart, data or not
        ax.bar(range(len(weeks)), counts[action_type], bottom=bottom, label=action_type,
               color=ACTION_COLOURS[action_type])
        bottom = [b + c for b, c in zip(bottom, counts[action_type], strict=True)]
    ax.set_xticks(range(len(weeks)), weeks, rotation=60, ha="right", fontsize=8)
    ax.set_ylabel("actions per ISO week (UTC)")
    ax.set_ylim(0, max([*bottom, 1]) * 1.1)  # counts from zero; an empty chart still has a 0..1 axis
    ax.yaxis.get_major_locator().set_params(integer=True)
    ax.set_title(title if weeks else f"{title}: no actions")
    from matplotlib.patches import Patch  # a legend entry per type even when it has no bar to show

    ax.legend(handles=[Patch(facecolor=ACTION_COLOURS[t], label=t) for t, _ in ACTION_COLUMNS], loc="upper left",
              fontsize=8)
    _save(fig, path)


def _when(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def rolling_counts(touch_ms: list[int], window_ms: int, start_ms: int, end_ms: int) -> tuple[list[int], list[int]]:
    """A step function (times, counts): touches in the window (t - window, t] at every moment the
    count changes between start and end (a recount of the raw events)."""
    changes = sorted({start_ms, end_ms, *touch_ms, *(t + window_ms for t in touch_ms)})
    times = [t for t in changes if start_ms <= t <= end_ms]
    return times, [sum(1 for x in touch_ms if t - window_ms < x <= t) for t in times]


def timeline_series(sim: Simulation, customer_id: str, policy: Policy) -> dict[str, Any]:
    """What the customer chart draws, as plain data (tested without matplotlib)."""
    policy = policy.for_profile(sim.followed_profile)
    events = sim.followed_events
    counted = [e.occurred_at_ms for e in events if e.type == "touch" and (e.kind or "-") not in policy.uncounted_kinds]
    start = min(e.occurred_at_ms for e in events) if events else (sim.start_ms or 0)
    end = max(sim.end_ms or start, start)
    times, counts = rolling_counts(counted, policy.frequency_window.ms, start, end)
    return {
        "channels": sorted({e.channel for e in events}),
        "touches": [(e.occurred_at_ms, e.channel, (e.kind or "-") in policy.uncounted_kinds)
                    for e in events if e.type == "touch"],
        "responses": [(e.occurred_at_ms, e.channel, e.kind in NEGATIVE_KINDS) for e in events if e.type == "response"],
        "rolling": (times, counts),
        "window": policy.frequency_window.label,
        "cap": policy.throttle_above,
        "recover": policy.recover_at_or_below,
        "actions": [(at_ms(a), a["type"], [r["rule"] for r in a["reasons"]])
                    for a in sim.actions if a["customer_id"] == customer_id],
    }


def write_timeline_plot(sim: Simulation, customer_id: str, policy: Policy, path: Path, title: str) -> None:
    """One customer's life: touches and responses per channel, the rolling count against the cap,
    and the actions with their rules."""
    Figure, FigureCanvasAgg = matplotlib_classes()
    from matplotlib import dates

    data = timeline_series(sim, customer_id, policy)
    fig = Figure(figsize=(11, 7), dpi=100)
    FigureCanvasAgg(fig)
    top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [1, 1.4]})
    row = {c: i for i, c in enumerate(data["channels"])}
    for uncounted, colour, label in ((False, "black", "touch"), (True, "grey", "touch not toward the cap")):
        points = [(t, c) for t, c, u in data["touches"] if u == uncounted]
        if points:
            top.scatter([_when(t) for t, _ in points], [row[c] for _, c in points], marker="|", s=160, c=colour,
                        label=label)
    for negative, marker, colour, label in ((False, "o", "tab:green", "response"),
                                            (True, "x", "tab:red", "unsubscribe / complaint / bounce")):
        points = [(t, c) for t, c, n in data["responses"] if n == negative]
        if points:
            top.scatter([_when(t) for t, _ in points], [row[c] + 0.25 for _, c in points], marker=marker, s=30,
                        facecolors="none" if marker == "o" else colour, edgecolors=colour, label=label)
    top.set_yticks(range(len(data["channels"])), data["channels"])
    top.set_ylim(-0.7, max(len(data["channels"]) - 0.3, 0.7))
    top.set_title(title)
    top.legend(loc="upper left", fontsize=7, ncols=4)
    times, counts = data["rolling"]
    if times:
        bottom.step([_when(t) for t in times], counts, where="post", color="black",
                    label=f"touches toward the cap in {data['window']}")
    bottom.axhline(data["cap"], color="tab:red", linestyle="--", label=f"throttle above {data['cap']}")
    bottom.axhline(data["recover"], color="tab:green", linestyle=":", label=f"recovered at {data['recover']}")
    top_of_counts = max([*counts, data["cap"]], default=data["cap"]) + 1
    for ms, action_type, rules in data["actions"]:
        colour = ACTION_COLOURS.get(action_type, "tab:purple")
        for ax in (top, bottom):
            ax.axvline(_when(ms), color=colour, alpha=0.6, linewidth=1.2)
        bottom.annotate(f"{action_type.removeprefix('fatigue.')}: {', '.join(rules)}", (_when(ms), top_of_counts),
                        rotation=90, fontsize=7, color=colour, va="top", ha="right")
    bottom.set_ylim(0, top_of_counts + 0.5 + 0.35 * top_of_counts)
    bottom.set_ylabel("counted touches")
    bottom.yaxis.get_major_locator().set_params(integer=True)
    bottom.legend(loc="upper left", fontsize=7)
    locator = dates.AutoDateLocator()
    bottom.xaxis.set_major_locator(locator)
    bottom.xaxis.set_major_formatter(dates.ConciseDateFormatter(locator))
    _save(fig, path)
