"""The one logging set-up of every process (api, scorer, notifier, `fatigue up`).

`setup_logging` gives the root logger one handler on stderr, JSON lines (python-json-logger) or
text (`FATIGUE_LOG_FORMAT`), and installs the one `RedactionFilter` on the root logger and on every
handler it has, so records of library loggers (they propagate to the root) are masked too.

A JSON line holds `time`, `level`, `logger`, `message`, `service`, the context bound with
`log_context` (`request_id`, `event_id`, `action_id`, `delivery_id`, …) and the record's `extra`
fields; an exception goes in `exc_info`. Libraries whose INFO output is chatter for an operator stay
at WARNING unless the level is DEBUG.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import sys
from collections.abc import Iterable, Iterator, Mapping
from types import MappingProxyType
from typing import IO, Any, Literal

from pythonjsonlogger.json import JsonFormatter

from services.redaction import redact

LogFormat = Literal["json", "text"]
LOG_FORMATS: tuple[LogFormat, ...] = ("json", "text")

# Libraries whose INFO output is chatter for an operator (group joins, every HTTP request).
CHATTY_LOGGERS = ("aiokafka", "faust", "mode", "httpx", "httpcore", "uvicorn.access", "aiohttp.access")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(service)s %(name)s: %(message)s"

# The attributes every LogRecord has: anything else on a record came from `extra` or the context.
_RECORD_ATTRS = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}
_PLAIN_RECORD_FACTORY = logging.getLogRecordFactory()
_NO_CONTEXT: Mapping[str, str] = MappingProxyType({})
_context: contextvars.ContextVar[Mapping[str, str]] = contextvars.ContextVar("fatigue_log_context", default=_NO_CONTEXT)


@contextlib.contextmanager
def log_context(**fields: str | None) -> Iterator[None]:
    """Add `fields` (None values skipped) to every record logged inside the block, in this task."""
    added = {name: str(value) for name, value in fields.items() if value is not None}
    token = _context.set({**_context.get(), **added})
    try:
        yield
    finally:
        _context.reset(token)


def current_context() -> Mapping[str, str]:
    return _context.get()


class ContextFilter(logging.Filter):
    """Puts the service name and the bound context (`log_context`) on every record."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "service"):  # `extra={"service": …}`: a record relayed for another one
            record.service = self.service
        for name, value in _context.get().items():
            if not hasattr(record, name):
                setattr(record, name, value)
        return True


class RedactionFilter(logging.Filter):
    """Masks credentials (services/redaction.py) in a record's message, arguments, extra fields,
    exception and stack text before any handler formats it. Never drops a record."""

    def __init__(self, known_secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self.known_secrets = tuple(secret for secret in known_secrets if secret)

    def filter(self, record: logging.LogRecord) -> bool:
        if not getattr(record, "_redacted", False):  # message and exception: once, when the record is made
            record.msg = self._redact_message(record)
            record.args = None
            if record.exc_info:
                record.exc_text = logging.Formatter().formatException(record.exc_info)
                record.exc_info = None
            if record.exc_text:
                record.exc_text = self.redact(record.exc_text)
            if record.stack_info:
                record.stack_info = self.redact(record.stack_info)
            record._redacted = True
        for name, value in list(record.__dict__.items()):  # `extra` fields are set after the record is made
            if name not in _RECORD_ATTRS and isinstance(value, str) and name not in _masked_extras(record):
                setattr(record, name, self.redact(value))
                _masked_extras(record).add(name)
        return True

    def redact(self, text: str) -> str:
        return redact(text, self.known_secrets)


    def _redact_message(self, record: logging.LogRecord) -> Any:
        if isinstance(record.msg, dict) and not record.args:
            return {key: self.redact(value) if isinstance(value, str) else value for key, value in record.msg.items()}
        try:
            message = record.getMessage()
        except (TypeError, ValueError) as exc:  # bad %-arguments: keep what can be shown
            message = f"{record.msg!s} (unformattable arguments: {exc})"
        return self.redact(message)


def _masked_extras(record: logging.LogRecord) -> set[str]:
    """Names of the record's extra fields already masked (a record meets the filter more than once)."""
    masked: set[str] | None = record.__dict__.get("_masked")
    if masked is None:
        masked = record.__dict__["_masked"] = set()
    return masked


class TextFormatter(logging.Formatter):
    """`time level service logger: message`, then the context and extra fields as key=value."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        if not hasattr(record, "service"):
            record.service = "-"
        text = super().format(record)
        extra = [f"{name}={value}" for name, value in record.__dict__.items()
                 if name not in _RECORD_ATTRS and name not in ("service", "_redacted", "_masked", "color_message")]
        if not extra:
            return text
        first, newline, rest = text.partition("\n")
        return f"{first} [{' '.join(extra)}]{newline}{rest}"


def json_formatter(service: str) -> logging.Formatter:
    return JsonFormatter(
        ["levelname", "name", "message"],
        rename_fields={"levelname": "level", "name": "logger"},
        timestamp="time",
        defaults={"service": service},
        reserved_attrs=[*_RECORD_ATTRS, "_redacted", "_masked", "color_message"],  # uvicorn's ANSI-coloured copy
        json_ensure_ascii=False,
    )


def setup_logging(
    level: str,
    *,
    service: str,
    fmt: LogFormat = "json",
    stream: IO[str] | None = None,
    known_secrets: Iterable[str] = (),
    chatty: Iterable[str] = (),
) -> logging.Handler:
    """One handler on the root logger (replacing any), at `level`; chatty libraries at WARNING.

    `known_secrets` (e.g. the API keys) are masked wherever they appear, on top of what
    services/redaction.py recognises; `chatty` names more loggers to keep at WARNING. Returns the
    handler (tests read what it wrote).
    """
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    for old_filter in list(root.filters):
        if isinstance(old_filter, RedactionFilter | ContextFilter):
            root.removeFilter(old_filter)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(json_formatter(service) if fmt == "json" else TextFormatter())
    root.addHandler(handler)
    root.setLevel(level.upper())
    install_filters(root, service, RedactionFilter(known_secrets))
    logging.captureWarnings(True)  # Python warnings become records too (JSON, masked), not stray stderr text
    quiet_chatty_loggers(level, (*CHATTY_LOGGERS, *chatty))
    return handler


def install_filters(root: logging.Logger, service: str, redaction: RedactionFilter) -> None:
    """The context and redaction filters on the root logger and on each of its handlers (a record
    propagated from another logger meets only the handlers' filters); and the redaction applied as
    each record is made, so a handler somebody adds later never sees a credential either."""
    context = ContextFilter(service)
    for target in (root, *root.handlers):
        target.addFilter(context)
        target.addFilter(redaction)

    def make_record(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = _PLAIN_RECORD_FACTORY(*args, **kwargs)
        redaction.filter(record)
        return record

    logging.setLogRecordFactory(make_record)


def quiet_chatty_loggers(level: str, names: Iterable[str] = CHATTY_LOGGERS) -> None:
    if str(level).upper() != "DEBUG":
        for name in names:
            logging.getLogger(name).setLevel(logging.WARNING)
