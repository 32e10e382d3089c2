"""Pure conversions between epoch milliseconds and RFC 3339 text (UTC). No clock reads."""

from __future__ import annotations

from datetime import UTC, datetime


def format_ms(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def format_optional(ms: int | None) -> str | None:
    return None if ms is None else format_ms(ms)
