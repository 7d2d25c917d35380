"""Which Keras backend scores, and how a scoring function is compiled for it.

Training stays on TensorFlow. Scoring runs on whichever backend Keras was started with (``KERAS_BACKEND``:
``tensorflow`` by default, ``jax`` or ``torch`` where installed), so one ``.keras`` bundle scores where
TensorFlow's GPU wheels are missing or lag the CUDA release. The scoring code itself is written once in
``keras.ops``; only this module tells the backends apart: how to compile (``tf.function`` with a fixed
signature, ``jax.jit``, torch in inference mode), how arrays go in and out, and which device is used.
Nothing here imports TensorFlow unless TensorFlow is the backend.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any

import numpy as np

ScoringFn = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, ...]]


def name() -> str:
    import keras

    return str(keras.backend.backend())


def compile_scoring(fn: Callable[[Any, Any], tuple[Any, ...]], n_numeric: int, n_categorical: int) -> ScoringFn:
    """``fn(numeric, category_ids)`` in keras.ops -> a function of numpy arrays returning numpy arrays."""
    backend = name()
    if backend == "tensorflow":
        import tensorflow as tf

        # The concrete function, called directly: the polymorphic function's per-call dispatch (binding and
        # checking the arguments against its signature) cost 0.3-0.4 ms a batch, a third of a 64-row batch.
        compiled = tf.function(fn, input_signature=[
            tf.TensorSpec([None, n_numeric], tf.float32, name="numeric"),
            tf.TensorSpec([None, n_categorical], tf.int32, name="category_ids"),
        ]).get_concrete_function()
        return lambda numeric, ids: tuple(t.numpy() for t in compiled(tf.constant(numeric), tf.constant(ids)))
    if backend == "jax":
        import jax

        jitted = jax.jit(fn)
        return lambda numeric, ids: tuple(np.asarray(t) for t in jitted(numeric, ids))
    if backend == "torch":
        import keras
        import torch

        def run_torch(numeric: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, ...]:
            with torch.inference_mode():  # keras' torch tensors land on its device (the GPU when present)
                out = fn(keras.ops.convert_to_tensor(numeric), keras.ops.convert_to_tensor(ids))
                return tuple(t.detach().cpu().numpy() for t in out)

        return run_torch
    import keras

    return lambda numeric, ids: tuple(keras.ops.convert_to_numpy(t) for t in fn(numeric, ids))


def compiles_per_shape() -> bool:
    """Whether each new input shape compiles anew (``jax.jit``): a first batch of an unseen size then waits for
    XLA (0.1-1 s on a CPU), so such a backend is warmed at every bucket size before it serves. TensorFlow's
    function has a ``None`` batch dimension and traces once."""
    return name() == "jax"


def limit_threads(n: int) -> None:
    """At most ``n`` CPU threads for scoring (0: the backend's default). Call before the backend runs anything.

    On a small machine the detector's main thread, the Kafka client's threads and the backend's thread pool
    share the cores; TensorFlow's pool spins between operations and took a core from the Kafka client:
    with one thread, the drain ratio went from 0.63 to 0.76 and the poll stage from 1.7 to 1.1 us/record on
    2 cores (scripts/bench_detector.py). A GPU does the arithmetic there anyway.
    """
    backend = name()  # imports Keras and its backend's runtime even when nothing is limited
    if n <= 0:
        return
    if backend == "tensorflow":
        import tensorflow as tf

        try:
            tf.config.threading.set_intra_op_parallelism_threads(n)
            # never a single inter-op thread: a function call that waits on ops queued behind it can then hang
            # for good (tensorflow/tensorflow#38969; a detector once stopped answering SIGTERM here, its main
            # thread inside TensorFlow). Idle inter-op threads sleep; the spinning pool is the intra-op one.
            tf.config.threading.set_inter_op_parallelism_threads(max(2, n))
        except RuntimeError:  # the runtime already started (a second detector in one process): keep its pools
            return
    elif backend == "torch":
        import torch

        torch.set_num_threads(n)
    elif backend == "jax" and "jax" not in sys.modules:
        flags = os.environ.get("XLA_FLAGS", "")
        os.environ["XLA_FLAGS"] = f"{flags} --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads={n}"


def device() -> str:
    """The device scoring runs on, as the detector reports it (``CPU`` or ``GPU:0``)."""
    backend = name()
    if backend == "tensorflow":
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        return f"GPU:{gpus[0].name.rsplit(':', 1)[-1]}" if gpus else "CPU"
    if backend == "jax":
        import jax

        dev = jax.devices()[0]
        return "CPU" if dev.platform == "cpu" else f"GPU:{dev.id}"
    if backend == "torch":
        import torch

        return f"GPU:{torch.cuda.current_device()}" if torch.cuda.is_available() else "CPU"
    return "CPU"
