"""The notifier's shutdown: work gets a grace period, then is cancelled; only real errors surface."""

from __future__ import annotations

import asyncio

import pytest

from notifier.app import _until_stopped


async def _scheduler_like(stop: asyncio.Event, send_s: float) -> None:
    """Like DeliveryScheduler.run: after `stop`, wait for the delivery in flight."""
    inflight = {asyncio.create_task(asyncio.sleep(send_s))}
    await stop.wait()
    try:
        await asyncio.gather(*inflight)
    finally:
        for task in inflight:
            task.cancel()
        await asyncio.gather(*inflight, return_exceptions=True)


async def test_work_still_running_after_the_grace_period_is_cancelled_quietly() -> None:
    stop = asyncio.Event()
    work = asyncio.gather(stop.wait(), _scheduler_like(stop, send_s=10))
    asyncio.get_running_loop().call_later(0.05, stop.set)
    started = asyncio.get_running_loop().time()
    await _until_stopped(work, stop, grace_s=0.1)  # must not raise CancelledError
    assert asyncio.get_running_loop().time() - started < 5


async def test_work_finishing_within_the_grace_period_is_awaited() -> None:
    stop = asyncio.Event()
    done: list[bool] = []

    async def finishing() -> None:
        await _scheduler_like(stop, send_s=0.1)
        done.append(True)

    asyncio.get_running_loop().call_later(0.02, stop.set)
    await _until_stopped(asyncio.gather(stop.wait(), finishing()), stop, grace_s=5)
    assert done == [True]


async def test_an_error_of_the_work_is_raised() -> None:
    async def failing() -> None:
        raise RuntimeError("redis went away")

    with pytest.raises(RuntimeError, match="redis went away"):
        await _until_stopped(asyncio.gather(failing()), asyncio.Event(), grace_s=1)
