"""Masking credentials: in URLs (`mask_url`, also for read responses) and in free text (`redact`,
used by the one logging filter of services/logs.py).

What counts as a credential:
- in a URL: the userinfo (`user:password@`), query and fragment values whose key names a secret
  (`key`, `token`, `access_token`, `sign`, `sig`, `signature`, `secret`, `password`, …), the path
  tokens of chat webhooks (Slack `hooks.slack.com/services/T…/B…/…`, Teams `/webhookb2/…`,
  Feishu / Lark `/open-apis/bot/v2/hook/…`, Discord `/api/webhooks/…`; on any host, as a relay
  keeps the provider's path), and any other path segment that looks generated (20+ characters of
  letters and digits, both present);
- in text: `Authorization: Bearer …` / `Basic …`, header or field assignments of secrets
  (`webhook-signature: …`, `X-Twilio-Signature: …`, `x-api-key=…`, `"password": "…"`), and
  tokens recognisable by their shape (`fk_…` API keys, `whsec_…` webhook secrets, Standard
  Webhooks `v1,…` signatures, Slack `xox…-` tokens, DingTalk `SEC…` signing secrets), and the
  SASL bytes in aiokafka's DEBUG records of its requests (with PLAIN they hold the Kafka password).

A masked value keeps at most its last 4 characters, and only when it is long enough (12+) for them
to reveal little: `https://hooks.slack.com/services/…/…/…abcd`. Everything here is a pure function
of its input.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import unquote_plus, urlsplit, urlunsplit

MASK = "…"
SHOW_LAST = 4
SHOW_LAST_FROM_LENGTH = 12

# Query / fragment keys whose values are credentials (compared lower-case, `-` read as `_`).
SECRET_KEYS = frozenset({
    "key", "api_key", "apikey", "access_key", "token", "access_token", "refresh_token", "id_token", "auth",
    "auth_token", "authorization", "sign", "sig", "signature", "secret", "client_secret", "password", "passwd",
    "pwd", "pass", "credential", "credentials", "session", "sessionid", "jwt", "hmac", "code",
})
SECRET_KEY_PARTS = ("token", "secret", "password", "signature", "apikey", "api_key", "access_key")

# Path prefixes after which every segment is a secret, on any host (a relay or proxy in front of a
# provider keeps the provider's path): Teams, Feishu / Lark, Discord, Slack's `/services/T…/B…/…`.
PATH_TOKEN_PREFIXES = ("/webhookb2/", "/webhook/", "/open-apis/bot/v2/hook/", "/api/webhooks/")
_SLACK_SERVICES_PATH = re.compile(r"^/services/T[A-Z0-9]+/B[A-Z0-9]+/")
SLACK_HOST = "hooks.slack.com"
"""Every Slack hook path (services, workflows, triggers) carries secrets after its first segment."""

_GENERATED_SEGMENT = re.compile(r"^(?=[^/]*\d)(?=[^/]*[A-Za-z])[A-Za-z0-9_\-.~+=%@]{20,}$")
_URL = re.compile(r"\b[A-Za-z][A-Za-z0-9+.\-]*://[^\s'\"<>`]+")
_AUTH_SCHEME = re.compile(r"(?i)\b(Bearer|Basic|Token|Digest)(\s+)([A-Za-z0-9\-._~+/]+=*)")
_SECRET_FIELD = re.compile(
    r"""(?ix)
    (?P<name>\b(?:proxy-)?authorization|\bx-api-key|\bapi[-_]?key|\bwebhook-signature|\bx-twilio-signature
      |\bx-hub-signature(?:-256)?|\bx-slack-signature|\bx-lark-signature|\bx-signature|\bsignature|\bsecret
      |\bclient[-_]secret|\bpassword|\bpasswd|\baccess[-_]token|\brefresh[-_]token|\btoken|\bsign|\bsig
      |\bsasl_plain_password)
    (?P<close>["']?)(?P<sep>\s*[:=]\s*)
    (?:(?P<quote>["'])(?P<quoted>[^"']*)(?P=quote)|(?P<bare>[^\s"',;&}\])]+))
    """
)
_TOKEN_SHAPES = (
    re.compile(r"\b(fk_)([A-Za-z0-9_\-]{8,})"),
    re.compile(r"\b(whsec_)([A-Za-z0-9+/=_\-]{8,})"),
    re.compile(r"\b(v1a?,)([A-Za-z0-9+/=]{16,})"),
    re.compile(r"\b(xox[abprs]-)([A-Za-z0-9\-]{10,})"),
    re.compile(r"\b(SEC)([0-9a-f]{32,})"),
    # aiokafka's DEBUG record of a SASL request: for PLAIN the bytes are `user\x00user\x00password`.
    re.compile(r"\b(sasl_auth_bytes=)(b'(?:[^'\\]|\\.)*'|b\"(?:[^\"\\]|\\.)*\")"),
)
_TOKEN_MARKERS = ("fk_", "whsec_", "v1", "xox", "SEC", "sasl_auth_bytes")
"""A substring each of _TOKEN_SHAPES needs: most lines have none, and skip the regex."""
_AUTH_SCHEMES = frozenset({"bearer", "basic", "token", "digest"})


def mask_secret(value: str) -> str:
    """`…` plus the last 4 characters of `value` when it has 12 or more; `…` alone otherwise."""
    if value.startswith(MASK):
        return value
    if len(value) >= SHOW_LAST_FROM_LENGTH:
        return MASK + value[-SHOW_LAST:]
    return MASK


def is_secret_key(name: str) -> bool:
    """Whether a query / form key names a credential (`key`, `access_token`, `sign`, `X-Api-Key`, …)."""
    key = name.strip().lower().replace("-", "_")
    return key in SECRET_KEYS or any(part in key for part in SECRET_KEY_PARTS)


def mask_url(url: str) -> str:
    """`url` with its credentials masked; scheme, host, port and the non-secret path kept.

    `https://hooks.slack.com/services/T01/B02/XXXXXXXXXXXXXXXXXXXXabcd` →
    `https://hooks.slack.com/services/…/…/…abcd`; `https://user:pw@h/x?key=k&a=1` →
    `https://…@h/x?key=…&a=1`; `redis+cluster://…@h1:7000,h2:7001`. Something that does not parse as
    a URL is masked whole.
    """
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        if "," not in parts.netloc:  # several host:port (a Redis Cluster's seeds): no one port to check
            parts.port  # noqa: B018 - raises ValueError for a port that is no number
    except ValueError:
        return mask_secret(url)
    netloc = parts.netloc
    if "@" in netloc:
        netloc = MASK + "@" + netloc.rsplit("@", 1)[1]
    path = _mask_path(host, parts.path)
    return urlunsplit((parts.scheme, netloc, path, _mask_query(parts.query), _mask_query(parts.fragment)))


def _mask_path(host: str, path: str) -> str:
    prefix = _secret_path_prefix(host.lower(), path)
    segments = path.split("/")
    kept = prefix.count("/") if prefix is not None else len(segments)
    masked = [
        segment if (i < kept and not _GENERATED_SEGMENT.match(segment)) or not segment else mask_secret(segment)
        for i, segment in enumerate(segments)
    ]
    return "/".join(masked)


def _secret_path_prefix(host: str, path: str) -> str | None:
    if host == SLACK_HOST or host.endswith("." + SLACK_HOST) or _SLACK_SERVICES_PATH.match(path):
        first = path.split("/")[1] if path.count("/") >= 2 else ""
        return f"/{first}/" if first else None
    return next((prefix for prefix in PATH_TOKEN_PREFIXES if path.startswith(prefix)), None)


def _mask_query(query: str) -> str:
    if not query:
        return query
    if "=" not in query:
        return mask_secret(query) if _GENERATED_SEGMENT.match(query) else query
    masked = []
    for pair in query.split("&"):
        key, sep, value = pair.partition("=")
        if sep and value and is_secret_key(unquote_plus(key)):
            value = mask_secret(value)
        masked.append(key + sep + value)
    return "&".join(masked)


def redact(text: str, known_secrets: Iterable[str] = ()) -> str:
    """`text` with every credential this module recognises masked (see the module docstring), and
    every string of `known_secrets` (e.g. the configured API keys) replaced wherever it appears."""
    for secret in known_secrets:
        if secret and secret in text:
            text = text.replace(secret, mask_secret(secret))
    if "://" in text:
        text = _URL.sub(_mask_url_match, text)
    lower = text.lower()
    if any(word in lower for word in ("bearer", "basic", "token", "digest")):
        text = _AUTH_SCHEME.sub(lambda m: f"{m.group(1)}{m.group(2)}{mask_secret(m.group(3))}", text)
    if ":" in text or "=" in text:
        text = _SECRET_FIELD.sub(_mask_field, text)
    for marker, shape in zip(_TOKEN_MARKERS, _TOKEN_SHAPES, strict=True):
        if marker in text:
            text = shape.sub(lambda m: m.group(1) + mask_secret(m.group(2)), text)
    return text


def _mask_url_match(match: re.Match[str]) -> str:
    url = match.group(0)
    trailing = ""
    while url and url[-1] in ".,;:!?)]}" and _unbalanced(url):
        url, trailing = url[:-1], url[-1] + trailing
    return mask_url(url) + trailing


def _unbalanced(url: str) -> bool:
    last = url[-1]
    pairs = {")": "(", "]": "[", "}": "{"}
    if last in pairs:
        return url.count(last) > url.count(pairs[last])
    return True


def _mask_field(match: re.Match[str]) -> str:
    value = match.group("quoted") if match.group("quote") else match.group("bare")
    if value is None or value.startswith(MASK) or value.lower() in _AUTH_SCHEMES:
        return match.group(0)
    head = match.group("name") + match.group("close") + match.group("sep")
    if match.group("quote"):
        quote_char = match.group("quote")
        return f"{head}{quote_char}{_mask_field_value(value)}{quote_char}"
    return head + _mask_field_value(value)


def _mask_field_value(value: str) -> str:
    scheme, _, rest = value.partition(" ")
    if rest and scheme.lower() in _AUTH_SCHEMES:
        return f"{scheme} {mask_secret(rest)}"
    return mask_secret(value)
