"""Deployment files, validated statically: Dockerfiles with hadolint, the Compose file against the Compose
spec's JSON Schema, Kubernetes manifests against the API schemas (no cluster can be started here). The
images themselves are built and run by tests/containers/test_containers.py."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
DOCKERFILES = [DEPLOY / "docker" / "Dockerfile", DEPLOY / "docker" / "Dockerfile.gpu"]  # services
TRAINING_DOCKERFILE = DEPLOY / "docker" / "Dockerfile.training"  # a one-shot job: no health check
SERVER_DOCKERFILES = [DEPLOY / "kafka" / "Dockerfile", DEPLOY / "prometheus" / "Dockerfile"]


def tool(name: str) -> str:
    found = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    if found is None:
        pytest.fail(f"{name} is not installed; run scripts/setup.sh (it is a dev dependency)", pytrace=False)
    return found


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_lints_clean_and_runs_as_non_root(dockerfile: Path) -> None:
    proc = subprocess.run([tool("hadolint"), str(dockerfile)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    text = dockerfile.read_text()
    stages = re.split(r"^FROM ", text, flags=re.M)
    final = stages[-1]
    assert len(stages) >= 3, "multi-stage: the build stage's tools stay out of the final image"
    assert re.search(r"^USER 10001$", final, flags=re.M)
    assert "HEALTHCHECK" in final and "/healthz" in final
    assert "pip install" not in final and "apt-get" not in final


def test_training_dockerfile_lints_clean_and_runs_as_non_root() -> None:
    proc = subprocess.run([tool("hadolint"), str(TRAINING_DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    final = re.split(r"^FROM ", TRAINING_DOCKERFILE.read_text(), flags=re.M)[-1]
    assert re.search(r"^USER 10001$", final, flags=re.M) and "pip install" not in final


@pytest.mark.parametrize("dockerfile", SERVER_DOCKERFILES, ids=lambda p: p.parent.name)
def test_server_dockerfiles_lint_clean_and_run_as_non_root(dockerfile: Path) -> None:
    proc = subprocess.run([tool("hadolint"), str(dockerfile)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert re.search(r"^USER [1-9][0-9]*$", dockerfile.read_text(), flags=re.M)
    assert re.search(r"^ARG BASE_IMAGE=debian:bookworm-slim$", dockerfile.read_text(), flags=re.M)


def test_images_install_their_role_and_only_training_has_tensorflow() -> None:
    """Serving images: Keras on JAX (CPU or CUDA 12), no TensorFlow; the training image: CPU TensorFlow."""
    from deploy.docker.requirements import requirements

    serving, training = DOCKERFILES[0].read_text(), TRAINING_DOCKERFILE.read_text()
    assert re.search(r"^ARG EXTRAS=serving$", serving, flags=re.M) and "KERAS_BACKEND=jax" in serving
    assert re.search(r"^ARG EXTRAS=serving-gpu$", DOCKERFILES[1].read_text(), flags=re.M)
    assert re.search(r"^ARG EXTRAS=training$", training, flags=re.M)
    assert re.search(r"^ARG RENAMES=tensorflow=tensorflow-cpu$", training, flags=re.M)
    for extra in ("serving", "serving-gpu"):
        names = [re.match(r"[A-Za-z0-9_.-]+", r).group(0) for r in requirements(REPO / "pyproject.toml", [extra], {})]
        assert "tensorflow" not in names and "scikit-learn" not in names and "keras" in names, names
    cpu = requirements(REPO / "pyproject.toml", ["training"], {"tensorflow": "tensorflow-cpu"})
    assert any(r.startswith("tensorflow-cpu") for r in cpu) and not any(r.startswith("tensorflow>") for r in cpu)


def test_compose_file_matches_the_compose_spec() -> None:
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    schema = json.loads((DEPLOY / "schemas" / "compose-spec.json").read_text())
    errors = list(jsonschema.Draft201909Validator(schema).iter_errors(compose))
    assert not errors, [f"{list(e.path)}: {e.message}" for e in errors]
    services = compose["services"]
    assert {"kafka", "topics", "train", "producer", "detector", "incidents", "prometheus", "grafana"} <= set(services)
    for name, svc in services.items():
        for dep in svc.get("depends_on", {}) or {}:
            assert dep in services, f"{name} depends on unknown service {dep}"
    for svc in ("prometheus", "grafana"):
        for vol in services[svc]["volumes"]:
            host = vol.split(":", 1)[0]
            assert (DEPLOY / host).exists(), f"{svc} mounts {host}, which is not in deploy/"


def test_kubernetes_manifests_validate() -> None:
    files = sorted((DEPLOY / "k8s").glob("*.yaml"))
    proc = subprocess.run([tool("kubernetes-validate"), "--strict", *map(str, files)], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    deployment = next(d for d in yaml.safe_load_all((DEPLOY / "k8s" / "deployment.yaml").read_text())
                      if d["kind"] == "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert "nvidia.com/gpu" in (DEPLOY / "k8s" / "deployment.yaml").read_text()
    assert deployment["spec"]["template"]["metadata"]["annotations"]["prometheus.io/scrape"] == "true"
    # every workload has a disruption budget selecting its pods (issue 32): a drain never takes them all
    docs = [d for f in files for d in yaml.safe_load_all(f.read_text()) if d]
    budgets = [d["spec"]["selector"]["matchLabels"] for d in docs if d["kind"] == "PodDisruptionBudget"]
    workloads = [d for d in docs if d["kind"] in ("Deployment", "StatefulSet")]
    assert {w["metadata"]["name"] for w in workloads} >= {"kdd-detector", "kdd-incidents", "kdd-console"}
    for w in workloads:
        assert w["spec"]["selector"]["matchLabels"] in budgets, f"{w['metadata']['name']} has no PodDisruptionBudget"


def test_keda_scaled_objects_match_kedas_schema_and_stay_within_the_partitions() -> None:
    """KEDA's ScaledObject is a custom resource kubernetes-validate cannot check: validated against KEDA's own
    schema (vendored); each scales a workload of ours, on its own group's lag, to at most the partitions."""
    schema = json.loads((DEPLOY / "schemas" / "keda-scaledobject.schema.json").read_text())
    validator = jsonschema.Draft7Validator(schema)
    docs = list(yaml.safe_load_all((DEPLOY / "k8s" / "keda" / "scaledobjects.yaml").read_text()))
    workloads = {(d["kind"], d["metadata"]["name"]): d for f in sorted((DEPLOY / "k8s").glob("*.yaml"))
                 for d in yaml.safe_load_all(f.read_text()) if d}
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    assert {d["spec"]["scaleTargetRef"]["kind"] for d in docs} == {"StatefulSet", "Deployment"}
    for doc in docs:
        errors = [e.message for e in validator.iter_errors(doc)]
        assert not errors, errors
        target = doc["spec"]["scaleTargetRef"]
        assert (target["kind"], target["name"]) in workloads, target
        trigger = doc["spec"]["triggers"][0]["metadata"]
        assert trigger["allowIdleConsumers"] == "false"
        # the topic is one the stack creates, with as many partitions as the most replicas
        created = str(compose["services"]["topics"])
        assert trigger["topic"] in created and f"--partitions {doc['spec']['maxReplicaCount']}" in created


def test_grafana_provisioning_points_at_the_dashboard() -> None:
    ds = yaml.safe_load((DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text())
    dash = json.loads((DEPLOY / "grafana" / "dashboards" / "kdd-detector.json").read_text())
    uid = ds["datasources"][0]["uid"]
    assert all(p["datasource"]["uid"] == uid for p in dash["panels"])
    titles = " ".join(p["title"] for p in dash["panels"]).lower()
    for needed in ("records per second", "alert rate", "score distribution", "stage latency", "end-to-end",
                   "lag", "dead letters", "model and device"):
        assert needed in titles, needed


def test_the_readme_acl_table_is_the_services_own_declaration() -> None:
    """The README's ACL table is what ``python -m scripts.acl_table`` prints from the services' ``acls()``: the
    grants an operator copies are the ones the least-privilege tests run each service with."""
    from scripts.acl_table import table

    readme = (REPO / "README.md").read_text()
    start, end = readme.index("<!-- acl-table"), readme.index("<!-- /acl-table -->")
    block = readme[readme.index("\n", start) + 1:end].strip()
    assert block == table(), "README ACL table out of date: paste `python -m scripts.acl_table` between the markers"
