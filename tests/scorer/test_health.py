"""The scorer's liveness judgement, with a hand-moved clock."""

from __future__ import annotations

from scorer.health import AGENT_RESTART_GRACE_S, Liveness


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def running(clock: Clock) -> Liveness:
    live = Liveness(stall_s=120, tick_interval_s=1, clock=clock)
    live.agent_started()
    live.ticked()
    return live


def test_a_running_agent_with_timer_rounds_is_healthy() -> None:
    clock = Clock()
    live = running(clock)
    clock.now += 5
    live.ticked()
    healthy, body = live.report()
    assert healthy and body["status"] == "ok" and body["agent"] == "running"


def test_an_agent_that_died_is_failing_at_once() -> None:
    clock = Clock()
    live = running(clock)
    live.died("ValueError: boom")
    healthy, body = live.report()
    assert not healthy and body["agent"] == "failed" and "boom" in body["problems"][0]


def test_a_restart_on_rebalance_is_tolerated_but_not_forever() -> None:
    clock = Clock()
    live = running(clock)
    live.agent_stopped()
    clock.now += AGENT_RESTART_GRACE_S - 1
    live.ticked()
    assert live.report()[0]
    clock.now += 2
    live.ticked()
    assert not live.report()[0]
    live.agent_started()
    assert live.report()[0]


def test_a_stuck_batch_is_a_stall() -> None:
    clock = Clock()
    live = running(clock)
    live.batch_started()
    clock.now += 100
    live.ticked()
    assert live.report()[0]
    clock.now += 30
    live.ticked()
    healthy, body = live.report()
    assert not healthy and "in progress for 130s" in body["problems"][0]
    live.batch_done()
    assert live.report()[0]


def test_timer_rounds_that_stop_are_a_stall() -> None:
    clock = Clock()
    live = running(clock)
    clock.now += 121
    assert not live.report()[0]
