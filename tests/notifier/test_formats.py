"""Chat bot bodies and chat bot signatures, against the providers' documented shapes and algorithms."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from dataclasses import replace
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from notifier.chat_signing import dingtalk_sign, dingtalk_signed_url, feishu_sign, provider_secret
from notifier.delivery import build_request
from notifier.formats import CHAT_DIGEST_LINES, RENDERERS, Record, render
from services.actions import DIGEST_ITEMS_MAX, Action, Digest, webhook_body
from services.delivery.subscriptions import FORMATS, generate_secret
from services.errors import ConfigError
from services.names import ACTION_DIGEST, ACTION_RE_ENGAGE, ACTION_RECOVERED, ACTION_THROTTLE
from tests.notifier.helpers import make_action, make_digest, make_subscription

FOOTER = "fatigue.throttle · 2026-11-23T20:22:12.949Z · act_golden"
WHY = "frequency_cap: 13 (threshold 12, 30d)"


def throttle() -> Action:
    action = make_action("act_golden", customer_id="acme-042")
    action["at"] = "2026-11-23T20:22:12.949Z"
    action["owner_rep_id"] = "alice"
    action["reasons"] = [{"rule": "frequency_cap", "window": "30d", "observed": 13.0, "threshold": 12.0}]
    action["suggestion"] = "Pause non-transactional touches."
    action["pause_until"] = "2026-12-02T21:00:00.000Z"  # type: ignore[typeddict-unknown-key]
    return action


def re_engage() -> Action:
    action = make_action(type_=ACTION_RE_ENGAGE)
    action["status"], action["suggestion"] = "dormant", "Reach out."
    action["reasons"] = [{"rule": "cadence_overdue", "window": "since_last_touch", "observed": 12.5,
                          "threshold": 5.0, "detail": "no touch for 12.5 days"}]
    action["best_channel"] = "wechat"  # type: ignore[typeddict-unknown-key]
    action["best_time"] = {"local": "Thu 15:00", "timezone": "Asia/Shanghai"}  # type: ignore[typeddict-unknown-key]
    return action


def all_actions() -> list[Action]:
    recovered = make_action(type_=ACTION_RECOVERED)
    recovered["status"], recovered["reasons"], recovered["owner_rep_id"] = "normal", [], None
    return [throttle(), re_engage(), recovered]


# --- golden examples: one per format, the whole body -------------------------------------------------

MD_LINES = ["**What to do:** Pause non-transactional touches.", "**Why:**", f"• {WHY}",
            "**Customer:** acme-042", "**Owner rep:** alice", "**Until:** 2026-12-02T21:00:00.000Z"]

GOLDEN: dict[str, dict[str, Any]] = {
    "slack": {
        "text": "Pause outreach: acme-042 — Pause non-transactional touches.",
        "blocks": [
            {"type": "header", "text": {"type": "plain_text", "text": "Pause outreach: acme-042"}},
            {"type": "section", "text": {"type": "mrkdwn", "text": "\n".join(
                line.replace("**", "*") for line in MD_LINES)}},
            {"type": "context", "elements": [{"type": "mrkdwn", "text": FOOTER}]},
        ],
    },
    "teams": {
        "type": "message",
        "attachments": [{
            "contentType": "application/vnd.microsoft.card.adaptive",
            "contentUrl": None,
            "content": {
                "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                "type": "AdaptiveCard",
                "version": "1.4",
                "body": [
                    {"type": "TextBlock", "text": "Pause outreach: acme-042", "size": "Medium", "weight": "Bolder",
                     "wrap": True},
                    {"type": "TextBlock", "text": "Pause non-transactional touches.", "wrap": True},
                    {"type": "TextBlock", "text": f"- {WHY}", "wrap": True},
                    {"type": "FactSet", "facts": [
                        {"title": "Customer", "value": "acme-042"},
                        {"title": "Owner rep", "value": "alice"},
                        {"title": "Until", "value": "2026-12-02T21:00:00.000Z"},
                    ]},
                    {"type": "TextBlock", "text": FOOTER, "isSubtle": True, "size": "Small", "wrap": True},
                ],
            },
        }],
    },
    "wecom": {"msgtype": "markdown", "markdown": {"content": "\n".join(
        ["**Pause outreach: acme-042**", *MD_LINES, f"> {FOOTER}"])}},
    "feishu": {"msg_type": "interactive", "card": {
        "header": {"title": {"tag": "plain_text", "content": "Pause outreach: acme-042"}, "template": "red"},
        "elements": [
            {"tag": "div", "text": {"tag": "lark_md", "content": "\n".join(MD_LINES)}},
            {"tag": "note", "elements": [{"tag": "plain_text", "content": FOOTER}]},
        ],
    }},
    "dingtalk": {"msgtype": "markdown", "markdown": {
        "title": "Pause outreach: acme-042",
        "text": "\n\n".join(["#### Pause outreach: acme-042", *MD_LINES, f"> {FOOTER}"]),
    }},
}


@pytest.mark.parametrize("format_name", sorted(GOLDEN))
def test_golden_body(format_name: str) -> None:
    assert render(throttle(), format_name) == GOLDEN[format_name]


def test_every_format_has_a_renderer() -> None:
    assert set(RENDERERS) == set(FORMATS)


def test_standard_is_the_standard_webhooks_body() -> None:
    action = throttle()
    assert render(action, "standard") == webhook_body(action)


def test_unknown_format_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="carrier-pigeon"):
        render(throttle(), "carrier-pigeon")


# --- documented shapes, for every action type -------------------------------------------------------

def check_slack(body: dict[str, Any]) -> None:
    assert isinstance(body["text"], str) and body["text"]  # notification fallback
    header, section, context = body["blocks"]
    assert header["type"] == "header" and header["text"]["type"] == "plain_text"
    assert len(header["text"]["text"]) <= 150
    assert section["type"] == "section" and section["text"]["type"] == "mrkdwn"
    assert len(section["text"]["text"]) <= 3000
    assert context["type"] == "context" and all(e["type"] == "mrkdwn" for e in context["elements"])


def check_teams(body: dict[str, Any]) -> None:
    assert body["type"] == "message"
    [attachment] = body["attachments"]
    assert attachment["contentType"] == "application/vnd.microsoft.card.adaptive"
    card = attachment["content"]
    assert (card["type"], card["version"]) == ("AdaptiveCard", "1.4")
    assert {element["type"] for element in card["body"]} <= {"TextBlock", "FactSet"}
    for element in card["body"]:
        if element["type"] == "TextBlock":
            assert isinstance(element["text"], str)
        else:
            assert all(set(fact) == {"title", "value"} for fact in element["facts"])


def check_wecom(body: dict[str, Any]) -> None:
    assert body["msgtype"] == "markdown"
    assert set(body["markdown"]) == {"content"}
    assert len(body["markdown"]["content"].encode()) <= 4096


def check_feishu(body: dict[str, Any]) -> None:
    assert body["msg_type"] == "interactive"
    card = body["card"]
    assert card["header"]["title"]["tag"] == "plain_text"
    assert card["elements"][0]["tag"] == "div" and card["elements"][0]["text"]["tag"] == "lark_md"


def check_dingtalk(body: dict[str, Any]) -> None:
    assert body["msgtype"] == "markdown"
    assert set(body["markdown"]) == {"title", "text"}
    assert all(isinstance(v, str) and v for v in body["markdown"].values())


CHECKS = {"slack": check_slack, "teams": check_teams, "wecom": check_wecom, "feishu": check_feishu,
          "dingtalk": check_dingtalk}


@pytest.mark.parametrize("format_name", sorted(CHECKS))
@pytest.mark.parametrize("action", all_actions(), ids=lambda a: a["type"])
def test_documented_shape(format_name: str, action: Action) -> None:
    body = render(action, format_name)
    CHECKS[format_name](body)
    json.dumps(body)  # plain JSON types only


@pytest.mark.parametrize("format_name", sorted(CHECKS))
def test_re_engage_tells_the_best_channel_and_time(format_name: str) -> None:
    text = json.dumps(render(re_engage(), format_name), ensure_ascii=False)
    for expected in ("wechat", "Thu 15:00 Asia/Shanghai", "12.5", "threshold 5", "no touch for 12.5 days"):
        assert expected in text


@pytest.mark.parametrize("format_name", sorted(CHECKS))
def test_throttle_tells_until_when(format_name: str) -> None:
    assert "2026-12-02T21:00:00.000Z" in json.dumps(render(throttle(), format_name))


def test_long_texts_stay_within_the_provider_limits() -> None:
    action = throttle()
    action["customer_id"] = "c" * 200
    action["suggestion"] = "暂停联系" * 2000  # 24 000 bytes
    check_slack(render(action, "slack"))
    check_wecom(render(action, "wecom"))


@pytest.mark.parametrize("format_name", sorted(CHECKS))
def test_a_test_sample_says_so(format_name: str) -> None:
    action: dict[str, Any] = {**throttle(), "test": True}
    assert "[Test] Pause outreach: acme-042" in json.dumps(render(action, format_name))  # type: ignore[arg-type]
    assert "[Test]" not in json.dumps(render(throttle(), format_name))


def test_slack_text_is_escaped() -> None:
    action = throttle()
    action["suggestion"] = "call <@U123> & <!channel>"
    body = render(action, "slack")
    assert "<" not in json.dumps(body) and "&lt;@U123&gt; &amp; &lt;!channel&gt;" in body["text"]


# --- digests: one message for one rep's alerts beyond a storm limit ----------------------------------

DIGEST_FOOTER = "fatigue.digest · 2026-11-23T20:00:00Z – 2026-11-23T20:10:00Z · dig_test"  # noqa: RUF001
UNTIL = "until 2026-11-26T20:00:00Z"
FREQ = "frequency_cap: 6 (threshold 5, 7d)"


def mixed_digest() -> Digest:
    return make_digest({ACTION_THROTTLE: 8, ACTION_RE_ENGAGE: 4, ACTION_RECOVERED: 1})


def all_digests() -> list[Digest]:
    return [mixed_digest(), make_digest({ACTION_THROTTLE: 1}), make_digest(owner_rep_id=None),
            make_digest({ACTION_THROTTLE: 70})]


def test_slack_digest_golden_body() -> None:
    lines = [
        "*What to do:* 8 to pause, 4 to re-engage, 1 can resume",
        "*Customers:*",
        *(f"• cust-{n} — Pause outreach — {FREQ} — {UNTIL}" for n in range(1, 9)),
        f"• cust-9 — Re-engage — {FREQ}",
        f"• cust-10 — Re-engage — {FREQ}",
        "• … and 3 more",
        "*Owner rep:* rep-9",
    ]
    assert render(mixed_digest(), "slack") == {
        "text": "13 more customers need attention for rep-9 — 8 to pause, 4 to re-engage, 1 can resume",
        "blocks": [
            {"type": "header", "text": {"type": "plain_text", "text": "13 more customers need attention for rep-9"}},
            {"type": "section", "text": {"type": "mrkdwn", "text": "\n".join(lines)}},
            {"type": "context", "elements": [{"type": "mrkdwn", "text": DIGEST_FOOTER}]},
        ],
    }


@pytest.mark.parametrize("format_name", sorted(CHECKS))
@pytest.mark.parametrize("digest", all_digests(), ids=lambda d: f"{d['total']}-{d['owner_rep_id']}")
def test_digest_documented_shape(format_name: str, digest: Digest) -> None:
    body = render(digest, format_name)
    CHECKS[format_name](body)
    json.dumps(body)  # plain JSON types only
    assert DIGEST_FOOTER in json.dumps(body, ensure_ascii=False)


def test_digest_standard_is_the_standard_webhooks_body() -> None:
    digest = mixed_digest()
    body = render(digest, "standard")
    assert body == {"type": ACTION_DIGEST, "timestamp": "2026-11-23T20:10:00Z", "data": digest}


def test_digest_feishu_card_is_blue() -> None:
    assert render(mixed_digest(), "feishu")["card"]["header"]["template"] == "blue"


@pytest.mark.parametrize("format_name", sorted(CHECKS))
@pytest.mark.parametrize(("digest", "title"), [
    (make_digest(), "12 more customers need attention for rep-9"),
    (make_digest({ACTION_THROTTLE: 1}), "1 more customer needs attention for rep-9"),
    (make_digest(owner_rep_id=None), "12 more unassigned customers need attention"),
    (make_digest({ACTION_RECOVERED: 1}, owner_rep_id=None), "1 more unassigned customer needs attention"),
], ids=["plural", "singular", "unassigned", "unassigned-singular"])
def test_digest_title_counts_and_names_the_rep(format_name: str, digest: Digest, title: str) -> None:
    text = json.dumps(render(digest, format_name), ensure_ascii=False)
    assert title in text
    assert ("unassigned customers" in text) is (digest["owner_rep_id"] is None)


@pytest.mark.parametrize("format_name", sorted(CHECKS))
def test_digest_counts_by_type_and_lists_what_to_do(format_name: str) -> None:
    text = json.dumps(render(mixed_digest(), format_name), ensure_ascii=False)
    assert "8 to pause, 4 to re-engage, 1 can resume" in text
    assert f"cust-1 — Pause outreach — {FREQ} — {UNTIL}" in text
    assert f"cust-9 — Re-engage — {FREQ}" in text and f"cust-9 — Re-engage — {FREQ} — until" not in text


@pytest.mark.parametrize("format_name", sorted(CHECKS))
@pytest.mark.parametrize(("total", "more"), [
    (CHAT_DIGEST_LINES, None),  # every item fits: no "more" line
    (CHAT_DIGEST_LINES + 2, 2),  # cut for chat
    (DIGEST_ITEMS_MAX + 20, DIGEST_ITEMS_MAX + 20 - CHAT_DIGEST_LINES),  # cut for chat + omitted by the digest
])
def test_digest_lists_some_customers_and_counts_the_rest(format_name: str, total: int, more: int | None) -> None:
    digest = make_digest({ACTION_THROTTLE: total})
    assert digest["omitted"] == max(0, total - DIGEST_ITEMS_MAX)
    text = json.dumps(render(digest, format_name), ensure_ascii=False)
    assert f"cust-{CHAT_DIGEST_LINES} —" in text and f"cust-{CHAT_DIGEST_LINES + 1} —" not in text
    if more is None:
        assert "… and" not in text
    else:
        assert f"… and {more} more" in text


@pytest.mark.parametrize("format_name", sorted(CHECKS))
def test_a_test_digest_says_so(format_name: str) -> None:
    digest: dict[str, Any] = {**make_digest(), "test": True}
    assert "[Test] 12 more customers need attention for rep-9" in json.dumps(render(digest, format_name))  # type: ignore[arg-type]
    assert "[Test]" not in json.dumps(render(make_digest(), format_name))


def long_digest() -> Digest:
    """Full digest (50 items listed, 30 omitted), long customer ids and reasons, multi-byte text."""
    digest = make_digest({ACTION_THROTTLE: 80}, owner_rep_id="r" * 200)
    for n, item in enumerate(digest["items"]):
        item["customer_id"] = f"{n}-" + "c" * 300
        item["suggestion"] = "暂停联系" * 500
        item["reasons"] = [{"rule": "frequency_cap", "window": "30d", "observed": 13.0, "threshold": 12.0,
                            "detail": "最近三十天联系过多" * 300}] * 3
    assert len(digest["items"]) == DIGEST_ITEMS_MAX
    return digest


@pytest.mark.parametrize("format_name", sorted(CHECKS))
def test_long_digest_stays_within_the_provider_limits(format_name: str) -> None:
    body = render(long_digest(), format_name)
    CHECKS[format_name](body)
    text = json.dumps(body, ensure_ascii=False)
    assert "… and 70 more" in text  # the count of the rest survives the clipping
    assert "fatigue.digest · " in text


def test_slack_digest_text_is_escaped() -> None:
    digest = make_digest({ACTION_THROTTLE: 1})
    digest["items"][0]["customer_id"] = "<&>acme <@U123>"
    body = render(digest, "slack")
    assert "<" not in json.dumps(body)
    assert "• &lt;&amp;&gt;acme &lt;@U123&gt; — Pause outreach" in body["blocks"][1]["text"]["text"]


# --- mentions: the owner rep's chat user id, @-mentioned the provider's way ---------------------------

MENTIONS = {"alice": "U024BE7LH", "rep-9": "ou_7d8a6e6df7621556ce0d21922b676706ccs"}


def mention_records() -> list[tuple[Record, str, str]]:
    """(record, owner rep id, chat user id): an action of alice's and a digest of rep-9's."""
    return [(throttle(), "alice", MENTIONS["alice"]), (mixed_digest(), "rep-9", MENTIONS["rep-9"])]


def slack_mentions(body: dict[str, Any], owner: str, user_id: str) -> None:
    header, section, _ = body["blocks"]
    assert section["text"]["text"].startswith(f"<@{user_id}>\n*What to do:*")
    assert body["text"].startswith(f"<@{user_id}> ")  # the notification fallback names the rep too
    assert "<@" not in header["text"]["text"]  # plain_text: Slack would not parse it there


def teams_mentions(body: dict[str, Any], owner: str, user_id: str) -> None:
    card = body["attachments"][0]["content"]
    assert card["body"][1] == {"type": "TextBlock", "text": f"<at>{owner}</at>", "wrap": True}
    assert card["msteams"] == {"entities": [
        {"type": "mention", "text": f"<at>{owner}</at>", "mentioned": {"id": user_id, "name": owner}},
    ]}


def wecom_mentions(body: dict[str, Any], owner: str, user_id: str) -> None:
    assert body["markdown"]["content"].split("\n")[1] == f"<@{user_id}>"
    assert set(body) == {"msgtype", "markdown"}  # mentioned_list is for the text msgtype only


def feishu_mentions(body: dict[str, Any], owner: str, user_id: str) -> None:
    lark_md = body["card"]["elements"][0]["text"]["content"]
    assert lark_md.split("\n")[0] == f"<at id={user_id}></at>"


def dingtalk_mentions(body: dict[str, Any], owner: str, user_id: str) -> None:
    assert body["markdown"]["text"].split("\n\n")[1] == f"@{user_id}"
    assert body["at"] == {"atUserIds": [user_id], "isAtAll": False}


MENTION_CHECKS = {"slack": slack_mentions, "teams": teams_mentions, "wecom": wecom_mentions,
                  "feishu": feishu_mentions, "dingtalk": dingtalk_mentions}


def test_every_chat_format_has_a_mention_check() -> None:
    assert set(MENTION_CHECKS) == set(FORMATS) - {"standard"}


@pytest.mark.parametrize("format_name", sorted(MENTION_CHECKS))
@pytest.mark.parametrize(("record", "owner", "user_id"), mention_records(), ids=["action", "digest"])
def test_the_owner_rep_is_mentioned(format_name: str, record: Record, owner: str, user_id: str) -> None:
    body = render(record, format_name, MENTIONS)
    MENTION_CHECKS[format_name](body, owner, user_id)
    CHECKS[format_name](body)  # still the documented shape
    twice = ("slack", "dingtalk")  # Slack: section + fallback text; DingTalk: text + at.atUserIds
    assert json.dumps(body, ensure_ascii=False).count(user_id) == (2 if format_name in twice else 1)


def test_slack_golden_body_with_a_mention() -> None:
    golden = GOLDEN["slack"]
    section = golden["blocks"][1]["text"]["text"]
    assert render(throttle(), "slack", MENTIONS) == {
        "text": "<@U024BE7LH> " + golden["text"],
        "blocks": [golden["blocks"][0],
                   {"type": "section", "text": {"type": "mrkdwn", "text": "<@U024BE7LH>\n" + section}},
                   golden["blocks"][2]],
    }


def recovered_without_owner() -> Action:
    return all_actions()[2]


@pytest.mark.parametrize("format_name", sorted(FORMATS))
@pytest.mark.parametrize(("record", "mentions"), [
    (throttle(), {"bob": "U0BOB"}),  # the owner has no entry
    (throttle(), {}),
    (throttle(), None),
    (recovered_without_owner(), MENTIONS),  # no owner
    (make_digest(owner_rep_id=None), MENTIONS),  # unassigned customers
], ids=["no-entry", "empty", "none", "no-owner", "unassigned-digest"])
def test_nobody_is_mentioned_without_an_entry_for_the_owner(
    format_name: str, record: Record, mentions: dict[str, str] | None
) -> None:
    body = render(record, format_name, mentions)
    assert body == render(record, format_name)
    text = json.dumps(body)
    assert "<@" not in text and "<at" not in text and "msteams" not in text and "atUserIds" not in text


def test_standard_ignores_mentions() -> None:
    """Machines read owner_rep_id; the Standard Webhooks body stays the record."""
    assert render(throttle(), "standard", MENTIONS) == webhook_body(throttle())
    assert render(mixed_digest(), "standard", MENTIONS) == render(mixed_digest(), "standard")


def test_teams_mention_name_cannot_end_the_at_tag() -> None:
    action = throttle()
    action["owner_rep_id"] = "<b>ob</b>"
    card = render(action, "teams", {"<b>ob</b>": "bob@contoso.com"})["attachments"][0]["content"]
    assert card["body"][1]["text"] == "<at>bob/b</at>"
    assert card["msteams"]["entities"][0]["mentioned"] == {"id": "bob@contoso.com", "name": "bob/b"}


@pytest.mark.parametrize("format_name", sorted(MENTION_CHECKS))
def test_long_messages_keep_the_mention(format_name: str) -> None:
    digest = long_digest()
    user_id = "U" + "9" * 199
    body = render(digest, format_name, {str(digest["owner_rep_id"]): user_id})
    CHECKS[format_name](body)
    assert user_id in json.dumps(body, ensure_ascii=False)


def test_the_notifier_renders_with_the_subscriptions_mentions() -> None:
    sub = replace(make_subscription(), format="dingtalk", mentions={"alice": "manager7675"})
    request = build_request(sub, throttle(), "msg_1", 1_714_557_600.0)
    body = json.loads(request.body)
    assert body == render(throttle(), "dingtalk", {"alice": "manager7675"})
    assert body["at"] == {"atUserIds": ["manager7675"], "isAtAll": False}


# --- chat signatures ---------------------------------------------------------------------------------

def test_feishu_sign_follows_the_documented_algorithm() -> None:
    """Feishu: HMAC-SHA256 with key `timestamp + "\\n" + secret` over an empty message, base64."""
    timestamp_s, secret = 1599360473, "test-secret"
    expected = base64.b64encode(hmac.new(f"{timestamp_s}\n{secret}".encode(), b"", hashlib.sha256).digest())
    assert feishu_sign(secret, timestamp_s) == expected.decode()
    # known vector, computed independently: printf '' | openssl dgst -sha256 -hmac $'1599360473\ntest-secret'
    assert feishu_sign(secret, timestamp_s) == "wSds2BzzFIIGf/WrhUO+NI1q/9j+FRJd3JNHKAq0NZY="


def test_dingtalk_sign_follows_the_documented_algorithm() -> None:
    """DingTalk: HMAC-SHA256 keyed with the secret over `timestamp_ms + "\\n" + secret`, base64."""
    timestamp_ms, secret = 1577808000000, "SECthis-is-secret"
    digest = hmac.new(secret.encode(), f"{timestamp_ms}\n{secret}".encode(), hashlib.sha256).digest()
    assert dingtalk_sign(secret, timestamp_ms) == base64.b64encode(digest).decode()
    # known vector, computed independently with `openssl dgst -sha256 -hmac SECthis-is-secret`
    assert dingtalk_sign(secret, timestamp_ms) == "WRpHVR9Kl5yEFThxJ5bK0+eA8BtKcMDCPNFuSMsnyTQ="


def test_dingtalk_signed_url_keeps_the_token_and_url_encodes_the_sign() -> None:
    url = dingtalk_signed_url("https://oapi.dingtalk.com/robot/send?access_token=abc", "SECthis-is-secret",
                              1577808000000)
    query = urlsplit(url).query
    assert query.startswith("access_token=abc&timestamp=1577808000000&sign=")
    assert "sign=WRpHVR9Kl5yEFThxJ5bK0%2BeA8BtKcMDCPNFuSMsnyTQ%3D" in query  # urlEncode(base64(...))
    assert parse_qs(query)["sign"] == ["WRpHVR9Kl5yEFThxJ5bK0+eA8BtKcMDCPNFuSMsnyTQ="]


def test_dingtalk_signed_url_without_a_query() -> None:
    url = dingtalk_signed_url("https://bot.example.com/send", "s", 1)
    assert url.startswith("https://bot.example.com/send?timestamp=1&sign=")
    assert parse_qs(urlsplit(url).query) == {"timestamp": ["1"], "sign": [dingtalk_sign("s", 1)]}


@pytest.mark.parametrize(("secret", "used"), [("SECabc", "SECabc"), ("plain", "plain"), ("", None)])
def test_provider_secret(secret: str, used: str | None) -> None:
    assert provider_secret(secret) == used


def test_a_generated_standard_webhooks_secret_is_not_a_provider_secret() -> None:
    assert provider_secret(generate_secret()) is None
