"""Training and evaluation end to end on real data, small enough for the suite."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from training.evaluate import evaluate

REPO = Path(__file__).resolve().parents[2]


def test_evaluate_report_on_heldout_rows(small_bundle: Path, kdd_path: Path, tmp_path: Path) -> None:
    report = evaluate(small_bundle, kdd_path, tmp_path / "eval")
    saved = json.loads((tmp_path / "eval" / "report.json").read_text())
    assert saved["rows_scored"] == report["rows_scored"]
    for key in ("roc_auc", "pr_auc", "threshold", "recall_at_threshold", "fpr_at_threshold",
                "precision_at_threshold", "f1_at_threshold", "confusion_matrix", "detection_rate_by_attack"):
        assert key in saved, key
    # the training file: rows used for fit/validation/calibration are never scored as held-out
    assert saved["heldout_only"] and saved["excluded_training_rows"] > 0
    assert saved["rows_scored"] + saved["excluded_training_rows"] == 494_021
    cm = saved["confusion_matrix"]
    assert cm["tn"] + cm["fp"] + cm["fn"] + cm["tp"] == saved["rows_scored"]
    # a tiny model (6 epochs on 60k lines) still ranks attacks far above chance
    assert saved["roc_auc"] >= 0.95
    assert "smurf" in saved["detection_rate_by_attack"]
    iso = saved["baselines"]["isolation_forest"]
    assert 0.5 <= iso["roc_auc"] <= 1.0
    for name in ("loss", "score_distribution", "roc", "latent_space"):
        png = Path(saved["plots"][name])
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_train_cli_bad_data_path_exits_2_with_reason(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "training", "train", "--data", str(tmp_path / "missing.gz"), "--out",
         str(tmp_path / "m")], capture_output=True, text=True, cwd=REPO, timeout=120,
    )
    assert proc.returncode == 2
    assert "missing.gz does not exist" in proc.stderr


def test_train_cli_help_lists_env_vars() -> None:
    proc = subprocess.run([sys.executable, "-m", "training", "train", "--help"], capture_output=True, text=True,
                          cwd=REPO, timeout=120)
    assert proc.returncode == 0
    for env in ("KDD_DATA", "MODEL_DIR", "TRAIN_PRESET", "TRAIN_TARGET_FPR"):
        assert env in proc.stdout


@pytest.mark.parametrize("preset", ["lab"])
def test_lab_preset_is_the_lab_network(preset: str) -> None:
    from training.autoencoder import ModelConfig, build_autoencoder

    cfg = ModelConfig.from_preset(preset)
    assert (cfg.widths, cfg.latent, cfg.activation, cfg.dropout, cfg.learning_rate, cfg.batch_size, cfg.epochs) == (
        (96, 64, 48, 16), 4, "tanh", 0.1, 1e-5, 512, 10)
    model = build_autoencoder(120, cfg)
    dense = [layer.units for layer in model.layers if layer.__class__.__name__ == "Dense"]
    assert dense == [96, 64, 48, 16, 4, 16, 48, 64, 96, 120]


def test_preset_choices_match_the_presets() -> None:
    import typing

    from training.autoencoder import PRESETS
    from training.settings import Preset

    assert set(typing.get_args(Preset)) == set(PRESETS)
