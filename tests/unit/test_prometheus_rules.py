"""Prometheus configuration and rules: promtool checks them, and unit-tests every alerting rule."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

PROM = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("promtool")
    if exe is None:
        pytest.fail("promtool is not installed; run scripts/setup.sh (it installs Debian's prometheus)", pytrace=False)
    return subprocess.run([exe, *args], cwd=PROM, capture_output=True, text=True, timeout=120)


def test_config_is_valid() -> None:
    proc = promtool("check", "config", "prometheus.yml")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_rules_are_valid() -> None:
    proc = promtool("check", "rules", "rules/recording.yml", "rules/alerts.yml")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_rule_unit_tests_pass_and_cover_every_alert() -> None:
    alerts = {r["alert"] for g in yaml.safe_load((PROM / "rules" / "alerts.yml").read_text())["groups"]
              for r in g["rules"]}
    tests = yaml.safe_load((PROM / "tests" / "rules_test.yml").read_text())["tests"]
    covered = {case["alertname"] for t in tests for case in t.get("alert_rule_test", []) if case.get("exp_alerts")}
    assert alerts == covered, f"alerting rules without a firing test: {alerts - covered}"
    proc = promtool("test", "rules", "tests/rules_test.yml")
    assert proc.returncode == 0, proc.stdout + proc.stderr
