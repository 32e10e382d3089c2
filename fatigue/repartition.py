"""`fatigue repartition --partitions N`: the command line of scorer/repartition.py.

Exit status 0 when done (or nothing to do), 2 when a precondition does not hold or a setting is wrong
(nothing changed; the `what to do:` line says how to go on), 1 on an outage (Kafka or Redis not
answering: run it again once they do, it takes up where it stopped).
"""

from __future__ import annotations

from typing import IO

from services.errors import FatigueError
from services.redisio import make_redis
from services.settings import ScorerSettings

EXIT_DONE, EXIT_OUTAGE, EXIT_REFUSED = 0, 1, 2


async def run(settings: ScorerSettings, target: int, out: IO[str], err: IO[str]) -> int:
    from scorer.repartition import repartition, summary_lines

    redis = make_redis(settings)
    try:
        summary = await repartition(settings, redis, target, out)
    except FatigueError as exc:
        err.write(f"fatigue repartition: {exc}\n")
        if exc.operator_action:
            err.write(f"  what to do: {exc.operator_action}\n")
        return EXIT_OUTAGE if exc.retriable else EXIT_REFUSED
    finally:
        await redis.aclose()
    if summary is not None:
        out.writelines(f"{line}\n" for line in summary_lines(summary))
    return EXIT_DONE
