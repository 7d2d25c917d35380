"""The model bundle: everything the detector needs, in one directory, checked before it is trusted.

Layout::

    BUNDLE/
      model.keras          Keras model, stock layers only (loaded with safe_mode=True)
      preprocessing.json   fitted preprocessing (model.preprocessing)
      schema.json          the record schema the model was trained on (core.schema); the detector parses with it
      profile.json         the fit rows' distribution per feature (model.profile): the drift baseline
      calibration.json     the calibration rows' score quantiles (model.calibration): thresholds at any FPR
      bundle.json          manifest: version id, threshold, training config, data checksum, validation
                           metrics, library versions, and the sha256 of every other file

A bundle is an envelope, not just weights: the detector refuses one whose files are missing, altered
or truncated, or whose schema, preprocessing and manifest disagree on the features, with a message that
says which. A bundle written before schema files existed reads as KDD99.

This module reads bundles (the detector's side); ``training.bundle_writer`` writes them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import zipfile
from pathlib import Path
from typing import Any

from core.schema import RecordSchema, SchemaError, kdd99
from model.calibration import CALIBRATION_FILE, ScoreDistribution
from model.preprocessing import PreprocessingError, Preprocessor
from model.profile import PROFILE_FILE, FeatureProfile
from model.scorer import Scorer

MANIFEST = "bundle.json"
MODEL_FILE = "model.keras"
PREPROCESSING_FILE = "preprocessing.json"
SCHEMA_FILE = "schema.json"
FORMAT = "kdd-ae-bundle"
FORMAT_VERSION = 1
MAX_MANIFEST_BYTES = 1 << 20
MAX_FILE_BYTES = 1 << 30  # a model of this project is a few MB; anything near this is not one
MAX_FILES = 64


class BundleError(RuntimeError):
    """A bundle is missing, incomplete, corrupt, or unsafe to load."""


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


@dataclasses.dataclass(frozen=True)
class Bundle:
    path: Path
    manifest: dict[str, Any]
    preprocessor: Preprocessor
    model: Any

    @property
    def version(self) -> str:
        return str(self.manifest["version"])

    @property
    def schema(self) -> RecordSchema:
        return self.preprocessor.schema

    @property
    def threshold(self) -> float:
        return float(self.manifest["threshold"])

    def profile(self) -> FeatureProfile | None:
        """The training distribution per feature (``model.profile``), or None for bundles made before it."""
        if PROFILE_FILE not in self.manifest["files"]:
            return None
        return FeatureProfile.from_dict(json.loads((self.path / PROFILE_FILE).read_text()))

    def calibration(self) -> ScoreDistribution | None:
        """The calibration rows' score distribution (``model.calibration``), or None for older bundles."""
        if CALIBRATION_FILE not in self.manifest["files"]:
            return None
        return ScoreDistribution.from_dict(json.loads((self.path / CALIBRATION_FILE).read_text()))

    def threshold_for(self, target_fpr: float | None = None, threshold: float | None = None) -> float:
        """The threshold in force: an absolute one, one placed at a target FPR, or the bundle's own."""
        if threshold is not None:
            return float(threshold)
        if target_fpr is None:
            return self.threshold
        dist = self.calibration()
        if dist is None:
            raise BundleError(f"{self.path}: made before bundles kept their calibration scores; retrain it to "
                              "choose a target false-positive rate, or pass an absolute threshold")
        return dist.threshold_at(target_fpr)

    def scorer(self) -> Scorer:
        return Scorer(self.model, self.preprocessor)


def read_manifest(path: str | Path) -> dict[str, Any]:
    """Read and verify the manifest and file checksums, without loading TensorFlow."""
    path = Path(path)
    if not path.is_dir():
        raise BundleError(f"model bundle {path} does not exist or is not a directory; train one with "
                          "`python -m training train --out DIR` or pass --model DIR")
    manifest_path = path / MANIFEST
    if not manifest_path.exists():
        raise BundleError(f"model bundle {path} has no {MANIFEST}; it is not a bundle or is incomplete")
    manifest = _checked_manifest(manifest_path, _bundle_file(path, MANIFEST, MAX_MANIFEST_BYTES))
    if manifest.get("format") != FORMAT or manifest.get("format_version") != FORMAT_VERSION:
        raise BundleError(f"{manifest_path}: format {manifest.get('format')!r} v{manifest.get('format_version')} "
                          f"is not {FORMAT} v{FORMAT_VERSION}")
    missing_keys = [k for k in ("version", "threshold", "files", "features", "data_sha256") if k not in manifest]
    if missing_keys:
        raise BundleError(f"{manifest_path} lacks {', '.join(missing_keys)}")
    files: dict[str, str] = manifest["files"]
    for required in (MODEL_FILE, PREPROCESSING_FILE):
        if required not in files:
            raise BundleError(f"{manifest_path} does not list {required}")
    problems = []
    for name, digest in files.items():
        try:
            f = _bundle_file(path, name, MAX_FILE_BYTES)
        except BundleError as exc:
            problems.append(str(exc))
            continue
        if sha256_file(f) != digest:
            problems.append(f"{name} does not match its checksum (altered or truncated)")
    if problems:
        raise BundleError(f"model bundle {path} is corrupt: " + "; ".join(problems))
    if tuple(manifest["features"]) != read_schema(path, manifest).names:
        raise BundleError(f"{path}: the manifest's feature order differs from the bundle's record schema")
    return manifest


def _bundle_file(bundle: Path, name: str, limit: int) -> Path:
    """``name`` as a file of ``bundle``: a relative path that stays inside it (symlinks resolved), a regular file
    (never a device such as /dev/zero, which hung the loader), at most ``limit`` bytes."""
    candidate = Path(name)
    if candidate.is_absolute() or ".." in candidate.parts or not name:
        raise BundleError(f"{name!r:.200} is not a file name inside the bundle")
    root = bundle.resolve()
    f = (bundle / candidate).resolve()
    if root not in f.parents:
        raise BundleError(f"{name!r:.200} resolves outside the bundle ({f})")
    if not f.exists():
        raise BundleError(f"{name} is missing")
    if not f.is_file():
        raise BundleError(f"{name} is not a regular file")
    if f.stat().st_size > limit:
        raise BundleError(f"{name} is {f.stat().st_size} bytes, over the {limit}-byte limit for a bundle file")
    return f


def _checked_manifest(manifest_path: Path, f: Path) -> dict[str, Any]:
    """bundle.json read as hostile input: types checked, numbers finite, names bounded (issue 31 item 15: a NaN
    threshold was swapped in and alerted on nothing; a malformed ``files`` list killed the model watcher)."""
    try:
        manifest = json.loads(f.read_text())
    except (OSError, UnicodeDecodeError, RecursionError, json.JSONDecodeError) as exc:
        raise BundleError(f"{manifest_path} is not valid JSON ({str(exc)[:200]}); the bundle is corrupt") from None
    if not isinstance(manifest, dict):
        raise BundleError(f"{manifest_path} is not a JSON object")
    threshold = manifest.get("threshold")
    if threshold is not None and (isinstance(threshold, bool) or not isinstance(threshold, int | float)
                                  or not math.isfinite(threshold) or threshold <= 0):
        raise BundleError(f"{manifest_path}: threshold must be a finite positive number, got {threshold!r:.60}")
    files = manifest.get("files")
    if files is not None and (not isinstance(files, dict) or len(files) > MAX_FILES or not all(
            isinstance(k, str) and len(k) <= 200 and isinstance(v, str) and len(v) == 64 for k, v in files.items())):
        raise BundleError(f"{manifest_path}: files must map at most {MAX_FILES} file names to sha256 digests")
    features = manifest.get("features")
    if features is not None and (not isinstance(features, list) or not all(isinstance(x, str) for x in features)):
        raise BundleError(f"{manifest_path}: features must be a list of names")
    version = manifest.get("version")
    if version is not None and (not isinstance(version, str) or not 0 < len(version) <= 200):
        raise BundleError(f"{manifest_path}: version must be a string of 1-200 characters")
    return manifest


def read_schema(path: Path, manifest: dict[str, Any]) -> RecordSchema:
    """The bundle's record schema (checksummed like every file); KDD99 for bundles that predate schema files."""
    if SCHEMA_FILE not in manifest["files"]:
        return kdd99()
    try:
        return RecordSchema.load(path / SCHEMA_FILE)
    except SchemaError as exc:
        raise BundleError(str(exc)) from exc


def _foreign_objects(node: Any) -> list[str]:
    """Every object in a Keras config that is not Keras' own: custom (registered) classes and Lambda layers.

    ``safe_mode`` only stops lambdas; a registered custom layer loads in any process that imports its
    module, which would make the bundle's behaviour depend on code outside it. A bundle holds stock
    layers only, so anything else is refused before Keras sees it.
    """
    found: list[str] = []
    if isinstance(node, dict):
        module = node.get("module")
        if "class_name" in node and isinstance(module, str) and not module.startswith("keras"):
            found.append(f"{node['class_name']} from module {module!r}")
        elif node.get("class_name") in ("Lambda", "__lambda__", "function"):
            found.append(f"{node['class_name']} (Python code)")
        for value in node.values():
            found += _foreign_objects(value)
    elif isinstance(node, list):
        for value in node:
            found += _foreign_objects(value)
    return found


def _check_stock_layers(model_path: Path) -> None:
    try:
        with zipfile.ZipFile(model_path) as z:
            config = json.loads(z.read("config.json"))
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as exc:
        raise BundleError(f"{model_path} is not a readable .keras file: {exc}") from exc
    foreign = _foreign_objects(config)
    if foreign:
        raise BundleError(f"{model_path} holds objects that are not stock Keras layers: {', '.join(foreign[:5])}. "
                          "A bundle must contain only what `python -m training train` writes.")


def load_bundle(path: str | Path) -> Bundle:
    """Verify checksums, refuse custom/lambda layers, then load with Keras ``safe_mode`` as a second guard."""
    path = Path(path)
    manifest = read_manifest(path)
    try:
        preprocessor = Preprocessor.load(path / PREPROCESSING_FILE, read_schema(path, manifest))
    except PreprocessingError as exc:
        raise BundleError(str(exc)) from exc
    _check_stock_layers(path / MODEL_FILE)
    import keras

    try:
        model = keras.models.load_model(path / MODEL_FILE, compile=False, safe_mode=True)
    except Exception as exc:  # noqa: BLE001 - Keras raises many types; all mean "refuse this model"
        raise BundleError(f"{path / MODEL_FILE} was refused by Keras safe_mode or is unreadable: {exc}") from exc
    if int(model.input_shape[-1]) != preprocessor.width or int(model.output_shape[-1]) != preprocessor.width:
        raise BundleError(
            f"{path}: model input/output width {model.input_shape[-1]}/{model.output_shape[-1]} does not match "
            f"the preprocessing width {preprocessor.width}"
        )
    return Bundle(path=path, manifest=manifest, preprocessor=preprocessor, model=model)
