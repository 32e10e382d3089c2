"""GET /v1/customers?list=… on a real Redis, with states, snapshots and lists the real scorer wrote
(its Processor on the session's Redis; the Kafka side replaced by records built here), and the
`fatigue customers list` command reading the same lists."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from datetime import UTC, datetime

import httpx
import pytest
from redis.asyncio import Redis

from services.contract import parse_rfc3339, to_ms
from services.settings import IngestSettings
from tests.scorer_feed import ScorerFeed

pytestmark = pytest.mark.integration

EVENTS, PROFILES = "ev", "pr"


class Feed(ScorerFeed):
    """The scorer's edge at the real time now, on the test's Redis prefix."""

    def __init__(self, redis: Redis, settings: IngestSettings) -> None:
        super().__init__(redis, settings.keys, settings.partitions, datetime.now(UTC))


@pytest.fixture
async def fed(api: httpx.AsyncClient, settings: IngestSettings, redis_client: Redis) -> Feed:
    """throttled: hot (13 answered touches in 6 days, rep bo); cooling_off: quiet-1 (5 unanswered,
    rep alice, tier A); to_activate: old-1..old-3 (intent, last touch 40, 30, 20 days ago)."""
    feed = Feed(redis_client, settings)
    records = [feed.profile("hot", owner_rep_id="bo", stage="customer")]
    for i in range(13):
        records += [feed.event("hot", 6 - i * 0.4), feed.event("hot", 6 - i * 0.4 - 0.01, "response", "reply")]
    records.append(feed.profile("quiet-1", owner_rep_id="alice", tier="A", stage="customer"))
    records += [feed.event("quiet-1", 3 - i * 0.5) for i in range(5)]
    for n, days in ((1, 40), (2, 30), (3, 20)):
        records += [feed.profile(f"old-{n}", owner_rep_id="alice", stage="intent", timezone="Asia/Shanghai"),
                    feed.event(f"old-{n}", days, channel="wecom"),
                    feed.event(f"old-{n}", days - 0.01, "response", "reply", channel="wecom")]
    await feed.process(records)
    await feed.fire_due()  # the intent cadence (7 d + 1 d) passed for old-*
    return feed


async def test_each_list_holds_its_customers_with_why_since_and_what_next(api: httpx.AsyncClient, fed: Feed) -> None:
    hot = (await api.get("/v1/customers", params={"list": "throttled"})).json()
    assert hot["list"] == "throttled" and [i["customer_id"] for i in hot["items"]] == ["hot"]
    (item,) = hot["items"]
    assert (item["status"], item["state"], item["owner_rep_id"]) == ("throttled", "throttled", "bo")
    assert [r["rule"] for r in item["reasons"]] == ["frequency_cap"]
    assert item["until"] is not None and item["next_allowed_at"] == item["until"]  # the throttle's known end
    assert item["since"].endswith(".000Z") or len(item["since"]) == len("2026-11-23T09:30:00.000Z")

    cooling = (await api.get("/v1/customers", params={"list": "cooling_off"})).json()["items"]
    assert [(i["customer_id"], i["tier"], [r["rule"] for r in i["reasons"]]) for i in cooling] == [
        ("quiet-1", "A", ["unanswered_streak"])]
    # the rest: 14 days without touches from the last touch (a day ago), in event time
    assert to_ms(parse_rfc3339(cooling[0]["until"])) == to_ms(fed.now) + 13 * 86_400_000

    dormant = (await api.get("/v1/customers", params={"list": "to_activate"})).json()
    assert [i["customer_id"] for i in dormant["items"]] == ["old-1", "old-2", "old-3"]  # longest overdue first
    first = dormant["items"][0]
    assert [r["rule"] for r in first["reasons"]] == ["cadence_overdue"] and first["state"] == "to_activate"
    assert first["next_step"]["channel"] == "wecom"
    assert first["next_allowed_at"] == dormant["evaluated_at"]  # reach out now
    # told when the cadence (7 d + 1 d) had passed, in event time; the reasons are as of now
    assert first["suggestion"].startswith("Neglected: last touch 8 days ago")
    assert first["reasons"][0]["observed"] == 40


async def test_filters_and_cursor_pages(api: httpx.AsyncClient, fed: Feed) -> None:
    mine = (await api.get("/v1/customers", params={"list": "cooling_off", "owner_rep_id": "alice"})).json()
    assert [i["customer_id"] for i in mine["items"]] == ["quiet-1"]
    assert (await api.get("/v1/customers", params={"list": "cooling_off", "owner_rep_id": "bo"})).json()["items"] == []
    assert (await api.get("/v1/customers", params={"list": "to_activate", "tier": "A"})).json()["items"] == []
    params = {"list": "to_activate", "stage": "intent", "owner_rep_id": "alice"}
    by_stage = await api.get("/v1/customers", params=params)
    assert len(by_stage.json()["items"]) == 3
    seen, cursor = [], None
    for _ in range(5):
        params = {"list": "to_activate", "limit": 1, **({"cursor": cursor} if cursor else {})}
        page = (await api.get("/v1/customers", params=params)).json()
        seen += [i["customer_id"] for i in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == ["old-1", "old-2", "old-3"]


@pytest.mark.parametrize(("params", "fragment"), [
    ({"list": "vip"}, "list"),
    ({}, "list"),
    ({"list": "to_activate", "limit": 0}, "limit"),
    ({"list": "to_activate", "tier": "Z"}, "tier"),
    ({"list": "to_activate", "cursor": "garbage!"}, "cursor (in query): not a cursor"),
])
async def test_bad_queries_are_422_naming_the_field(api: httpx.AsyncClient, params: dict, fragment: str) -> None:
    response = await api.get("/v1/customers", params=params)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == "invalid_request" and fragment in response.json()["error"]["message"]


async def test_a_cursor_of_another_list_is_refused(api: httpx.AsyncClient, fed: Feed) -> None:
    page = (await api.get("/v1/customers", params={"list": "to_activate", "limit": 1})).json()
    other = await api.get("/v1/customers", params={"list": "throttled", "cursor": page["next_cursor"]})
    assert other.status_code == 422 and "not a cursor of the throttled list" in other.json()["error"]["message"]


async def run_command(settings: IngestSettings, *args: str) -> str:
    """`fatigue customers list …` as a user runs it: its own process, Redis from the environment."""
    env = cli_env(settings)
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "fatigue.cli", "customers", "list", *args,
                                                env=env, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    return out.decode()


async def test_the_command_lists_the_same_customers(fed: Feed, settings: IngestSettings) -> None:
    out = await run_command(settings, "to_activate", "--owner-rep-id", "alice", "--limit", "2", "--all")
    lines = out.splitlines()
    assert [line.split()[0] for line in lines[:-1]] == ["old-1", "old-2", "old-3"]
    assert "via wecom" in lines[0] and "cadence_overdue" in lines[0]
    assert lines[-1] == "3 customers on to_activate"
    (record,) = [json.loads(line) for line in (await run_command(settings, "cooling_off", "--json")).splitlines()]
    assert record["customer_id"] == "quiet-1" and record["reasons"][0]["rule"] == "unanswered_streak"
    page = (await run_command(settings, "to_activate", "--limit", "1")).splitlines()
    assert page[0].split()[0] == "old-1" and page[-1].startswith("1 customer on to_activate; next cursor: ")


async def test_migrate_moves_states_of_earlier_versions_onto_partitions_and_lists(
    api: httpx.AsyncClient, settings: IngestSettings, redis_client: Redis
) -> None:
    """States an earlier scorer wrote, one key per customer and before the lists existed
    (tests/scorer/data/states_v1.json), with its stored offsets: invisible until `fatigue customers
    migrate` moves them to their partitions, on the lists their lifecycle says; a second run moves
    nothing; `reindex` then finds every entry where it is."""
    from pathlib import Path

    v1 = json.loads((Path(__file__).parents[1] / "scorer" / "data" / "states_v1.json").read_text())
    for state in v1.values():
        await redis_client.set(f"{settings.redis_prefix}state:{state['customer_id']}", json.dumps(state))
    await redis_client.hset(f"{settings.redis_prefix}offsets:fatigue-scorer", mapping={
        f"{settings.events_topic}/0": "41", f"{settings.events_topic}/2": "7"})
    assert (await api.get("/v1/customers", params={"list": "cooling_off"})).json()["items"] == []
    first = await run_cli_ok(settings, "customers", "migrate")
    assert first == "3 customer states moved to 3 partitions; 2 stored offsets moved; 4 old keys deleted\n"
    listed = {name: [i["customer_id"] for i in (await api.get("/v1/customers", params={"list": name})).json()["items"]]
              for name in ("cooling_off", "throttled", "to_activate")}
    assert listed == {"cooling_off": ["v1-streak"], "throttled": ["v1-cap"], "to_activate": ["v1-dormant"]}
    assert (await api.get("/v1/customers/v1-cap")).json()["status"] == "throttled"
    assert await redis_client.hget(settings.keys.partition(2).offsets(), settings.events_topic) == "7"
    assert [k async for k in redis_client.scan_iter(match=f"{settings.redis_prefix}state:*")] == []
    assert await run_cli_ok(settings, "customers", "migrate") == (
        "0 customer states moved to 3 partitions; 0 stored offsets moved; 0 old keys deleted\n")
    assert await run_cli_ok(settings, "customers", "reindex") == (
        "3 customer states read; 0 list entries written or moved\n")


async def run_cli_ok(settings: IngestSettings, *args: str) -> str:
    code, out, err = await run_cli(settings, *args)
    assert code == 0, err
    return out


async def test_the_command_shows_a_customers_snapshot_and_stored_state(
    fed: Feed, settings: IngestSettings, redis_client: Redis
) -> None:
    partition = fed.partition("quiet-1")
    assert (await redis_client.hget(settings.keys.partition(partition).states(), "quiet-1")).startswith("KLUv")
    code, out, _ = await run_cli(settings, "customers", "show", "quiet-1")
    assert code == 0 and json.loads(out)["lifecycle"]["list"] == "cooling_off"
    code, out, _ = await run_cli(settings, "customers", "show", "quiet-1", "--state")
    assert code == 0 and json.loads(out)["customer_id"] == "quiet-1" and "counts" in json.loads(out)
    code, out, _ = await run_cli(settings, "customers", "show", "nobody")
    assert code == 1 and out.startswith("no state stored for customer 'nobody'")
    await redis_client.hset(settings.keys.partition(fed.partition("broken")).states(), "broken", "KLUv/QBYAQAAeyJh")
    code, _, err = await run_cli(settings, "customers", "show", "broken")
    assert code == 2 and "state of 'broken' is unreadable: " in err and "what to do:" in err


def cli_env(settings: IngestSettings) -> dict[str, str]:
    return {**os.environ, "REDIS_URL": settings.redis_url, "FATIGUE_REDIS_PREFIX": settings.redis_prefix,
            "FATIGUE_PARTITIONS": str(settings.partitions), "FATIGUE_TOPIC_PREFIX": settings.topic_prefix}


async def run_cli(settings: IngestSettings, *args: str) -> tuple[int | None, str, str]:
    env = cli_env(settings)
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "fatigue.cli", *args, env=env,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode, out.decode(), err.decode()
