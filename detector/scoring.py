"""Score stage: category ids, then the bundle's compiled scoring function (preprocessing + model + errors).

Deciding is not done here: the threshold is applied by ``core.decision``, the one place it is written.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from core.wire import ParsedBatch
from model import backend
from model.bundle import Bundle
from model.scorer import Scores, bucket_sizes


@dataclasses.dataclass(frozen=True)
class ScoredBatch:
    scores: np.ndarray  # (n,) float32, aligned with the parsed rows
    result: Scores | None  # per-feature errors and reconstructions, for explanations
    unknown: np.ndarray  # per categorical feature: values never seen in training (scored in the unknown slot)
    category_ids: np.ndarray  # (n, categoricals) int32: the slot of each value, the unknown slot last


class ScoreStage:
    def __init__(self, bundle: Bundle) -> None:
        self.scorer = bundle.scorer()
        self.schema = bundle.schema

    def warm_up(self, max_rows: int = 1) -> None:
        """Trace the scoring function before declaring readiness, so the first batch is not slow: once, or, where
        the backend compiles per input shape (JAX), at every padded size a batch of ``max_rows`` can take. Without
        that, JAX's first batch of each new size waited for XLA mid-stream: p99 1.2 s at 10,000 records/s, whose
        batches vary in size (scripts/bench_detector.py with KERAS_BACKEND=jax)."""
        sizes = bucket_sizes(max_rows, self.scorer.max_bucket) if backend.compiles_per_shape() else [1]
        for rows in sizes:
            self.scorer.score_arrays(np.zeros((rows, len(self.schema.numeric)), np.float32),
                                     np.zeros((rows, len(self.schema.categorical)), np.int32))

    def score(self, parsed: ParsedBatch) -> ScoredBatch:
        if not len(parsed.index):
            k = len(self.schema.categorical)
            return ScoredBatch(np.zeros(0, np.float32), None, np.zeros(k, np.int64), np.zeros((0, k), np.int32))
        ids, unknown = self.scorer.preprocessor.encode_category_columns(parsed.categories)
        result = self.scorer.score_arrays(parsed.numeric.astype(np.float32), ids)
        return ScoredBatch(result.score, result, unknown, ids)
