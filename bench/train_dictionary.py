"""Train the zstd dictionary the scorer compresses stored states and decision views with.

    python -m bench.train_dictionary                 # writes services/zstd_dictionaries/fatigue-<next>.zdict
    python -m bench.train_dictionary --check         # how the current dictionary does on fresh customers

The samples are this project's own synthetic customers, run through the scorer's Processor exactly as
the live scorer runs them (default policy, batches of 500, the memory store of bench/edge.py), so they
are the documents the scorer writes: states and decision views of customers with 1 to 60 events over the
last 1 to 90 days, on every channel and kind of the contract, half of them with a profile (owner,
tier, stage, time zone). Ids are random (UUIDs, CRM-like ids) so the dictionary learns the structure
the documents share, not particular customers. Nothing of a user's data is in it.

A new dictionary is a new file with a new name (an existing file is never overwritten: values stored
with it would become unreadable). Keep every old one shipped for as long as values compressed with it
may still be stored (services/stored_values.py reads a frame's dictionary by id), and point
`CURRENT_DICTIONARY` at the new one to write with it.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bench.dataset import partition_of
from bench.edge import EVENTS, PROFILES, make_processor, process_all
from ingest.accept import envelope_records
from scorer.core.state_codec import encode_state
from scorer.decoding import Record
from scorer.state_values import state_of_value
from services import stored_values
from services.contract import Channel, EventIn, ProfileEnvelope, ProfileIn, ResponseKind, Stage, Tier, TouchKind, encode

DICTIONARY_BYTES = 16 * 1024
"""Measured against 32 and 64 KiB on these documents: no smaller frames, slower to load."""

PARTITIONS = 6


def customer_id(rng: random.Random) -> str:
    style = rng.randrange(3)
    if style == 0:
        return str(uuid.UUID(int=rng.getrandbits(128)))
    if style == 1:
        return f"{rng.choice(['cus', 'acct', 'lead', 'contact'])}_{rng.getrandbits(48):012x}"
    return f"{rng.choice(['003', '001', '00Q'])}{rng.getrandbits(60):015X}"[:18]


def make_records(customers: int, seed: int, now: datetime) -> list[Record]:
    """Events and profiles of `customers` synthetic customers, as topic records in time order."""
    rng = random.Random(seed)
    events: list[tuple[datetime, EventIn]] = []
    profiles: list[tuple[str, bytes]] = []
    reps = [f"rep-{rng.getrandbits(32):08x}" for _ in range(50)]
    zones = ["Asia/Shanghai", "Europe/Berlin", "America/New_York", "UTC", "Asia/Singapore", "America/Sao_Paulo"]
    for _ in range(customers):
        cid = customer_id(rng)
        if rng.random() < 0.5:
            profile = ProfileIn(tier=rng.choice(list(Tier)), stage=rng.choice(list(Stage)),
                                timezone=rng.choice(zones), owner_rep_id=rng.choice(reps))
            profiles.append((cid, encode(ProfileEnvelope(customer_id=cid, updated_at=now, profile=profile))))
        span = timedelta(days=rng.uniform(1, 90))
        for _ in range(rng.choice([1, 2, 3, 5, 8, 10, 10, 15, 25, 40, 60])):
            at = now - timedelta(minutes=1) - span * rng.random()
            touch = rng.random() < 0.7
            body = {
                "event_id": uuid.UUID(int=rng.getrandbits(128)).hex, "type": "touch" if touch else "response",
                "customer_id": cid, "channel": rng.choice(list(Channel)).value, "occurred_at": at.isoformat(),
                "kind": rng.choice(list(TouchKind) if touch else list(ResponseKind)[:5]).value,
            }
            if touch and rng.random() < 0.5:
                body["rep_id"] = rng.choice(reps)
            events.append((at, EventIn.model_validate(body)))
    events.sort(key=lambda pair: pair[0])
    encoded = envelope_records([e for _, e in events], "train", now)
    offsets: dict[tuple[str, int], int] = {}
    out = []
    for topic, pairs in ((PROFILES, profiles), (EVENTS, [(k.decode(), v or b"") for k, v in encoded])):
        for key, value in pairs:
            partition = partition_of(key.encode(), PARTITIONS)
            offset = offsets.get((topic, partition), 0)
            offsets[(topic, partition)] = offset + 1
            out.append(Record(topic, partition, offset, value, key.encode()))
    return out


async def documents(customers: int, seed: int) -> list[bytes]:
    """The payload of every state (MessagePack, scorer/core/state_codec.py) and decision view (JSON)
    the scorer writes for these customers, before compression."""
    now = datetime.now(UTC)
    processor, store = make_processor(int(now.timestamp() * 1000), stored_values.ValueEncoder("json"))
    await process_all(processor, make_records(customers, seed, now), 500)
    states = [encode_state(state_of_value(v)) for p in store.partitions.values() for v in p.states.values()]
    return states + [view for p in store.partitions.values() for view in p.views.values()]


def report(dictionary: object, docs: list[bytes]) -> str:
    zstd = stored_values.zstd
    compressor = zstd.ZstdCompressor(stored_values.COMPRESSION_LEVEL, zstd_dict=dictionary)
    started = time.perf_counter()
    frames = [compressor.compress(d, zstd.ZstdCompressor.FLUSH_FRAME) for d in docs]
    per = (time.perf_counter() - started) / len(docs) * 1e6
    return (f"{len(docs):,} payloads: median {statistics.median(map(len, docs)):,.0f} B, "
            f"compressed {statistics.median(map(len, frames)):,.0f} B "
            f"(base64 {statistics.median(4 * ((len(f) + 2) // 3) for f in frames):,.0f} B), {per:.1f} µs each")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--name", help="the new dictionary's name (default: fatigue-<one more than the highest>)")
    parser.add_argument("--customers", type=int, default=4000)
    parser.add_argument("--check", action="store_true", help="only report how the shipped dictionary does")
    args = parser.parse_args()
    folder = Path(stored_values.__file__).parent / "zstd_dictionaries"
    fresh = asyncio.run(documents(1000, seed=99))
    if args.check:
        current = folder / f"{args.name or stored_values.CURRENT_DICTIONARY}.zdict"
        print(f"{current.name}: {report(stored_values.zstd.ZstdDict(current.read_bytes()), fresh)}")
        return
    numbers = [int(p.stem.removeprefix("fatigue-")) for p in folder.glob("fatigue-*.zdict")
               if p.stem.removeprefix("fatigue-").isdigit()]
    target = folder / f"{args.name or f'fatigue-{max(numbers, default=0) + 1}'}.zdict"
    if target.exists():
        raise SystemExit(f"{target} exists: values stored with it would become unreadable; pick a new --name")
    samples = asyncio.run(documents(args.customers, seed=1))
    random.Random(7).shuffle(samples)
    dictionary = stored_values.zstd.train_dict(samples, DICTIONARY_BYTES)
    target.write_bytes(dictionary.dict_content)
    print(f"wrote {target} (id {dictionary.dict_id}, {len(dictionary.dict_content):,} B) from {len(samples):,} samples;"
          f" set CURRENT_DICTIONARY in services/stored_values.py to {target.stem!r} to write with it")
    print(f"on fresh customers: {report(dictionary, fresh)}")


if __name__ == "__main__":
    main()
