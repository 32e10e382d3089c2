"""`fatigue backtest`: the same core over a history file with a simulated clock.

The hand-built history in data/ (policy: more than 3 touches in 7 days throttles, 1 or fewer
recovers, cadence 10 days, prospects 5, plus the default tolerance of 1 day: re_engage fires
strictly after last touch + cadence + 1 day) has these answers, worked out by hand:

    a1 (A, prospect)  4 touches Mon 2026-11-02 09:00-12:00  -> throttle 11-02 12:00 (W45);
                      the 3rd hour bucket leaves the 7d window 11-09 12:00 -> the throttle lifts,
                      and the 5-day cadence (+1) is overdue: one re_engage, "recovered" in its
                      reasons, at that moment (W46)
    b1 (B, customer)  1 touch 11-03 10:00Z (+ a transactional one, not counted)
                      -> re_engage 11-14 10:00:00.001 (W46)
    b2 (B, no stage)  1 touch 11-03 10:00 and its duplicate -> re_engage 11-14 10:00:00.001 (W46)
    c1 (no profile)   4 touches 11-10 08:00-09:30 -> throttle (W46); leave 11-17 10:00 -> recovered
                      (not overdue yet); re_engage 11-21 09:30:00.001 (W47)
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer
from redis.asyncio import Redis

from fatigue.cli import main
from scorer.backtest import segments
from scorer.history import ProfileRow, load_events
from services.contract import ProfileEnvelope, ProfileIn, encode
from services.kafka import make_producer
from services.settings import CommonSettings
from tests.helpers import FAST_GROUP_ENV, produce_events, service_process, stored_snapshot, wait_until

DATA = Path(__file__).parent / "data"
POLICY = DATA / "policy.yaml"
UNTIL = "2026-11-22T00:00:00Z"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def backtest(capsys: pytest.CaptureFixture[str], *args: str | Path) -> tuple[str, str]:
    """Run `fatigue backtest ARGS` in-process; (stdout, stderr). SystemExit propagates."""
    main(["backtest", *(str(a) for a in args)])
    captured = capsys.readouterr()
    return captured.out, captured.err


def backtest_fails(capsys: pytest.CaptureFixture[str], *args: str | Path) -> str:
    """Run a backtest that must stop with exit status 2; its stderr."""
    with pytest.raises(SystemExit) as exited:
        main(["backtest", *(str(a) for a in args)])
    assert exited.value.code == 2
    return capsys.readouterr().err


def data_run(capsys: pytest.CaptureFixture[str], events: Path, *extra: str | Path) -> str:
    out, _ = backtest(capsys, events, "--policy", POLICY, "--profiles", DATA / "profiles.csv", "--until", UNTIL,
                      *extra)
    return out


def actions_of(json_out: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in json_out.splitlines()]


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def touch(event_id: str, customer_id: str, at: str, **extra: str) -> dict[str, Any]:
    return {"event_id": event_id, "type": "touch", "customer_id": customer_id, "channel": "email",
            "occurred_at": at, **extra}


# ---- the hand-built history ----


def test_actions_match_the_hand_worked_answers(capsys: pytest.CaptureFixture[str]) -> None:
    actions = actions_of(data_run(capsys, DATA / "history.jsonl", "--json"))
    assert [(a["customer_id"], a["action"], a["at"]) for a in actions] == [
        ("a1", "fatigue.throttle", "2026-11-02T12:00:00.000Z"),
        ("a1", "fatigue.re_engage", "2026-11-09T12:00:00.000Z"),
        ("c1", "fatigue.throttle", "2026-11-10T09:30:00.000Z"),
        ("b1", "fatigue.re_engage", "2026-11-14T10:00:00.001Z"),
        ("b2", "fatigue.re_engage", "2026-11-14T10:00:00.001Z"),
        ("c1", "fatigue.recovered", "2026-11-17T10:00:00.000Z"),
        ("c1", "fatigue.re_engage", "2026-11-21T09:30:00.001Z"),
    ]
    first = actions[0]
    assert set(first) >= {"customer_id", "action", "at", "reasons", "status", "previous_status", "tier", "stage",
                          "suggestion"}
    assert first["reasons"] == [{"rule": "frequency_cap", "window": "7d", "observed": 4, "threshold": 3}]
    assert (first["status"], first["previous_status"], first["tier"], first["stage"]) == (
        "throttled", "normal", "A", "prospect")
    assert [r["rule"] for r in actions[1]["reasons"]] == ["frequency_recovered", "cadence_overdue"]
    assert (actions[1]["previous_status"], actions[1]["status"]) == ("throttled", "dormant")
    assert actions[3]["reasons"][0]["rule"] == "cadence_overdue" and actions[3]["stage"] == "customer"


def test_report_counts_customers_per_week_tier_and_stage(capsys: pytest.CaptureFixture[str]) -> None:
    actions = [
        {"type": a["action"], "customer_id": a["customer_id"], "at": a["at"], "reasons": a["reasons"],
         "profile": {"tier": a["tier"], "stage": a["stage"]}}
        for a in actions_of(data_run(capsys, DATA / "history.jsonl", "--json"))
    ]
    rows, total = segments(actions)  # type: ignore[arg-type]
    counts = {key: seg.cells()[:3] for key, seg in rows.items()}  # throttled, re-engaged, recovered
    assert counts == {
        ("2026-W45", "A", "prospect"): ["1", "0", "0"],
        ("2026-W46", "-", "-"): ["1", "0", "0"],
        ("2026-W46", "A", "prospect"): ["0", "1", "0"],
        ("2026-W46", "B", "-"): ["0", "1", "0"],
        ("2026-W46", "B", "customer"): ["0", "1", "0"],
        ("2026-W47", "-", "-"): ["0", "1", "1"],
    }
    assert total.cells() == ["2", "4", "1", "cadence_overdue 4, frequency_cap 2, frequency_recovered 2"]

    report = data_run(capsys, DATA / "history.jsonl")
    lines = report.splitlines()
    # "counted" means counted toward the cap: 10 touches (not b1's transactional one, nor responses)
    assert "13 valid rows: 12 recorded (10 touches counted toward the cap), 1 duplicate, 0 late" in report
    assert "4 (3 profile rows)" in report
    assert "2 fatigue.throttle, 4 fatigue.re_engage, 1 fatigue.recovered" in report
    assert any(line.split() == ["2026-W46", "A", "prospect", "0", "1", "0", "cadence_overdue", "1,",
                                "frequency_recovered", "1"] for line in lines)
    assert lines[-1].split()[:5] == ["all", "weeks", "2", "4", "1"]


def test_same_input_gives_byte_identical_output_whatever_the_row_order(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    first = data_run(capsys, DATA / "history.jsonl", "--json")
    assert data_run(capsys, DATA / "history.jsonl", "--json") == first
    rows = [line for line in (DATA / "history.jsonl").read_text().splitlines() if line.strip()]
    for seed in range(3):
        random.Random(seed).shuffle(rows)
        shuffled = tmp_path / f"shuffled-{seed}.jsonl"
        shuffled.write_text("\n".join(rows) + "\n")
        assert data_run(capsys, shuffled, "--json") == first
    assert len(actions_of(first)) == 7


def test_jsonl_and_csv_give_the_same_result(capsys: pytest.CaptureFixture[str]) -> None:
    for extra in (["--json"], []):
        jsonl = data_run(capsys, DATA / "history.jsonl", *extra)
        csv = data_run(capsys, DATA / "history.csv", *extra)
        assert csv.replace("history.csv", "history.jsonl") == jsonl


def test_csv_reading_empty_cells_are_absent_and_attributes_are_json() -> None:
    csv_rows = load_events(DATA / "history.csv").rows
    jsonl_rows = load_events(DATA / "history.jsonl").rows
    assert [r.value for r in csv_rows] == [r.value for r in jsonl_rows]
    first, second = csv_rows[0].value, csv_rows[1].value
    assert first.attributes == {"campaign": "fall, 2026"} and first.campaign_id is None
    assert second.attributes is None and second.rep_id == "alice"
    assert [r.line for r in csv_rows][:6] == [2, 3, 4, 5, 7, 8]  # blank line 6 ignored


def test_a_candidate_policy_with_segments_changes_the_answers(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """Tuning: tier B gets a 2-day cadence, prospects a cap of 5 -> b1, b2 re-engaged on 11-06 (2 d + 1 d
    tolerance), a1 never throttled (re-engaged 5 d + 1 d after its last touch)."""
    candidate = tmp_path / "candidate.yaml"
    candidate.write_text(POLICY.read_text() + """
segments:
  - {tier: B, cadence: 2d}
  - {stage: prospect, frequency: {throttle_above: 5, recover_at_or_below: 1}}
""")
    out, _ = backtest(capsys, DATA / "history.jsonl", "--policy", candidate, "--profiles", DATA / "profiles.csv",
                      "--until", UNTIL, "--json")
    assert [(a["customer_id"], a["action"], a["at"]) for a in actions_of(out)] == [
        ("b1", "fatigue.re_engage", "2026-11-06T10:00:00.001Z"),
        ("b2", "fatigue.re_engage", "2026-11-06T10:00:00.001Z"),
        ("a1", "fatigue.re_engage", "2026-11-08T12:00:00.001Z"),
        ("c1", "fatigue.throttle", "2026-11-10T09:30:00.000Z"),
        ("c1", "fatigue.recovered", "2026-11-17T10:00:00.000Z"),
        ("c1", "fatigue.re_engage", "2026-11-21T09:30:00.001Z"),
    ]


def test_events_are_replayed_in_time_order(capsys: pytest.CaptureFixture[str]) -> None:
    times = [a["at"] for a in actions_of(data_run(capsys, DATA / "history.jsonl", "--json"))]
    assert times == sorted(times)


# ---- invalid input ----


def test_invalid_jsonl_row_stops_with_file_line_field_and_reason(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "events.jsonl"
    path.write_text(
        json.dumps(touch("t1", "x1", "2026-11-02T09:00:00Z")) + "\n\n"
        + json.dumps(touch("t2", "x1", "2026-11-02T10:00:00Z", channel="fax")) + "\n"
    )
    err = backtest_fails(capsys, path, "--policy", POLICY)
    assert f"fatigue backtest: {path}:3: channel: Input should be 'email'" in err
    assert "--skip-invalid" in err


def test_invalid_csv_row_names_the_line_where_the_record_starts(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "events.csv"
    path.write_text(
        "event_id,type,customer_id,channel,occurred_at,attributes\n"
        't1,touch,x1,email,2026-11-02T09:00:00Z,"{""note"":\n ""two lines""}"\n'
        "\n"
        "t2,touch,x1,email,2 Nov 2026,\n"
    )
    err = backtest_fails(capsys, path, "--policy", POLICY)
    assert f"{path}:5: occurred_at: '2 Nov 2026' is not RFC 3339" in err


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("not json", "not valid JSON"),
        ("[1, 2]", "expected a JSON object, got list"),
        (json.dumps({**touch("t", "x1", "2026-11-02T09:00:00Z"), "colour": "red"}), "colour: Extra inputs"),
        (json.dumps(touch("t", "x1", "2026-11-02T09:00:00Z", kind="reply")), "(row): kind 'reply' is not a touch kind"),
    ],
)
def test_invalid_rows_say_why(capsys: pytest.CaptureFixture[str], tmp_path: Path, line: str, expected: str) -> None:
    path = tmp_path / "events.jsonl"
    path.write_text(line + "\n")
    assert expected in backtest_fails(capsys, path)


def test_skip_invalid_counts_and_reports_skipped_rows(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    rows = [json.dumps(touch(f"t{i}", "x1", f"2026-11-02T0{i}:00:00Z")) for i in range(5)]
    rows[2] = rows[2].replace('"email"', '"fax"')
    rows.insert(4, "{broken")
    path = tmp_path / "events.jsonl"
    path.write_text("\n".join(rows) + "\n")
    out, err = backtest(capsys, path, "--policy", POLICY, "--skip-invalid")
    assert "4 valid rows: 4 recorded (4 touches counted toward the cap)" in out and "2 invalid rows skipped" in out
    assert f"skipped invalid row {path}:3: channel:" in err
    assert f"skipped invalid row {path}:5: not valid JSON" in err
    json_out, _ = backtest(capsys, path, "--policy", POLICY, "--skip-invalid", "--json")
    assert [a["action"] for a in actions_of(json_out)] == ["fatigue.throttle"]  # 4 touches > 3


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["missing.jsonl"], "cannot read missing.jsonl"),
        (["events.txt"], "cannot tell the format from the extension '.txt'"),
        (["history.jsonl", "--customer", "nobody"], "customer 'nobody' has no events or profile"),
        (["history.jsonl", "--policy", "profiles.csv"], "profiles.csv"),
    ],
)
def test_bad_input_exits_2_with_a_clear_message(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, args: list[str], expected: str
) -> None:
    monkeypatch.chdir(DATA)
    err = backtest_fails(capsys, *args)
    assert expected in err and "what to do:" in err


def test_until_must_be_rfc3339(capsys: pytest.CaptureFixture[str]) -> None:
    assert "is not RFC 3339" in backtest_fails(capsys, DATA / "history.jsonl", "--until", "yesterday")


# ---- the simulated clock ----


def test_re_engage_fires_from_the_simulated_clock_without_any_event(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = write_jsonl(tmp_path / "one.jsonl", [touch("t1", "x1", "2026-11-02T09:00:00Z")])
    early, _ = backtest(capsys, path, "--policy", POLICY, "--until", "2026-11-13T09:00:00Z", "--json")
    assert early == ""  # cadence 10 d + tolerance 1 d: not yet at exactly 11 days
    out, _ = backtest(capsys, path, "--policy", POLICY, "--until", "2026-11-30T00:00:00Z", "--json")
    (action,) = actions_of(out)
    assert (action["action"], action["at"]) == ("fatigue.re_engage", "2026-11-13T09:00:00.001Z")
    assert action["reasons"] == [{"rule": "cadence_overdue", "window": "since_last_touch", "observed": 11.0,
                                  "threshold": 10.0}]
    default_until, _ = backtest(capsys, path, "--policy", POLICY, "--json")
    assert default_until == ""  # the clock stops at the last event unless --until says otherwise


def test_events_after_until_are_not_replayed(capsys: pytest.CaptureFixture[str]) -> None:
    cut, _ = backtest(capsys, DATA / "history.jsonl", "--policy", POLICY, "--until", "2026-11-05T00:00:00Z")
    # before 11-05: a1's 4 touches, b1's first, b2's touch and its duplicate
    assert "13 valid rows: 6 recorded (6 touches counted toward the cap), 1 duplicate, 0 late; " \
           "0 invalid rows skipped; 6 after --until" in cut
    assert "1 fatigue.throttle, 0 fatigue.re_engage, 0 fatigue.recovered" in cut


def test_profile_changes_apply_at_their_time_and_do_not_contact_is_never_re_engaged(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    events = write_jsonl(tmp_path / "events.jsonl", [
        touch("t1", "d1", "2026-11-02T09:00:00Z"),
        touch("t2", "e1", "2026-11-02T09:00:00Z"),
    ])
    profiles = write_jsonl(tmp_path / "profiles.jsonl", [
        {"customer_id": "d1", "tier": "C", "stage": "customer"},
        {"customer_id": "d1", "tier": "A", "stage": "prospect", "updated_at": "2026-11-04T00:00:00Z"},
        {"customer_id": "e1", "stage": "prospect", "do_not_contact": True},
        {"customer_id": "f1", "tier": "B"},  # known, never touched: due from the start of the history
    ])
    out, _ = backtest(capsys, events, "--policy", POLICY, "--profiles", profiles, "--until", "2026-12-31T00:00:00Z",
                      "--json")
    # e1 (do not contact) never; d1 at the prospect cadence once its stage changed (not 10 days)
    assert [(a["customer_id"], a["at"], a["tier"], a["stage"]) for a in actions_of(out)] == [
        ("d1", "2026-11-08T09:00:00.001Z", "A", "prospect"),
        ("f1", "2026-11-13T09:00:00.001Z", "B", None),
    ]
    assert "no touch yet" in actions_of(out)[1]["suggestion"]


def test_profile_rows_decode_like_the_profiles_topic() -> None:
    fields = {"tier": "B", "stage": "intent", "timezone": "Asia/Shanghai"}
    row = ProfileRow.model_validate({"customer_id": "p1", **fields})
    envelope = ProfileEnvelope(customer_id="p1", updated_at=datetime(2026, 11, 1, tzinfo=UTC),
                               profile=ProfileIn.model_validate(fields))
    assert row.profile() == envelope.profile.model_dump(exclude_none=True, mode="json")


# ---- timeline and plot ----


def test_customer_timeline_lists_events_and_actions_in_time_order(capsys: pytest.CaptureFixture[str]) -> None:
    lines = data_run(capsys, DATA / "history.jsonl", "--customer", "a1").splitlines()
    assert lines[0] == "Timeline of a1: 4 events, 2 actions"
    steps = [line.split()[1] for line in lines[1:] if line[:1].isdigit()]
    assert steps == ["profile", "event", "event", "event", "event", "ACTION", "ACTION"]
    text = "\n".join(lines)
    assert "e-a1-1 [recorded]: 1 touch counted toward the cap in 7d, status normal" in text
    assert "e-a1-4 [recorded]: 4 touches counted toward the cap in 7d, status throttled" in text
    assert "2026-11-09T12:00:00.000Z  ACTION   fatigue.re_engage: throttled -> dormant" in text
    assert "reasons: frequency_cap 7d observed 4 threshold 3" in text
    assert "Recovered: 1 touch in 7d. Neglected: last touch 7 days ago" in text
    b1 = data_run(capsys, DATA / "history.jsonl", "--customer", "b1")
    assert "transactional e-b1-2 [recorded, not toward the cap]: 1 touch counted toward the cap" in b1
    b2 = data_run(capsys, DATA / "history.jsonl", "--customer", "b2")
    assert "e-b2-1 [duplicate]" in b2 and "already counted" in b2
    only_a1 = actions_of(data_run(capsys, DATA / "history.jsonl", "--customer", "a1", "--json"))
    assert {a["customer_id"] for a in only_a1} == {"a1"} and len(only_a1) == 2


def test_plot_writes_a_png(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    first, second = tmp_path / "a.png", tmp_path / "b.png"
    data_run(capsys, DATA / "history.jsonl", "--plot", first)
    data_run(capsys, DATA / "history.jsonl", "--plot", second)
    assert first.read_bytes()[:8] == PNG_MAGIC
    assert first.read_bytes() == second.read_bytes()


def drawn_weekly_chart(monkeypatch: pytest.MonkeyPatch, actions: list[Any], tmp_path: Path) -> Any:
    """The figure `write_plot` would save (its one axes)."""
    pytest.importorskip("matplotlib")
    from scorer.backtest import plot

    drawn: list[Any] = []
    monkeypatch.setattr(plot, "_save", lambda fig, path: drawn.append(fig))
    plot.write_plot(actions, tmp_path / "x.png", "backtest")
    (fig,) = drawn
    (ax,) = fig.axes
    return ax


@pytest.mark.parametrize("with_actions", [False, True])
def test_the_weekly_chart_has_a_colour_per_type_and_a_count_axis_from_zero(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, with_actions: bool
) -> None:
    """An empty backtest drew a -0.04..0.04 axis and one colour for the three types (issue 17, finding 10)."""
    from matplotlib.colors import to_hex

    from scorer.backtest.plot import ACTION_COLOURS

    actions = [{"type": kind, "at": f"2026-11-{day:02d}T10:00:00+00:00", "customer_id": "c"}
               for day, kind in ((2, "fatigue.throttle"), (10, "fatigue.recovered"), (18, "fatigue.re_engage"))]
    actions = actions if with_actions else []
    ax = drawn_weekly_chart(monkeypatch, actions, tmp_path)
    bottom, top = ax.get_ylim()
    assert bottom == 0 and top >= 1
    legend = ax.get_legend()
    shown = {text.get_text(): to_hex(handle.get_facecolor())
             for handle, text in zip(legend.legend_handles, legend.get_texts(), strict=True)}
    assert shown == {kind: to_hex(colour) for kind, colour in ACTION_COLOURS.items()}
    drawn = {to_hex(bar.get_facecolor()) for bar in ax.patches}
    assert drawn == (set(shown.values()) if with_actions else set())
    if not with_actions:
        assert ax.get_title() == "backtest: no actions"


def test_plot_without_matplotlib_says_to_install_the_extra(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for name in ("matplotlib", "matplotlib.figure", "matplotlib.backends.backend_agg"):
        monkeypatch.setitem(sys.modules, name, None)
    err = backtest_fails(capsys, DATA / "history.jsonl", "--policy", POLICY, "--plot", tmp_path / "x.png")
    assert "--plot needs matplotlib" in err and "[plot]" in err
    assert not (tmp_path / "x.png").exists()


# ---- the live scorer and the backtest, fed the same events ----

LIVE_POLICY = """\
# Seconds instead of days, so re_engage and the end of a throttle fall due during the test.
cadence:
  default: 12s
  by_stage: {prospect: 16s}
  tolerance: 1s
cooldowns:
  min_throttle: 3s
"""

EXPECTED_TRANSITIONS = Counter({
    ("hot-1", "fatigue.throttle"): 1,
    ("hot-2", "fatigue.throttle"): 1,
    ("streak-1", "fatigue.throttle"): 1,
    ("streak-1", "fatigue.recovered"): 1,
    ("streak-1", "fatigue.re_engage"): 1,
    ("quiet-1", "fatigue.re_engage"): 1,
    ("prospect-1", "fatigue.re_engage"): 1,
    ("txn-1", "fatigue.re_engage"): 1,
    ("dup-1", "fatigue.re_engage"): 1,
    ("lift-1", "fatigue.throttle"): 1,  # cooling off ...
    ("lift-1", "fatigue.re_engage"): 1,  # ... lifted by a late answer into neglect: one message
    ("flood-1", "fatigue.throttle"): 2,  # the streak, then an update naming the cap
})
"""Every transition, in event time: what the backtest lists."""

EXPECTED_DELIVERED = Counter({
    ("hot-1", "fatigue.throttle"): 1,
    ("hot-2", "fatigue.throttle"): 1,
    ("streak-1", "fatigue.re_engage"): 1,  # the throttle and its recovery were over before anyone was told
    ("quiet-1", "fatigue.re_engage"): 1,
    ("prospect-1", "fatigue.re_engage"): 1,
    ("txn-1", "fatigue.re_engage"): 1,
    ("dup-1", "fatigue.re_engage"): 1,
    ("lift-1", "fatigue.re_engage"): 1,  # where the history leaves them
    ("flood-1", "fatigue.throttle"): 1,  # one message naming the streak and the cap
})
"""What the reps get: the events arrive together, seconds after they happened (history, told once
the customer's timeline has caught up: FATIGUE_TIMER_SETTLE_S=1), and the timers after them."""


def live_history(base: datetime) -> list[dict[str, Any]]:
    """Events of the last ~20 s: bursts that throttle, and customers then left alone."""

    def at(seconds: float) -> str:
        return (base + timedelta(seconds=seconds)).isoformat()

    def event(event_id: str, customer_id: str, seconds: float, **extra: Any) -> dict[str, Any]:
        body = {"event_id": event_id, "type": "touch", "customer_id": customer_id, "channel": "email",
                "occurred_at": at(seconds)}
        return body | extra

    events = []
    for cid in ("hot-1", "hot-2"):  # 13 touches, an open after every 4th: the frequency cap trips
        for i in range(13):
            events.append(event(f"{cid}-t{i}", cid, -20 + i))
            if i % 4 == 3:
                events.append(event(f"{cid}-o{i}", cid, -19.5 + i, type="response", kind="open",
                                    in_reply_to=f"{cid}-t{i}"))
    # 5 unanswered touches throttle; the reply clears the streak, the throttle ends 3 s after it
    # began (a timer: recovered), then nobody touches: re_engage
    events += [event(f"streak-1-t{i}", "streak-1", -10 + i) for i in range(5)]
    events.append(event("streak-1-r", "streak-1", -4, type="response", kind="reply", in_reply_to="streak-1-t4"))
    events += [event("quiet-1-t0", "quiet-1", -9), event("quiet-1-t1", "quiet-1", -7, channel="phone")]
    events.append(event("prospect-1-t0", "prospect-1", -5))
    events.append(event("txn-1-t0", "txn-1", -6, kind="transactional"))
    events += [event("dup-1-t0", "dup-1", -8), event("dup-1-t1", "dup-1", -6), event("dup-1-t0", "dup-1", -8)]
    # 5 unanswered touches (cooling off); the answer comes after the cadence (12 s + 1 s) has passed:
    # the throttle lifts into neglect, in one re_engage that says both
    events += [event(f"lift-1-t{i}", "lift-1", -20 + i) for i in range(5)]
    events.append(event("lift-1-r", "lift-1", -2, type="response", kind="reply", in_reply_to="lift-1-t4"))
    # 5 unanswered touches (cooling off), then 8 more: over the cap, a throttle update
    events += [event(f"flood-1-t{i}", "flood-1", -19 + i) for i in range(13)]
    return events


async def produce_profile(settings: CommonSettings, customer_id: str, profile: dict[str, Any]) -> None:
    producer = make_producer(settings, "tests")
    await producer.start()
    try:
        envelope = ProfileEnvelope(customer_id=customer_id, updated_at=datetime.now(UTC),
                                   profile=ProfileIn.model_validate(profile))
        await producer.send_and_wait(settings.profiles_topic, key=customer_id.encode(), value=encode(envelope))
    finally:
        await producer.stop()


async def collect_actions(consumer: AIOKafkaConsumer, expected: int, timeout_s: float) -> list[dict[str, Any]]:
    """Read until `expected` actions arrived, then 1.5 s more so that extra ones would show."""
    found: list[dict[str, Any]] = []

    async def more() -> list[dict[str, Any]] | None:
        batch = await consumer.getmany(timeout_ms=300)
        found.extend(json.loads(r.value) for records in batch.values() for r in records)
        return found if len(found) >= expected else None

    await wait_until(more, timeout_s, f"{expected} live actions")
    for _ in range(5):
        await more()
    return found


def reason_keys(action: dict[str, Any]) -> list[tuple[Any, ...]]:
    """Rule, window and threshold of each reason; observed too except the idle time (clock-dependent)."""
    return [(r["rule"], r["window"], r["threshold"], None if r["rule"] == "cadence_overdue" else r["observed"])
            for r in action["reasons"]]


@pytest.mark.integration
async def test_live_scorer_and_backtest_give_the_same_actions(
    common_settings: CommonSettings,
    redis_client: Redis,
    infra_env: dict[str, str],
    unique: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text(LIVE_POLICY)
    env = {**infra_env, **FAST_GROUP_ENV, "FATIGUE_SCORER_APP_ID": f"scorer-{unique}", "FATIGUE_WEB_PORT": "0",
           "FATIGUE_DATA_DIR": str(tmp_path / "scorer"), "FATIGUE_POLICY_FILE": str(policy_file)}
    profile = {"tier": "A", "stage": "prospect"}
    consumer = AIOKafkaConsumer(common_settings.actions_topic, auto_offset_reset="earliest",
                                bootstrap_servers=common_settings.kafka_bootstrap_servers)
    await consumer.start()
    try:
        with service_process("scorer", env, tmp_path):
            await produce_profile(common_settings, "prospect-1", profile)
            await wait_until(lambda: stored_snapshot(redis_client, common_settings, "prospect-1"), 60,
                             "the worker applying the profile")
            produced_at = datetime.now(UTC)
            events = live_history(produced_at)
            await produce_events(common_settings, events)
            live = await asyncio.wait_for(collect_actions(consumer, sum(EXPECTED_DELIVERED.values()), 40), 50)
    finally:
        await consumer.stop()
    until = datetime.now(UTC).isoformat()

    # The same history, received when the live scorer received it
    arrived = [{**e, "received_at": produced_at.isoformat()} for e in events]
    events_file = write_jsonl(tmp_path / "events.jsonl", arrived)
    profiles_file = write_jsonl(tmp_path / "profiles.jsonl", [{"customer_id": "prospect-1", **profile}])
    out, _ = backtest(capsys, events_file, "--policy", policy_file, "--profiles", profiles_file,
                      "--producer", "tests", "--until", until, "--settle", "1", "--json")
    replayed = actions_of(out)
    delivered = [a for a in replayed if a["delivered"]]

    assert Counter((a["customer_id"], a["type"]) for a in live) == EXPECTED_DELIVERED
    assert Counter((a["customer_id"], a["action"]) for a in replayed) == EXPECTED_TRANSITIONS
    assert Counter((a["customer_id"], a["action"]) for a in delivered) == EXPECTED_DELIVERED
    live_reasons = sorted((a["customer_id"], a["type"], reason_keys(a)) for a in live)
    assert sorted((a["customer_id"], a["action"], reason_keys(a)) for a in delivered) == live_reasons
    assert ("hot-1", "fatigue.throttle", [("frequency_cap", "30d", 12, 13)]) in live_reasons
    [flood] = [a for a in live if a["customer_id"] == "flood-1"]
    assert [r["rule"] for r in flood["reasons"]] == ["frequency_cap", "unanswered_streak"]
    assert "escalation" not in flood and flood["previous_status"] == "normal"
    prospect = next(a for a in replayed if a["customer_id"] == "prospect-1")
    live_prospect = next(a for a in live if a["customer_id"] == "prospect-1")
    assert (prospect["tier"], prospect["stage"]) == ("A", "prospect")
    assert {k: live_prospect["profile"][k] for k in ("tier", "stage")} == profile
