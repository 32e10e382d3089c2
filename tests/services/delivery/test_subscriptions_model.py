"""The subscription record: filters, rotation overlap, and reading records written before them."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from services.delivery.subscriptions import Filters, Subscription, changed

ACTION = {"type": "fatigue.throttle", "customer_id": "c9", "owner_rep_id": "alice",
          "profile": {"tier": "A", "stage": "negotiation"}}


@pytest.mark.parametrize(
    ("filters", "wanted"),
    [
        (Filters(), True),
        (Filters(tiers=["A"]), True),
        (Filters(tiers=["B", "C"]), False),
        (Filters(stages=["negotiation"], owner_rep_ids=["alice"]), True),
        (Filters(owner_rep_ids=["bo"]), False),
        (Filters(customer_ids=["c1", "c9"]), True),
    ],
)
def test_filters(filters: Filters, wanted: bool) -> None:
    sub = Subscription("s", "https://x.test/h", ["fatigue.throttle"], "whsec_x", filters=filters)
    assert sub.wants_action(ACTION) is wanted
    assert not sub.wants_action({**ACTION, "type": "fatigue.re_engage"})


def test_rotated_secrets_sign_until_they_expire() -> None:
    now = datetime(2026, 11, 23, tzinfo=UTC)
    sub = Subscription("s", "u", [], "whsec_new", previous_secrets=[
        {"secret": "whsec_old", "expires_at": (now + timedelta(hours=1)).isoformat()},
        {"secret": "whsec_older", "expires_at": (now - timedelta(hours=1)).isoformat()},
    ])
    assert sub.signing_secrets(now) == ["whsec_new", "whsec_old"]


def test_records_written_before_the_new_fields_still_read() -> None:
    old = json.dumps({"id": "s", "url": "u", "events": ["fatigue.throttle"], "secret": "whsec_x",
                      "created_at": "2026-11-01T00:00:00+00:00"})
    sub = Subscription.from_json(old)
    assert (sub.format, sub.filters, sub.rate_limit_per_minute) == ("standard", Filters(), None)
    assert Subscription.from_json(sub.to_json()) == sub


def test_records_written_before_mentions_read_without_any() -> None:
    old = json.dumps({"id": "s", "url": "u", "events": ["fatigue.throttle"], "secret": "whsec_x",
                      "created_at": "2026-11-01T00:00:00+00:00", "format": "slack", "digest": None})
    sub = Subscription.from_json(old)
    assert sub.mentions == {} and sub.format == "slack"
    assert Subscription.from_json(sub.to_json()) == sub


def test_changed_replaces_mentions_as_a_whole_and_none_clears_them() -> None:
    sub = Subscription("s", "u", ["fatigue.throttle"], "whsec_x", format="slack")
    given = {"alice": "U024BE7LH", "bob": "U0BOB"}
    with_mentions = changed(sub, {"mentions": given})
    assert with_mentions.mentions == given and sub.mentions == {}
    given["carol"] = "U0CAROL"
    assert "carol" not in with_mentions.mentions  # a copy: the caller's dict does not leak in
    assert Subscription.from_json(with_mentions.to_json()).mentions == {"alice": "U024BE7LH", "bob": "U0BOB"}
    assert changed(with_mentions, {"mentions": {"carol": "U0CAROL"}}).mentions == {"carol": "U0CAROL"}
    assert changed(with_mentions, {"description": "x"}).mentions == with_mentions.mentions
    assert changed(with_mentions, {"mentions": None}).mentions == {}
