"""`fatigue import` against the session's broker and Redis: killed with SIGKILL halfway and resumed,
it stores every event exactly once; imported history leaves customers in the same state as the
same events posted live to the API (a real scorer computes both)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from services.settings import CommonSettings
from tests.helpers import FAST_GROUP_ENV, service_process, stored_snapshots, wait_until
from tests.ingest.helpers import consume, ingest_settings_for, running_api, value_of
from tests.redis_cluster import RedisClusterProcesses

pytestmark = pytest.mark.integration


def history(customers: list[str], per_customer: int) -> list[dict[str, Any]]:
    """Touches and some responses over the last 5 days, in time order."""
    start = datetime.now(UTC) - timedelta(days=5)
    events = []
    for c, customer in enumerate(customers):
        for i in range(per_customer):
            at = start + timedelta(minutes=7 * i + c)
            kind = ("response", "open") if i % 4 == 3 else ("touch", "promo")
            event = {"event_id": f"h-{c}-{i}", "type": kind[0], "customer_id": customer,
                     "channel": "email" if i % 3 else "sms", "occurred_at": at.isoformat(), "kind": kind[1]}
            if kind[0] == "response":
                event["in_reply_to"] = f"h-{c}-{i - 1}"
            events.append(event)
    return sorted(events, key=lambda e: e["occurred_at"])


def write_jsonl(path: Path, events: list[dict[str, Any]]) -> None:
    path.write_text("".join(json.dumps(e) + "\n" for e in events))


def import_command(path: Path, tmp_path: Path, *extra: str, alerts_wait: float = 0) -> list[str]:
    return [sys.executable, "-m", "fatigue.cli", "import", str(path), "--no-progress", "--batch", "100",
            "--checkpoint", str(tmp_path / "cp.json"), "--report", str(tmp_path / "report.csv"),
            "--alerts-wait", str(alerts_wait), *extra]


def checkpoint_line(tmp_path: Path) -> int:
    try:
        return max(json.loads((tmp_path / "cp.json").read_text())["files"].values(), default=0)
    except (FileNotFoundError, json.JSONDecodeError, ValueError):
        return 0


def scorer_env(infra_env: dict[str, str], unique: str, tmp_path: Path) -> dict[str, str]:
    return {**infra_env, **FAST_GROUP_ENV, "FATIGUE_SCORER_APP_ID": f"scorer-{unique}", "FATIGUE_WEB_PORT": "0",
            "FATIGUE_DATA_DIR": str(tmp_path / "scorer")}


async def snapshots(redis: Redis, settings: CommonSettings, customers: list[str]) -> dict[str, dict]:
    return await stored_snapshots(redis, settings, customers)


async def test_killed_halfway_and_resumed_every_event_is_stored_once(
    common_settings: CommonSettings, infra_env: dict[str, str], redis_client: Redis, unique: str, tmp_path: Path
) -> None:
    customers = [f"imp-{i}" for i in range(20)]
    events = history(customers, 100)
    path = tmp_path / "history.jsonl"
    write_jsonl(path, events)
    env = {**os.environ, **infra_env}
    log = (tmp_path / "import.log").open("wb")
    proc = subprocess.Popen(import_command(path, tmp_path, "--rate", "400"), env=env, stdout=log,
                            stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while checkpoint_line(tmp_path) < 600 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        assert proc.poll() is None, "the import finished before it could be killed"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    done_before = checkpoint_line(tmp_path)
    assert 600 <= done_before < len(events)
    resumed = subprocess.run(import_command(path, tmp_path, "--resume"), env=env, capture_output=True, text=True,
                             timeout=120, check=False)
    assert resumed.returncode == 0, resumed.stderr
    assert f"{len(events)} valid" in resumed.stderr

    records = await consume(common_settings.kafka_bootstrap_servers, common_settings.events_topic,
                            expected=len(events), timeout_s=30)
    ids = [value_of(r)["event"]["event_id"] for r in records]
    assert sorted(set(ids)) == sorted(e["event_id"] for e in events)  # nothing lost
    counts = json.loads((tmp_path / "cp.json").read_text())["counts"]
    assert counts["accepted"] == len(ids) <= len(events) + 100  # a batch re-sent after the kill is a duplicate
    assert {value_of(r)["producer"] for r in records} == {"import"}

    with service_process("scorer", scorer_env(infra_env, unique, tmp_path), tmp_path):
        async def all_counted() -> dict | None:
            snaps = await snapshots(redis_client, common_settings, customers)
            total = sum(s["events_counted"] for s in snaps.values())
            return snaps if len(snaps) == len(customers) and total >= len(events) else None

        snaps = await wait_until(all_counted, 90, "every imported event counted")
    assert {c: s["events_counted"] for c, s in snaps.items()} == {c: 100 for c in customers}  # exactly once


PROCESSING_TIME_FIELDS = ("customer_id", "as_of", "status_since", "next_check_at")


def comparable(snapshot: dict[str, Any]) -> dict[str, Any]:
    """A snapshot without what depends on when it was computed rather than on the events."""
    out = {k: v for k, v in snapshot.items() if k not in PROCESSING_TIME_FIELDS}
    out["lifecycle"] = {k: v for k, v in (out.get("lifecycle") or {}).items() if k != "since"}  # when it moved
    action = out.pop("last_action") or {}
    out["last_action"] = {"type": action.get("type"), "reasons": action.get("reasons")}
    return out


async def test_imported_history_leaves_customers_as_if_the_events_arrived_live(
    common_settings: CommonSettings, infra_env: dict[str, str], redis_client: Redis, unique: str, tmp_path: Path
) -> None:
    names = [f"p{i}" for i in range(4)]
    live = history([f"live-{n}" for n in names], 40)
    imported = [dict(e, customer_id=e["customer_id"].replace("live-", "imp-")) for e in live]
    async with running_api(ingest_settings_for(common_settings)) as api:
        for start in range(0, len(live), 50):
            response = await api.post("/v1/events", json=live[start:start + 50])
            assert response.status_code == 202 and response.json()["accepted"] == len(live[start:start + 50])
    path = tmp_path / "history.csv.gz"
    import gzip

    with gzip.open(path, "wt", encoding="utf-8", newline="") as handle:
        handle.write("event_id,type,customer_id,channel,occurred_at,kind,in_reply_to\n")
        for e in imported:
            handle.write(",".join(str(e.get(k, "")) for k in ("event_id", "type", "customer_id", "channel",
                                                               "occurred_at", "kind", "in_reply_to")) + "\n")
    done = subprocess.run(import_command(path, tmp_path), env={**os.environ, **infra_env}, capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 0 and f"{len(imported)} stored" in done.stderr, done.stderr

    customers = [f"{side}-{n}" for side in ("live", "imp") for n in names]
    with service_process("scorer", scorer_env(infra_env, unique, tmp_path), tmp_path):
        async def all_counted() -> dict | None:
            snaps = await snapshots(redis_client, common_settings, customers)
            ok = len(snaps) == len(customers) and all(s["events_counted"] == 40 for s in snaps.values())
            return snaps if ok else None

        snaps = await wait_until(all_counted, 90, "every customer's 40 events counted")
    for name in names:
        assert comparable(snaps[f"imp-{name}"]) == comparable(snaps[f"live-{name}"]), name
    assert any(s["status"] != "normal" or s["last_action"] for s in snaps.values())  # the history did something


async def test_import_on_a_redis_cluster_stores_each_event_once(
    common_settings: CommonSettings, infra_env: dict[str, str], redis_cluster: RedisClusterProcesses, tmp_path: Path
) -> None:
    """REDIS_URL naming a Redis Cluster: the de-duplication claims of a batch spread over its slots.
    Imported twice, every event is stored once; the second run finds them all duplicates."""
    events = history([f"cl-{i}" for i in range(10)], 30)
    path = tmp_path / "history.jsonl"
    write_jsonl(path, events)
    env = {**os.environ, **infra_env, "REDIS_URL": redis_cluster.url}
    for run, (stored, duplicates) in enumerate([(len(events), 0), (0, len(events))]):
        (tmp_path / f"run{run}").mkdir()
        done = subprocess.run(import_command(path, tmp_path / f"run{run}"), env=env, capture_output=True, text=True,
                              timeout=120, check=False)
        assert done.returncode == 0 and f"{stored} stored, {duplicates} duplicates" in done.stderr, done.stderr
    records = await consume(common_settings.kafka_bootstrap_servers, common_settings.events_topic,
                            expected=len(events), timeout_s=20)
    assert sorted(value_of(r)["event"]["event_id"] for r in records) == sorted(e["event_id"] for e in events)


def adoption_day(customers: int, now: datetime) -> list[dict[str, Any]]:
    """90 days of email touches, 20 or 6 per customer, the last one 33 days ago, none answered: what
    a new user imports on day one (issue 17, finding 4)."""
    events = []
    for c in range(customers):
        touches = 20 if c % 2 else 6
        for i in range(touches):
            at = now - timedelta(days=33 + (90 - 33) * (touches - 1 - i) / (touches - 1))
            events.append({"event_id": f"a-{c}-{i}", "type": "touch", "customer_id": f"hist-{c:03d}",
                           "channel": "email", "kind": "promo", "occurred_at": at.isoformat()})
    return sorted(events, key=lambda e: e["occurred_at"])


async def test_importing_history_pages_nobody_about_the_past(
    common_settings: CommonSettings, infra_env: dict[str, str], redis_client: Redis, unique: str, tmp_path: Path
) -> None:
    """The import records every transition in event time — the unanswered streaks and caps of months
    ago, over long since — and tells each rep only where it leaves their customer: neglected, 33 days
    without a touch (to_activate), one re_engage each. No throttle ("cool down") for a customer nobody
    touched for a month; the summary says how many alerts the import caused."""
    events = adoption_day(40, datetime.now(UTC))
    path = tmp_path / "history.jsonl"
    write_jsonl(path, events)
    env = {**os.environ, **infra_env, "FATIGUE_TIMER_SETTLE_S": "1"}
    customers = sorted({e["customer_id"] for e in events})
    with service_process("scorer", scorer_env(infra_env, unique, tmp_path), tmp_path):
        done = subprocess.run(import_command(path, tmp_path, alerts_wait=90), env=env, capture_output=True,
                              text=True, timeout=180, check=False)
        assert done.returncode == 0, done.stderr
        snaps = await wait_until(lambda: _all_dormant(redis_client, common_settings, customers), 30,
                                 "every imported customer to activate")
    actions = [value_of(r) for r in await consume(common_settings.kafka_bootstrap_servers,
                                                   common_settings.actions_topic, expected=40, timeout_s=20,
                                                   settle_s=3)]
    assert {a["type"] for a in actions} == {"fatigue.re_engage"}
    assert sorted(a["customer_id"] for a in actions) == customers  # one message each
    rules = {r["rule"] for a in actions for r in a["reasons"]}
    assert rules & {"cadence_overdue", "unanswered_streak_rested"}
    assert not rules & {"frequency_cap", "unanswered_streak"}
    assert {s["lifecycle"]["state"] for s in snaps.values()} == {"to_activate"}
    assert "alerts to reps: 40 alerts for the imported customers" in done.stderr, done.stderr


async def _all_dormant(redis: Redis, settings: CommonSettings, customers: list[str]) -> dict | None:
    snaps = await snapshots(redis, settings, customers)
    ok = len(snaps) == len(customers) and all(s["status"] == "dormant" for s in snaps.values())
    return snaps if ok else None
