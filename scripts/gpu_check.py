"""Score a file with a bundle on the active Keras backend, check the scores against a reference, time it.

Two steps, because the GPU machines have JAX and PyTorch but no TensorFlow and no package index:

    # 1. here (TensorFlow, CPU): reference scores of the shared 10% file, carried with the working tree
    python -m scripts.gpu_check reference --bundle artifacts/model --out build/gpu-check/reference.npz
    # 2. there: the same bundle on JAX (or torch) on the GPU; checks agreement, prints rows/s per batch size
    KERAS_BACKEND=jax python -m scripts.gpu_check run --bundle artifacts/model \\
        --reference build/gpu-check/reference.npz

``run`` times the scoring function exactly as the detector calls it: numpy arrays in (host-to-device copy
included), scores, per-feature errors and reconstruction back to numpy, for batch sizes 2k to 64k over the
whole file, after one warm-up call per size (compilation). The last stdout line is JSON. Exit codes:
0 scores agree, 1 they do not, 2 a prerequisite is missing (named in the message).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.records import DATA_ENV  # noqa: E402
from core.settings import MODEL_DIR  # noqa: E402

log = logging.getLogger("gpu_check")
BATCH_SIZES = (2048, 4096, 8192, 16384, 32768, 65536)
RTOL, ATOL = 1e-4, 1e-6  # float32 across backends and devices (different kernels, summation orders)


def load_inputs(bundle_dir: Path, data: Path | None,
                limit: int | None) -> tuple[Any, Any, np.ndarray, np.ndarray]:
    """The bundle, its scorer and the file's raw numerics and category ids, encoded as the detector does."""
    from core.records import read_records
    from model.bundle import load_bundle
    from model.scorer import Scorer

    bundle = load_bundle(bundle_dir)
    records = read_records(data, schema=bundle.schema, limit=limit)
    prep = bundle.preprocessor
    ids, _ = prep.encode_categories(records.features)
    numeric = prep.numeric_matrix(records.features).astype(np.float32)
    return bundle, Scorer(bundle.model, prep, max_bucket=max(BATCH_SIZES)), numeric, ids.astype(np.int32)


def reference(args: argparse.Namespace) -> dict[str, Any]:
    from model import backend

    _, scorer, numeric, ids = load_inputs(args.bundle, args.data, args.limit)
    scores = scorer.score_arrays(numeric, ids)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out, score=scores.score, feature_error=scores.feature_error)
    return {"rows": len(numeric), "backend": backend.name(), "device": backend.device(), "out": str(args.out)}


def agreement(scorer: Any, numeric: np.ndarray, ids: np.ndarray, ref: Any, threshold: float) -> dict[str, Any]:
    got = scorer.score_arrays(numeric, ids)
    want = ref["score"]
    if len(want) != len(got.score):
        raise SystemExit(f"reference has {len(want)} rows, this run {len(got.score)}: same --data and --limit?")
    rel = np.abs(got.score - want) / np.maximum(np.abs(want), ATOL)
    decisions = int(np.sum((got.score > threshold) != (want > threshold)))
    return {"rows": len(want), "max_rel_diff": float(rel.max()), "max_abs_feature_error_diff":
            float(np.abs(got.feature_error - ref["feature_error"]).max()), "decisions_differing": decisions,
            "agree": bool(np.allclose(got.score, want, rtol=RTOL, atol=ATOL))}


def throughput(scorer: Any, numeric: np.ndarray, ids: np.ndarray, sizes: list[int]) -> dict[str, float]:
    out = {}
    n = len(numeric)
    for size in sizes:
        scorer._fn(numeric[:size], ids[:size])  # warm-up: compile this shape
        t0 = time.perf_counter()
        for start in range(0, n - size + 1, size):
            scorer._fn(numeric[start:start + size], ids[start:start + size])
        done = (n // size) * size
        out[str(size)] = round(done / (time.perf_counter() - t0), 1)
        log.info("batch %6d: %12.0f rows/s", size, out[str(size)])
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    from model import backend

    bundle, scorer, numeric, ids = load_inputs(args.bundle, args.data, args.limit)
    threshold = bundle.threshold
    result: dict[str, Any] = {"backend": backend.name(), "device": backend.device()}
    if args.reference is not None:
        result["agreement"] = agreement(scorer, numeric, ids, np.load(args.reference), threshold)
    result["rows_per_s_by_batch"] = throughput(scorer, numeric, ids, args.batch_sizes)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scripts.gpu_check", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("reference", "run"):
        p = sub.add_parser(name)
        p.add_argument("--bundle", type=Path, default=Path(os.environ.get(MODEL_DIR, "artifacts/model")),
                       help=f"model bundle (env {MODEL_DIR})")
        p.add_argument("--data", type=Path, default=None, help=f"data file (env {DATA_ENV}; default: the shared file)")
        p.add_argument("--limit", type=int, default=None, help="first N lines only")
    sub.choices["reference"].add_argument("--out", type=Path, default=Path("build/gpu-check/reference.npz"))
    sub.choices["run"].add_argument("--reference", type=Path, default=None, help="reference scores (.npz)")
    sub.choices["run"].add_argument("--batch-sizes", type=lambda v: [int(x) for x in v.split(",")],
                                    default=list(BATCH_SIZES), help="comma-separated (default 2048..65536)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s gpu-check %(message)s", stream=sys.stderr)
    try:
        import keras  # noqa: F401 - the one hard prerequisite beyond numpy
    except ImportError as exc:
        log.error("keras is not importable (%s): carry its wheel (keras, namex, optree) with the call", exc)
        return 2
    result = reference(args) if args.command == "reference" else run(args)
    print(json.dumps(result))
    return 0 if result.get("agreement", {}).get("agree", True) else 1


if __name__ == "__main__":
    sys.exit(main())
