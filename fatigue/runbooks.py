"""Absolute runbook links in the shipped alert rules, from one base URL.

Alertmanager and the tools it notifies (Slack, PagerDuty, e-mail) show `runbook_url` as a link,
so it must be absolute: a repository-relative path links nowhere. Each alert's runbook is the
section of docs/operations.md named after it (`### FatigueScorerDown` -> `#fatiguescorerdown`).

The rule files in the repository carry links to DEFAULT_RUNBOOK_BASE_URL (the project's published
docs). Where your runbooks live elsewhere (your fork, an internal Git server, a wiki with the same
anchors), point every link there, in place, in the rule files and the alerts' unit tests:

    make runbooks FATIGUE_RUNBOOK_BASE_URL=https://git.example.com/ops/contact-fatigue/blob/main/docs/operations.md
    .venv/bin/python -m fatigue.runbooks --base-url URL [RULE_FILE ...]

Only the `runbook_url` lines change (the rest of each file stays byte for byte), so the Prometheus
rules (deploy/prometheus/alerts.yml, mounted by docker-compose.yml) and the PrometheusRule of
k8s/monitoring stay equal. Running it again with another base moves the links again.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from urllib.parse import urlsplit

from services.errors import ConfigError

DEFAULT_RUNBOOK_BASE_URL = "https://github.com/contact-fatigue/contact-fatigue/blob/main/docs/operations.md"
RULE_FILES = (Path("deploy/prometheus/alerts.yml"), Path("deploy/prometheus/alerts.test.yml"),
              Path("k8s/monitoring/prometheusrule.yaml"))
"""The rule files the repository ships (and the unit tests of the alerts), relative to its root."""

_RUNBOOK_LINE = re.compile(r"""^(?P<head>[ \t]*runbook_url:[ \t]*)(?P<quote>["']?)(?P<url>[^"'\s#]*)"""
                           r"""#(?P<anchor>[a-z0-9-]+)(?P=quote)[ \t]*$""", re.MULTILINE)


def check_base_url(base_url: str) -> str:
    """`base_url` if it is an absolute http(s) URL of a page without a fragment; ConfigError otherwise."""
    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.fragment or "#" in base_url:
        raise ConfigError(f"the runbook base URL must be an absolute http(s) URL of the runbooks page without "
                          f"a #fragment (the alert's anchor is appended), e.g. {DEFAULT_RUNBOOK_BASE_URL}; "
                          f"got {base_url!r}")
    if any(c.isspace() or c in "\"'" for c in base_url):
        raise ConfigError(f"the runbook base URL must not contain spaces or quotes: {base_url!r}")
    return base_url


def runbook_url(base_url: str, alert: str) -> str:
    """The link to one alert's runbook section (GitHub's anchor of the heading `### <alert>`)."""
    return f"{base_url}#{alert.lower()}"


def render_rules(text: str, base_url: str) -> str:
    """`text` of a rule file with every `runbook_url` pointing at `base_url` (anchors kept)."""
    check_base_url(base_url)
    return _RUNBOOK_LINE.sub(lambda m: f"{m['head']}{m['quote']}{base_url}#{m['anchor']}{m['quote']}", text)


def runbook_urls(text: str) -> list[str]:
    """Every `runbook_url` of a rule file, as written."""
    return [f"{m['url']}#{m['anchor']}" for m in _RUNBOOK_LINE.finditer(text)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fatigue.runbooks", description=__doc__.split("\n\n")[0])
    parser.add_argument("--base-url", required=True, help="absolute URL of the runbooks page (docs/operations.md "
                        "as your users can open it); each alert's #anchor is appended")
    parser.add_argument("files", nargs="*", type=Path, default=list(RULE_FILES),
                        help="rule files to rewrite in place (default: the two the repository ships)")
    args = parser.parse_args(argv)
    try:
        base_url = check_base_url(args.base_url)
        for path in args.files:
            text = path.read_text(encoding="utf-8")
            if not runbook_urls(text):
                raise ConfigError(f"{path}: no runbook_url found; is it an alert rule file?")
            path.write_text(render_rules(text, base_url), encoding="utf-8")
            sys.stdout.write(f"{path}: {len(runbook_urls(text))} runbook links now start with {base_url}\n")
    except (ConfigError, OSError) as exc:
        sys.stderr.write(f"fatigue.runbooks: {exc}\n")
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
