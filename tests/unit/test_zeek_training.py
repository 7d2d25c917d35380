"""The zeek_conn schema's training path (issue 30, part 3): a labelled conn.log trains on its benign rows and is
evaluated with ROC-AUC, PR-AUC and recall at 1% and 0.1% FPR, through the same CLIs as KDD99."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from core.records import read_records
from core.schema import RecordSchema
from training.detection_metrics import recall_at_fpr

REPO = Path(__file__).resolve().parents[2]
LABELLED = REPO / "tests" / "fixtures" / "zeek" / "ctu-normal-40-day1.conn.log.labeled"


def test_a_conn_log_reads_as_zeek_conn_records_in_file_order() -> None:
    schema = RecordSchema.load("zeek_conn")
    records = read_records(LABELLED, schema=schema)
    assert len(records) == 700 and list(records.features.columns) == list(schema.names)
    assert (np.diff(records.lines) > 0).all()  # record ids stay line positions though features are in ts order
    assert set(records.labels) == {"benign", "malicious"} and 0 < records.is_attack.mean() < 1


def test_train_then_evaluate_a_labelled_conn_log(tmp_path: Path) -> None:
    train = subprocess.run([sys.executable, "-m", "training", "train", "--schema", "zeek_conn", "--data", str(LABELLED),
                            "--out", str(tmp_path / "model"), "--epochs", "5", "--run-dir", str(tmp_path / "runs")],
                           capture_output=True, text=True, cwd=REPO, timeout=300)
    assert train.returncode == 0, train.stderr[-3000:]
    assert json.loads((tmp_path / "model" / "schema.json").read_text())["name"] == "zeek_conn"
    from training.evaluate import evaluate  # in process: the CLI around it is tested on KDD99

    evaluate(tmp_path / "model", LABELLED, tmp_path / "eval", plots=False)
    report = json.loads((tmp_path / "eval" / "report.json").read_text())
    assert 0.0 <= report["roc_auc"] <= 1.0 and 0.0 <= report["pr_auc"] <= 1.0
    assert set(report["recall_at_fpr"]) == {"0.01", "0.001"}


def test_recall_at_fpr_places_the_threshold_on_the_normal_rows() -> None:
    y = np.array([0] * 1000 + [1] * 10, dtype=bool)
    scores = np.concatenate([np.arange(1000) / 1000, [0.9995] * 5 + [0.5] * 5])
    assert recall_at_fpr(y, scores, 0.01) == 0.5 and recall_at_fpr(y, scores, 0.001) == 0.5
