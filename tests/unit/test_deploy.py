"""deploy/ parses and holds what operating the worker needs (no cluster, no Docker here).

Every YAML and JSON file is parsed; Deployments have probes on the worker's
health endpoints, resources, a grace period and a non-root security context;
each Deployment has a PodDisruptionBudget; KEDA never scales past the
partition count; every metric an alert or a dashboard uses exists in
``worker/ops/metrics.py``; every setting the manifests set is a real setting.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.metric_names import metric_names
from worker.ops.settings import WorkerSettings

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
K8S = DEPLOY / "k8s"
METRIC = re.compile(r"\bevents_worker_[a-z0-9_]+")
SETTINGS = {f"EW_{name.upper()}" for name in WorkerSettings.model_fields}


def yaml_files() -> list[Path]:
    return sorted(p for p in DEPLOY.rglob("*") if p.suffix in {".yaml", ".yml"})


def documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def manifests() -> Iterator[dict[str, Any]]:
    for path in sorted(K8S.glob("*.yaml")):
        yield from documents(path)


def of_kind(kind: str) -> list[dict[str, Any]]:
    return [doc for doc in manifests() if doc.get("kind") == kind]


def config_map() -> dict[str, str]:
    [config] = [c for c in of_kind("ConfigMap") if c["metadata"]["name"] == "events-worker-config"]
    data: dict[str, str] = config["data"]
    return data


@pytest.mark.parametrize("path", yaml_files(), ids=lambda p: str(p.relative_to(DEPLOY)))
def test_every_yaml_file_parses(path: Path) -> None:
    assert documents(path), f"{path} is empty"


def test_every_json_file_parses() -> None:
    files = sorted(DEPLOY.rglob("*.json"))
    assert files
    for path in files:
        json.loads(path.read_text())


def test_the_expected_files_exist() -> None:
    kinds = {doc["kind"] for doc in manifests()}
    assert {
        "ConfigMap",
        "Secret",
        "Deployment",
        "Service",
        "PodDisruptionBudget",
        "ScaledObject",
        "ServiceMonitor",
        "PrometheusRule",
    } <= kinds
    assert (DEPLOY / "docker-compose.yml").is_file()
    assert (DEPLOY / "grafana" / "events-worker.json").is_file()


def test_kustomization_lists_every_manifest() -> None:
    [kustomization] = documents(K8S / "kustomization.yaml")
    listed = set(kustomization["resources"])
    present = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    # The migrate Job runs before the Deployments roll, so it is applied on its own.
    assert listed == present - {"migrate-job.yaml"}


@pytest.mark.parametrize("component", ["usage", "reprocess"])
def test_deployment_is_operable(component: str) -> None:
    [deployment] = [
        d for d in of_kind("Deployment") if d["metadata"]["name"] == f"events-worker-{component}"
    ]
    pod = deployment["spec"]["template"]["spec"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert pod["terminationGracePeriodSeconds"] >= 30
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    [container] = pod["containers"]
    assert container["args"] == ["run", component]
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    for kind in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(container["resources"][kind])
    port = {p["name"]: p["containerPort"] for p in container["ports"]}["http"]
    assert str(port) == config_map()["EW_HTTP_PORT"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    for probe in ("livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"]["port"] in ("http", port)
    sources = {next(iter(ref.values()))["name"]: next(iter(ref)) for ref in container["envFrom"]}
    assert sources == {
        "events-worker-config": "configMapRef",
        "events-worker-secrets": "secretRef",
    }
    budgets = [
        pdb
        for pdb in of_kind("PodDisruptionBudget")
        if pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    ]
    assert len(budgets) == 1


def test_settings_in_manifests_are_real_settings() -> None:
    assert set(config_map()) <= SETTINGS
    [secret] = [s for s in of_kind("Secret") if s["metadata"]["name"] == "events-worker-secrets"]
    assert set(secret["stringData"]) <= SETTINGS  # envFrom: EW_* keys only
    assert not {k for k in config_map() if "PASSWORD" in k or k == "EW_STORE_URL"}
    [compose] = documents(DEPLOY / "docker-compose.yml")
    assert set(compose["x-worker"]["environment"]) <= SETTINGS


def test_keda_never_scales_past_the_partition_count() -> None:
    partitions = int(config_map()["EW_TOPIC_PARTITIONS"])
    [scaled] = of_kind("ScaledObject")
    spec = scaled["spec"]
    assert spec["scaleTargetRef"]["name"] == "events-worker-usage"
    assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"] <= partitions
    [trigger] = spec["triggers"]
    assert trigger["type"] == "kafka"
    # Group, topic and brokers come from the ConfigMap, through the target's env.
    assert trigger["metadata"]["consumerGroupFromEnv"] == "EW_USAGE_GROUP"
    assert trigger["metadata"]["topicFromEnv"] == "EW_EVENTS_TOPIC"
    assert trigger["metadata"]["bootstrapServersFromEnv"] == "EW_KAFKA_BOOTSTRAP"
    assert trigger["metadata"]["allowIdleConsumers"] == "false"
    [auth] = of_kind("TriggerAuthentication")
    assert trigger["authenticationRef"]["name"] == auth["metadata"]["name"]
    secrets = {s["metadata"]["name"]: s["stringData"] for s in of_kind("Secret")}
    for ref in auth["spec"]["secretTargetRef"]:
        assert ref["key"] in secrets[ref["name"]]
    usage = [d for d in of_kind("Deployment") if d["metadata"]["name"] == "events-worker-usage"]
    assert "replicas" not in usage[0]["spec"]  # KEDA owns the replica count


def test_service_monitor_scrapes_the_metrics_port() -> None:
    [monitor] = of_kind("ServiceMonitor")
    [service] = of_kind("Service")
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    [endpoint] = monitor["spec"]["endpoints"]
    assert endpoint["path"] == "/metrics"
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
    assert service["spec"]["publishNotReadyAddresses"] is True


def alert_rules() -> list[dict[str, Any]]:
    [rule] = of_kind("PrometheusRule")
    return [r for group in rule["spec"]["groups"] for r in group["rules"]]


def test_alerts_cover_the_failure_modes() -> None:
    rules = alert_rules()
    names = {r["alert"] for r in rules}
    assert {
        "EventsWorkerLagGrowing",
        "EventsWorkerNoCommits",
        "EventsWorkerDeadLetterRate",
        "EventsWorkerUnresolvedRate",
        "EventsWorkerInsertErrors",
    } <= names
    for rule in rules:
        assert rule["expr"].strip() and rule["for"]
        assert rule["labels"]["severity"] in {"warning", "critical"}
        assert rule["annotations"]["summary"]


def test_alerts_and_dashboards_use_only_defined_metrics() -> None:
    defined = metric_names()
    used: dict[str, set[str]] = {}
    for rule in alert_rules():
        used.setdefault("PrometheusRule", set()).update(METRIC.findall(rule["expr"]))
    dashboard = json.loads((DEPLOY / "grafana" / "events-worker.json").read_text())
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            used.setdefault(panel["title"], set()).update(METRIC.findall(target["expr"]))
    assert used
    undefined = {where: names - defined for where, names in used.items() if names - defined}
    assert not undefined
    everything = set().union(*used.values())
    for metric in (
        "events_worker_consumer_lag",
        "events_worker_last_commit_timestamp_seconds",
        "events_worker_dlq_messages_total",
        "events_worker_events_unresolved_total",
        "events_worker_clickhouse_insert_errors_total",
    ):
        assert metric in everything


def test_dashboard_has_the_grafana_essentials() -> None:
    dashboard = json.loads((DEPLOY / "grafana" / "events-worker.json").read_text())
    assert dashboard["uid"] and dashboard["title"] and dashboard["schemaVersion"] > 0
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids)) >= 10
    for panel in dashboard["panels"]:
        assert panel["type"] and panel["title"] and panel["targets"]
        assert {"x", "y", "w", "h"} <= set(panel["gridPos"])
        assert all(target["refId"] and target["expr"] for target in panel["targets"])


def test_compose_runs_the_whole_stack() -> None:
    [compose] = documents(DEPLOY / "docker-compose.yml")
    services = compose["services"]
    assert {
        "kafka",
        "clickhouse",
        "usage-worker",
        "reprocess-worker",
        "prometheus",
        "grafana",
    } <= set(services)
    assert services["usage-worker"]["command"] == ["run", "usage"]
    assert services["reprocess-worker"]["command"] == ["run", "reprocess"]
    for volume in services["grafana"]["volumes"] + services["prometheus"]["volumes"]:
        source = volume.split(":", 1)[0]
        assert (DEPLOY / source).exists(), source
    [prometheus] = documents(DEPLOY / "prometheus" / "prometheus.yml")
    targets = {
        name
        for job in prometheus["scrape_configs"]
        for sd in job["dns_sd_configs"]
        for name in sd["names"]
    }
    assert targets == {"usage-worker", "reprocess-worker"}


def test_deploy_readme_lists_exactly_the_defined_metrics() -> None:
    readme = (DEPLOY / "README.md").read_text()
    listed = set(METRIC.findall(readme))
    assert listed <= metric_names()
    from worker.ops.metrics import Metrics

    families = {
        family.name + ("_total" if family.type == "counter" else "")
        for family in Metrics().registry.collect()
    }
    assert families <= listed
