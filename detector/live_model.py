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
from training.bundle import Bundle, BundleError, load_bundle


@dataclasses.dataclass(frozen=True)
class LiveModel:
    path: Path  # the resolved bundle directory
    bundle: Bundle
    scoring: ScoreStage
    alerts: AlertBuilder

    @property
    def version(self) -> str:
        return self.bundle.version

    @property
    def threshold(self) -> float:
        return self.bundle.threshold


def load_live(path: Path, alert_topic: str, schema: RecordSchema | None = None) -> LiveModel:
    """Load and verify a bundle, trace its scoring function; raises :class:`BundleError` with the reason."""
    bundle = load_bundle(path)
    if schema is not None and bundle.schema.names != schema.names:
        raise BundleError(f"{path}: its record schema {bundle.schema.name!r} has other features or another order "
                          f"than the running model's {schema.name!r}; a detector serves one input format")
    scoring = ScoreStage(bundle)
    try:
        scoring.warm_up()
    except Exception as exc:  # noqa: BLE001 - any failure to trace means "do not serve this model"
        raise BundleError(f"{path}: the scoring function failed its warm-up trace: {exc}") from exc
    return LiveModel(Path(path).resolve(), bundle, scoring,
                     AlertBuilder(alert_topic, bundle.threshold, bundle.version, scoring.scorer))
