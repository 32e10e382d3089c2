"""`--profile` for section 1: a py-spy profile of one scorer process catching up.

An extra run of `our scorer, 1 worker process` after the section's rounds (so no figure of the table
carries the profiler's cost): from the warm-up mark, py-spy samples the worker (200 Hz, every thread,
busy samples only) for about 80% of the time left, judged from its rate in its first second.
The collapsed stacks and their summary (bench/profiling.py: shares by package of the running frame, top
functions inclusive and exclusive) go to bench/results/profiles/scorer-<time>.{collapsed,txt}.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from bench import profiling
from bench.harness import RESULTS_DIR, Context
from bench.procs import Child

if TYPE_CHECKING:
    from bench.stream import OffsetProgress, StreamBench


async def profile_scorer(ctx: Context, bench: StreamBench) -> None:
    raw = RESULTS_DIR / "profiles" / f"scorer-{time.strftime('%Y%m%dT%H%M%S')}.collapsed"
    recorded: list[bool] = []

    async def watch(children: list[Child], progress: OffsetProgress) -> None:
        t0, n0 = time.monotonic(), await progress.processed()
        await asyncio.sleep(1.0)
        rate = max(1.0, (await progress.processed() - n0) / (time.monotonic() - t0))
        seconds = max(1.0, 0.8 * (len(bench.data) - n0) / rate - 1.0)
        recorded.append(await profiling.record(children[0].pid, seconds, raw))

    sample = await bench.scorer(1, while_timed=watch)
    if not recorded or not recorded[0]:
        ctx.say("  py-spy not available or not permitted: no profile of the scorer")
        return
    summary = profiling.summarize(raw)
    raw.with_suffix(".txt").write_text(f"scorer, 1 worker process, catching up: {sample.value:,.0f} events/s while "
                                       f"profiled\n\n{summary}\n")
    ctx.say(f"  profile of the scorer catching up ({raw.with_suffix('.txt')}):\n{summary}")
