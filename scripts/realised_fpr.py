"""The realised false-positive rate, with and without ``--recalibrate``, on each half of a labelled file; one JSON line.

``python -m scripts.realised_fpr [--data FILE] [--model DIR] [--batch 5000]``

Each half is streamed in file order, in the detector's batches, through a fresh ``detector.recalibration``
tracker (a detector started on that traffic), and the threshold in force at each batch decides its rows. The
rate counts held-out normal rows only (when the file is the bundle's own training file, the rows that trained,
stopped or calibrated it are left out), so it is the rate an operator would see on traffic the model has
not seen. Labels are read only here, to count. ``scripts.evaluate_incidents`` prints the same figures.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

import testkit as harness
from core.decision import is_anomalous
from core.records import default_data_path, read_records
from core.settings import MODEL_DIR
from detector.recalibration import Recalibrator
from model.bundle import load_bundle, sha256_file
from training.evaluate import heldout_rows


def _half(scores: np.ndarray, normal: np.ndarray, base: float, recal: Recalibrator | None, batch: int
          ) -> dict[str, Any]:
    flagged = np.zeros(len(scores), dtype=bool)
    lines = []
    for start in range(0, len(scores), batch):
        part = scores[start:start + batch]
        line = recal.threshold if recal is not None else base
        flagged[start:start + batch] = is_anomalous(part, line)
        lines.append(line)
        if recal is not None:
            recal.observe(part)
    return {"fpr": round(float(flagged[normal].mean()), 5), "normal_rows": int(normal.sum()),
            "threshold_ratio_last": round(lines[-1] / base, 4),
            "threshold_ratio_range": [round(min(lines) / base, 4), round(max(lines) / base, 4)],
            "revisions": recal.revisions if recal is not None else 0}


def realised_fpr(model: Path, data_path: Path, batch: int = 5000, window: int = 50_000,
                 band: float = 2.0) -> dict[str, Any]:
    """Static and recalibrated realised FPR on the first and second halves of ``data_path`` (file order)."""
    bundle = load_bundle(model)
    data = read_records(data_path, schema=bundle.schema)
    if data.labels is None:
        raise SystemExit(f"{data_path} has no labels: the realised false-positive rate needs them")
    calibration = bundle.calibration()
    if calibration is None:
        raise SystemExit(f"{model} was made before bundles kept calibration scores: retrain it")
    scores = bundle.scorer().score_frame(data.features).score
    held = np.zeros(len(data), dtype=bool)
    same_file = sha256_file(data_path) == bundle.manifest["data_sha256"]
    held[heldout_rows(bundle, data, data_path) if same_file else np.arange(len(data))] = True
    normal = held & ~np.asarray(bundle.schema.is_attack(data.labels.to_numpy()))
    base = bundle.threshold
    out: dict[str, Any] = {"data": str(data_path), "model_version": bundle.version, "heldout_only": same_file,
                           "target_fpr": round(1.0 - float(calibration.normal_rank(np.array([base]))[0]), 5)}
    mid = len(data) // 2
    for name, part in (("first_half", slice(0, mid)), ("second_half", slice(mid, len(data)))):
        out[name] = {"static": _half(scores[part], normal[part], base, None, batch),
                     "recalibrated": _half(scores[part], normal[part], base,
                                           Recalibrator(calibration, base, window, band), batch)}
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m scripts.realised_fpr", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=default_data_path(), help="labelled file (default: the KDD 10%% file)")
    p.add_argument("--model", type=Path, default=Path(os.environ.get(MODEL_DIR, "artifacts/model")),
                   help="bundle (trained with the default preset when missing)")
    p.add_argument("--batch", type=int, default=5000, help="records per batch, as the detector's --batch-size")
    p.add_argument("--window", type=int, default=50_000, help="the detector's --recalibrate-window")
    p.add_argument("--band", type=float, default=2.0, help="the detector's --recalibrate-band")
    args = p.parse_args(argv)
    print(f"scoring {args.data} with {args.model}", file=sys.stderr, flush=True)
    harness.ensure_bundle(args.model, args.data)
    print(json.dumps(realised_fpr(args.model, args.data, args.batch, args.window, args.band)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
