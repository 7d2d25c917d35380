"""Model lifecycle against the real broker: hot swap under load, a corrupt bundle refused, shadow scoring,
drift statistics, retraining from the stream, promotion and rollback."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from scipy.stats import spearmanr

from core.decision import is_anomalous
from core.records import read_records
from core.schema import kdd99
from detector.drift import DriftMonitor
from detector.metrics import DetectorMetrics
from model import store
from model.bundle import MANIFEST, load_bundle
from testkit import (
    REPO,
    DetectorProcess,
    alert_docs,
    drain,
    produce_rows,
    start_replay,
    wait_until,
)
from tests.conftest import TopicFactory


def variant(bundle: Path, out: Path, suffix: str, threshold: float | None = None, corrupt: bool = False) -> Path:
    """A copy of ``bundle`` under another version name: another threshold, or a truncated model file."""
    shutil.copytree(bundle, out)
    manifest = json.loads((out / MANIFEST).read_text())
    manifest["version"] = f"{manifest['version']}-{suffix}"
    if threshold is not None:
        manifest["threshold"] = threshold
    (out / MANIFEST).write_text(json.dumps(manifest))
    if corrupt:
        model = out / "model.keras"
        model.write_bytes(model.read_bytes()[: model.stat().st_size // 2])
    return out


def into_store(root: Path, bundle: Path) -> str:
    return store.add(root, bundle).name


def point(root: Path, version: str) -> None:
    """Switch ``current`` by hand (what a careless operator or a broken pipeline might do: no checks)."""
    tmp = root / ".current.test"
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(version, target_is_directory=True)
    os.replace(tmp, root / store.CURRENT)


def test_hot_swap_under_a_steady_replay_scores_every_record_once(
        kafka_bootstrap: str, make_topic: TopicFactory, small_bundle: Path, kdd_path: Path, tmp_path: Path) -> None:
    n = 60_000
    root = tmp_path / "models"
    a = into_store(root, variant(small_bundle, tmp_path / "a", "a"))
    b = into_store(root, variant(small_bundle, tmp_path / "b", "all", threshold=1e-30))  # alerts on every record
    c = into_store(root, variant(small_bundle, tmp_path / "c", "corrupt", corrupt=True))
    store.promote(root, a)
    topic = make_topic("swap-in", partitions=3)
    alerts = make_topic("swap-alerts", 3, 1, **{"message.timestamp.type": "LogAppendTime"})
    det = DetectorProcess(kafka_bootstrap, topic, alerts, root, "--model-poll-s", "0.2",
                          log_path=tmp_path / "detector.log")
    with det:
        replay = start_replay(kafka_bootstrap, topic, kdd_path, n, 5000, log_path=tmp_path / "producer.log")
        wait_until(lambda: det.total("detector_records_scored_total") >= 8000, 120, "the first model to score")
        store.promote(root, b)
        wait_until(lambda: det.total("detector_model_swaps_total") == 1, 60, "the swap to the new model")
        point(root, c)  # corrupt, placed as current without the promote command's checks
        wait_until(lambda: det.total("detector_model_load_failures_total") >= 1, 60, "the corrupt bundle refused")
        # still records to come, so the end of the replay shows that scoring went on after the refusal
        assert det.total("detector_records_scored_total") < n
        assert replay.wait(timeout=120) == 0
        wait_until(lambda: det.total("detector_records_scored_total") >= n, 120, "every record scored")
        assert det.total("detector_records_scored_total") == det.total("detector_records_consumed_total") == n
        assert det.total("detector_model_swaps_total") == 1  # the corrupt one never went in
        assert "refusing model bundle" in (tmp_path / "detector.log").read_text()
        published = int(det.total("detector_alerts_total"))  # the drain below waits for exactly these
        assert det.stop() == 0

    where = {int(m.key()): (m.partition(), m.offset()) for m in drain(kafka_bootstrap, topic, n)}
    assert len(where) == n
    data = read_records(kdd_path, limit=n)
    scores_a = load_bundle(root / a).scorer().score_frame(data.features).score
    assert scores_a.min() > 1e-30  # so the second model alerts on every record it scores
    flagged_a = set(data.record_ids[is_anomalous(scores_a, load_bundle(root / a).threshold)].tolist())
    docs = alert_docs(drain(kafka_bootstrap, alerts, published))
    assert len(docs) == published
    versions = {d["model_version"] for d in docs}
    assert versions == {load_bundle(root / a).version, load_bundle(root / b).version}
    by_b = Counter(int(d["record_id"]) for d in docs if d["model_version"].endswith("-all"))
    by_a = Counter(int(d["record_id"]) for d in docs if not d["model_version"].endswith("-all"))
    assert by_a and by_b and set(by_a.values()) == set(by_b.values()) == {1}  # no record scored twice
    # per partition, the swap point: the first offset the new model scored; it scored everything after it
    swap_at = {}
    for rid in by_b:
        p, o = where[rid]
        swap_at[p] = min(o, swap_at.get(p, o))
    after = {rid for rid, (p, o) in where.items() if p in swap_at and o >= swap_at[p]}
    assert set(by_b) == after
    before = set(where) - after
    assert set(by_a) == flagged_a & before  # the old model's alerts equal offline scoring up to the swap point
    assert len(before) + len(after) == n


@pytest.fixture(scope="module")
def candidate(tmp_path_factory: pytest.TempPathFactory, kdd_path: Path) -> Path:
    """A second real model (another seed, fewer rows): it agrees with the live one only partly."""
    from training.autoencoder import ModelConfig
    from training.train import TrainOptions, train

    out = tmp_path_factory.mktemp("candidate") / "model"
    train(TrainOptions(data=kdd_path, out=out, model=ModelConfig.from_preset("default", epochs=3, seed=11),
                       limit=30_000))
    return out


def test_shadow_scoring_reports_agreement_that_matches_offline_scoring(
        kafka_bootstrap: str, make_topic: TopicFactory, small_bundle: Path, candidate: Path, kdd_path: Path,
        tmp_path: Path) -> None:
    data = read_records(kdd_path, limit=20_000, keep_raw=True)
    topic, alerts, shadow = make_topic("sh-in", 2), make_topic("sh-alerts", 2), make_topic("sh-shadow", 2)
    produce_rows(kafka_bootstrap, topic, data)
    live, cand = load_bundle(small_bundle), load_bundle(candidate)
    s_live = live.scorer().score_frame(data.features).score
    s_cand = cand.scorer().score_frame(data.features).score
    f_live, f_cand = is_anomalous(s_live, live.threshold), is_anomalous(s_cand, cand.threshold)
    expected = {"both": int((f_live & f_cand).sum()), "live_only": int((f_live & ~f_cand).sum()),
                "shadow_only": int((f_cand & ~f_live).sum())}
    assert expected["live_only"] + expected["shadow_only"] > 0, "the candidate should disagree somewhere"
    with DetectorProcess(kafka_bootstrap, topic, alerts, small_bundle, "--shadow-model", str(candidate),
                         "--shadow-topic", shadow, log_path=tmp_path / "detector.log") as det:
        wait_until(lambda: det.total("detector_records_scored_total") >= len(data), 180, "all records scored")
        m = det.metrics()
        for outcome, count in expected.items():
            assert m[f"detector_shadow_decisions_total{{outcome={outcome}}}"] == count, outcome
        assert m["detector_shadow_alerts_total"] == int(f_cand.sum())
        assert m["detector_alerts_total"] == int(f_live.sum())  # shadow alerts are not live alerts
        rho = spearmanr(s_live, s_cand).statistic
        assert m["detector_shadow_rank_correlation"] == pytest.approx(rho, abs=1e-6)
        assert m[f'detector_shadow_model_info{{threshold={cand.threshold!r},version={cand.version}}}'] == 1
        assert 0 <= m["detector_feature_drift_psi{feature=src_bytes}"] and m["detector_drift_window_records"] > 0
    live_ids = {int(d["record_id"]) for d in alert_docs(drain(kafka_bootstrap, alerts, int(f_live.sum())))}
    shadow_docs = alert_docs(drain(kafka_bootstrap, shadow, int(f_cand.sum())))
    assert live_ids == set(data.record_ids[f_live].tolist())
    assert {int(d["record_id"]) for d in shadow_docs} == set(data.record_ids[f_cand].tolist())
    assert {d["model_version"] for d in shadow_docs} == {cand.version}

    # retraining from the stream: read back what was replayed, leave out what the live model alerted on
    root = tmp_path / "models"
    proc = subprocess.run(
        [sys.executable, "-m", "training", "train", "--from-topic", topic, "--alert-topic", alerts,
         "--exclude-attack-labels", "--bootstrap-servers", kafka_bootstrap, "--store", str(root), "--epochs", "2",
         "--run-dir", str(tmp_path / "runs")],
        capture_output=True, text=True, cwd=REPO, timeout=600, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    attack = data.is_attack
    report = summary["stream"]
    assert report["read"] == len(data)
    assert report["excluded_alerted"] == int(f_live.sum())
    assert report["excluded_attack_label"] == int((attack & ~f_live).sum())
    assert report["used"] == int((~attack & ~f_live).sum()) and report["malformed"] == 0
    assert store.versions(root) == [Path(summary["bundle"]).name] and store.current_version(root) is None
    assert load_bundle(Path(summary["bundle"])).manifest["training"]["stream"]["topic"] == topic


def test_drift_is_small_on_training_like_traffic_and_large_on_a_shift(small_bundle: Path, kdd_path: Path) -> None:
    bundle = load_bundle(small_bundle)
    profile = bundle.profile()
    assert profile is not None
    data = read_records(kdd_path, limit=60_000)
    normal = data.features[~data.is_attack]
    prep = bundle.preprocessor

    def psi_of(frame: object) -> tuple[dict[str, float], float]:
        monitor = DriftMonitor(profile, bundle.schema, DetectorMetrics(1.0), window=50_000)
        ids, _ = prep.encode_categories(frame)
        monitor.observe(prep.numeric_matrix(frame), ids)
        service = monitor.total[monitor.offsets[-3]: monitor.offsets[-2]]  # service's slots, unknown last
        return monitor.values(), float(service[-1] / service.sum())

    calm, unknown_calm = psi_of(normal)
    assert max(calm.values()) < 0.1 and unknown_calm < 0.001  # a few services appear only outside the fit rows
    shifted = normal.copy()
    shifted["src_bytes"] = shifted["src_bytes"] * 50 + 10_000
    shifted.loc[shifted.index[::4], "service"] = "gopher-new"
    drift, unknown = psi_of(shifted)
    assert drift["src_bytes"] > 1.0 and drift["service"] > 0.25
    assert unknown == pytest.approx(0.25, abs=0.01)


def test_promote_and_rollback_move_only_the_pointer(small_bundle: Path, tmp_path: Path) -> None:
    root = tmp_path / "models"
    a = into_store(root, variant(small_bundle, tmp_path / "a", "a"))
    b = into_store(root, variant(small_bundle, tmp_path / "b", "b", threshold=0.5))
    bad = into_store(root, variant(small_bundle, tmp_path / "bad", "bad", corrupt=True))

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "training", *args, "--store", str(root)], capture_output=True,
                              text=True, cwd=REPO, timeout=120)

    assert cli("promote", "--version", a).returncode == 0
    assert cli("promote", "--version", b).returncode == 0 and store.current_version(root) == b
    refused = cli("promote", "--version", bad)
    assert refused.returncode == 2 and "does not match its checksum" in refused.stderr
    assert store.current_version(root) == b
    back = cli("rollback")
    assert back.returncode == 0 and json.loads(back.stdout.splitlines()[-1]) == {
        "store": str(root), "current": a, "previous": b}
    listed = json.loads(cli("models").stdout.splitlines()[-1])
    assert listed["current"] == a and sorted(listed["versions"]) == sorted([a, b, bad])
    assert store.resolve(root) == (root / a).resolve() and store.resolve(root / b) == root / b
    assert kdd99().names == load_bundle(root / a).schema.names
