"""bench/decode.py runs on a tiny input and refuses to time decoders that disagree (no figure judged)."""

from __future__ import annotations

import pytest

from bench import decode


def test_the_decode_benchmark_runs_and_prints_every_case(capsys: pytest.CaptureFixture[str]) -> None:
    decode.main(["--events", "30", "--rounds", "1"])
    printed = capsys.readouterr().out
    for case in ("events as the API writes them", "events with rep, campaign", "profiles", "fast path of the first"):
        assert case in printed


def test_contenders_that_decode_differently_are_not_timed() -> None:
    values = decode.plain_events(5)
    with pytest.raises(AssertionError, match="decode differently"):
        decode.interleaved(values, {"right": decode.pydantic_events, "wrong": lambda vs: vs}, rounds=1)
