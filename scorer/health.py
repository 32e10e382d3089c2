"""The scorer's liveness, as `/healthz` reports it: the work loop alive and making progress.

A fixed "ok" would hide the failures that matter: an agent that died (a bug escaped), a batch stuck
far longer than any outage retry should take, a timer loop that stopped. The agent and the timer
report here; `report()` judges. The clock is injected (monotonic seconds), so it is a table test.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

AGENT_RESTART_GRACE_S = 30.0
"""Faust restarts the agent on a rebalance: a stopped agent is only a failure after this long."""


@dataclass
class Liveness:
    stall_s: float
    """A batch or a timer round taking longer than this (outage retries included) is a stall."""
    tick_interval_s: float
    clock: Callable[[], float] = time.monotonic
    started_at: float = field(init=False)
    agent_running: bool = False
    agent_stopped_at: float | None = None
    batch_started_at: float | None = None
    last_batch_at: float | None = None
    last_tick_at: float | None = None
    fatal: str | None = None

    def __post_init__(self) -> None:
        self.started_at = self.clock()
        self.agent_stopped_at = self.started_at

    def agent_started(self) -> None:
        self.agent_running, self.agent_stopped_at = True, None

    def agent_stopped(self) -> None:
        self.agent_running, self.agent_stopped_at = False, self.clock()

    def died(self, reason: str) -> None:
        self.fatal = reason
        self.agent_stopped()

    def batch_started(self) -> None:
        self.batch_started_at = self.clock()

    def batch_done(self) -> None:
        self.batch_started_at, self.last_batch_at = None, self.clock()

    def ticked(self) -> None:
        self.last_tick_at = self.clock()

    def problems(self) -> list[str]:
        now = self.clock()
        found = []
        if self.fatal is not None:
            found.append(f"the agent died: {self.fatal}")
        elif not self.agent_running and self.agent_stopped_at is not None:
            if now - self.agent_stopped_at > AGENT_RESTART_GRACE_S:
                found.append(f"the agent has not been running for {now - self.agent_stopped_at:.0f}s")
        if self.batch_started_at is not None and now - self.batch_started_at > self.stall_s:
            found.append(f"a batch has been in progress for {now - self.batch_started_at:.0f}s")
        last_tick = self.last_tick_at if self.last_tick_at is not None else self.started_at
        tick_limit = max(self.stall_s, 10 * self.tick_interval_s)
        if now - last_tick > tick_limit:
            found.append(f"no timer round for {now - last_tick:.0f}s")
        return found

    def report(self) -> tuple[bool, dict[str, Any]]:
        """(healthy, body) for /healthz."""
        now = self.clock()
        problems = self.problems()

        def ago(moment: float | None) -> float | None:
            return None if moment is None else round(now - moment, 3)

        body = {
            "status": "failing" if problems else "ok",
            "agent": "failed" if self.fatal else ("running" if self.agent_running else "stopped"),
            "batch_in_progress_s": ago(self.batch_started_at),
            "last_batch_s_ago": ago(self.last_batch_at),
            "last_timer_round_s_ago": ago(self.last_tick_at),
            "problems": problems,
        }
        return not problems, body
