"""What the rep is told: of the transitions one piece of work made for a customer, at most one message,
and only once it describes where the customer is at processing time.

The core records every transition (the backtest and the lists show them all). A live batch often
carries history — an import, a late batch, a POST of last month's touches — whose transitions are
over by the time they are computed: a throttle whose pause ended weeks ago, a cool-off superseded by
a later touch of the same batch. Paging the rep with those is noise, so:

- for history (events that happened more than `settle` before they are processed: an import, a
  late batch) and while the customer's timeline has not caught up with processing time (a timer of
  theirs is due already), nothing is sent; the latest transition is kept (`state.pending_action`)
  and decided on when the customer's timer fires (`settle` after their latest arrival), so that
  history arriving over several batches is told in one message;
- once caught up, the latest transition is the one message, if it still describes the customer:
  its status is the customer's status now (a to_activate a later touch ended silently is not sent),
  and a recovery is sent only to a rep who was told of the throttle (`state.told_status`);
- a throttle update (escalation) whose throttle the rep was never told of goes out as the throttle
  itself, naming every active reason: one message, not the streak then an update naming the cap;
- `previous_status` of what is sent is the status the rep was last told.

Pure: no clock, no I/O; `now_ms` is the processing time the caller passes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import cast

from scorer.core import advice
from scorer.core.state import DUE_UNKNOWN, THROTTLED, TIME_BOUND_RULES, CustomerState
from services.actions import Action
from services.names import (
    ACTION_RECOVERED,
    ACTION_THROTTLE,
    WITHHELD_ENDED,
    WITHHELD_SUPERSEDED,
    WITHHELD_UNSEEN,
)

SUPERSEDED, ENDED, UNSEEN = WITHHELD_SUPERSEDED, WITHHELD_ENDED, WITHHELD_UNSEEN


@dataclass
class Decision:
    sent: Action | None = None
    withheld: list[tuple[Action, str]] = field(default_factory=list)


def caught_up(state: CustomerState, now_ms: int) -> bool:
    """No timer of the customer is due at `now_ms`: its timeline describes the present."""
    return state.due_ms is None or (state.due_ms != DUE_UNKNOWN and state.due_ms > now_ms)


def is_history(newest_event_ms: int | None, now_ms: int, settle_ms: int) -> bool:
    """Events that happened more than `settle_ms` before they are processed are history: what they
    make waits for the customer's timer (`settle_ms` after their arrival), so that history arriving
    over several batches is told in one message. Live events are told at once; with no settle
    (`settle_ms` 0) everything is."""
    return settle_ms > 0 and newest_event_ms is not None and newest_event_ms < now_ms - settle_ms


def decide(state: CustomerState, actions: list[Action], now_ms: int, *, wait: bool = False) -> Decision:
    """The message for `actions` (one customer's transitions of one piece of work, in order);
    `wait`: the work was history (`is_history`): keep the latest for the customer's timer."""
    pending: list[Action] = [cast(Action, state.pending_action)] if state.pending_action is not None else []
    candidates = pending + actions
    if not candidates:
        return Decision()
    decision = Decision(withheld=[(a, SUPERSEDED) for a in candidates[:-1]])
    last = candidates[-1]
    if wait or not caught_up(state, now_ms):
        state.pending_action = dict(last)
        return decision
    state.pending_action = None
    if last["status"] != state.status:
        decision.withheld.append((last, ENDED))
    elif last["type"] == ACTION_RECOVERED and state.told_status != THROTTLED:
        decision.withheld.append((last, UNSEEN))
    else:
        decision.sent = _as_told(last, state.told_status)
        state.told_status = last["status"]
    return decision


def _as_told(action: Action, told_status: str) -> Action:
    """The action as the rep reads it, knowing `told_status`."""
    sent = Action(**action)  # type: ignore[typeddict-item]
    sent["previous_status"] = told_status
    if "escalation" in sent and told_status != THROTTLED:
        del sent["escalation"]
        until = _parse_ms(sent.get("pause_until"))
        response_ends_it = all(r["rule"] not in TIME_BOUND_RULES for r in sent["reasons"])
        sent["suggestion"] = advice.throttle(sent["reasons"], until, response_ends_it)
        assert sent["type"] == ACTION_THROTTLE
    return sent


def _parse_ms(text: str | None) -> int | None:
    if text is None:
        return None
    return int(datetime.fromisoformat(text).timestamp() * 1000)
