"""Writing a model bundle (``model.bundle`` describes the layout and reads it back): training's product.

The write is atomic (to ``out.tmp``, then renamed), so a crash never leaves half a bundle where a detector or
a model store could pick it up.
"""

from __future__ import annotations

import datetime as dt
import json
import platform
import shutil
from pathlib import Path
from typing import Any

import keras
import tensorflow as tf

from model.bundle import FORMAT, FORMAT_VERSION, MANIFEST, MODEL_FILE, PREPROCESSING_FILE, SCHEMA_FILE, sha256_file
from model.preprocessing import Preprocessor


def save_bundle(
    out: str | Path,
    *,
    model: Any,
    preprocessor: Preprocessor,
    threshold: float,
    training: dict[str, Any],
    data_sha256: str,
    validation: dict[str, Any],
    extra_files: dict[str, str] | None = None,
) -> Path:
    """Write a bundle atomically (to ``out.tmp`` then renamed) so a crash never leaves half a bundle."""
    out = Path(out)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    model.save(tmp / MODEL_FILE)
    preprocessor.save(tmp / PREPROCESSING_FILE)
    preprocessor.schema.save(tmp / SCHEMA_FILE)
    for name, text in (extra_files or {}).items():
        (tmp / name).write_text(text)
    files = {p.name: sha256_file(p) for p in sorted(tmp.iterdir()) if p.is_file()}
    created = dt.datetime.now(dt.UTC)
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "version": f"ae-{created:%Y%m%dT%H%M%SZ}-{files[MODEL_FILE][:8]}",
        "created": created.isoformat(timespec="seconds"),
        "threshold": float(threshold),
        "score": "mean squared reconstruction error of the preprocessed row",
        "schema": preprocessor.schema.name,
        "features": list(preprocessor.schema.names),
        "input_width": preprocessor.width,
        "training": training,
        "data_sha256": data_sha256,
        "validation": validation,
        "libraries": {"tensorflow": tf.__version__, "keras": keras.__version__, "python": platform.python_version()},
        "files": files,
    }
    (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2))
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    return out
