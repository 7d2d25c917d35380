"""The long-lived part of a service's heap, kept out of the cyclic garbage collector's full passes.

A loaded model brings ~480,000 GC-tracked objects (TensorFlow and Keras modules, layers, traced graphs).
Every micro-batch allocates thousands of short-lived containers (a header list per message, alert dicts);
the survivors of a batch are promoted, and every few dozen batches CPython runs a full collection that
walks all of those model objects again: 270-280 ms each, 46% of a labelled drain's time and the cause of
produce-to-alert p99 spikes of 150-200 ms (measured with ``gc.callbacks``, issue 15). Freezing the heap
once the model is loaded moves those objects to the permanent generation: full passes then walk only what
the loop made (worst pause 3 ms). Reference counting still frees frozen objects; only frozen *cycles*
would stay, so replacing the model thaws, collects the old one and freezes again.
"""

from __future__ import annotations

import gc
import logging
import time

log = logging.getLogger(__name__)


def freeze_long_lived() -> float:
    """Collect what is garbage now, then freeze everything left; returns the seconds the collection took."""
    t0 = time.perf_counter()
    gc.collect()
    gc.freeze()
    seconds = time.perf_counter() - t0
    log.debug("heap frozen: %d objects out of the collector's full passes (%.0f ms)", gc.get_freeze_count(),
              1000 * seconds)
    return seconds


def refreeze() -> float:
    """After the long-lived set changed (a model replaced): thaw, collect the old cycles, freeze again."""
    gc.unfreeze()
    return freeze_long_lived()
