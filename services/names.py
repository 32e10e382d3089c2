"""The one place for topic names, Redis keys, HTTP header names and event type names.

Nothing else in the code base spells these strings. Units are in names (`_ms`, `_s`).
"""

from __future__ import annotations

import zlib

# ---- Kafka topics (prefix comes from settings: FATIGUE_TOPIC_PREFIX, default "fatigue.") ----
EVENTS_TOPIC = "events.v1"  # touches and responses, keyed by customer_id
PROFILES_TOPIC = "profiles.v1"  # customer profiles, keyed by customer_id, compacted
ACTIONS_TOPIC = "actions.v1"  # throttle / re_engage / recovered, keyed by customer_id
DEAD_LETTER_TOPIC = "deadletter.v1"  # records a stage could not process, with why (services/deadletter.py)
INTAKE_TOPIC = "intake.v1"  # contract-v1 events from upstream Kafka producers, keyed by customer_id (fatigue intake)


def topic(prefix: str, name: str) -> str:
    return f"{prefix}{name}"


# ---- Action (webhook event) types ----
ACTION_THROTTLE = "fatigue.throttle"
ACTION_RE_ENGAGE = "fatigue.re_engage"
ACTION_RECOVERED = "fatigue.recovered"
ACTION_TYPES = (ACTION_THROTTLE, ACTION_RE_ENGAGE, ACTION_RECOVERED)
WITHHELD_SUPERSEDED = "superseded"
"""A later transition of the same customer, made before anything was sent, says where they are."""
WITHHELD_ENDED = "ended"
"""The situation ended silently before it could be told (a to_activate a later touch ended)."""
WITHHELD_UNSEEN = "unseen"
"""A recovery from a throttle the rep was never told of (history)."""
WITHHELD_REASONS = (WITHHELD_SUPERSEDED, WITHHELD_ENDED, WITHHELD_UNSEEN)
"""Why the scorer did not send a transition (scorer/core/delivery.py; fatigue_scorer_actions_withheld_total)."""
ACTION_DIGEST = "fatigue.digest"
"""Made by the notifier, never on the actions topic: one rep's alerts over a storm limit, in one message."""

# ---- Customer lists reps work from (the lifecycle's non-normal states, docs/api.md) ----
LIST_THROTTLED = "throttled"  # over-contacted or complained: a time-bound throttle
LIST_COOLING_OFF = "cooling_off"  # fatigue signals: pause until they respond or have rested
LIST_TO_ACTIVATE = "to_activate"  # neglected, gone quiet or rested: reach out
CUSTOMER_LISTS = (LIST_COOLING_OFF, LIST_TO_ACTIVATE, LIST_THROTTLED)

# ---- Redis keys (prefix from settings: FATIGUE_REDIS_PREFIX, default "fatigue:") ----

CLUSTER_DELIVERY_SHARDS = 16
"""On a Redis Cluster, webhook deliveries are spread over this many shards, each under its own hash
tag (see RedisKeys). Changing it strands the deliveries of the shards that go away: drain first."""


class PartitionKeys:
    """The keys of one Kafka partition's customers (the scorer's state: docs/architecture.md), all under
    the hash tag `{p<N>}`: on a Redis Cluster they share one slot, so one script commits a partition's
    batch atomically there as on a single Redis."""

    def __init__(self, prefix: str, partition: int) -> None:
        self.partition = partition
        self.tag = f"{{p{partition}}}"
        self._base = f"{prefix}{self.tag}:"

    def states(self) -> str:
        """Hash customer_id -> the scorer's state (services/stored_values.py says how it is stored)."""
        return f"{self._base}state"

    def views(self) -> str:
        """Hash customer_id -> the compact decision view the pre-send decision reads (scorer/core/views.py)."""
        return f"{self._base}view"

    def customer_list_entries(self) -> str:
        """Hash customer_id -> JSON of the customer's entry on the lists reps work from, as last written."""
        return f"{self._base}list:entries"

    def customer_list(self, name: str) -> str:
        """Sorted set customer_id -> urgency score (ascending = most urgent) of one list, this partition's."""
        return f"{self._base}list:{name}"

    def customer_list_by(self, name: str, field: str, value: str) -> str:
        """The same, only customers whose profile has `field` (`rep`, `tier`, `stage`) = `value`."""
        return f"{self._base}list:{name}:{field}:{value}"

    def due(self) -> str:
        """Sorted set customer_id -> when the scorer's timers fire for the customer (ms)."""
        return f"{self._base}due"

    def offsets(self) -> str:
        """Hash topic -> the last offset of this partition of the topic whose effects are stored."""
        return f"{self._base}offsets"

    def epoch(self) -> str:
        """Counter: bumped by every worker that becomes the partition's owner; every commit checks it."""
        return f"{self._base}epoch"

    def alerts(self) -> str:
        """Hash producer -> messages sent to reps for customers whose latest event came from it."""
        return f"{self._base}alerts"



class RedisKeys:
    """Every Redis key the system reads or writes, built from one prefix.

    Two layouts, chosen by REDIS_URL (`cluster`: a `redis+cluster://` URL, services/redis_url.py):

    - one Redis (`cluster=False`): `<prefix><name>`, the names this system always used;
    - a Redis Cluster (`cluster=True`): the keys one script or MULTI/EXEC touches together share a
      hash tag, so they share a slot (a Cluster refuses a script over several slots: CROSSSLOT):
      the policy and its version counter under `{<prefix>policy}`; each webhook delivery, with the
      status sets, dead-letter and held indexes and digest bookkeeping it moves through, under the
      tag of its shard `{<prefix>d<N>}` (N = CRC-32 of the delivery id mod CLUSTER_DELIVERY_SHARDS),
      so deliveries spread over CLUSTER_DELIVERY_SHARDS slots. Every other key of this part stands
      alone (one key per command, or several keys of independent work split per slot by the caller).

    The methods taking a `shard` name the copy of a per-status set in that shard; on one Redis there
    is one shard, 0. The scorer's keys are per Kafka partition, under its own hash tag on either kind
    of Redis (`partition`, `PartitionKeys`).
    """

    def __init__(self, prefix: str = "fatigue:", *, cluster: bool = False) -> None:
        self.prefix = prefix
        self.cluster = cluster

    # -- webhook deliveries: sharded on a Cluster, one shard (the historical names) on one Redis --

    @property
    def delivery_shards(self) -> int:
        """How many shards deliveries are spread over: CLUSTER_DELIVERY_SHARDS on a Cluster, else 1."""
        return CLUSTER_DELIVERY_SHARDS if self.cluster else 1

    def delivery_shard(self, delivery_id: str) -> int:
        """The shard of one delivery (stable across processes and versions: CRC-32, not hash())."""
        return zlib.crc32(delivery_id.encode()) % self.delivery_shards

    def _in_shard(self, shard: int) -> str:
        return f"{{{self.prefix}d{shard}}}:" if self.cluster else self.prefix

    def partition(self, partition: int) -> PartitionKeys:
        """The keys of one Kafka partition's customers (the scorer's state)."""
        return PartitionKeys(self.prefix, partition)

    def meta(self) -> str:
        """Hash: the partition count and key layout the stored state was written with (services/partitions.py)."""
        return f"{self.prefix}meta"

    def subscriptions(self) -> str:
        """Hash subscription id -> subscription JSON."""
        return f"{self.prefix}subscriptions"

    def dedup(self, producer: str, event_id: str) -> str:
        """Marks an event id already acknowledged by the ingest API (expires)."""
        return f"{self.prefix}dedup:{producer}:{event_id}"

    def delivered(self, action_id: str, subscription_id: str) -> str:
        """Marks an action already delivered to one subscription (expires)."""
        return f"{self.prefix}delivered:{subscription_id}:{action_id}"

    def delivery(self, delivery_id: str) -> str:
        """One webhook delivery (JSON, see services/delivery/store.py); id = its webhook-id. In the
        delivery's shard."""
        return f"{self._in_shard(self.delivery_shard(delivery_id))}delivery:{delivery_id}"

    def rate_window(self, subscription_id: str, minute: int) -> str:
        """Deliveries sent to one subscription in one clock minute (expires)."""
        return f"{self.prefix}rate:{subscription_id}:{minute}"

    def deliveries_due(self, shard: int) -> str:
        """Sorted set delivery id -> next attempt time (ms) of pending deliveries (or claim expiry)."""
        return f"{self._in_shard(shard)}deliveries:due"

    def deliveries_failed(self, shard: int) -> str:
        """Sorted set delivery id -> time (ms) it was dead-lettered."""
        return f"{self._in_shard(shard)}deliveries:failed"

    def deliveries_delivered(self, shard: int) -> str:
        """Sorted set delivery id -> time (ms) it was delivered (trimmed after the record TTL)."""
        return f"{self._in_shard(shard)}deliveries:delivered"

    def deliveries_failed_by_subscription(self, subscription_id: str, shard: int) -> str:
        """Sorted set delivery id -> time (ms) it was dead-lettered, one subscription's only (expires)."""
        return f"{self._in_shard(shard)}deliveries:failed:sub:{subscription_id}"

    def deliveries_in(self, status: str, shard: int) -> str:
        """The sorted set holding the deliveries of one status (pending, failed, delivered, digested)."""
        return {"pending": self.deliveries_due, "failed": self.deliveries_failed,
                "delivered": self.deliveries_delivered, "digested": self.deliveries_digested}[status](shard)

    def deliveries_held(self, subscription_id: str, shard: int) -> str:
        """Sorted set delivery id -> the due time (ms) it got when held back by the endpoint's open
        circuit; released (due now) when the circuit closes (expires)."""
        return f"{self._in_shard(shard)}deliveries:held:{subscription_id}"

    def deliveries_digested(self, shard: int) -> str:
        """Sorted set delivery id -> time (ms) it was folded into a digest (trimmed after the record TTL)."""
        return f"{self._in_shard(shard)}deliveries:digested"

    def endpoint_health(self, subscription_id: str) -> str:
        """Hash: one subscription's endpoint health (consecutive failures, circuit, last error)."""
        return f"{self.prefix}endpoint:{subscription_id}"

    def digest_admitted(self, subscription_id: str, owner_rep_id: str, window: int, shard: int) -> str:
        """Set of action ids sent one by one to a rep in one digest window (expires). In the shard of
        the window's digest delivery, as are the two below."""
        return f"{self._in_shard(shard)}digest:admitted:{subscription_id}:{owner_rep_id}:{window}"

    def digest_items(self, digest_id: str, shard: int) -> str:
        """Hash action id -> item JSON: the alerts folded into one digest; deleted once it is frozen."""
        return f"{self._in_shard(shard)}digest:items:{digest_id}"

    def digest_frozen(self, digest_id: str, shard: int) -> str:
        """Marks a digest whose content is fixed (it is being sent): later alerts go out on their own."""
        return f"{self._in_shard(shard)}digest:frozen:{digest_id}"

    # -- the policy stored through the API --

    def policy(self) -> str:
        """Hash of the policy stored through the API: version, yaml, sha256, updated_at."""
        return f"{{{self.prefix}policy}}" if self.cluster else f"{self.prefix}policy"

    def policy_version(self) -> str:
        """Counter: the version of the stored policy (INCR'd with every replacement; the scorer polls it).
        Written by one script with the hash: on a Cluster both are under the tag `{<prefix>policy}`."""
        return f"{{{self.prefix}policy}}:version" if self.cluster else f"{self.prefix}policy:version"

    # ---- intake (issue 12): identity map, adapters' rejected store, webhook replay guard ----

    def identity(self, digest: str) -> str:
        """customer id of one hashed email or phone (HMAC of `email:<addr>` / `phone:<E.164>`)."""
        return f"{self.prefix}identity:{digest}"

    def identities_of(self, customer_id: str) -> str:
        """Set of the identity digests one customer's profile holds (replaced and erased together)."""
        return f"{self.prefix}identities:{customer_id}"

    def identities_lock(self, customer_id: str) -> str:
        """Held (expiring) while one customer's identities are replaced or erased: the set and the
        identity keys live in different slots on a Cluster, so one writer at a time per customer."""
        return f"{self.prefix}identities-lock:{customer_id}"

    def adapter_rejected(self) -> str:
        """Stream of provider events no customer could be found for (GET /v1/adapters/rejected)."""
        return f"{self.prefix}adapters:rejected"

    def webhook_token(self, provider: str, token: str) -> str:
        """Marks a provider's signed token as used (Mailgun), so a replayed request is refused (expires)."""
        return f"{self.prefix}webhook-token:{provider}:{token}"


# ---- HTTP headers (Standard Webhooks) ----
HEADER_WEBHOOK_ID = "webhook-id"
HEADER_WEBHOOK_TIMESTAMP = "webhook-timestamp"
HEADER_WEBHOOK_SIGNATURE = "webhook-signature"
SECRET_PREFIX = "whsec_"  # noqa: S105 - a prefix, not a secret

# ---- HTTP headers (operations) ----
HEADER_REQUEST_ID = "X-Request-ID"
"""Taken from the request when sane, else generated; echoed in the response and in every log line."""

# ---- Kafka record headers / envelope ----
ENVELOPE_VERSION = 1

# ---- intake (issue 12) ----
HEADER_PRODUCER = "producer"
"""Kafka record header on the intake topic: the producer name event ids are unique within."""
ADAPTER_PRODUCER_PREFIX = "adapter:"
"""Producer of events a provider adapter made: `adapter:sendgrid`, `adapter:crm.hubspot`, …"""
