"""The tuning loop: arrival times (`received_at`), two policies side by side (`--compare`), and one
customer's timeline chart (`--customer ID --plot`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from scorer.backtest import ProfileChange, differing_customers, simulate, timeline_series
from scorer.core.state import ContactEvent
from services.contract import parse_rfc3339, to_ms
from services.durations import DAY_MS, HOUR_MS
from services.policy.model import load_policy
from tests.scorer.test_backtest import DATA, PNG_MAGIC, POLICY, UNTIL, actions_of, backtest, backtest_fails

CANDIDATE = """
segments:
  - {tier: B, cadence: 2d}
  - {stage: prospect, frequency: {throttle_above: 5, recover_at_or_below: 1}}
"""


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def touch(event_id: str, customer: str, at: str, received: str | None = None) -> dict[str, Any]:
    row: dict[str, Any] = {"event_id": event_id, "type": "touch", "customer_id": customer, "channel": "email",
                           "occurred_at": at}
    return row if received is None else {**row, "received_at": received}


# ---- received_at ----


def test_events_replay_when_they_arrived_and_late_ones_are_ignored_as_live(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """x: four touches within a day trip the 3-in-7-days cap — in event time, where every decision is
    taken, whenever they arrive — but they arrived 16 days later, all at once, when they are outside
    the 7-day window already: the throttle and its recovery are recorded, and over; the rep is told
    only where the history leaves the customer, neglected since (issue 17: history does not page
    anyone).
    y: a touch arriving 9 days behind the newest one of its customer is past the 7-day grace: late."""
    rows = [touch(f"x{i}", "x", f"2026-11-02T0{9 + i // 10}:{i % 10}0:00Z" if i < 10 else "", "2026-11-18T09:00:00Z")
            for i in range(4)]
    rows += [touch("y1", "y", "2026-11-10T09:00:00Z", "2026-11-10T09:00:05Z"),
             touch("y2", "y", "2026-11-01T09:00:00Z", "2026-11-10T10:00:00Z")]
    history = write_jsonl(tmp_path / "arrivals.jsonl", rows)
    as_arrived = actions_of(backtest(capsys, history, "--policy", POLICY, "--json", "--until", UNTIL)[0])
    x_actions = [(a["action"], a["at"], a["delivered"]) for a in as_arrived if a["customer_id"] == "x"]
    assert x_actions == [("fatigue.throttle", "2026-11-02T09:30:00.000Z", False),
                         ("fatigue.recovered", "2026-11-09T10:00:00.000Z", False),
                         ("fatigue.re_engage", "2026-11-13T09:30:00.001Z", True)]
    report, _ = backtest(capsys, history, "--policy", POLICY, "--until", UNTIL)
    assert "6 valid rows: 5 recorded (5 touches counted toward the cap), 0 duplicate, 1 late" in report
    timeline, _ = backtest(capsys, history, "--policy", POLICY, "--until", UNTIL, "--customer", "y")
    assert "y2 [late]" in timeline and "received 2026-11-10T10:00:00.000Z" in timeline

    without = write_jsonl(tmp_path / "occurred.jsonl", [{k: v for k, v in r.items() if k != "received_at"}
                                                        for r in rows])
    as_occurred = actions_of(backtest(capsys, without, "--policy", POLICY, "--json", "--until", UNTIL)[0])
    x_occurred = [(a["action"], a["at"], a["delivered"]) for a in as_occurred if a["customer_id"] == "x"]
    assert [(action, at) for action, at, _ in x_occurred] == [(action, at) for action, at, _ in x_actions]
    assert x_occurred[0] == ("fatigue.throttle", "2026-11-02T09:30:00.000Z", True)  # live: told at once


def test_received_at_in_csv_and_invalid_received_at_is_named(capsys: pytest.CaptureFixture[str],
                                                              tmp_path: Path) -> None:
    good = tmp_path / "ok.csv"
    good.write_text("event_id,type,customer_id,channel,occurred_at,received_at\n"
                    "t1,touch,x,email,2026-11-02T09:00:00Z,2026-11-02T09:00:03Z\n")
    out, _ = backtest(capsys, good, "--policy", POLICY)
    assert "1 recorded (1 touch counted toward the cap)" in out
    bad = tmp_path / "bad.csv"
    bad.write_text("event_id,type,customer_id,channel,occurred_at,received_at\n"
                   "t1,touch,x,email,2026-11-02T09:00:00Z,yesterday\n")
    assert f"{bad}:2: received_at: 'yesterday' is not RFC 3339" in backtest_fails(capsys, bad, "--policy", POLICY)


# ---- --compare ----


def test_compare_shows_both_policies_per_week_and_the_customers_that_differ(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    other = tmp_path / "candidate.yaml"
    other.write_text(POLICY.read_text() + CANDIDATE)
    out, _ = backtest(capsys, DATA / "history.jsonl", "--policy", POLICY, "--profiles", DATA / "profiles.csv",
                      "--until", UNTIL, "--compare", other)
    lines = out.splitlines()
    assert lines[0].endswith(f"A = policy {POLICY}, B = policy {other}")
    assert "actions A        2 fatigue.throttle, 4 fatigue.re_engage, 1 fatigue.recovered" in out
    assert "actions B        1 fatigue.throttle, 4 fatigue.re_engage, 1 fatigue.recovered" in out
    week = {line.split()[0]: line.split()[1:] for line in lines if line.startswith("2026-W")}
    # actions/customers: W45 (11-02..08): A throttles a1; B re-engages b1, b2 (11-06) and a1 (11-08).
    # W46: A throttles c1 and re-engages a1 (11-09), b1, b2 (11-14); B throttles c1.
    assert week["2026-W45"] == ["1/1", "0/0", "0/0", "0/0", "3/3", "0/0"]
    assert week["2026-W46"] == ["1/1", "3/3", "0/0", "1/1", "0/0", "0/0"]
    assert "Customers whose actions differ: 3 of 4" in out  # a1, b1, b2; c1 the same under both
    differ = [line.split()[0] for line in lines if line.startswith("  ") and "  A: " in line]
    assert differ == ["a1", "b1", "b2"]
    json_out, _ = backtest(capsys, DATA / "history.jsonl", "--policy", POLICY, "--profiles", DATA / "profiles.csv",
                           "--until", UNTIL, "--compare", other, "--json")
    records = actions_of(json_out)
    assert {r["policy"] for r in records} == {"A", "B"} and len(records) == 7 + 6


def test_compare_does_not_go_with_customer_or_plot(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    err = backtest_fails(capsys, DATA / "history.jsonl", "--compare", POLICY, "--customer", "a1")
    assert "--compare" in err and "what to do:" in err


def test_differing_customers_is_exact() -> None:
    events = [ContactEvent(f"t{i}", "touch", "c", "email", 1_790_000_000_000 + i * HOUR_MS, "promo")
              for i in range(4)]
    tight = load_policy(POLICY)
    same = simulate(events, [], tight)
    assert differing_customers(same, simulate(events, [], tight)) == {}
    loose = simulate(events, [], load_policy(None))
    assert set(differing_customers(same, loose)) == {"c"}


# ---- --customer ID --plot ----


def test_customer_plot_draws_the_timeline(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    first, second = tmp_path / "a1.png", tmp_path / "a1-again.png"
    for path in (first, second):
        backtest(capsys, DATA / "history.jsonl", "--policy", POLICY, "--profiles", DATA / "profiles.csv",
                 "--until", UNTIL, "--customer", "a1", "--plot", path)
    assert first.read_bytes()[:8] == PNG_MAGIC and first.read_bytes() == second.read_bytes()
    weekly = tmp_path / "weekly.png"
    backtest(capsys, DATA / "history.jsonl", "--policy", POLICY, "--until", UNTIL, "--plot", weekly)
    assert weekly.read_bytes() != first.read_bytes()


def test_the_timeline_chart_data_recounts_the_raw_touches_against_the_cap() -> None:
    t0 = to_ms(parse_rfc3339("2026-11-02T09:00:00Z"))
    events = [ContactEvent(f"t{i}", "touch", "a", "email" if i % 2 else "sms", t0 + i * HOUR_MS, "promo")
              for i in range(5)]
    events.append(ContactEvent("tx", "touch", "a", "email", t0 + 6 * HOUR_MS, "transactional"))
    events.append(ContactEvent("r", "response", "a", "sms", t0 + 7 * HOUR_MS, "unsubscribe"))
    policy = load_policy(POLICY)
    sim = simulate(events, [ProfileChange("a", {"stage": "customer"})], policy, follow="a",
                   until_ms=t0 + 10 * DAY_MS)
    data = timeline_series(sim, "a", policy)
    assert data["channels"] == ["email", "sms"] and (data["cap"], data["recover"], data["window"]) == (3, 1, "7d")
    times, counts = data["rolling"]
    counted = [e.occurred_at_ms for e in events[:5]]
    for at, n in zip(times, counts, strict=True):
        assert n == sum(1 for t in counted if at - 7 * DAY_MS < t <= at)
    assert max(counts) == 5 and counts[-1] == 0
    assert data["responses"] == [(t0 + 7 * HOUR_MS, "sms", True)]
    assert [(a[1], a[2][0]) for a in data["actions"]][:1] == [("fatigue.throttle", "frequency_cap")]
