"""The whole pipeline on a real Redis Cluster (3 primaries, 3 replicas), then a primary killed under load.

`fatigue api`, two `fatigue scorer` workers (one consumer group: they share the topic's partitions)
and `fatigue notifier` run as processes against the session's broker and Redis Cluster
(REDIS_URL=redis+cluster://…, so the scorer and the notifier WAIT for a replica: the default there); a
real HTTP receiver on loopback takes the webhooks. Over-contacted customers (13 touches and 3 opens in
30 days: one `fatigue.throttle`) and neglected ones (one touch 40 days ago: one `fatigue.re_engage`) are
spread over every partition. What is checked, from what a user can see:

- every accepted event counted once: `events_counted` of each customer's stored state, read per
  partition as the API reads it, equals what the API accepted (`202`) for that customer;
- every expected action delivered once: one distinct webhook id per (customer, action type), none for
  anyone else; the receiver counts distinct ids and all requests (a redelivery repeats the id);
- the lists reps work from (`GET /v1/customers?list=…`) hold exactly the customers their states put there.

The failover test posts steadily (open loop: a POST every 1/RATE s whatever the answers), kills -9 the
primary serving the most scorer partitions, waits for its replica's promotion, starts the killed node
again (it rejoins as a replica: WAIT needs one) and keeps posting. Only 202-accepted events are
expected. The API and the scorers are never restarted and must be healthy again by themselves; the
notifier exits on a store outage (docs/operations.md) and is started again as its supervisor would.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from fatigue.embedded import EmbeddedStack, free_port
from scorer.core.state_codec import decode_state
from scorer.lists import list_entry_of
from services.kafka import ensure_topics
from services.names import ACTION_RE_ENGAGE, ACTION_THROTTLE, CUSTOMER_LISTS
from services.partitions import partition_of
from services.policy.model import default_policy
from services.redisio import make_redis_for
from services.settings import CommonSettings
from services.snapshots import CustomerReader
from tests.helpers import FAST_GROUP_ENV, KeptRunning, event, over_contacted, service_process, stored_snapshots
from tests.redis_cluster import ClusterNode, RedisClusterProcesses

pytestmark = pytest.mark.integration
log = logging.getLogger(__name__)

API_KEY = "cluster-e2e-key-0123456789"
PARTITIONS = 6
OVER_CONTACTED_EVENTS = len(over_contacted("x"))  # 13 touches and 3 opens
RATE_PER_S = 8.0
"""POSTs per second of the failover test's open-loop poster (each: one over-contacted + one neglected)."""
POSTS_BEFORE_KILL = 16
POSTS_AFTER_REVIVE = 16
MAX_POSTS = 400
"""A bound on the poster whatever happens to the failover."""
SETTLED_WITHIN_S = 150.0
POLICY = default_policy()


# ---- a webhook receiver on loopback (a thread: it outlives each test's event loop) ----


class Receiver(ThreadingHTTPServer):
    """Answers 204 to every POST and keeps (webhook-id, action type, customer id) of each."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.lock = threading.Lock()
        self.requests: list[tuple[str, str, str]] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/hook"

    def got(self, customers: set[str]) -> list[tuple[str, str, str]]:
        with self.lock:
            return [r for r in self.requests if r[2] in customers]


class _Handler(BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with self.server.lock:
            self.server.requests.append((self.headers["webhook-id"], body["type"], body["data"]["customer_id"]))
        self.send_response(204)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


# ---- the services ----


@dataclass
class Pipeline:
    api: str
    settings: CommonSettings
    cluster: RedisClusterProcesses
    receiver: Receiver
    scorer_ports: list[int]
    procs: dict[str, Any]
    notifier: KeptRunning
    log_dir: Path

    def logs(self, chars: int = 3000) -> str:
        files = sorted(self.log_dir.glob("*.log"))
        return "\n".join(f"--- {f.name}\n{f.read_text(errors='replace')[-chars:]}" for f in files)


@pytest.fixture(scope="module")
def pipeline(stack: EmbeddedStack, redis_cluster: RedisClusterProcesses,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    unique = uuid.uuid4().hex[:10]
    log_dir = tmp_path_factory.mktemp("cluster-e2e")
    settings = CommonSettings(kafka_bootstrap_servers=stack.kafka_bootstrap_servers, redis_url=redis_cluster.url,
                              topic_prefix=f"t{unique}.", redis_prefix=f"t{unique}:", partitions=PARTITIONS)
    asyncio.run(ensure_topics(settings))
    env = {"KAFKA_BOOTSTRAP_SERVERS": stack.kafka_bootstrap_servers, "REDIS_URL": redis_cluster.url,
           "FATIGUE_TOPIC_PREFIX": settings.topic_prefix, "FATIGUE_REDIS_PREFIX": settings.redis_prefix,
           "FATIGUE_PARTITIONS": str(PARTITIONS), **FAST_GROUP_ENV, "FATIGUE_ALLOW_LOOPBACK_DESTINATIONS": "true"}
    api_port, scorer_ports = free_port(), [free_port(), free_port()]
    receiver = Receiver()
    threading.Thread(target=receiver.serve_forever, name="receiver", daemon=True).start()
    with ExitStack() as running:
        running.callback(receiver.server_close)
        running.callback(receiver.shutdown)
        procs = {"api": running.enter_context(service_process("api", {
            **env, "FATIGUE_PORT": str(api_port), "FATIGUE_API_KEYS": f"e2e:{API_KEY}:all"}, log_dir))}
        for n, port in enumerate(scorer_ports):
            procs[f"scorer{n}"] = running.enter_context(service_process("scorer", {
                **env, "FATIGUE_SCORER_APP_ID": f"scorer-{unique}", "FATIGUE_WEB_PORT": str(port),
                "FATIGUE_DATA_DIR": str(log_dir / f"scorer{n}")}, log_dir))
        notifier = KeptRunning("notifier", {
            **env, "FATIGUE_NOTIFIER_GROUP_ID": f"notifier-{unique}", "FATIGUE_DELIVERY_TIMEOUT_S": "2",
            "FATIGUE_RETRY_SCHEDULE_S": "0,0.5,1,2,2,2,2,2,2,2"}, log_dir)
        running.callback(notifier.stop)
        found = Pipeline(f"http://127.0.0.1:{api_port}", settings, redis_cluster, receiver, scorer_ports, procs,
                         notifier, log_dir)
        _wait_ready(found)
        yield found


def _wait_ready(p: Pipeline) -> None:
    """The API ready, both scorers in the group, a subscription to both action types at the receiver."""
    urls = [f"{p.api}/readyz"] + [f"http://127.0.0.1:{port}/readyz" for port in p.scorer_ports]
    deadline = time.monotonic() + 90
    while not all(_answers_200(url) for url in urls):
        assert time.monotonic() < deadline, f"the services did not get ready\n{p.logs()}"
        time.sleep(0.3)
    created = httpx.post(f"{p.api}/v1/subscriptions", headers={"Authorization": f"Bearer {API_KEY}"}, timeout=20,
                         json={"url": p.receiver.url, "events": [ACTION_THROTTLE, ACTION_RE_ENGAGE]})
    assert created.status_code == 201, created.text


def _answers_200(url: str) -> bool:
    try:
        return httpx.get(url, timeout=5).status_code == 200
    except httpx.TransportError:
        return False


# ---- what is posted and what is expected of it ----


@dataclass
class Expected:
    """Per customer: events the API accepted, and the one action they must bring."""

    events: Counter[str] = field(default_factory=Counter)
    actions: dict[str, str] = field(default_factory=dict)
    refused: set[str] = field(default_factory=set)
    """Customers of POSTs that were not accepted (their events must not be counted)."""
    statuses: Counter[int] = field(default_factory=Counter)

    def customers(self) -> set[str]:
        return set(self.events) | self.refused


def unit(tag: str, n: int) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """One over-contacted and one neglected customer: their events, and the action each must bring."""
    over, neglected = f"{tag}-oc-{n}", f"{tag}-ng-{n}"
    events = [*over_contacted(over), event(0, neglected, days_ago=40)]
    return events, {over: ACTION_THROTTLE, neglected: ACTION_RE_ENGAGE}


def spread_units(tag: str, partitions: int, per_partition: int) -> list[int]:
    """Unit numbers whose over-contacted customers cover every partition `per_partition` times."""
    chosen: list[int] = []
    seen: Counter[int] = Counter()
    for n in range(100 * partitions * per_partition):
        partition = partition_of(f"{tag}-oc-{n}", partitions)
        if seen[partition] < per_partition:
            seen[partition] += 1
            chosen.append(n)
        if len(chosen) == partitions * per_partition:
            return chosen
    raise AssertionError("no spread found")


async def post(client: httpx.AsyncClient, events: list[dict[str, Any]]) -> httpx.Response:
    return await client.post("/v1/events", json=events)


def note(expected: Expected, events: list[dict[str, Any]], actions: dict[str, str], answer: httpx.Response) -> None:
    expected.statuses[answer.status_code] += 1
    if answer.status_code != 202:
        expected.refused |= set(actions)
        return
    body = answer.json()
    assert body["accepted"] == len(events) and body["duplicates"] == 0 and body["rejected"] == [], body
    expected.events.update(e["customer_id"] for e in events)
    expected.actions.update(actions)


# ---- what the pipeline made of it ----


async def counted(p: Pipeline, redis: Any, customers: set[str]) -> Counter[str]:
    """customer -> events_counted of its stored state (read per partition, as the API reads it)."""
    found = await stored_snapshots(redis, p.settings, sorted(customers), POLICY)
    return Counter({c: snap["events_counted"] for c, snap in found.items()})


def delivered(p: Pipeline, customers: set[str]) -> tuple[dict[tuple[str, str], set[str]], int]:
    """(customer, action type) -> the distinct webhook ids received, and the number of requests."""
    got = p.receiver.got(customers)
    ids: dict[tuple[str, str], set[str]] = {}
    for webhook_id, type_, customer in got:
        ids.setdefault((customer, type_), set()).add(webhook_id)
    return ids, len(got)


async def settled(p: Pipeline, redis: Any, expected: Expected) -> bool:
    found = await counted(p, redis, expected.customers())
    ids, _ = delivered(p, expected.customers())
    return found == expected.events and set(ids) == {(c, t) for c, t in expected.actions.items()}


async def wait_settled(p: Pipeline, redis: Any, expected: Expected, timeout_s: float) -> float:
    started = time.monotonic()
    while not await settled(p, redis, expected):
        if time.monotonic() - started > timeout_s:
            found = await counted(p, redis, expected.customers())
            ids, _ = delivered(p, expected.customers())
            missing = {c: (n, found.get(c)) for c, n in expected.events.items() if found.get(c) != n}
            wanted = set(expected.actions.items())
            raise AssertionError(f"not settled in {timeout_s}s: {len(missing)} customers miscounted "
                                 f"({list(missing.items())[:5]}); undelivered: {sorted(wanted - set(ids))[:5]}, "
                                 f"unexpected: {sorted(set(ids) - wanted)[:10]}; answers {dict(expected.statuses)}"
                                 f"\n{p.logs()}")
        await asyncio.sleep(0.5)
    return time.monotonic() - started


async def listed(client: httpx.AsyncClient, name: str) -> set[str]:
    """Every customer on the list `name`, page by page through the API."""
    found: set[str] = set()
    cursor = None
    for _ in range(1000):
        page = await client.get("/v1/customers", params={"list": name, "limit": 200,
                                                         **({"cursor": cursor} if cursor else {})})
        assert page.status_code == 200, page.text
        found |= {item["customer_id"] for item in page.json()["items"]}
        cursor = page.json()["next_cursor"]
        if cursor is None:
            return found
    raise AssertionError(f"list {name} did not end")


async def assert_lists_agree_with_states(p: Pipeline, client: httpx.AsyncClient, redis: Any,
                                         customers: set[str]) -> None:
    reader = CustomerReader(redis, p.settings.keys, p.settings.partitions)
    states = await reader.states([(c, partition_of(c, PARTITIONS)) for c in sorted(customers)])
    by_state: dict[str, set[str]] = {name: set() for name in CUSTOMER_LISTS}
    for customer, doc in states.items():
        entry = list_entry_of(decode_state(doc))
        if entry is not None:
            by_state[entry.name].add(customer)
    for name in CUSTOMER_LISTS:
        assert (await listed(client, name)) & customers == by_state[name], name


def assert_exactly_once(p: Pipeline, expected: Expected, found: Counter[str]) -> int:
    """Counts and deliveries as expected; the number of redeliveries (same webhook id again)."""
    assert found == expected.events  # counted once each; nothing of a refused POST
    ids, requests = delivered(p, expected.customers())
    assert {k: len(v) for k, v in ids.items()} == {(c, t): 1 for c, t in expected.actions.items()}
    return requests - len(ids)


# ---- the tests ----


async def test_every_event_is_counted_once_and_every_action_delivered_once(pipeline: Pipeline) -> None:
    tag = f"a{uuid.uuid4().hex[:6]}"
    expected = Expected()
    redis = make_redis_for(pipeline.cluster.url)
    async with httpx.AsyncClient(base_url=pipeline.api, headers={"Authorization": f"Bearer {API_KEY}"},
                                 timeout=30) as client:
        units = [unit(tag, n) for n in spread_units(tag, PARTITIONS, 2)]
        for events, actions in units:
            note(expected, events, actions, await post(client, events))
        assert not expected.refused
        assert {partition_of(c, PARTITIONS) for c in expected.actions} == set(range(PARTITIONS))
        took_s = await wait_settled(pipeline, redis, expected, SETTLED_WITHIN_S)
        redelivered = assert_exactly_once(pipeline, expected, await counted(pipeline, redis, expected.customers()))
        await assert_lists_agree_with_states(pipeline, client, redis, expected.customers())
    await redis.aclose()
    log.warning("cluster pipeline: %d customers, %d events settled in %.1fs", len(expected.actions),
                sum(expected.events.values()), took_s)
    assert redelivered == 0


@pytest.mark.timeout(300)  # the failover, then up to SETTLED_WITHIN_S for the pipeline to catch up
async def test_a_primary_killed_under_load_loses_nothing_and_counts_nothing_twice(pipeline: Pipeline) -> None:
    tag = f"f{uuid.uuid4().hex[:6]}"
    cluster = pipeline.cluster
    expected, timings = Expected(), Timings()
    victim_key, timings.partitions = busiest_primary(pipeline)
    victim = cluster.primary_of(victim_key)
    redis = make_redis_for(cluster.url)
    async with httpx.AsyncClient(base_url=pipeline.api, headers={"Authorization": f"Bearer {API_KEY}"},
                                 timeout=60) as client:
        posted = await post_open_loop(client, tag, expected, lambda: kill_and_revive(cluster, victim_key, victim,
                                                                                      timings))
        await wait_settled(pipeline, redis, expected, SETTLED_WITHIN_S)
        timings.settled_s = timings.since_kill()
        redelivered = assert_exactly_once(pipeline, expected, await counted(pipeline, redis, expected.customers()))
        await assert_lists_agree_with_states(pipeline, client, redis, expected.customers())
        await assert_healthy_without_restart(pipeline)
    await redis.aclose()
    log.warning("failover of primary %d (serving %s): promoted after %.1fs, revived after %.1fs more; every "
                "accepted event counted and action delivered %.1fs after the kill; %d POSTs, answers %s; "
                "%d webhooks sent again (same id); notifier restarts: %s", victim.port, timings.partitions,
                timings.promoted_s, timings.revived_s, timings.settled_s, posted, dict(expected.statuses),
                redelivered, pipeline.notifier.exits)
    assert set(expected.statuses) <= {202, 503}, expected.statuses  # an outage is a 503, never a 500
    assert len(expected.actions) >= 2 * (POSTS_BEFORE_KILL + POSTS_AFTER_REVIVE)
    assert redelivered <= 32  # webhooks are at least once: only what was in flight at the kill (the concurrency)


def busiest_primary(p: Pipeline) -> tuple[str, list[int]]:
    """A key of the primary serving the most scorer partitions, and those partitions."""
    served: dict[int, list[int]] = {}
    for n in range(PARTITIONS):
        served.setdefault(p.cluster.primary_of(p.settings.keys.partition(n).epoch()).port, []).append(n)
    partitions = max(served.values(), key=len)
    return p.settings.keys.partition(partitions[0]).epoch(), partitions


@dataclass
class Timings:
    killed_at: float = 0.0
    partitions: list[int] = field(default_factory=list)
    promoted_s: float = 0.0
    revived_s: float = 0.0
    settled_s: float = 0.0

    def since_kill(self) -> float:
        return time.monotonic() - self.killed_at


def kill_and_revive(cluster: RedisClusterProcesses, key: str, victim: ClusterNode, timings: Timings) -> None:
    """kill -9 the primary of `key`, wait for its replica's promotion, start it again (a replica now)."""
    timings.killed_at = time.monotonic()
    cluster.kill_primary_of(key)
    cluster.wait_failed_over(key)
    timings.promoted_s = time.monotonic() - timings.killed_at
    cluster.revive(victim)
    timings.revived_s = time.monotonic() - timings.killed_at - timings.promoted_s


async def post_open_loop(client: httpx.AsyncClient, tag: str, expected: Expected,
                         failover: Any) -> int:
    """POST one unit every 1/RATE_PER_S s (not waiting for answers); after POSTS_BEFORE_KILL run
    `failover` (blocking: in a thread) and go on until POSTS_AFTER_REVIVE more after it ended."""
    pending: set[asyncio.Task[None]] = set()
    failing: asyncio.Task[None] | None = None
    after_revive = 0
    n = 0
    for n in range(MAX_POSTS):
        if n == POSTS_BEFORE_KILL:
            failing = asyncio.create_task(asyncio.to_thread(failover))
        if failing is not None and failing.done():
            failing.result()
            after_revive += 1
            if after_revive > POSTS_AFTER_REVIVE:
                break
        events, actions = unit(tag, n)
        task = asyncio.create_task(_post_and_note(client, expected, events, actions))
        pending.add(task)
        task.add_done_callback(pending.discard)
        await asyncio.sleep(1 / RATE_PER_S)
    assert failing is not None and failing.done(), "the failover did not end within the poster's bound"
    await asyncio.gather(*pending)
    return n


async def _post_and_note(client: httpx.AsyncClient, expected: Expected, events: list[dict[str, Any]],
                         actions: dict[str, str]) -> None:
    note(expected, events, actions, await post(client, events))


async def assert_healthy_without_restart(p: Pipeline) -> None:
    """/readyz of the API and /healthz of both scorers answer 200, and none of them was restarted."""
    urls = [f"{p.api}/readyz"] + [f"http://127.0.0.1:{port}/healthz" for port in p.scorer_ports]
    deadline = time.monotonic() + 60
    while not all(_answers_200(url) for url in urls):
        assert time.monotonic() < deadline, f"not healthy again: {[(u, _answers_200(u)) for u in urls]}\n{p.logs()}"
        await asyncio.sleep(0.5)
    assert {name: proc.poll() for name, proc in p.procs.items()} == dict.fromkeys(p.procs)

