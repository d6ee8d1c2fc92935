"""deploy/ validated against real schemas, rendered as kustomize would, and cross-checked.

Every manifest of ``deploy/k8s`` (and the migrate Job) passes its schema:
Kubernetes core kinds through ``kubernetes-validate``, KEDA and Prometheus
Operator kinds through the CRDs vendored in ``deploy/schemas``; manifests
broken on purpose fail. The kustomization renders, every reference between
resources resolves, and the Kafka bootstrap address is written in one place.
The Grafana dashboard holds to Grafana's JSON model and its queries parse
(``promtool check rules``).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.prometheus_rules import promtool, write_rule_file
from tests.unit.manifest_checks import (
    DEPLOY,
    K8S,
    SCHEMAS,
    Manifest,
    RenderError,
    crd_schemas,
    load,
    problems,
    render,
    strings,
)

FIXTURES = Path(__file__).resolve().parent / "fixtures"
MIGRATE_JOB = K8S / "migrate-job.yaml"
DASHBOARD = DEPLOY / "grafana" / "events-worker.json"


def every_manifest() -> list[Manifest]:
    """Every resource under deploy/k8s (the kustomization itself is not one)."""
    paths = sorted(p for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")
    return [doc for path in paths for doc in load(path)]


def rendered() -> list[Manifest]:
    return render(K8S)


def one(manifests: list[Manifest], kind: str, name: str) -> Manifest:
    [found] = [m for m in manifests if m["kind"] == kind and m["metadata"]["name"] == name]
    return found


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return selector.items() <= labels.items()


# -- schemas ---------------------------------------------------------------------


def test_the_vendored_crds_define_every_custom_kind_used() -> None:
    custom = {
        (m["apiVersion"], m["kind"])
        for m in every_manifest()
        if m["apiVersion"].split("/")[0].endswith((".sh", ".com"))
    }
    assert custom == {
        ("keda.sh/v1alpha1", "ScaledObject"),
        ("keda.sh/v1alpha1", "TriggerAuthentication"),
        ("monitoring.coreos.com/v1", "ServiceMonitor"),
        ("monitoring.coreos.com/v1", "PrometheusRule"),
    }
    assert custom <= set(crd_schemas())
    readme = (SCHEMAS / "README.md").read_text()
    for path in SCHEMAS.glob("*.yaml"):
        assert f"`{path.name}`" in readme  # source and version noted


@pytest.mark.parametrize(
    "manifest",
    every_manifest(),
    ids=lambda m: f"{m['kind']}/{m['metadata']['name']}",
)
def test_every_manifest_validates_against_its_schema(manifest: Manifest) -> None:
    assert problems(manifest) == []


def broken() -> list[Manifest]:
    return load(FIXTURES / "broken-manifests.yaml")


@pytest.mark.parametrize("manifest", broken(), ids=lambda m: m["metadata"]["name"])
def test_a_broken_manifest_fails_validation(manifest: Manifest) -> None:
    found = problems(manifest)
    expected = manifest["metadata"]["annotations"]["expect"]
    assert any(problem.split(": ", 1)[0] == expected for problem in found), found


def test_the_broken_fixture_covers_core_and_custom_kinds() -> None:
    kinds = {m["kind"] for m in broken()}
    assert {"Deployment", "Service", "ScaledObject", "TriggerAuthentication"} <= kinds
    assert {"ServiceMonitor", "PrometheusRule"} <= kinds


# -- rendering (kustomize build) ---------------------------------------------------


def test_the_kustomization_renders_every_resource_into_the_namespace() -> None:
    [kustomization] = load(K8S / "kustomization.yaml")
    resources = rendered()
    assert len(resources) == sum(len(load(K8S / r)) for r in kustomization["resources"])
    assert {m["metadata"]["namespace"] for m in resources} == {kustomization["namespace"]}


def test_a_kustomization_naming_a_missing_file_does_not_render() -> None:
    with pytest.raises(RenderError, match=r"configmap\.yaml does not exist"):
        render(FIXTURES / "broken-kustomization")


def pod_env_sources(resources: list[Manifest], pod_spec: dict[str, Any]) -> dict[str, str]:
    """``{key: value}`` of every ConfigMap/Secret the pod's containers take with envFrom."""
    env: dict[str, str] = {}
    for container in pod_spec["containers"]:
        for source in container.get("envFrom", []):
            if "configMapRef" in source:
                config = one(resources, "ConfigMap", source["configMapRef"]["name"])
                env.update(config["data"])
            else:
                secret = one(resources, "Secret", source["secretRef"]["name"])
                env.update(secret["stringData"])
    return env


def test_every_reference_between_resources_resolves() -> None:
    resources = rendered()
    pods = {
        m["metadata"]["name"]: m["spec"]["template"]
        for m in [*resources, *load(MIGRATE_JOB)]
        if m["kind"] in {"Deployment", "Job"}
    }
    for template in pods.values():  # envFrom: ConfigMaps and Secrets exist
        assert pod_env_sources(resources, template["spec"])

    [scaled] = [m for m in resources if m["kind"] == "ScaledObject"]
    target = pods[scaled["spec"]["scaleTargetRef"]["name"]]
    env = pod_env_sources(resources, target["spec"])
    [trigger] = scaled["spec"]["triggers"]
    from_env = {k: v for k, v in trigger["metadata"].items() if k.endswith("FromEnv")}
    assert from_env and set(from_env.values()) <= set(env)
    auth = one(resources, "TriggerAuthentication", trigger["authenticationRef"]["name"])
    for ref in auth["spec"]["secretTargetRef"]:
        assert ref["key"] in one(resources, "Secret", ref["name"])["stringData"]

    [service] = [m for m in resources if m["kind"] == "Service"]
    scraped = [
        t for t in pods.values() if selects(service["spec"]["selector"], t["metadata"]["labels"])
    ]
    assert len(scraped) == 2  # usage and reprocess, not the migrate Job
    for template in scraped:
        [container] = template["spec"]["containers"]
        names = {p["name"] for p in container["ports"]}
        assert {p["targetPort"] for p in service["spec"]["ports"]} <= names
    [monitor] = [m for m in resources if m["kind"] == "ServiceMonitor"]
    assert selects(monitor["spec"]["selector"]["matchLabels"], service["metadata"]["labels"])

    for budget in (m for m in resources if m["kind"] == "PodDisruptionBudget"):
        matched = [
            t
            for t in pods.values()
            if selects(budget["spec"]["selector"]["matchLabels"], t["metadata"]["labels"])
        ]
        assert len(matched) == 1, budget["metadata"]["name"]


def test_the_kafka_bootstrap_address_is_set_in_one_place() -> None:
    resources = rendered() + load(MIGRATE_JOB)
    config = one(resources, "ConfigMap", "events-worker-config")
    address = config["data"]["EW_KAFKA_BOOTSTRAP"]
    hosts = {server.rsplit(":", 1)[0] for server in address.split(",")}
    mentions = [s for s in strings(resources) if any(host in s for host in hosts)]
    assert mentions == [address]


# -- Grafana dashboard ---------------------------------------------------------------

#: Variables Grafana itself provides in queries.
GRAFANA_GLOBALS = {"__rate_interval", "__interval", "__range"}
VARIABLE = re.compile(r"\$\{?(\w+)")


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def panels(container: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel, rows' nested panels included."""
    found: list[dict[str, Any]] = []
    for panel in container.get("panels", []):
        found.append(panel)
        found.extend(panels(panel))
    return found


def test_the_dashboard_follows_grafanas_json_model() -> None:
    board = dashboard()
    # Datasource references by uid (not name) exist from schemaVersion 36 (Grafana 9).
    assert isinstance(board["schemaVersion"], int) and board["schemaVersion"] >= 36
    assert re.fullmatch(r"[A-Za-z0-9_-]{1,40}", board["uid"])
    ids = [panel["id"] for panel in panels(board)]
    assert all(isinstance(i, int) and i > 0 for i in ids)
    assert len(ids) == len(set(ids))
    [variable] = [v for v in board["templating"]["list"] if v["type"] == "datasource"]
    assert variable["query"] == "prometheus"
    reference = {"type": "prometheus", "uid": f"${{{variable['name']}}}"}
    defined = {v["name"] for v in board["templating"]["list"]} | GRAFANA_GLOBALS
    cells: set[tuple[int, int]] = set()
    for panel in panels(board):
        assert panel["datasource"] == reference, panel["title"]
        for target in panel["targets"]:
            assert target.get("datasource", reference) == reference, panel["title"]
            assert set(VARIABLE.findall(target["expr"])) <= defined, target["expr"]
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        area = {
            (x, y)
            for x in range(grid["x"], grid["x"] + grid["w"])
            for y in range(grid["y"], grid["y"] + grid["h"])
        }
        assert not area & cells, f"{panel['title']} overlaps another panel"
        cells |= area


def test_every_dashboard_query_parses(tmp_path: Path) -> None:
    exprs = [t["expr"] for p in panels(dashboard()) for t in p["targets"]]
    rules = [
        {"record": f"dashboard:query_{i}", "expr": VARIABLE.sub("5m", expr).replace("{5m}", "5m")}
        for i, expr in enumerate(exprs)
    ]
    path = write_rule_file(tmp_path / "queries.yaml", [{"name": "dashboard", "rules": rules}])
    result = promtool("check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{len(exprs)} rules found" in result.stdout


def test_the_schema_readme_names_no_file_that_is_missing() -> None:
    readme = (SCHEMAS / "README.md").read_text()
    named = set(re.findall(r"`([\w.]+\.yaml)`", readme))
    assert named == {p.name for p in SCHEMAS.glob("*.yaml")}
    assert all(
        yaml.safe_load((SCHEMAS / name).read_text())["kind"] == "CustomResourceDefinition"
        for name in named
    )


def test_the_compose_prometheus_config_is_valid() -> None:
    result = promtool("check", "config", str(DEPLOY / "prometheus" / "prometheus.yml"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout
