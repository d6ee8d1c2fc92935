"""Every alert of deploy/k8s/prometheusrule.yaml fires, and only when it should (promtool).

The manifest's rule groups are written to a rule file next to a copy of
``promtool/alerts_test.yaml`` and run with ``promtool test rules`` (Debian's
``prometheus`` package; ``make test-tools`` installs it). The test file must
hold a firing and a quiet case for every alert, its input series must be
shaped like what Prometheus scrapes from the worker, and a rule broken on
purpose must fail its test.
"""

from __future__ import annotations

import copy
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.prometheus_rules import alert_names, promtool, rule_groups, tool, write_rule_file
from worker.ops.metrics import Metrics

TESTS = Path(__file__).resolve().parent / "promtool" / "alerts_test.yaml"
#: Target labels the Prometheus Operator adds to every series of a ServiceMonitor target.
TARGET_LABELS = {"job", "namespace", "pod", "instance"}
SERIES = re.compile(r"^(?P<name>[a-z_:][a-z0-9_:]*)\{(?P<labels>.*)\}$")
LABEL = re.compile(r'(?P<key>[a-zA-Z_][a-zA-Z0-9_]*)="[^"]*"')


def promtool_test(tmp_path: Path, groups: list[dict[str, Any]]) -> subprocess.CompletedProcess[str]:
    write_rule_file(tmp_path / "rules.yaml", groups)
    shutil.copy(TESTS, tmp_path / TESTS.name)
    return promtool("test", "rules", TESTS.name, cwd=tmp_path)


def promtool_cases() -> list[dict[str, Any]]:
    cases: list[dict[str, Any]] = yaml.safe_load(TESTS.read_text())["tests"]
    return cases


def test_promtool_accepts_the_rules(tmp_path: Path) -> None:
    rules = write_rule_file(tmp_path / "rules.yaml", rule_groups())
    result = promtool("check", "rules", str(rules))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{len(alert_names())} rules found" in result.stdout


def test_every_alert_passes_its_promtool_tests(tmp_path: Path) -> None:
    result = promtool_test(tmp_path, rule_groups())
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_has_a_firing_and_a_quiet_case() -> None:
    firing: set[str] = set()
    quiet: set[str] = set()
    for case in promtool_cases():
        for check in case["alert_rule_test"]:
            (firing if check["exp_alerts"] else quiet).add(check["alertname"])
    assert firing == quiet == alert_names()


def test_input_series_are_shaped_like_the_worker_metrics() -> None:
    metrics = Metrics()
    metrics.set_lag("events", 0, 1)  # lag series exist only for owned partitions
    exported = {
        sample.name: set(sample.labels)
        for family in text_string_to_metric_families(metrics.render().decode())
        for sample in family.samples
    }
    series = [s["series"] for case in promtool_cases() for s in case["input_series"]]
    assert series
    for text in series:
        match = SERIES.match(text)
        assert match, text
        assert match["name"] in exported, text
        labels = {m["key"] for m in LABEL.finditer(match["labels"])}
        assert labels - TARGET_LABELS == exported[match["name"]], text
        assert labels >= TARGET_LABELS, text


def test_a_broken_rule_fails_its_promtool_test(tmp_path: Path) -> None:
    groups = copy.deepcopy(rule_groups())
    [rule] = [r for g in groups for r in g["rules"] if r.get("alert") == "EventsWorkerNoCommits"]
    assert "> 600" in rule["expr"]
    rule["expr"] = rule["expr"].replace("> 600", "> 6000")  # would page an hour late
    result = promtool_test(tmp_path, groups)
    assert result.returncode != 0
    assert "EventsWorkerNoCommits" in result.stdout + result.stderr


def test_a_missing_tool_names_the_install_step() -> None:
    with pytest.raises(RuntimeError, match="make test-tools"):
        tool("no-such-tool-here")
