"""What the rep reads: the `suggestion` of each action, built from its reasons. Pure text."""

from __future__ import annotations

from collections.abc import Callable

from scorer.core.timefmt import format_ms
from services.actions import Reason
from services.durations import DAY_MS


def plural(n: float, word: str, many: str | None = None) -> str:
    """`plural(1, "touch", "touches")` -> '1 touch'; `plural(13, ...)` -> '13 touches'."""
    return f"{n:g} {word if n == 1 else (many or word + 's')}"


def days(ms: float) -> str:
    return plural(round(ms / DAY_MS), "day")


def _touches(n: float) -> str:
    return plural(n, "touch", "touches")


REASON_TEXT: dict[str, Callable[[Reason], str]] = {
    "frequency_cap": lambda r: f"{_touches(r['observed'])} in {r['window']} (cap {r['threshold']:g})",
    "complaint": lambda r: f"complaint or spam report within {r['window']}",
    "unanswered_streak": lambda r: f"{_touches(r['observed'])} in a row without any response",
    "reply_latency_slowdown": lambda r: f"replies slowing down x{r['observed']} ({r.get('detail', '')})",
    "response_rate_drop": lambda r: f"responses falling off ({r.get('detail', '')})",
    "engagement_drop": lambda r: f"opens and clicks falling off ({r.get('detail', '')})",
}

def rested_detail(rule: str, streak: int) -> str:
    """What a rest followed, in a few words."""
    return {
        "unanswered_streak": f"{_touches(streak)} went unanswered",
        "reply_latency_slowdown": "their replies had slowed down",
        "response_rate_drop": "their responses had fallen off",
        "engagement_drop": "their opens and clicks had fallen off",
    }[rule]


def reasons_text(reasons: list[Reason]) -> str:
    return "; ".join(REASON_TEXT[r["rule"]](r) for r in reasons)


def pause_text(until_ms: int | None, response_ends_it: bool) -> str:
    if until_ms is None:
        return "Pause non-transactional touches until the customer responds again."
    sooner = " (sooner if the customer responds)" if response_ends_it else ""
    return f"Pause non-transactional touches until {format_ms(until_ms)}{sooner}."


def throttle(reasons: list[Reason], until_ms: int | None, response_ends_it: bool) -> str:
    return f"Cool down: {reasons_text(reasons)}. {pause_text(until_ms, response_ends_it)}"


def escalation(new: list[str], reasons: list[Reason], factor: float, until_ms: int | None) -> str:
    """A throttle update: what got worse first, then everything that holds."""
    worse = []
    for key in new:
        if key == "complaint":
            worse.append("the customer complained")
        elif key == "frequency_cap":
            worse.append("now over the frequency cap")
        else:
            worse.append(f"now at {factor:g}x the frequency cap or more")
    return (f"Throttle update: {', and '.join(worse)}. Active: {reasons_text(reasons)}. "
            f"{pause_text(until_ms, False)}")


def cleared(reason: Reason) -> str:
    if reason["rule"] == "frequency_recovered":
        return f"{_touches(reason['observed'])} in {reason['window']}"
    return reason["rule"].removesuffix("_cleared").replace("_", " ") + " cleared"


def recovered(cleared_reasons: list[Reason]) -> str:
    return "Back in band: " + "; ".join(cleared(r) for r in cleared_reasons) + ". Normal cadence may resume."


def neglected(idle_ms: int | None, stage: str | None, cadence_ms: int) -> str:
    last = "no touch yet" if idle_ms is None else f"last touch {days(idle_ms)} ago"
    return f"Neglected: {last}; cadence for stage {stage or 'unknown'} is {days(cadence_ms)}."


def gone_quiet(silent_ms: int | None) -> str:
    heard = "never answered" if silent_ms is None else f"no answer for {days(silent_ms)}"
    return f"Gone quiet: {heard}; try another channel or a value touch rather than more of the same."


def rested(rested_reasons: list[Reason], rested_ms: int) -> str:
    why = "; ".join(r.get("detail", r["rule"]) for r in rested_reasons)
    return f"{why[:1].upper()}{why[1:]}; rested {days(rested_ms)}."


def next_step(channel: str | None, when: tuple[str, str] | None) -> str:
    """' Reach out on wecom (answers there most), ideally around Thu 15:00 Asia/Shanghai.'"""
    if channel:
        text = f" Reach out on {channel} (their best open channel)"
        return text + (f", ideally around {when[0]} {when[1]}." if when else ".")
    return f" They answer most around {when[0]} {when[1]}." if when else ""
