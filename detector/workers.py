"""``--processes N``: N detector processes in one consumer group on one machine, under one supervisor.

Why processes and not threads: a micro-batch spends most of its time holding the GIL (creating message
objects, building alerts, Python around the Arrow and Keras calls), so threads would take turns on one core.
Processes each hold a share of the input partitions, which the consumer group assigns, so the commit contract
is the one a single detector keeps, per process: each worker is an ordinary detector (at-least-once or
exactly-once with its own transactional id), and a rebalance when one stops is the group's usual one.
Measured on 2 cores: one process drains at 0.19x a bare consumer, two at 0.28 (scripts/bench_detector.py).

The supervisor itself imports no Kafka client and no model: it starts the workers (``python -m detector`` with
the same settings and ``--processes 1``), gives worker ``i`` metrics port ``PORT + i`` (so each is scraped on its
own) and, where ids are set, ``ID-i`` as its transactional and static-membership id, forwards SIGTERM/SIGINT to
them, and exits with the first failing worker's exit code after stopping the others: a worker that crashed is
restarted with the whole group by the orchestrator (Kubernetes, systemd), never silently left out.
"""

from __future__ import annotations

import logging
import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from detector.settings import DetectorSettings

log = logging.getLogger("detector.workers")

def cores(cpu_max: Path = Path("/sys/fs/cgroup/cpu.max")) -> int:
    """CPU cores this process may use: its CPU set, capped by a cgroup v2 CPU quota (a Kubernetes CPU limit is a
    quota, not a CPU set: a pod limited to 2 CPUs on a 64-core node sees 64 in its affinity)."""
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        n = os.cpu_count() or 1
    try:
        quota, period = cpu_max.read_text().split()[:2]
        if quota != "max":
            n = min(n, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass  # no cgroup v2 quota here
    return n


def worker_count(settings: DetectorSettings) -> int:
    return settings.processes if settings.processes > 0 else cores()


def worker_argv(argv: Sequence[str], settings: DetectorSettings, index: int) -> list[str]:
    """Worker ``index``'s command line: the supervisor's own flags, then what must differ per worker (argparse
    keeps the last occurrence of a flag, so these win over anything given before)."""
    own = ["--processes", "1"]
    if settings.metrics_port:
        own += ["--metrics-port", str(settings.metrics_port + index)]
    if settings.transactional_id:
        own += ["--transactional-id", f"{settings.transactional_id}-{index}"]
    if settings.group_instance_id:
        own += ["--group-instance-id", f"{settings.group_instance_id}-{index}"]
    return [sys.executable, "-m", "detector", *argv, *own]


def supervise(argv: Sequence[str], settings: DetectorSettings) -> int:
    """Run the workers until a signal or a worker's exit; returns the exit code the service should give."""
    n = worker_count(settings)
    workers = [subprocess.Popen(worker_argv(argv, settings, i), preexec_fn=_die_with_parent)  # noqa: S603, PLW1509
               for i in range(n)]  # our own module; the supervisor has no threads, so preexec_fn is safe
    log.info("started %d detector processes in group %s: pids %s", n, settings.group_id, [w.pid for w in workers])
    stopping = False

    def terminate() -> None:
        nonlocal stopping
        stopping = True
        for w in workers:
            if w.poll() is None:
                w.send_signal(signal.SIGTERM)  # each finishes its batch, commits and leaves the group

    def stop(signum: int, _frame: object) -> None:
        log.info("received %s: stopping %d detector processes", signal.Signals(signum).name, n)
        terminate()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    code = 0
    while True:
        states = [w.poll() for w in workers]  # every worker polled, each time (any() would stop at a live one)
        ended = [w for w, state in zip(workers, states, strict=True) if state is not None]
        if ended and not stopping:
            first = ended[0]
            code = first.returncode if first.returncode > 0 else 1  # killed by a signal, or ended by itself
            log.error("detector process %d exited with %d: stopping the others (exit %d; restart the group)",
                      first.pid, first.returncode, code)
            terminate()
        if len(ended) == len(workers):
            break
        time.sleep(0.2)
    if code == 0:  # stopped by a signal: a worker that failed to stop cleanly still fails the service
        code = next((w.returncode for w in workers if w.returncode not in (0, -signal.SIGTERM)), 0)
    return code


def _die_with_parent() -> None:
    """In the worker, before exec: SIGTERM when the supervisor dies (even by SIGKILL), so no worker outlives it
    holding partitions under a supervisor that no longer exists (Linux; elsewhere a no-op)."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
