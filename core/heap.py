"""The imported runtime kept out of the cyclic garbage collector's full passes.

Importing TensorFlow and Keras (or JAX) makes ~470,000 GC-tracked objects: modules, functions, classes that
live as long as the process. Every micro-batch allocates thousands of short-lived containers (a header list
per message, alert dicts); the survivors of a batch are promoted, and every few dozen batches CPython runs a
full collection that walked all of those runtime objects again: 270-280 ms each, 46% of a labelled drain's
time and the cause of produce-to-alert p99 spikes of 150-200 ms (measured with ``gc.callbacks``, issue 15).

Freezing the heap once the runtime is imported, and *before* a model is loaded, moves those objects to the
permanent generation: a full pass then walks the ~8,000 objects of the model and what the loop made (under
1 ms). Models stay outside the frozen set, so a model replaced by a hot swap is collected as usual (frozen
reference cycles would never be).
"""

from __future__ import annotations

import gc
import logging
import time

log = logging.getLogger(__name__)


def freeze_long_lived() -> float:
    """Collect what is garbage now, then freeze everything left; returns the seconds the collection took.

    Call it after the imports that live as long as the process, before loading anything that may be
    replaced (a model): frozen objects are never scanned, so their cycles are never collected either.
    """
    t0 = time.perf_counter()
    gc.collect()
    gc.freeze()
    seconds = time.perf_counter() - t0
    log.debug("heap frozen: %d objects out of the collector's full passes (%.0f ms)", gc.get_freeze_count(),
              1000 * seconds)
    return seconds
