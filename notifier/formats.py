"""Request bodies per subscription format: Standard Webhooks JSON or a chat tool's bot message.

Pure functions of the record: no I/O, no clock. The record is an action (services.actions.Action)
or a digest (services.actions.Digest, type `fatigue.digest`): one rep's alerts beyond a
subscription's storm limit in one window, folded into one message. Signing lives apart
(notifier/signing.py, chat_signing.py).

Chat messages are short and rep-facing. An action tells the customer, what to do, why (the numbers
from `reasons`), until when (`pause_until`), and the best channel/time on a re-engage. A digest
tells how many more customers need attention and for which rep ("12 more customers need attention
for rep-9", "1 more unassigned customer needs attention"), a count per kind ("8 to pause,
4 to re-engage"), then one line per customer (what to do, the top reason, until when) for the
first CHAT_DIGEST_LINES items and "… and N more" for the rest (including the items the digest
itself omitted). Both go through one `Summary`, so each provider function renders either kind;
on Feishu a digest's card header is blue (a mix of kinds, so none of the per-kind colours).
`standard` sends either record as is, in the Standard Webhooks body.

Mentions: a subscription may map owner rep ids (the CRM's) to the chat tool's user ids. When the
record's `owner_rep_id` has an entry, `Summary.mention` holds that user id and each chat format
@-mentions the user in its own documented way (a line of its own under the title, where the tool
notifies); without an entry (or without an owner) nothing is added. `standard` ignores mentions:
machines read `owner_rep_id` itself. Ids are validated by the API (no spaces, control characters or
`< > | &`), so they are put in as they are.

Provider shapes (checked against the providers' docs):
- Slack Incoming Webhook: `{"text", "blocks"}`, Block Kit header/section/context
  (https://api.slack.com/reference/block-kit/blocks): header text is plain_text, max 150 chars;
  section text max 3000 chars; `text` is the notification fallback. Mention: `<@U024BE7LH>` in
  mrkdwn (https://api.slack.com/reference/surfaces/formatting#mentioning-users), in the section and
  the `text` fallback (a plain_text header does not parse it).
- Teams Incoming Webhook with an Adaptive Card: `{"type": "message", "attachments": [{"contentType":
  "application/vnd.microsoft.card.adaptive", "content": {AdaptiveCard}}]}`
  (https://learn.microsoft.com/microsoftteams/platform/webhooks-and-connectors/how-to/add-incoming-webhook).
  Mention: `<at>name</at>` in a TextBlock plus `msteams.entities: [{"type": "mention", "text":
  "<at>name</at>", "mentioned": {"id", "name"}}]` in the card; an Incoming Webhook takes the user's
  Microsoft Entra (AAD) object id or UPN as `id` (https://learn.microsoft.com/microsoftteams/platform/
  task-modules-and-cards/cards/cards-format#user-mention-in-incoming-webhook-with-adaptive-cards).
  `name` is the owner rep id.
- WeCom group robot: `{"msgtype": "markdown", "markdown": {"content"}}`, content ≤ 4096 bytes UTF-8
  (https://developer.work.weixin.qq.com/document/path/91770). Mention: `<@userid>` in the markdown
  content (same page; `mentioned_list` belongs to the `text` msgtype only).
- Feishu/Lark custom bot: `{"msg_type": "interactive", "card": {"header", "elements"}}`
  (https://open.feishu.cn/document/client-docs/bot-v3/add-custom-bot). Mention in a card's lark_md:
  `<at id=ou_xxx></at>` with the user's open_id (a text message would use `<at user_id="…">`
  instead; https://open.feishu.cn/document/ukTMukTMukTM/uADOwUjLwgDM14CM4ATN).
- DingTalk custom robot: `{"msgtype": "markdown", "markdown": {"title", "text"}}`
  (https://open.dingtalk.com/document/robots/custom-robot-access). Mention: `"at": {"atUserIds":
  [userId], "isAtAll": false}` and `@userId` in the markdown text
  (https://open.dingtalk.com/document/development/robot-message-type).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any, cast

from services.actions import Action, Digest, webhook_body
from services.errors import ConfigError
from services.names import ACTION_DIGEST, ACTION_RE_ENGAGE, ACTION_RECOVERED, ACTION_THROTTLE

SLACK_HEADER_MAX = 150
SLACK_SECTION_MAX = 3000
WECOM_MARKDOWN_MAX_BYTES = 4096
CHAT_DIGEST_LINES = 10
"""A digest lists this many customers in a chat message; the rest are "… and N more"."""
DIGEST_CUSTOMER_MAX = 48
DIGEST_REASON_MAX = 80
"""Characters of a digest line's customer id and reason: ten lines stay well within every provider's limit."""

Record = Action | Digest
"""What the notifier delivers: an action, or a digest of one rep's alerts."""

_TITLES = {
    ACTION_THROTTLE: "Pause outreach",
    ACTION_RE_ENGAGE: "Re-engage",
    ACTION_RECOVERED: "Outreach can resume",
}
_DIGEST_COUNTS = {
    ACTION_THROTTLE: "to pause",
    ACTION_RE_ENGAGE: "to re-engage",
    ACTION_RECOVERED: "can resume",
}
_FEISHU_TEMPLATES = {ACTION_THROTTLE: "red", ACTION_RE_ENGAGE: "orange", ACTION_RECOVERED: "green",
                     ACTION_DIGEST: "blue"}


@dataclass(frozen=True)
class Summary:
    """What a rep needs to read, independent of any chat tool's markup."""

    title: str
    todo: str
    why: list[str]
    facts: list[tuple[str, str]]
    footer: str
    why_label: str = "Why"  # a digest lists its customers under "Customers"
    owner: str | None = None
    """The owner rep id (the CRM's); Teams shows it as the mention's name."""
    mention: str | None = None
    """The owner rep's user id in the chat tool, to @-mention (None: nobody)."""


def number(value: Any) -> str:
    """13.0 -> "13", 0.4213 -> "0.421": counts read as counts, ratios stay short."""
    return f"{value:.3g}" if isinstance(value, int | float) else str(value)


def reason_line(reason: Mapping[str, Any]) -> str:
    line = (f"{reason.get('rule')}: {number(reason.get('observed'))} "
            f"(threshold {number(reason.get('threshold'))}, {reason.get('window')})")
    detail = reason.get("detail")
    return f"{line} — {detail}" if detail else line


def summarize(record: Record, mentions: Mapping[str, str] | None = None) -> Summary:
    """The rep-facing content of an action or of a digest (record type `fatigue.digest`).

    `mentions`: owner rep id -> chat user id; the owner's entry, if any, becomes `Summary.mention`.
    """
    summary = (_summarize_digest(cast(Digest, record)) if record.get("type") == ACTION_DIGEST
               else _summarize_action(cast(Action, record)))
    owner = record.get("owner_rep_id")
    owner = str(owner) if owner else None
    return replace(summary, owner=owner, mention=mention_for(owner, mentions))


def mention_for(owner: str | None, mentions: Mapping[str, str] | None) -> str | None:
    """The chat user id to @-mention for `owner` (None without an owner or an entry for it)."""
    return (mentions or {}).get(owner) if owner else None


def _test_marked(title: str, data: Mapping[str, Any]) -> str:
    return f"[Test] {title}" if data.get("test") else title  # a sample sent to try a subscription out


def _summarize_action(action: Action) -> Summary:
    data: Mapping[str, Any] = action
    facts = [("Customer", str(data.get("customer_id")))]
    optional = [
        ("Owner rep", data.get("owner_rep_id")),
        ("Until", data.get("pause_until")),
        ("Best channel", data.get("best_channel")),
        ("Best time", _best_time(data.get("best_time"))),
    ]
    facts += [(label, str(value)) for label, value in optional if value]
    title = f"{_TITLES.get(str(data.get('type')), str(data.get('type')))}: {data.get('customer_id')}"
    return Summary(
        title=_test_marked(title, data),
        todo=str(data.get("suggestion") or ""),
        why=[reason_line(r) for r in data.get("reasons") or []],
        facts=facts,
        footer=f"{data.get('type')} · {data.get('at')} · {data.get('action_id')}",
    )


def _summarize_digest(digest: Digest) -> Summary:
    """Title with the count and the rep, a count per kind, one line per customer up to CHAT_DIGEST_LINES."""
    data: Mapping[str, Any] = digest
    total = int(data.get("total") or 0)
    rep = data.get("owner_rep_id")
    customers = "customer needs" if total == 1 else "customers need"
    title = f"{total} more {customers} attention for {rep}" if rep else f"{total} more unassigned {customers} attention"
    items: list[Mapping[str, Any]] = list(data.get("items") or [])
    shown = items[:CHAT_DIGEST_LINES]
    why = [digest_line(item) for item in shown]
    more = len(items) - len(shown) + int(data.get("omitted") or 0)
    if more > 0:
        why.append(f"… and {more} more")
    window = f"{data.get('window_start')} – {data.get('window_end')}"  # noqa: RUF001 (an en dash: a range)
    return Summary(
        title=_test_marked(title, data),
        todo=digest_counts(data.get("by_type") or {}),
        why=why,
        facts=[("Owner rep", str(rep) if rep else "none (unassigned customers)")],
        footer=f"{data.get('type')} · {window} · {data.get('action_id')}",
        why_label="Customers",
    )


def digest_counts(by_type: Mapping[str, int]) -> str:
    """{"fatigue.throttle": 8, "fatigue.re_engage": 4} -> "8 to pause, 4 to re-engage" (known kinds first)."""
    order = [*_DIGEST_COUNTS, *sorted(set(by_type) - set(_DIGEST_COUNTS))]
    return ", ".join(f"{by_type[kind]} {_DIGEST_COUNTS.get(kind, kind)}" for kind in order if by_type.get(kind))


def digest_line(item: Mapping[str, Any]) -> str:
    """One folded alert: customer — what to do — top reason — until when (long ids and reasons clipped)."""
    kind = str(item.get("type"))
    parts = [_clip(str(item.get("customer_id")), DIGEST_CUSTOMER_MAX), _TITLES.get(kind, kind)]
    reasons = item.get("reasons") or []
    if reasons:
        parts.append(_clip(reason_line(reasons[0]), DIGEST_REASON_MAX))
    if item.get("pause_until"):
        parts.append(f"until {item['pause_until']}")
    return " — ".join(parts)


def _best_time(best: Any) -> str | None:
    if not isinstance(best, Mapping):
        return str(best) if best else None
    return " ".join(str(best[k]) for k in ("local", "timezone") if best.get(k)) or None


def markdown_lines(summary: Summary, bold: str = "**") -> list[str]:
    """The message as markdown-ish lines; `bold` is `**` (most tools) or `*` (Slack mrkdwn)."""
    lines = [f"{bold}What to do:{bold} {summary.todo}"]
    if summary.why:
        lines += [f"{bold}{summary.why_label}:{bold}", *(f"• {line}" for line in summary.why)]
    lines += [f"{bold}{label}:{bold} {value}" for label, value in summary.facts]
    return lines


def slack_escape(text: str) -> str:
    """Slack mrkdwn control characters (https://api.slack.com/reference/surfaces/formatting#escaping)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _clip_bytes(text: str, limit: int) -> str:
    raw = text.encode()
    return text if len(raw) <= limit else raw[: limit - 3].decode(errors="ignore") + "…"


def slack(record: Record, mentions: Mapping[str, str] | None = None) -> dict[str, Any]:
    s = summarize(record, mentions)
    at = [f"<@{s.mention}>"] if s.mention else []  # ids are checked for < > | & by the API
    text = "\n".join([*at, slack_escape("\n".join(markdown_lines(s, bold="*")))])
    return {
        "text": " ".join([*at, slack_escape(f"{s.title} — {s.todo}")]),
        "blocks": [
            {"type": "header", "text": {"type": "plain_text", "text": _clip(s.title, SLACK_HEADER_MAX)}},
            {"type": "section", "text": {"type": "mrkdwn", "text": _clip(text, SLACK_SECTION_MAX)}},
            {"type": "context", "elements": [{"type": "mrkdwn", "text": slack_escape(s.footer)}]},
        ],
    }


def teams(record: Record, mentions: Mapping[str, str] | None = None) -> dict[str, Any]:
    s = summarize(record, mentions)
    body: list[dict[str, Any]] = [
        {"type": "TextBlock", "text": s.title, "size": "Medium", "weight": "Bolder", "wrap": True},
    ]
    entities: list[dict[str, Any]] = []
    if s.mention:
        name = _teams_mention_name(s.owner or s.mention)
        body.append({"type": "TextBlock", "text": f"<at>{name}</at>", "wrap": True})
        entities.append({"type": "mention", "text": f"<at>{name}</at>", "mentioned": {"id": s.mention, "name": name}})
    body.append({"type": "TextBlock", "text": s.todo, "wrap": True})
    if s.why:
        body.append({"type": "TextBlock", "text": "\n".join(f"- {line}" for line in s.why), "wrap": True})
    body.append({"type": "FactSet", "facts": [{"title": k, "value": v} for k, v in s.facts]})
    body.append({"type": "TextBlock", "text": s.footer, "isSubtle": True, "size": "Small", "wrap": True})
    card: dict[str, Any] = {"$schema": "http://adaptivecards.io/schemas/adaptive-card.json", "type": "AdaptiveCard",
                            "version": "1.4", "body": body}
    if entities:
        card["msteams"] = {"entities": entities}
    return {"type": "message", "attachments": [
        {"contentType": "application/vnd.microsoft.card.adaptive", "contentUrl": None, "content": card},
    ]}


def _teams_mention_name(owner: str) -> str:
    """The text inside `<at>…</at>`: the owner rep id without characters that would end the tag."""
    return owner.replace("<", "").replace(">", "").strip() or "owner"


def wecom(record: Record, mentions: Mapping[str, str] | None = None) -> dict[str, Any]:
    s = summarize(record, mentions)
    at = [f"<@{s.mention}>"] if s.mention else []
    content = "\n".join([f"**{s.title}**", *at, *markdown_lines(s), f"> {s.footer}"])
    return {"msgtype": "markdown", "markdown": {"content": _clip_bytes(content, WECOM_MARKDOWN_MAX_BYTES)}}


def feishu(record: Record, mentions: Mapping[str, str] | None = None) -> dict[str, Any]:
    """An interactive card (message card v1 with a lark_md div); signing fields are added by the sender."""
    s = summarize(record, mentions)
    template = _FEISHU_TEMPLATES.get(record["type"], "blue")
    at = [f"<at id={s.mention}></at>"] if s.mention else []
    return {"msg_type": "interactive", "card": {
        "header": {"title": {"tag": "plain_text", "content": s.title}, "template": template},
        "elements": [
            {"tag": "div", "text": {"tag": "lark_md", "content": "\n".join([*at, *markdown_lines(s)])}},
            {"tag": "note", "elements": [{"tag": "plain_text", "content": s.footer}]},
        ],
    }}


def dingtalk(record: Record, mentions: Mapping[str, str] | None = None) -> dict[str, Any]:
    """DingTalk markdown needs a blank line between paragraphs to break lines; a mention needs both
    `@userId` in the text and the id in `at.atUserIds`."""
    s = summarize(record, mentions)
    at = [f"@{s.mention}"] if s.mention else []
    text = "\n\n".join([f"#### {s.title}", *at, *markdown_lines(s), f"> {s.footer}"])
    body: dict[str, Any] = {"msgtype": "markdown", "markdown": {"title": s.title, "text": text}}
    if s.mention:
        body["at"] = {"atUserIds": [s.mention], "isAtAll": False}
    return body


def standard(record: Record, mentions: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The Standard Webhooks body (type, timestamp, data); a digest has the `type` and `at` it reads.
    Mentions are for people: machines read `owner_rep_id`."""
    return webhook_body(cast(Action, record))


Renderer = Callable[[Record, Mapping[str, str] | None], dict[str, Any]]
"""(record, mentions: owner rep id -> chat user id, or None) -> the JSON body."""

RENDERERS: dict[str, Renderer] = {
    "standard": standard,
    "slack": slack,
    "teams": teams,
    "wecom": wecom,
    "feishu": feishu,
    "dingtalk": dingtalk,
}


def render(action: Record, format_name: str, mentions: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The JSON body of an action or a digest for `format_name` (one of services.delivery.subscriptions.FORMATS).

    `mentions` (owner rep id -> chat user id, a subscription's `mentions`): chat formats @-mention
    the record owner's entry. ConfigError if the format is unknown.
    """
    try:
        renderer = RENDERERS[format_name]
    except KeyError:
        raise ConfigError(f"unknown subscription format {format_name!r}") from None
    return renderer(action, mentions)
