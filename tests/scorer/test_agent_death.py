"""An unexpected error escaping the work loop stops the worker with a non-zero exit and fails /healthz."""

from __future__ import annotations

import signal
from types import FrameType

import pytest

from scorer.app import EXIT_AGENT_DIED, Scorer
from services.settings import ScorerSettings


class ExplodingLoop:
    async def run(self, stop: object) -> None:
        raise RuntimeError("a bug in the edge")


async def test_the_agent_dying_stops_the_worker_non_zero(tmp_path: object) -> None:
    scorer = Scorer(ScorerSettings(kafka_bootstrap_servers="127.0.0.1:9", redis_url="redis://127.0.0.1:9/0",
                                   web_port=0, data_dir=tmp_path))
    received: list[int] = []

    def record(signum: int, _: FrameType | None) -> None:
        received.append(signum)

    previous = signal.signal(signal.SIGTERM, record)
    try:
        with pytest.raises(RuntimeError, match="a bug in the edge"):
            await scorer._run_loop(ExplodingLoop())  # type: ignore[arg-type]
    finally:
        signal.signal(signal.SIGTERM, previous)
        await scorer.redis.aclose()
    assert received == [signal.SIGTERM]
    assert scorer.exit_code == EXIT_AGENT_DIED
    healthy, body = scorer.liveness.report()
    assert not healthy and body["agent"] == "failed" and "a bug in the edge" in body["problems"][0]
