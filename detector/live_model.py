"""The model in force: a verified bundle with its compiled scoring function and its alert builder.

Everything that depends on the bundle is built here, off the hot path, so a swap is one reference
assignment between two batches. Verification is the bundle's own (checksums, stock layers, widths) plus
what the running detector needs: the same record schema as the model it replaces (the input topic does
not change format with a model), and a warm-up trace of the scoring function.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from core.schema import RecordSchema
from detector.alerts import AlertBuilder
from detector.scoring import ScoreStage
from model.bundle import Bundle, BundleError, load_bundle


@dataclasses.dataclass(frozen=True)
class LiveModel:
    path: Path  # the resolved bundle directory
    bundle: Bundle
    scoring: ScoreStage
    alerts: AlertBuilder
    threshold: float  # in force: the bundle's own, or one the operator chose (--target-fpr, --threshold)

    @property
    def version(self) -> str:
        return self.bundle.version


def load_live(path: Path, alert_topic: str, schema: RecordSchema | None = None, *, target_fpr: float | None = None,
              threshold: float | None = None, batch_size: int = 1) -> LiveModel:
    """Load and verify a bundle, trace its scoring function; raises :class:`BundleError` with the reason.

    The threshold follows the model: ``target_fpr`` is placed on each bundle's own calibration scores.
    ``batch_size``: the largest batch it will score (a per-shape backend is warmed up to it).
    """
    bundle = load_bundle(path)
    try:
        in_force = bundle.threshold_for(target_fpr, threshold)
    except ValueError as exc:
        raise BundleError(f"{path}: {exc}") from exc
    if schema is not None and bundle.schema != schema:
        raise BundleError(f"{path}: its record schema {bundle.schema.name!r} differs from the running model's "
                          f"{schema.name!r} (features, their order, kinds, value rules or label); a detector serves "
                          "one input format: start a detector for the new one instead")
    scoring = ScoreStage(bundle)
    try:
        scoring.warm_up(batch_size)
    except Exception as exc:  # noqa: BLE001 - any failure to trace means "do not serve this model"
        raise BundleError(f"{path}: the scoring function failed its warm-up trace: {exc}") from exc
    calibration = bundle.calibration()
    alerts = AlertBuilder(alert_topic, in_force, bundle.version, scoring.scorer,
                          ranker=calibration.normal_rank if calibration is not None else None)
    return LiveModel(Path(path).resolve(), bundle, scoring, alerts, in_force)
