"""The model bundle: round-trips exactly, and refuses missing, altered, truncated or unsafe contents."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from core.records import read_records
from model.bundle import MODEL_FILE, BundleError, load_bundle, read_manifest
from model.preprocessing import Preprocessor
from model.scorer import Scorer
from training.autoencoder import ModelConfig, build_autoencoder
from training.bundle_writer import save_bundle


def test_save_load_gives_identical_scores(tmp_path: Path, kdd_path: Path) -> None:
    data = read_records(kdd_path, limit=3000)
    prep = Preprocessor.fit(data.features)
    model = build_autoencoder(prep.width, ModelConfig.from_preset("default", epochs=1))
    x = prep.transform(data.features)
    model.fit(x, x, epochs=1, batch_size=256, verbose=0)
    before = Scorer(model, prep).score_frame(data.features)
    out = save_bundle(tmp_path / "b", model=model, preprocessor=prep, threshold=0.123, training={"t": 1},
                      data_sha256="abc", validation={})
    bundle = load_bundle(out)
    after = bundle.scorer().score_frame(data.features)
    assert bundle.threshold == 0.123 and bundle.version.startswith("ae-")
    np.testing.assert_array_equal(before.score, after.score)
    np.testing.assert_array_equal(before.feature_error, after.feature_error)


def test_manifest_records_everything_the_detector_needs(small_bundle: Path) -> None:
    m = read_manifest(small_bundle)
    for key in ("version", "threshold", "training", "data_sha256", "validation", "files", "features", "libraries"):
        assert key in m, key
    assert len(m["data_sha256"]) == 64
    assert m["training"]["model"]["latent"] == 4
    assert 0.0 < m["validation"]["calibration_fpr"] <= 0.01


@pytest.fixture
def copy(small_bundle: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "copy"
    shutil.copytree(small_bundle, dst)
    return dst


def test_missing_file_is_named(copy: Path) -> None:
    (copy / "preprocessing.json").unlink()
    with pytest.raises(BundleError, match="preprocessing.json is missing"):
        load_bundle(copy)


def test_truncated_model_is_refused(copy: Path) -> None:
    data = (copy / MODEL_FILE).read_bytes()
    (copy / MODEL_FILE).write_bytes(data[: len(data) // 2])
    with pytest.raises(BundleError, match="model.keras does not match its checksum"):
        load_bundle(copy)


def test_altered_threshold_file_is_refused(copy: Path) -> None:
    p = copy / "preprocessing.json"
    p.write_text(p.read_text().replace('"clip": [', '"clip": [ '))
    with pytest.raises(BundleError, match="altered or truncated"):
        load_bundle(copy)


def test_not_a_bundle(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="does not exist"):
        load_bundle(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(BundleError, match="has no bundle.json"):
        load_bundle(tmp_path / "empty")


def test_lambda_layer_model_is_refused_by_safe_mode(copy: Path) -> None:
    """A model file carrying Python code (a Lambda layer) must not load, even with valid checksums."""
    import keras

    from model.bundle import sha256_file

    prep = Preprocessor.load(copy / "preprocessing.json")
    inp = keras.Input((prep.width,))
    evil = keras.Model(inp, keras.layers.Lambda(lambda t: t * 1.0)(inp))
    evil.save(copy / MODEL_FILE)
    manifest = json.loads((copy / "bundle.json").read_text())
    manifest["files"][MODEL_FILE] = sha256_file(copy / MODEL_FILE)  # an attacker can fix checksums too
    (copy / "bundle.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match=r"not stock Keras layers: Lambda"):
        load_bundle(copy)


def test_custom_layer_model_is_refused_even_when_its_class_is_importable(copy: Path) -> None:
    """safe_mode alone would load this here, where the class is registered; the bundle check refuses it."""
    import keras

    from model.bundle import sha256_file

    @keras.saving.register_keras_serializable(package="Evil")
    class Passthrough(keras.layers.Layer):
        def call(self, x):  # noqa: ANN001, ANN202
            return x

    prep = Preprocessor.load(copy / "preprocessing.json")
    inp = keras.Input((prep.width,))
    keras.Model(inp, keras.layers.Dense(prep.width)(Passthrough()(inp))).save(copy / MODEL_FILE)
    manifest = json.loads((copy / "bundle.json").read_text())
    manifest["files"][MODEL_FILE] = sha256_file(copy / MODEL_FILE)
    (copy / "bundle.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match=r"not stock Keras layers: Passthrough from module"):
        load_bundle(copy)


def test_lambda_refused_by_safe_mode_too(copy: Path) -> None:
    """Defence in depth: Keras' own safe_mode refuses the Lambda layer without the bundle's check."""
    import keras

    prep = Preprocessor.load(copy / "preprocessing.json")
    inp = keras.Input((prep.width,))
    keras.Model(inp, keras.layers.Lambda(lambda t: t * 1.0)(inp)).save(copy / MODEL_FILE)
    with pytest.raises(ValueError, match="safe_mode"):
        keras.models.load_model(copy / MODEL_FILE, compile=False, safe_mode=True)


def _manifest(copy: Path, **changes: object) -> None:
    import json

    m = json.loads((copy / "bundle.json").read_text())
    m.update(changes)
    (copy / "bundle.json").write_text(json.dumps(m))


@pytest.mark.hostile
@pytest.mark.parametrize(("change", "reason"), [
    ({"threshold": float("nan")}, "threshold must be a finite positive number"),
    ({"threshold": -1}, "threshold must be a finite positive number"),
    ({"threshold": "0.1"}, "threshold must be a finite positive number"),
    ({"files": ["model.keras"]}, "files must map"),
    ({"files": {"model.keras": 5}}, "files must map"),
    ({"features": "duration"}, "features must be a list"),
    ({"version": {"x": 1}}, "version must be a string"),
])
def test_a_hostile_manifest_is_refused_with_a_reason(copy: Path, change: dict, reason: str) -> None:
    """Issue 31 item 15: bundle.json is hostile input (a NaN threshold once swapped in and alerted on nothing)."""
    _manifest(copy, **change)
    with pytest.raises(BundleError, match=reason):
        load_bundle(copy)


@pytest.mark.hostile
@pytest.mark.parametrize("target", ["/dev/zero", "/etc/hostname", "../outside"])
def test_files_outside_the_bundle_or_not_regular_are_refused_without_reading_them(copy: Path, target: str) -> None:
    import json

    m = json.loads((copy / "bundle.json").read_text())
    if target.startswith(".."):
        (copy.parent / "outside").write_text("x")
        m["files"]["../outside"] = "0" * 64
    else:
        (copy / "zero").symlink_to(target)
        m["files"]["zero"] = "0" * 64
    (copy / "bundle.json").write_text(json.dumps(m))
    with pytest.raises(BundleError, match="not a file name inside|resolves outside|not a regular file"):
        load_bundle(copy)  # /dev/zero used to hang the loader in sha256_file
