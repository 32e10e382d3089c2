"""CloudEvents 1.0 structured-mode JSON on POST /v1/events (an alternative wrapping of the contract).

`Content-Type: application/cloudevents+json` carries one CloudEvent, `application/cloudevents-batch+json`
an array of them (CloudEvents JSON Event Format 1.0). Each CloudEvent's `data` is one contract-v1
event; `id` stands in for a missing `event_id` and `time` for a missing `occurred_at`. The
required context attributes (`specversion` "1.0", `id`, `source`, `type`) are checked; `data`
must be JSON (`datacontenttype` absent or a JSON media type; `data_base64` is refused). What is
unwrapped is validated by the contract like any other item.
"""

from __future__ import annotations

from typing import Any

STRUCTURED = "application/cloudevents+json"
BATCH = "application/cloudevents-batch+json"
REQUIRED = ("id", "source", "specversion", "type")


def media_type(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


def is_cloudevents(content_type: str | None) -> bool:
    return media_type(content_type) in (STRUCTURED, BATCH)


def unwrap(envelope: Any) -> dict[str, Any] | str:
    """The contract event inside one CloudEvent, or a string saying why there is none."""
    if not isinstance(envelope, dict):
        return "a CloudEvent must be a JSON object"
    missing = [name for name in REQUIRED if not isinstance(envelope.get(name), str) or not envelope[name]]
    if missing:
        return f"CloudEvent attributes missing or not strings: {', '.join(missing)}"
    if envelope["specversion"] != "1.0":
        return f"specversion {envelope['specversion']!r} is not supported (1.0 is)"
    content = envelope.get("datacontenttype")
    if content is not None and not (isinstance(content, str) and _is_json(content)):
        return f"datacontenttype {content!r} is not JSON"
    if "data_base64" in envelope:
        return "data_base64 is not supported: send the event as JSON in `data`"
    data = envelope.get("data")
    if not isinstance(data, dict):
        return "CloudEvent `data` must be a contract event object"
    event = dict(data)
    event.setdefault("event_id", envelope["id"])
    if "time" in envelope:
        event.setdefault("occurred_at", envelope["time"])
    return event


def _is_json(content_type: str) -> bool:
    base = media_type(content_type)
    return base == "application/json" or base.endswith("+json")
