"""deploy/README.md's production checklist agrees with the manifests, and its edits work.

The topic commands create every topic the ConfigMap names, with its partition
count, replication and compaction; the image ``sed`` line, run on a copy of
``deploy/k8s``, repoints every workload and leaves valid manifests; every
file, Job and Deployment the commands name exists; every dashboard panel is
explained. (The commands that need a broker or a store run in
``tests/integration/test_deploy_checklist.py``.)
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.deploy_readme import README, command, shell_lines, topic_specs
from tests.unit.manifest_checks import DEPLOY, K8S, load, problems, render
from worker.cli import main
from worker.samples.synthetic import build_catalog


def config_map() -> dict[str, str]:
    [config] = load(K8S / "configmap.yaml")
    data: dict[str, str] = config["data"]
    return data


def test_topic_commands_create_every_worker_topic_for_production() -> None:
    config = config_map()
    specs = {spec.name: spec for spec in topic_specs()}
    names = ("EW_EVENTS_TOPIC", "EW_DLQ_TOPIC", "EW_CATALOG_TOPIC", "EW_REPROCESS_TOPIC")
    assert set(specs) == {config[name] for name in names}
    for spec in specs.values():
        assert spec.partitions == int(config["EW_TOPIC_PARTITIONS"]), spec.name
        assert spec.replication_factor >= 3, spec.name
        assert int(spec.config["min.insync.replicas"]) == spec.replication_factor - 1
        assert {"--bootstrap-server", "--if-not-exists"} <= spec.options
        compacted = spec.config.get("cleanup.policy") == "compact"
        assert compacted == (spec.name == config["EW_CATALOG_TOPIC"]), spec.name


def test_the_image_command_repoints_every_workload(tmp_path: Path) -> None:
    shutil.copytree(K8S, tmp_path / "deploy" / "k8s")
    line = command("sed -i")
    result = subprocess.run(
        ["bash", "-c", f"IMAGE=registry.example/ew VERSION=1.2.3; {line}"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    copied = tmp_path / "deploy" / "k8s"
    workloads = [
        m
        for path in sorted(copied.glob("*.yaml"))
        if path.name != "kustomization.yaml"
        for m in load(path)
        if m["kind"] in {"Deployment", "Job"}
    ]
    assert {m["metadata"]["name"] for m in workloads} == {
        "events-worker-usage",
        "events-worker-reprocess",
        "events-worker-migrate",
    }
    for manifest in workloads:
        images = {c["image"] for c in manifest["spec"]["template"]["spec"]["containers"]}
        assert images == {"registry.example/ew:1.2.3"}, manifest["metadata"]["name"]
        assert problems(manifest) == []
    assert len(render(copied)) == len(render(K8S))


def test_the_commands_name_only_what_exists() -> None:
    lines = shell_lines()
    files = {word for line in lines for word in re.findall(r"deploy/k8s/[\w.-]+\.yaml", line)}
    assert files and all((DEPLOY.parent / f).is_file() for f in files)
    names = {
        (m["kind"].lower(), m["metadata"]["name"])
        for m in [*render(K8S), *load(K8S / "migrate-job.yaml")]
    }
    named = {
        (kind.lower(), name)
        for line in lines
        for kind, name in re.findall(r"\b(job|deployment|scaledobject)[/ ]([\w-]+)", line)
    }
    assert named == {
        ("job", "events-worker-migrate"),
        ("deployment", "events-worker-usage"),
        ("deployment", "events-worker-reprocess"),
        ("scaledobject", "events-worker-usage"),
    }
    assert named <= names
    [job] = load(K8S / "migrate-job.yaml")
    [container] = job["spec"]["template"]["spec"]["containers"]
    assert container["args"] == ["migrate"]  # what the integration test runs


def test_every_dashboard_panel_is_explained() -> None:
    dashboard = json.loads((DEPLOY / "grafana" / "events-worker.json").read_text())
    section = README.read_text().split("### The dashboard's panels", 1)[1]
    explained = set(re.findall(r"^\| ([^|]+?) \|", section, re.MULTILINE)) - {"panel"}
    assert explained == {panel["title"] for panel in dashboard["panels"]}


def test_the_catalog_check_command_passes_a_valid_file_and_stops_a_broken_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    words = command("events-worker catalog check").split("#")[0].split()
    assert words[:3] == ["events-worker", "catalog", "check"]
    monkeypatch.chdir(tmp_path)
    catalog = build_catalog(customers=3, line_items_per_customer=2)
    (tmp_path / words[3]).write_text(json.dumps(catalog))
    assert main(words[1:]) == 0
    capsys.readouterr()

    catalog["prices"][0]["unit_amout"] = "0.01"  # a typo must never change a bill
    (tmp_path / words[3]).write_text(json.dumps(catalog))
    assert main(words[1:]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "unit_amout" in err
