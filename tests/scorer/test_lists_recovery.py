"""The lists reps work from stay exact across a SIGKILL under load.

A scorer with a policy in seconds (cadence 6 s + 1 s, a latency rest of 5 s) consumes batched
events of 80 customers — over-contacted ones (throttled), unanswered ones (cooling off for an
hour), slowing repliers (cooling off, rested 5 s later: to activate) and answered ones (normal,
then overdue: to activate) — while its timers move them between lists. It is killed with SIGKILL
part-way, restarted, fed duplicates, left to run its timers and stopped. Then every list, per-rep,
per-tier and per-stage index and the entries hash are compared, member by member and score by
score, with a brute-force recount from every stored customer state (the core's lifecycle over the
state read back), and with the snapshots.
"""

from __future__ import annotations

import asyncio
import signal
from datetime import UTC, datetime
from pathlib import Path

import pytest
from redis.asyncio import Redis

from scorer.core.state import CustomerState
from scorer.lists import list_entry_of
from scorer.state_values import state_of_value
from services.contract import ProfileEnvelope, ProfileIn, encode
from services.customer_lists import ListEntry, ListReader
from services.kafka import make_producer
from services.names import CUSTOMER_LISTS
from services.partitions import partition_of
from services.policy.model import parse_policy
from services.settings import CommonSettings
from tests.helpers import FAST_GROUP_ENV, event, produce_events, service_process, stored_snapshots, wait_until

pytestmark = pytest.mark.integration

POLICY = """\
cadence: {default: 6s, by_stage: {prospect: 6s, customer: 6s}, tolerance: 1s, silence: 1h}
signals:
  unanswered_streak: {touches: 6, rest: 1h}
  reply_latency_slowdown: {rest: 5s}
cooldowns: {min_throttle: 2s, re_engage: 1s, throttle_update: 1s}
"""
SECOND = 1 / 86_400  # in days, for tests.helpers.event


def customer_events(n: int, customer: str) -> list[dict]:
    kind = n % 4
    if kind == 3:  # answered 1 s after each touch, then three 10 s after: replies slowing down
        out = []
        for i in range(8):
            touched = 60 - 6 * i
            out += [event(i, customer, days_ago=touched * SECOND, channel="wecom"),
                    event(f"r{i}", customer, days_ago=(touched - (1 if i < 5 else 3)) * SECOND, type_="response",
                          kind="reply", channel="wecom", in_reply_to=f"e-{customer}-{i}")]
        return sorted(out, key=lambda e: e["occurred_at"])
    if kind == 0:  # over-contacted, opens now and then: the frequency cap (12 in 30 days)
        touches = [event(i, customer, days_ago=(40 - i) * SECOND) for i in range(20)]
        opens = [event(f"o{i}", customer, days_ago=(40 - i - 0.5) * SECOND, type_="response", kind="open")
                 for i in range(3, 20, 4)]
        return sorted(touches + opens, key=lambda e: e["occurred_at"])
    if kind == 1:  # six unanswered: cooling off (for an hour, or until they answer)
        return [event(i, customer, days_ago=(30 - i) * SECOND, channel="sms") for i in range(6)]
    out = []  # answered: normal, overdue 7 s after the last touch
    for i in range(4):
        out += [event(i, customer, days_ago=(20 - 2 * i) * SECOND, channel="phone"),
                event(f"r{i}", customer, days_ago=(19.5 - 2 * i) * SECOND, type_="response", kind="reply",
                      channel="phone")]
    return out


async def produce_profiles(settings: CommonSettings, customers: list[str]) -> None:
    producer = make_producer(settings, "tests")
    await producer.start()
    try:
        for n, customer in enumerate(customers):
            profile = ProfileIn(owner_rep_id=f"rep-{n % 4}", tier="ABC"[n % 3], stage=("prospect", "customer")[n % 2])
            envelope = ProfileEnvelope(customer_id=customer, updated_at=datetime.now(UTC), profile=profile)
            await producer.send_and_wait(settings.profiles_topic, key=customer.encode(), value=encode(envelope))
    finally:
        await producer.stop()


async def index_of(redis: Redis, settings: CommonSettings) -> dict[str, dict[str, float]]:
    """Every list index key of every partition -> its members and scores, as stored."""
    found: dict[str, dict[str, float]] = {}
    for partition in range(settings.partitions):
        keys = settings.keys.partition(partition)
        async for key in redis.scan_iter(match=keys.customer_list("*")):
            if key != keys.customer_list_entries():
                found[key] = dict(await redis.zrange(key, 0, -1, withscores=True))
    return {k: v for k, v in found.items() if v}


def recount(entries: dict[str, ListEntry], settings: CommonSettings) -> dict[str, dict[str, float]]:
    expected: dict[str, dict[str, float]] = {}
    for customer, entry in entries.items():
        for key in entry.keys(settings.keys.partition(partition_of(customer, settings.partitions))):
            expected.setdefault(key, {})[customer] = float(entry.score)
    return expected


async def stored_entries_of(redis: Redis, settings: CommonSettings) -> dict[str, ListEntry]:
    found = {}
    for partition in range(settings.partitions):
        raws = await redis.hgetall(settings.keys.partition(partition).customer_list_entries())
        found.update({c: ListEntry.from_json(raw) for c, raw in raws.items()})
    return found


async def states_of(redis: Redis, settings: CommonSettings, customers: list[str]) -> dict[str, CustomerState]:
    found = {}
    for customer in customers:
        raw = await redis.hget(settings.keys.partition(partition_of(customer, settings.partitions)).states(), customer)
        if raw:
            found[customer] = state_of_value(raw)
    return found


async def test_sigkill_under_load_keeps_the_lists_exact(
    common_settings: CommonSettings, redis_client: Redis, infra_env: dict[str, str], unique: str, tmp_path: Path
) -> None:
    customers = [f"l{n:02d}" for n in range(80)]
    per_customer = {c: customer_events(n, c) for n, c in enumerate(customers)}
    longest = max(len(v) for v in per_customer.values())
    stream = [e for i in range(longest) for c in customers for e in per_customer[c][i:i + 1]]  # interleaved
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    env = {**infra_env, **FAST_GROUP_ENV, "FATIGUE_SCORER_APP_ID": f"scorer-{unique}", "FATIGUE_WEB_PORT": "0",
           "FATIGUE_DATA_DIR": str(tmp_path / "scorer"), "FATIGUE_BATCH_MAX_EVENTS": "100",
           "FATIGUE_POLICY_FILE": str(policy)}
    async def counted() -> int:
        return sum(s.events_counted for s in (await states_of(redis_client, common_settings, customers)).values())

    await produce_profiles(common_settings, customers)
    await produce_events(common_settings, stream[: len(stream) // 3])
    with service_process("scorer", env, tmp_path) as proc:
        await wait_until(lambda: _above(counted, len(stream) // 6), 60, "the worker to be part-way through")
        await produce_events(common_settings, stream[len(stream) // 3:])  # more load arrives while it dies
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    await produce_events(common_settings, stream[:300])  # duplicates (same event ids, new offsets)
    with service_process("scorer", env, tmp_path):
        await wait_until(lambda: _above(counted, len(stream) - 1), 90, "every event counted after the restart")
        async def moved() -> bool:  # the timers: cadences passed (answered ones), rests over (slow repliers)
            entries = await stored_entries_of(redis_client, common_settings)
            return sum(1 for e in entries.values() if e.name == "to_activate") >= 40

        await wait_until(moved, 60, "the answered and the rested customers on to_activate")
        await asyncio.sleep(1)  # and timers firing while it is stopped

    states = await states_of(redis_client, common_settings, customers)
    assert len(states) == len(customers) and all(s.events_counted == len(per_customer[c]) for c, s in states.items())
    expected_entries = {c: e for c, s in states.items() if (e := list_entry_of(s)) is not None}
    assert await stored_entries_of(redis_client, common_settings) == expected_entries
    assert await index_of(redis_client, common_settings) == recount(expected_entries, common_settings)
    snapshots = await stored_snapshots(redis_client, common_settings, customers, load_policy_text(POLICY))
    assert {c: s["lifecycle"]["list"] for c, s in snapshots.items() if s["lifecycle"]["list"]} == {
        c: e.name for c, e in expected_entries.items()}
    by_list = {name: sorted(((e.score, c) for c, e in expected_entries.items() if e.name == name)) for name in
               CUSTOMER_LISTS}
    assert all(by_list.values()), {name: len(v) for name, v in by_list.items()}  # every list has customers
    reader = ListReader(redis_client, common_settings.keys, common_settings.partitions)
    for name, ordered in by_list.items():
        page = await reader.page(name, limit=500)
        assert [c for c, _, _ in page.members] == [c for _, c in sorted(ordered, key=lambda x: (x[0], x[1].encode()))]
        assert page.next_cursor is None


def load_policy_text(text: str):  # type: ignore[no-untyped-def]
    return parse_policy(text, "test")


async def _above(count, n: int) -> bool:
    return await count() > n
