"""A realistic synthetic stream for `fatigue demo`: profiles, touches and responses.

Deterministic for a seed. Customers follow one of four personas, so a new user sees every kind
of alert: over-contacted (throttle), neglected (re_engage), healthy, and quiet-but-fine.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

REPS = ("alice", "bo", "chen", "dana", "eli", "fang")
CHANNELS = ("email", "email", "email", "phone", "sms", "wecom", "wechat", "meeting", "visit", "push")
TOUCH_KINDS = ("value", "value", "promo", "promo", "service", "transactional")
STAGE_BY_PERSONA = {
    "over_contacted": ("prospect", "intent", "negotiation", "customer"),
    "neglected": ("lead", "prospect", "intent", "negotiation"),
    "healthy": ("customer", "loyal", "onboarding"),
    "quiet": ("loyal",),
}
PERSONA_WEIGHTS = (("over_contacted", 0.15), ("neglected", 0.2), ("healthy", 0.5), ("quiet", 0.15))


@dataclass
class DemoCustomer:
    customer_id: str
    persona: str
    profile: dict[str, Any]


def _persona(rng: random.Random) -> str:
    names = [name for name, _ in PERSONA_WEIGHTS]
    weights = [weight for _, weight in PERSONA_WEIGHTS]
    return rng.choices(names, weights)[0]


def _touch_days_ago(persona: str, rng: random.Random) -> list[float]:
    if persona == "over_contacted":
        return sorted((rng.uniform(0.1, 28) for _ in range(rng.randint(14, 20))), reverse=True)
    if persona == "neglected":
        last = rng.uniform(12, 45)
        return sorted((last + rng.uniform(0, 30) for _ in range(rng.randint(1, 4))), reverse=True)
    if persona == "healthy":
        return sorted((rng.uniform(0.2, 25) for _ in range(rng.randint(3, 8))), reverse=True)
    return sorted((rng.uniform(5, 60) for _ in range(rng.randint(1, 2))), reverse=True)


def generate(customers: int, seed: int, now: datetime) -> tuple[list[DemoCustomer], list[dict[str, Any]]]:
    """Customers with profiles, and their events oldest first (as upstream systems would post them)."""
    rng = random.Random(seed)  # noqa: S311 - synthetic data, not security
    people: list[DemoCustomer] = []
    events: list[tuple[datetime, dict[str, Any]]] = []
    for n in range(customers):
        persona = _persona(rng)
        cid = f"cust-{n:04d}"
        profile = {
            "tier": rng.choice("AABBBCC"),
            "stage": rng.choice(STAGE_BY_PERSONA[persona]),
            "timezone": rng.choice(("Asia/Shanghai", "Europe/Berlin", "America/New_York")),
            "owner_rep_id": rng.choice(REPS),
        }
        people.append(DemoCustomer(cid, persona, profile))
        for i, days_ago in enumerate(_touch_days_ago(persona, rng)):
            at = now - timedelta(days=days_ago)
            channel = rng.choice(CHANNELS)
            touch_id = f"{cid}-t{i}"
            events.append((at, _event(touch_id, "touch", cid, channel, at, rng.choice(TOUCH_KINDS),
                                      rep_id=profile["owner_rep_id"])))
            answer_rate = 0.45 if persona == "over_contacted" else 0.5
            if rng.random() < answer_rate:
                replied = at + timedelta(hours=rng.uniform(0.5, 72))
                if replied < now:
                    kind = rng.choice(("reply", "open", "click", "reply"))
                    events.append((replied, _event(f"{cid}-r{i}", "response", cid, channel, replied, kind,
                                                   in_reply_to=touch_id)))
    events.sort(key=lambda pair: pair[0])
    return people, [body for _, body in events]


def _event(event_id: str, type_: str, cid: str, channel: str, at: datetime, kind: str, **extra: str) -> dict[str, Any]:
    return {"event_id": event_id, "type": type_, "customer_id": cid, "channel": channel,
            "occurred_at": at.isoformat(timespec="seconds"), "kind": kind, **extra}
