"""The shipped monitoring (deploy/prometheus, deploy/grafana, k8s/monitoring) checked with the real
tools: promtool (Debian's `prometheus` package) and a real Prometheus scraping a running stack.

Skipped with a message only where promtool is not installed (deploy/bootstrap.sh --dev installs it).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from fatigue import runbooks
from fatigue.embedded import free_port, wait_for_port
from tests.helpers import FAST_GROUP_ENV, stop_process

REPO = Path(__file__).resolve().parents[2]
PROMETHEUS_DIR = REPO / "deploy" / "prometheus"
ALERTS = PROMETHEUS_DIR / "alerts.yml"
DASHBOARD = REPO / "deploy" / "grafana" / "dashboards" / "contact-fatigue.json"
OPERATIONS = REPO / "docs" / "operations.md"
METRICS_DOC = REPO / "docs" / "metrics.md"
K8S_MONITORING = REPO / "k8s" / "monitoring"
JOBS = ("fatigue-api", "fatigue-scorer", "fatigue-notifier", "fatigue-intake")
API_KEY = "monitoring-test-key-0123"

PROMQL_KEYWORDS = {"sum", "by", "max", "min", "rate", "increase", "delta", "changes", "and", "or", "on", "offset",
                   "histogram_quantile", "absent", "le", "without", "count", "avg", "ignoring", "unless", "bool"}
PROMETHEUS_OWN = {"up"}


def tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        pytest.skip(f"{name} not installed (Debian: apt-get install -y prometheus; deploy/bootstrap.sh --dev does it)")
    return found


def promtool(*args: str, stdin: str | None = None, cwd: Path = PROMETHEUS_DIR) -> subprocess.CompletedProcess[str]:
    return subprocess.run([tool("promtool"), *args], input=stdin, capture_output=True, text=True, cwd=cwd,
                          timeout=60, check=False)


def alert_rules() -> list[dict[str, Any]]:
    return [rule for group in yaml.safe_load(ALERTS.read_text())["groups"] for rule in group["rules"]]


def dashboard_exprs() -> list[str]:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [target["expr"] for panel in panels for target in panel.get("targets", [])]


def metric_names(expr: str) -> set[str]:
    """The metric names an expression selects (label names, functions and `{__name__=~…}` excluded)."""
    without_labels = re.sub(r"\{[^}]*\}", "", re.sub(r"\[[^\]]*\]", "", expr))
    without_strings = re.sub(r'"[^"]*"', "", without_labels)
    words = set(re.findall(r"\b[a-z_][a-z0-9_]*\b", without_strings))
    grouped = {label for group in re.findall(r"(?:by|on|without)\s*\(([^)]*)\)", expr) for label in group.split(",")}
    return {w for w in words - PROMQL_KEYWORDS - {g.strip() for g in grouped} if "_" in w or w in PROMETHEUS_OWN}


# ---------------------------------------------------------------- static checks with promtool


def test_promtool_check_config() -> None:
    done = promtool("check", "config", "prometheus.yml")
    assert done.returncode == 0, done.stdout + done.stderr


def test_promtool_check_rules() -> None:
    done = promtool("check", "rules", "alerts.yml")
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"{len(alert_rules())} rules found" in done.stdout


def test_promtool_test_rules() -> None:
    """Unit tests of the main alerts (deploy/prometheus/alerts.test.yml): fires when it should, not before."""
    done = promtool("test", "rules", "alerts.test.yml")
    assert done.returncode == 0, done.stdout + done.stderr
    tested = set(re.findall(r"alertname: (\w+)", (PROMETHEUS_DIR / "alerts.test.yml").read_text()))
    main_alerts = {"FatigueScorerDown", "FatigueNotifierDown", "FatigueConsumerLagGrowing",
                   "FatigueConsumerNotProgressing", "FatigueEventLagOverSLO", "FatigueDeadLetterTopicReceiving",
                   "FatigueDeliveryFailureRatio", "FatigueEndpointDisabled", "FatigueNoEventsIngested",
                   "FatigueApi5xxRatio", "FatigueIntakeDown", "FatigueIntakeStalled", "FatigueIntakeRetrying"}
    assert main_alerts <= tested


def test_k8s_prometheus_rule_holds_the_same_alerts() -> None:
    (rule,) = [doc for doc in yaml.safe_load_all((K8S_MONITORING / "prometheusrule.yaml").read_text())]
    assert rule["kind"] == "PrometheusRule"
    assert rule["spec"]["groups"] == yaml.safe_load(ALERTS.read_text())["groups"], "k8s/monitoring is out of date"


def test_every_alert_has_a_runbook_section() -> None:
    headings = {line.removeprefix("### ").strip() for line in OPERATIONS.read_text().splitlines()
                if line.startswith("### ")}
    for rule in alert_rules():
        name = rule["alert"]
        assert name in headings, f"docs/operations.md has no '### {name}' runbook section"
        assert rule["annotations"]["runbook_url"] == runbooks.runbook_url(runbooks.DEFAULT_RUNBOOK_BASE_URL, name)
        assert rule["labels"]["severity"] in ("critical", "warning", "info")


def test_runbook_links_are_absolute_so_alertmanager_can_link_them() -> None:
    """A repository-relative path links nowhere from a page or a chat message (issue 17, finding 10)."""
    for rule in alert_rules():
        link = urlsplit(rule["annotations"]["runbook_url"])
        assert link.scheme == "https" and link.netloc and link.path.endswith("/docs/operations.md"), link
        assert link.fragment == rule["alert"].lower()


def test_runbook_links_move_to_a_configured_base_in_every_rule_file(tmp_path: Path) -> None:
    base = "https://wiki.example.internal/ops/contact-fatigue/operations.md"
    copies = [tmp_path / path.name for path in runbooks.RULE_FILES]
    for path, copy in zip(runbooks.RULE_FILES, copies, strict=True):
        original = (REPO / path).read_text()
        assert runbooks.render_rules(original, runbooks.DEFAULT_RUNBOOK_BASE_URL) == original, f"{path} is stale"
        copy.write_text(original)
    assert runbooks.main(["--base-url", base, *map(str, copies)]) == 0
    for path, copy in zip(runbooks.RULE_FILES, copies, strict=True):
        original, rendered = (REPO / path).read_text(), copy.read_text()
        links = runbooks.runbook_urls(rendered)
        assert len(links) == len(runbooks.runbook_urls(original)) > 3
        assert all(link.startswith(base + "#") for link in links), links
        unlinked = [line for line in rendered.splitlines() if "runbook_url" not in line]
        assert unlinked == [line for line in original.splitlines() if "runbook_url" not in line]
    shutil.copy(PROMETHEUS_DIR / "prometheus.yml", tmp_path)  # promtool checks the rendered rules as shipped
    assert promtool("check", "rules", "alerts.yml", cwd=tmp_path).returncode == 0
    assert promtool("test", "rules", "alerts.test.yml", cwd=tmp_path).returncode == 0
    (rule,) = yaml.safe_load_all(copies[-1].read_text())
    assert rule["spec"]["groups"] == yaml.safe_load(copies[0].read_text())["groups"]


@pytest.mark.parametrize("base", ["docs/operations.md", "ftp://x/ops.md", "https://x/ops.md#top", "https://"])
def test_a_runbook_base_that_cannot_make_absolute_links_is_refused(base: str, tmp_path: Path) -> None:
    copy = tmp_path / "alerts.yml"
    shutil.copy(ALERTS, copy)
    assert runbooks.main(["--base-url", base, str(copy)]) == 2
    assert copy.read_text() == ALERTS.read_text()


def test_alerts_and_dashboard_use_documented_metrics() -> None:
    documented = set(re.findall(r"`((?:fatigue|process|python)_[a-z0-9_]+)`", METRICS_DOC.read_text()))
    used = set().union(*map(metric_names, [r["expr"] for r in alert_rules()] + dashboard_exprs()))
    base = {re.sub(r"_(bucket|count|sum)$", "", name) for name in used} - PROMETHEUS_OWN
    assert used, "no metric found: the expression parser is broken"
    assert not base - documented, f"not in docs/metrics.md: {sorted(base - documented)}"


# ---------------------------------------------------------------- a live stack and a real Prometheus


@pytest.fixture
def live_stack(infra_env: dict[str, str], tmp_path: Path, unique: str) -> Iterator[dict[str, str]]:
    """`fatigue up` on the session's broker and Redis; yields job -> host:port of its /metrics, once ready."""
    tool("promtool")
    port = free_port()
    env = {**os.environ, **infra_env, **FAST_GROUP_ENV, "FATIGUE_API_KEYS": f"mon:{API_KEY}",
           "FATIGUE_SCORER_APP_ID": f"scorer-{unique}", "FATIGUE_NOTIFIER_GROUP_ID": f"notifier-{unique}",
           "FATIGUE_LOG_FORMAT": "json", "FATIGUE_WEB_PORT": str(free_port()), "FATIGUE_METRICS_PORT": str(free_port())}
    log_path = tmp_path / "up.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "fatigue.cli", "up", "--port", str(port), "--workdir", str(tmp_path / "up")],
            env=env, stdout=log, stderr=subprocess.STDOUT,
        )
    intake_port = free_port()  # `up` does not run the intake; Compose and k8s do: one more process
    intake_env = {**env, "FATIGUE_METRICS_PORT": str(intake_port), "FATIGUE_INTAKE_GROUP_ID": f"intake-{unique}"}
    with (tmp_path / "intake.log").open("wb") as log:
        intake = subprocess.Popen([sys.executable, "-m", "fatigue.cli", "intake"], env=intake_env, stdout=log,
                                  stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 90
        while '"ready": true' not in log_path.read_text():
            assert proc.poll() is None and time.monotonic() < deadline, log_path.read_text()[-3000:]
            time.sleep(0.3)
        wait_for_port(intake_port, 30, intake)  # type: ignore[arg-type]
        yield {"fatigue-api": f"127.0.0.1:{port}", "fatigue-scorer": f"127.0.0.1:{env['FATIGUE_WEB_PORT']}",
               "fatigue-notifier": f"127.0.0.1:{env['FATIGUE_METRICS_PORT']}",
               "fatigue-intake": f"127.0.0.1:{intake_port}"}
    finally:
        stop_process(intake, signal.SIGTERM, timeout_s=20)
        stop_process(proc, signal.SIGINT, timeout_s=40)


@pytest.fixture
def prometheus(live_stack: dict[str, str], tmp_path: Path) -> Iterator[str]:
    """A real Prometheus on loopback scraping the stack every second, with the shipped alert rules."""
    binary = tool("prometheus")
    shutil.copy(ALERTS, tmp_path / "alerts.yml")
    config = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    config["global"].update(scrape_interval="1s", evaluation_interval="1s")
    config["scrape_configs"] = [job for job in config["scrape_configs"] if job["job_name"] in live_stack]
    for job in config["scrape_configs"]:
        job["static_configs"] = [{"targets": [live_stack[job["job_name"]]]}]
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    proc = subprocess.Popen(
        [binary, f"--config.file={tmp_path / 'prometheus.yml'}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
         f"--web.listen-address=127.0.0.1:{port}"],
        stdout=(tmp_path / "prometheus.log").open("wb"), stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for_port(port, 30, proc)  # type: ignore[arg-type]
        # The port answers before the storage is ready: queries get 503 "Service Unavailable" (plain text)
        # until /-/ready says 200 (seen on a loaded machine).
        deadline = time.monotonic() + 30
        while httpx.get(f"{base}/-/ready", timeout=5).status_code != 200:
            assert proc.poll() is None and time.monotonic() < deadline, "Prometheus did not become ready"
            time.sleep(0.2)
        yield base
    finally:
        stop_process(proc, signal.SIGTERM, timeout_s=20)


def query(base: str, expr: str) -> list[dict[str, Any]]:
    answer = httpx.get(f"{base}/api/v1/query", params={"query": expr}, timeout=10).json()
    assert answer["status"] == "success", (expr, answer)
    return answer["data"]["result"]  # type: ignore[no-any-return]


@pytest.mark.integration
def test_a_real_prometheus_scrapes_every_service_and_the_dashboard_and_alerts_match_the_scrapes(
    live_stack: dict[str, str], prometheus: str
) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        lag = query(prometheus, "fatigue_consumer_lag_records")
        if {r["metric"]["job"] for r in query(prometheus, "up == 1")} == set(JOBS) and \
                {r["metric"]["group"].split("-")[0] for r in lag} == {"scorer", "notifier", "intake"}:
            break
        time.sleep(1)
    scraped: dict[str, str] = {job: httpx.get(f"http://{target}/metrics", timeout=10).text
                               for job, target in live_stack.items()}
    for job, text in scraped.items():  # the same check Prometheus' own tooling makes of an exposition
        done = promtool("check", "metrics", stdin=text)
        assert done.returncode == 0, f"{job}: {done.stdout}{done.stderr}"

    assert {r["metric"]["job"] for r in query(prometheus, "up == 1")} == set(JOBS)
    builds = {r["metric"]["job"]: r["metric"]["service"] for r in query(prometheus, "fatigue_build_info")}
    assert builds == {"fatigue-api": "api", "fatigue-scorer": "scorer", "fatigue-notifier": "notifier",
                      "fatigue-intake": "intake"}
    assert {r["metric"]["job"] for r in query(prometheus, "process_resident_memory_bytes")} == set(JOBS)
    lag_groups = {r["metric"]["group"].split("-")[0] for r in query(prometheus, "fatigue_consumer_lag_records")}
    assert lag_groups == {"scorer", "notifier", "intake"}, "consumer lag per partition from every consumer"
    assert query(prometheus, 'fatigue_scorer_dead_letters_total{stage="scorer.decode"}'), "created at zero"
    assert query(prometheus, 'fatigue_intake_dead_letters_total{stage="intake.validate"}'), "created at zero"
    assert query(prometheus, 'fatigue_api_decisions_total{outcome="defer", rule="quiet_hours"}'), "created at zero"

    live = {sample.name for text in scraped.values() for family in text_string_to_metric_families(text)
            for sample in family.samples} | PROMETHEUS_OWN
    for expr in dashboard_exprs():
        assert metric_names(expr) <= live, f"dashboard: {sorted(metric_names(expr) - live)} not scraped"
        query(prometheus, expr)  # valid PromQL on a real server
    for rule in alert_rules():
        assert metric_names(rule["expr"]) <= live, f"{rule['alert']}: {sorted(metric_names(rule['expr']) - live)}"
    rules = httpx.get(f"{prometheus}/api/v1/rules", timeout=10).json()["data"]["groups"]
    assert {r["name"] for g in rules for r in g["rules"]} == {r["alert"] for r in alert_rules()}
    assert all(r["health"] in ("ok", "unknown") for g in rules for r in g["rules"]), rules


def test_the_dashboard_shows_the_suppressed_sends_and_the_intake() -> None:
    """Issue 17: pre-send decisions by outcome and rule; the intake like the other services."""
    used = set().union(*map(metric_names, dashboard_exprs()))
    wanted = {"fatigue_api_decisions_total", "fatigue_intake_records_total", "fatigue_intake_retries_total",
              "fatigue_intake_batch_seconds_bucket", "fatigue_intake_last_poll_timestamp_seconds",
              "fatigue_intake_dead_letters_total"}
    assert wanted <= used, f"no panel for {sorted(wanted - used)}"
    assert any("rule" in expr and "fatigue_api_decisions_total" in expr for expr in dashboard_exprs())
    assert any('job="fatigue-intake"' in expr and "fatigue_consumer_lag_records" in expr for expr in dashboard_exprs())


def test_k8s_pod_monitor_scrapes_each_service_by_a_port_it_has_under_the_alerts_job_names() -> None:
    (monitor,) = yaml.safe_load_all((K8S_MONITORING / "podmonitor.yaml").read_text())
    workloads = {}
    for path in (REPO / "k8s").glob("*.yaml"):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("kind") == "Deployment":
                labels = doc["spec"]["template"]["metadata"]["labels"]
                ports = {p["name"] for c in doc["spec"]["template"]["spec"]["containers"] for p in c.get("ports", [])}
                workloads[labels["app.kubernetes.io/component"]] = ports
    selected = next(e["values"] for e in monitor["spec"]["selector"]["matchExpressions"]
                    if e["key"] == "app.kubernetes.io/component")
    jobs = {}
    for endpoint in monitor["spec"]["podMetricsEndpoints"]:
        (relabel,) = endpoint["relabelings"]
        owners = [name for name in selected if endpoint["port"] in workloads.get(name, set())]
        assert len(owners) == 1, f"port {endpoint['port']} is on {owners}"
        jobs[relabel["replacement"]] = owners[0]
        assert endpoint["path"] == "/metrics" and relabel["targetLabel"] == "job"
    assert jobs == {"fatigue-api": "api", "fatigue-scorer": "scorer", "fatigue-notifier": "notifier",
                    "fatigue-intake": "intake"}
    kustomization = yaml.safe_load((K8S_MONITORING / "kustomization.yaml").read_text())
    assert kustomization["kind"] == "Component"
    assert sorted(kustomization["resources"]) == ["podmonitor.yaml", "prometheusrule.yaml"]
