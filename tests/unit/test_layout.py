"""The layout tells the data flow: the apps stand on ``core`` and not on each other; modules stay small."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("core", "model", "producer", "training", "detector", "incidents")
# what each package may import of the others: training writes bundles, the detector reads them, both through model
ALLOWED = {"core": set(), "model": {"core"}, "producer": {"core"}, "training": {"core", "model"},
           "detector": {"core", "model"}, "incidents": {"core"}}


def _modules(package: str) -> list[Path]:
    return sorted((REPO / package).rglob("*.py"))


def _imports(path: Path) -> set[str]:
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module.split(".")[0])
    return out


@pytest.mark.parametrize("package", PACKAGES)
def test_packages_import_only_what_the_data_flow_allows(package: str) -> None:
    for path in _modules(package):
        others = (_imports(path) & (set(PACKAGES) | {"deploy", "scripts", "tests", "testkit"})) - {package}
        assert others <= ALLOWED[package], f"{path.relative_to(REPO)} imports {sorted(others - ALLOWED[package])}"


def test_core_imports_nothing_heavy() -> None:
    for path in _modules("core"):
        assert not _imports(path) & {"tensorflow", "keras", "sklearn", "matplotlib"}, path


def test_the_model_package_needs_keras_but_not_tensorflow_sklearn_or_matplotlib() -> None:
    """A serving image carries Keras on a light backend: model/ imports TensorFlow only inside the backend
    switch (when TensorFlow is the Keras backend), never scikit-learn or matplotlib."""
    for path in _modules("model"):
        heavy = _imports(path) & {"sklearn", "matplotlib", "tensorboard", "scipy"}
        assert not heavy, f"{path.relative_to(REPO)} imports {sorted(heavy)}"
        if path.name != "backend.py":
            assert "tensorflow" not in _imports(path), path


@pytest.mark.parametrize("package", ["detector", "incidents"])
def test_the_services_never_import_training(package: str) -> None:
    for path in _modules(package):
        assert "training" not in _imports(path), f"{path.relative_to(REPO)} imports training"
        assert not re.search(r"^\s*(from|import) training\b", path.read_text(), re.M), path


@pytest.mark.parametrize("package", PACKAGES)
def test_functions_and_classes_stay_small(package: str) -> None:
    for path in _modules(package):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                assert length <= 60, f"{path.relative_to(REPO)}:{node.lineno} {node.name} has {length} lines"
            elif isinstance(node, ast.ClassDef):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                assert length <= 250, f"{path.relative_to(REPO)}:{node.lineno} class {node.name} has {length} lines"


def test_each_service_environment_variable_is_written_once() -> None:
    """Settings derive their variables from one declaration; no name is spelled out twice."""
    from detector.settings import DetectorSettings
    from producer.settings import ProducerSettings

    names = set()
    for cls in (DetectorSettings, ProducerSettings):
        names |= {cls.env_name(f) for f in cls.model_fields if f != "kafka"}
    strings = [node.value for pkg in (*PACKAGES, "scripts") for p in sorted((REPO / pkg).rglob("*.py"))
               for node in ast.walk(ast.parse(p.read_text()))
               if isinstance(node, ast.Constant) and isinstance(node.value, str)]  # literals, docstrings included
    for name in sorted(names):
        count = sum(len(re.findall(rf"\b{name}\b", text)) for text in strings)
        assert count <= 1, f"{name} is written {count} times in non-test code"
