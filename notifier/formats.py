"""Request bodies per subscription format: Standard Webhooks JSON or a chat tool's bot message.

Pure functions of the action record: no I/O, no clock. Chat messages are short and rep-facing:
the customer, what to do, why (the numbers from `reasons`), until when (`pause_until`), and the
best channel/time on a re-engage. Signing lives apart (notifier/signing.py, chat_signing.py).

Provider shapes (checked against the providers' docs):
- Slack Incoming Webhook: `{"text", "blocks"}`, Block Kit header/section/context
  (https://api.slack.com/reference/block-kit/blocks): header text is plain_text, max 150 chars;
  section text max 3000 chars; `text` is the notification fallback.
- Teams Incoming Webhook with an Adaptive Card: `{"type": "message", "attachments": [{"contentType":
  "application/vnd.microsoft.card.adaptive", "content": {AdaptiveCard}}]}`
  (https://learn.microsoft.com/microsoftteams/platform/webhooks-and-connectors/how-to/add-incoming-webhook).
- WeCom group robot: `{"msgtype": "markdown", "markdown": {"content"}}`, content ≤ 4096 bytes UTF-8
  (https://developer.work.weixin.qq.com/document/path/91770).
- Feishu/Lark custom bot: `{"msg_type": "interactive", "card": {"header", "elements"}}`
  (https://open.feishu.cn/document/client-docs/bot-v3/add-custom-bot).
- DingTalk custom robot: `{"msgtype": "markdown", "markdown": {"title", "text"}}`
  (https://open.dingtalk.com/document/robots/custom-robot-access).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from services.actions import Action, webhook_body
from services.errors import ConfigError
from services.names import ACTION_RE_ENGAGE, ACTION_RECOVERED, ACTION_THROTTLE

SLACK_HEADER_MAX = 150
SLACK_SECTION_MAX = 3000
WECOM_MARKDOWN_MAX_BYTES = 4096

_TITLES = {
    ACTION_THROTTLE: "Pause outreach",
    ACTION_RE_ENGAGE: "Re-engage",
    ACTION_RECOVERED: "Outreach can resume",
}
_FEISHU_TEMPLATES = {ACTION_THROTTLE: "red", ACTION_RE_ENGAGE: "orange", ACTION_RECOVERED: "green"}


@dataclass(frozen=True)
class Summary:
    """What a rep needs to read, independent of any chat tool's markup."""

    title: str
    todo: str
    why: list[str]
    facts: list[tuple[str, str]]
    footer: str


def number(value: Any) -> str:
    """13.0 -> "13", 0.4213 -> "0.421": counts read as counts, ratios stay short."""
    return f"{value:.3g}" if isinstance(value, int | float) else str(value)


def reason_line(reason: Mapping[str, Any]) -> str:
    line = (f"{reason.get('rule')}: {number(reason.get('observed'))} "
            f"(threshold {number(reason.get('threshold'))}, {reason.get('window')})")
    detail = reason.get("detail")
    return f"{line} — {detail}" if detail else line


def summarize(action: Action) -> Summary:
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
    if data.get("test"):  # a sample sent to try a subscription out
        title = f"[Test] {title}"
    return Summary(
        title=title,
        todo=str(data.get("suggestion") or ""),
        why=[reason_line(r) for r in data.get("reasons") or []],
        facts=facts,
        footer=f"{data.get('type')} · {data.get('at')} · {data.get('action_id')}",
    )


def _best_time(best: Any) -> str | None:
    if not isinstance(best, Mapping):
        return str(best) if best else None
    return " ".join(str(best[k]) for k in ("local", "timezone") if best.get(k)) or None


def markdown_lines(summary: Summary, bold: str = "**") -> list[str]:
    """The message as markdown-ish lines; `bold` is `**` (most tools) or `*` (Slack mrkdwn)."""
    lines = [f"{bold}What to do:{bold} {summary.todo}"]
    if summary.why:
        lines += [f"{bold}Why:{bold}", *(f"• {line}" for line in summary.why)]
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


def slack(action: Action) -> dict[str, Any]:
    s = summarize(action)
    text = slack_escape("\n".join(markdown_lines(s, bold="*")))
    return {
        "text": slack_escape(f"{s.title} — {s.todo}"),
        "blocks": [
            {"type": "header", "text": {"type": "plain_text", "text": _clip(s.title, SLACK_HEADER_MAX)}},
            {"type": "section", "text": {"type": "mrkdwn", "text": _clip(text, SLACK_SECTION_MAX)}},
            {"type": "context", "elements": [{"type": "mrkdwn", "text": slack_escape(s.footer)}]},
        ],
    }


def teams(action: Action) -> dict[str, Any]:
    s = summarize(action)
    body: list[dict[str, Any]] = [
        {"type": "TextBlock", "text": s.title, "size": "Medium", "weight": "Bolder", "wrap": True},
        {"type": "TextBlock", "text": s.todo, "wrap": True},
    ]
    if s.why:
        body.append({"type": "TextBlock", "text": "\n".join(f"- {line}" for line in s.why), "wrap": True})
    body.append({"type": "FactSet", "facts": [{"title": k, "value": v} for k, v in s.facts]})
    body.append({"type": "TextBlock", "text": s.footer, "isSubtle": True, "size": "Small", "wrap": True})
    card = {"$schema": "http://adaptivecards.io/schemas/adaptive-card.json", "type": "AdaptiveCard",
            "version": "1.4", "body": body}
    return {"type": "message", "attachments": [
        {"contentType": "application/vnd.microsoft.card.adaptive", "contentUrl": None, "content": card},
    ]}


def wecom(action: Action) -> dict[str, Any]:
    s = summarize(action)
    content = "\n".join([f"**{s.title}**", *markdown_lines(s), f"> {s.footer}"])
    return {"msgtype": "markdown", "markdown": {"content": _clip_bytes(content, WECOM_MARKDOWN_MAX_BYTES)}}


def feishu(action: Action) -> dict[str, Any]:
    """An interactive card (message card v1 with a lark_md div); signing fields are added by the sender."""
    s = summarize(action)
    template = _FEISHU_TEMPLATES.get(action["type"], "blue")
    return {"msg_type": "interactive", "card": {
        "header": {"title": {"tag": "plain_text", "content": s.title}, "template": template},
        "elements": [
            {"tag": "div", "text": {"tag": "lark_md", "content": "\n".join(markdown_lines(s))}},
            {"tag": "note", "elements": [{"tag": "plain_text", "content": s.footer}]},
        ],
    }}


def dingtalk(action: Action) -> dict[str, Any]:
    """DingTalk markdown needs a blank line between paragraphs to break lines."""
    s = summarize(action)
    text = "\n\n".join([f"#### {s.title}", *markdown_lines(s), f"> {s.footer}"])
    return {"msgtype": "markdown", "markdown": {"title": s.title, "text": text}}


RENDERERS: dict[str, Callable[[Action], dict[str, Any]]] = {
    "standard": webhook_body,
    "slack": slack,
    "teams": teams,
    "wecom": wecom,
    "feishu": feishu,
    "dingtalk": dingtalk,
}


def render(action: Action, format_name: str) -> dict[str, Any]:
    """The JSON body for `format_name` (one of services.subscriptions.FORMATS); ConfigError if unknown."""
    try:
        renderer = RENDERERS[format_name]
    except KeyError:
        raise ConfigError(f"unknown subscription format {format_name!r}") from None
    return renderer(action)
