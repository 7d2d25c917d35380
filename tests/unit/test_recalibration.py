"""Thresholds that hold under shift (``detector.recalibration``), and the floods that try to move them: on traffic
whose normal scores moved, the realised false-positive rate returns near its target; a flood just under the
line lifts the threshold at most 5% per revision and never past the band; a flood of low scores cannot pull it
below the band; alerting records never move it (no broker, no model: synthetic score distributions)."""

from __future__ import annotations

import numpy as np
import pytest

from detector.recalibration import MAX_STEP, Recalibrator
from model.calibration import ScoreDistribution

TARGET = 0.01


def normal_scores(rng: np.random.Generator, n: int, scale: float = 1.0) -> np.ndarray:
    return (scale * np.exp(rng.normal(0.0, 1.0, n))).astype(np.float32)  # reconstruction errors: lognormal


def setup(seed: int = 0, window: int = 20_000) -> tuple[np.random.Generator, Recalibrator, float]:
    rng = np.random.default_rng(seed)
    calibration = ScoreDistribution.fit(normal_scores(rng, 50_000))
    base = calibration.threshold_at(TARGET)
    return rng, Recalibrator(calibration, base, window=window, band=2.0), base


def stream(recal: Recalibrator, batches: list[np.ndarray]) -> list[float]:
    """Feed batches; the threshold in force after each."""
    out = []
    for scores in batches:
        recal.observe(scores)
        out.append(recal.threshold)
    return out


def realised_fpr(rng: np.random.Generator, threshold: float, scale: float) -> float:
    return float(np.mean(normal_scores(rng, 200_000, scale) > threshold))


def test_traffic_like_the_calibration_leaves_the_threshold_where_it_was() -> None:
    rng, recal, base = setup()
    stream(recal, [normal_scores(rng, 5000) for _ in range(60)])
    assert recal.threshold == pytest.approx(base, rel=0.06)


@pytest.mark.parametrize("scale", [1.6, 0.7])
def test_shifted_normal_traffic_moves_the_threshold_and_the_realised_rate_returns_near_its_target(scale: float
                                                                                                ) -> None:
    rng, recal, base = setup()
    static = realised_fpr(rng, base, scale)
    stream(recal, [normal_scores(rng, 5000, scale) for _ in range(200)])
    adapted = realised_fpr(rng, recal.threshold, scale)
    assert abs(adapted - TARGET) < 0.3 * TARGET  # e.g. 1.6x: 3.9% static
    assert abs(static - TARGET) > 2 * abs(adapted - TARGET)


def test_a_flood_just_under_the_line_moves_the_threshold_slowly_and_never_past_the_band() -> None:
    """The attack: three records scoring just under the threshold for every normal one, for a long time, to lift
    the line over the attack they plan next."""
    rng, recal, base = setup()
    history = []
    for _ in range(400):
        flood = (recal.threshold * rng.uniform(0.9, 0.999, 15_000)).astype(np.float32)
        history += stream(recal, [np.concatenate([normal_scores(rng, 5000), flood])])
    steps = np.array(history[1:]) / np.array(history[:-1])
    assert steps.max() <= 1 + MAX_STEP + 1e-9
    assert max(history) <= 2.0 * base + 1e-6  # the band: above twice the model's threshold always alerts
    assert recal.threshold > base  # the flood did lift it: the band is what bounds it


def test_a_flood_of_low_scores_cannot_pull_the_threshold_below_the_band() -> None:
    rng, recal, base = setup()
    stream(recal, [np.concatenate([normal_scores(rng, 1000), np.full(20_000, 1e-6, np.float32)])
                   for _ in range(400)])
    assert recal.threshold >= base / 2.0 - 1e-9


def test_records_that_alert_never_move_the_threshold() -> None:
    rng, recal, base = setup()
    attack = np.full(50_000, base * 50, np.float32)
    for _ in range(100):
        recal.observe(attack)
    assert recal.threshold == base and recal.rows == 0


def test_the_window_is_bounded_in_memory() -> None:
    rng, recal, _ = setup(window=10_000)
    stream(recal, [normal_scores(rng, 777) for _ in range(500)])
    assert recal.rows < 10_000 + 10_000 // 64 + 777 and len(recal.buckets) <= 66


def test_a_threshold_that_is_not_a_positive_number_is_refused() -> None:
    calibration = ScoreDistribution.fit(np.arange(1, 100, dtype=np.float64))
    with pytest.raises(ValueError, match="positive"):
        Recalibrator(calibration, 0.0)
