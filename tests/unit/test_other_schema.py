"""A data set that is not KDD99 needs a schema file, not code: train, replay, parse, score and decide with one."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from core.decision import flagged_rows, is_anomalous
from core.records import read_records
from core.schema import RecordSchema
from core.wire import INVALID_VALUE, Parser
from detector.scoring import ScoreStage
from model.bundle import load_bundle
from producer.source import SourceOptions, SourceStats, records

SCHEMA = {
    "name": "toy-flows",
    "description": "a synthetic flow log: three numbers, two categories, a label",
    "features": [
        {"name": "bytes", "kind": "numeric", "max": "float32", "log_scale": True},
        {"name": "proto", "kind": "categorical"},
        {"name": "loss_rate", "kind": "numeric", "max": 1.0},
        {"name": "app", "kind": "categorical"},
        {"name": "packets", "kind": "numeric", "max": 100000},
    ],
    "label": {"normal": "benign", "trailing_fields": [], "families": {"flood": ["syn_flood"]}},
}


def _rows(rng: np.random.Generator, n: int, attack: bool) -> list[str]:
    if attack:
        size, loss, pk = rng.lognormal(13, 0.3, n), rng.uniform(0.6, 1.0, n), rng.integers(5000, 90000, n)
        proto, app = rng.choice(["udp"], n), rng.choice(["dns", "ntp"], n)
    else:
        size, loss, pk = rng.lognormal(7, 0.5, n), rng.uniform(0.0, 0.05, n), rng.integers(1, 60, n)
        proto, app = rng.choice(["tcp", "udp"], n, p=[0.8, 0.2]), rng.choice(["web", "mail", "dns"], n)
    label = "syn_flood" if attack else "benign"
    return [f"{s:.0f},{p},{lo:.3f},{a},{k},{label}" for s, p, lo, a, k in zip(size, proto, loss, app, pk, strict=True)]


@pytest.fixture(scope="module")
def toy(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """A schema file, a labelled file of 3,000 benign and 100 attack rows, and a bundle trained on it."""
    from training.autoencoder import ModelConfig
    from training.train import TrainOptions, train

    root = tmp_path_factory.mktemp("toy")
    schema_path = root / "toy-flows.json"
    schema_path.write_text(json.dumps(SCHEMA))
    rng = np.random.default_rng(3)
    lines = _rows(rng, 3000, attack=False) + _rows(rng, 100, attack=True)
    order = rng.permutation(len(lines))
    data = root / "flows.csv"
    data.write_text("\n".join(lines[i] for i in order) + "\n")
    config = ModelConfig.from_preset("default", epochs=60, batch_size=64, seed=1, widths=(16, 8), latent=3)
    bundle = root / "model"
    train(TrainOptions(data=data, out=bundle, model=config, schema=RecordSchema.load(schema_path)))
    return schema_path, data, bundle


def test_bundle_carries_the_schema_it_was_trained_on(toy: tuple[Path, Path, Path]) -> None:
    schema_path, _, bundle_dir = toy
    bundle = load_bundle(bundle_dir)
    assert bundle.schema == RecordSchema.load(schema_path)
    assert bundle.manifest["features"] == ["bytes", "proto", "loss_rate", "app", "packets"]
    assert bundle.preprocessor.width == 3 + (2 + 1) + (3 + 1)  # numerics + one-hot blocks with unknown slots


def test_replayed_records_parse_score_and_decide_like_offline_scoring(toy: tuple[Path, Path, Path]) -> None:
    schema_path, data_path, bundle_dir = toy
    bundle = load_bundle(bundle_dir)
    schema = bundle.schema
    data = read_records(data_path, schema=schema)
    offline = bundle.scorer().score_frame(data.features).score
    # the model ranks the flood far above benign traffic
    assert roc_auc_score(data.is_attack, offline) >= 0.95

    for fmt in ("csv", "json"):  # the producer's own encoder, then the detector's parse and score stages
        sent = list(records(SourceOptions(data=data_path, fmt=fmt, schema=schema), SourceStats()))
        assert len(sent) == len(data) and all(r.label in ("benign", "syn_flood") for r in sent)
        parsed = Parser(schema).parse([r.value for r in sent])
        assert parsed.rejections == [] and len(parsed.index) == len(sent)
        scored = ScoreStage(bundle).score(parsed)
        np.testing.assert_allclose(scored.scores, offline, rtol=1e-5, atol=1e-9)
        flagged = flagged_rows(scored.scores, bundle.threshold)
        assert set(flagged.tolist()) == set(np.flatnonzero(is_anomalous(offline, bundle.threshold)).tolist())
        attack = data.is_attack
        assert is_anomalous(scored.scores[attack], bundle.threshold).mean() >= 0.9


def test_the_schema_value_rules_apply_on_the_wire(toy: tuple[Path, Path, Path]) -> None:
    schema = load_bundle(toy[2]).schema
    parsed = Parser(schema).parse([b"900,tcp,0.01,web,12", b"900,tcp,1.5,web,12", b"900,tcp,0.01,,12",
                                   b"900,tcp,0.01,web,200000", b"1,2,3"])
    assert parsed.index.tolist() == [0]
    by_index = {r.index: r for r in parsed.rejections}
    assert by_index[1].code == INVALID_VALUE and by_index[1].detail == "value above 1 in field loss_rate"
    assert by_index[2].detail == "empty categorical field app"
    assert by_index[3].detail == "value above 100000 in field packets"
    assert by_index[4].detail == "expected 5 comma-separated fields, found 3"
