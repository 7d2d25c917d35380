"""What the bundle should alert on, computed offline for the same rows."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from core.decision import is_anomalous
from core.records import Records, read_records
from testkit.cluster import QUIET_TF, REPO


# ------------------------------------------------------------------------------- expected, offline
def offline_alert_ids(model: Path, data: Records) -> tuple[set[int], np.ndarray]:
    """The record ids the bundle flags among ``data`` (scored in this process), and every row's score."""
    from model.bundle import load_bundle

    bundle = load_bundle(model)
    scores = bundle.scorer().score_frame(data.features).score
    return {int(i) for i in data.record_ids[is_anomalous(scores, bundle.threshold)]}, scores


def expected_replay_alerts(model: Path, source_kwargs: dict[str, Any], delivered: int) -> Counter[int]:
    """Alerted ids for the exact sequence a replay sent: the producer's own source code, seed and first N."""
    from producer.source import SourceOptions, SourceStats, records

    opts = SourceOptions(**source_kwargs)
    flagged, _ = offline_alert_ids(model, read_records(opts.data))
    out: Counter[int] = Counter()
    for i, rec in enumerate(records(opts, SourceStats())):
        if i >= delivered:
            break
        if rec.record_id in flagged:
            out[rec.record_id] += 1
    return out


def ensure_bundle(model: Path, data: Path) -> None:
    """Train a bundle with the default preset when ``model`` has none (benchmarks and the demo)."""
    if (model / "bundle.json").exists():
        return
    subprocess.run([sys.executable, "-m", "training", "train", "--data", str(data), "--out", str(model)], cwd=REPO,
                   env={**os.environ, **QUIET_TF}, check=True)
