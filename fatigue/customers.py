"""`fatigue customers list LIST`: the lists reps work from, read from Redis like the API reads them;
`fatigue customers reindex`: every stored customer put on the list its state says;
`fatigue customers show ID [--state]`: one customer's snapshot (computed now from the stored state, as
`GET /v1/customers/{id}` does) or the stored state itself, as indented JSON.

Uses REDIS_URL, FATIGUE_REDIS_PREFIX and FATIGUE_PARTITIONS (services/settings.py `CommonSettings`), the
shared readers (services/customer_lists.py, services/snapshots.py) and the policy in force for the API
(the stored one, else the packaged default) for `next allowed`. Same items, order and cursor as
`GET /v1/customers?list=…`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import IO, Any

from services.customer_lists import InvalidCursor, ListReader, list_item
from services.errors import FatigueError, PolicyError, StoreUnavailable
from services.partitions import refuse_while_repartitioning
from services.policy.model import Policy, default_policy
from services.policy.store import PolicySource
from services.redaction import mask_url
from services.redisio import REDIS_ERRORS, make_redis
from services.settings import CommonSettings
from services.snapshots import CustomerReader, SnapshotUnreadable


class BadCursor(FatigueError):
    """`--cursor` is not one this list gave out."""

    operator_action = "Start again without --cursor, or pass the `next cursor` printed by the page before."


@dataclass(frozen=True)
class ListOptions:
    name: str
    owner_rep_id: str | None = None
    tier: str | None = None
    stage: str | None = None
    limit: int = 50
    cursor: str | None = None
    all_pages: bool = False
    json: bool = False


async def list_customers(settings: CommonSettings, options: ListOptions, out: IO[str]) -> None:
    from ingest.customer_views import explain

    redis = make_redis(settings)
    try:
        reader = ListReader(redis, settings.keys, settings.partitions)
        customers = CustomerReader(redis, settings.keys, settings.partitions)
        policy = await _policy(PolicySource(redis, settings.keys))
        cursor, shown = options.cursor, 0
        while True:
            page = await reader.page(options.name, owner_rep_id=options.owner_rep_id, tier=options.tier,
                                     stage=options.stage, limit=options.limit, cursor=cursor)
            now_ms = int(datetime.now(UTC).timestamp() * 1000)
            states = await customers.states([(c, p) for c, _, p in page.members])
            items = [list_item(c, explain(states[c], c, policy, now_ms), policy, now_ms)
                     for c, _, _ in page.members if c in states]
            out.writelines(_json_line(i) if options.json else _line(i) for i in items)
            shown += len(items)
            cursor = page.next_cursor
            if cursor is None or not options.all_pages:
                break
        if not options.json:
            noun = "customer" if shown == 1 else "customers"
            out.write(f"{shown} {noun} on {options.name}" + (f"; next cursor: {cursor}\n" if cursor else "\n"))
    except InvalidCursor as exc:
        raise BadCursor(f"--cursor: {exc}") from exc
    except REDIS_ERRORS as exc:
        raise redis_unavailable(settings, exc) from exc
    finally:
        await redis.aclose()


async def reindex(settings: CommonSettings, out: IO[str], batch: int = 500) -> int:
    """Every stored customer state's list entry, written as a scorer writes it. Each partition is
    claimed first (its epoch bumped): a scorer owning it is fenced, gives it up and takes it back
    with what this wrote, instead of overwriting it from its cache."""
    from scorer.reindex import reindex_partition

    redis = make_redis(settings)
    try:
        seen, moved = 0, 0
        for partition in range(settings.partitions):
            read, written = await reindex_partition(redis, settings.keys, partition, batch)
            seen, moved = seen + read, moved + written
        out.write(f"{seen} customer states read; {moved} list entries written or moved\n")
        return moved
    except REDIS_ERRORS as exc:
        raise redis_unavailable(settings, exc) from exc
    finally:
        await redis.aclose()


async def migrate(settings: CommonSettings, group: str, out: IO[str]) -> None:
    """Move the state of earlier versions to the per-partition layout (scorer/migrate.py)."""
    from scorer.migrate import migrate as move

    redis = make_redis(settings)
    try:
        policy = await _policy(PolicySource(redis, settings.keys))
        done = await move(redis, settings.keys, settings.partitions, group, policy,
                          int(datetime.now(UTC).timestamp() * 1000))
        out.write(f"{done.states} customer states moved to {settings.partitions} partitions"
                  f"{f' ({done.unreadable} unreadable, moved as they were)' if done.unreadable else ''}; "
                  f"{done.offsets} stored offsets moved; {done.deleted} old keys deleted\n")
    except REDIS_ERRORS as exc:
        raise redis_unavailable(settings, exc) from exc
    finally:
        await redis.aclose()


async def show(settings: CommonSettings, customer_id: str, out: IO[str], *, state: bool = False) -> bool:
    """Print one customer's snapshot (computed now from the stored state) or, with `state`, the stored
    state; False when none is stored. A value that does not decode is an UnreadableValue naming why."""
    from ingest.customer_views import explain, state_document

    redis = make_redis(settings)
    customers = CustomerReader(redis, settings.keys, settings.partitions)
    try:
        payload = await customers.state(customer_id)
        policy = await _policy(PolicySource(redis, settings.keys))
    except SnapshotUnreadable as exc:
        raise UnreadableValue(str(exc)) from exc
    except REDIS_ERRORS as exc:
        raise redis_unavailable(settings, exc) from exc
    finally:
        await redis.aclose()
    if payload is None:
        partition = customers.partition_of(customer_id)
        out.write(f"no state stored for customer {customer_id!r} (partition {partition}, key "
                  f"{settings.keys.partition(partition).states()})\n")
        return False
    try:
        document = state_document(payload, customer_id) if state else \
            explain(payload, customer_id, policy, int(datetime.now(UTC).timestamp() * 1000))
    except SnapshotUnreadable as exc:
        raise UnreadableValue(str(exc)) from exc
    out.write(json.dumps(document, ensure_ascii=False, indent=2, sort_keys=False) + "\n")
    return True


class UnreadableValue(FatigueError):
    """A stored value does not decode (corrupt, hand-written, or from a newer version)."""

    operator_action = "Check the value with redis-cli; a newer version's dictionary may be missing from this one."


def redis_unavailable(settings: CommonSettings, exc: Exception) -> StoreUnavailable:
    return StoreUnavailable(f"Redis at {mask_url(settings.redis_url)} did not answer: {exc}")


async def _policy(source: PolicySource) -> Policy:
    try:
        return (await source.current(default_policy()))[1]
    except PolicyError:
        return default_policy()


def _when(ms: int | None) -> str:
    return "-" if ms is None else datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="minutes")[:16] + "Z"


def _line(item: dict[str, Any]) -> str:
    step = item["next_step"]
    best = step.get("best_time") or {}
    how = " ".join(x for x in (step.get("channel"), best.get("local"), best.get("timezone")) if x) or "-"
    rules = ",".join(r["rule"] for r in item["reasons"]) or "-"
    since = (item.get("overdue_since") or item.get("since") or "-")[:16]
    return (f"{item['customer_id']:<24} rep {item.get('owner_rep_id') or '-':<10} "
            f"{item.get('tier') or '-'}/{item.get('stage') or '-':<12} since {since:<16}  "
            f"next {_when(item['next_allowed_ms']):<17}  via {how:<28}  {rules}\n")


def _json_line(item: dict[str, Any]) -> str:
    return json.dumps(item, ensure_ascii=False, separators=(",", ":")) + "\n"


async def not_repartitioning(settings: CommonSettings) -> None:
    """RepartitionInProgress (exit status 2, naming the command that finishes it) while `fatigue
    repartition` moves customers between partitions: none of these commands reads or writes them then."""
    redis = make_redis(settings)
    try:
        await refuse_while_repartitioning(redis, settings.keys)
    finally:
        await redis.aclose()
