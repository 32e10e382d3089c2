"""Logging set-up shared by the service entry points."""

from __future__ import annotations

import logging

# Libraries whose INFO output is chatter for an operator (group joins, every HTTP request).
CHATTY_LOGGERS = ("aiokafka", "faust", "mode", "httpx", "uvicorn.access")


def setup_logging(level: str) -> None:
    """Our loggers at `level`; chatty libraries at WARNING unless `level` is DEBUG."""
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True)
    quiet_chatty_loggers(level)


def quiet_chatty_loggers(level: str) -> None:
    if str(level).upper() != "DEBUG":
        for name in CHATTY_LOGGERS:
            logging.getLogger(name).setLevel(logging.WARNING)
