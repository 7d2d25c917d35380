"""``python -m training compare`` on a slice of the real UNSW-NB15 file: every detector judged on the same rows,
each figure inside its own bootstrap interval, the table and the JSON written (quick settings: the figures
themselves come from the full run, in the README)."""

from __future__ import annotations

import json
from pathlib import Path

from core.schema import RecordSchema
from training.compare import LATENTS, METRICS, compare, write

UNSW = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "unsw_nb15_dev.csv.gz"


def test_compare_judges_every_detector_on_the_same_rows(tmp_path: Path) -> None:
    report = compare(UNSW, RecordSchema.load("unsw_nb15"), limit=6000, epochs=2, resamples=20,
                     presets=["unsw_nb15"])
    names = [r["detector"] for r in report["results"]]
    assert names[:len(LATENTS)] == [f"autoencoder latent {k}" for k in LATENTS]
    assert "autoencoder preset unsw_nb15" in names and "isolation forest" in names
    assert len([n for n in names if not n.startswith("autoencoder")]) >= 4  # IF, kNN, LOF, OCSVM, ensemble
    for r in report["results"]:
        for split in ("validation", "test"):
            for m in METRICS:
                lo, hi = r[f"{split}_ci95"][m]
                assert 0.0 <= lo <= hi <= 1.0
        assert r["test"]["recall_at_fpr_0.1%"] <= r["test"]["recall_at_fpr_1%"]
    c = report["rows"]
    assert c["validation_attack"] > 0 and c["test_attack"] > 0 and c["validation_normal"] > 0
    json_path, md_path = write(report, tmp_path)
    assert json.loads(json_path.read_text())["schema"] == "unsw-nb15"
    table = md_path.read_text()
    assert all(f"| {n} |" in table for n in names)
