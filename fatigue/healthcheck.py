"""`python -m fatigue.healthcheck`: the container HEALTHCHECK of the one image, whichever service it runs.

Asks `/healthz` on loopback at the ports the services listen on (FATIGUE_PORT for the API,
FATIGUE_WEB_PORT for the scorer, FATIGUE_METRICS_PORT for the notifier, defaults as in
services/settings.py); exit 0 as soon as one answers 200, else 1. Standard library only.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request

TIMEOUT_S = 3.0
PORTS = (("FATIGUE_PORT", "8000"), ("FATIGUE_WEB_PORT", "6066"), ("FATIGUE_METRICS_PORT", "0"))


def healthy(env: dict[str, str]) -> bool:
    for variable, default in PORTS:
        port = env.get(variable, default).strip()
        if port in ("", "0"):
            continue
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=TIMEOUT_S) as answer:
                if answer.status == 200:
                    return True
        except (OSError, urllib.error.URLError):
            continue
    return False


if __name__ == "__main__":
    sys.exit(0 if healthy(dict(os.environ)) else 1)
