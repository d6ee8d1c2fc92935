"""The alert rules of ``deploy/k8s/prometheusrule.yaml`` as Prometheus rule files, and promtool.

Shared by the promtool unit tests and the Prometheus integration test. The
PrometheusRule's ``spec`` is exactly a Prometheus rule file (``groups:``):
what the Prometheus Operator hands to Prometheus, so promtool and Prometheus
here evaluate the rules as written in the manifest.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
PROMETHEUS_RULE = DEPLOY / "k8s" / "prometheusrule.yaml"
#: Where the tools come from (Makefile `test-tools`: Debian's `prometheus` package).
INSTALL_HINT = "install Debian's prometheus package: `make test-tools` (as root)"


def rule_groups() -> list[dict[str, Any]]:
    """The rule groups of the PrometheusRule manifest, unchanged."""
    [rule] = [
        doc
        for doc in yaml.safe_load_all(PROMETHEUS_RULE.read_text())
        if doc and doc.get("kind") == "PrometheusRule"
    ]
    groups: list[dict[str, Any]] = rule["spec"]["groups"]
    return groups


def alert_names(groups: list[dict[str, Any]] | None = None) -> set[str]:
    """Every alert name of ``groups`` (default: the manifest's)."""
    groups = rule_groups() if groups is None else groups
    return {rule["alert"] for group in groups for rule in group["rules"] if "alert" in rule}


def write_rule_file(path: Path, groups: list[dict[str, Any]]) -> Path:
    """Write ``groups`` as a Prometheus rule file at ``path``."""
    path.write_text(yaml.safe_dump({"groups": groups}, sort_keys=False))
    return path


def tool(name: str) -> str:
    """The path of ``promtool``/``prometheus``; raises with the install hint when absent."""
    found = shutil.which(name)
    if found is None:
        raise RuntimeError(f"{name} not found on PATH: {INSTALL_HINT}")
    return found


def promtool(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``promtool args...`` (at most 120 s) and capture its output."""
    return subprocess.run(
        [tool("promtool"), *args], cwd=cwd, capture_output=True, text=True, timeout=120
    )
