"""``--processes``: what each detector process of a group is started with (detector.workers)."""

from __future__ import annotations

import argparse
from pathlib import Path

from core import settings as cli
from detector.__main__ import build_parser
from detector.settings import DetectorSettings
from detector.workers import cores, worker_argv, worker_count


def _settings(tmp_path: Path, *flags: str) -> tuple[list[str], DetectorSettings]:
    argv = ["--model", str(tmp_path), *flags]
    return argv, cli.from_namespace(DetectorSettings, build_parser().parse_args(argv))


def _as_worker(argv: list[str]) -> argparse.Namespace:
    assert argv[1:3] == ["-m", "detector"]
    return build_parser().parse_args(argv[3:])


def test_each_worker_gets_its_own_port_and_ids_and_runs_alone(tmp_path: Path) -> None:
    argv, s = _settings(tmp_path, "--processes", "3", "--metrics-port", "9200", "--transactional-id", "tx",
                        "--group-instance-id", "pod-a", "--exactly-once")
    workers = [cli.from_namespace(DetectorSettings, _as_worker(worker_argv(argv, s, i))) for i in range(3)]
    assert [w.metrics_port for w in workers] == [9200, 9201, 9202]
    assert [w.transactional_id for w in workers] == ["tx-0", "tx-1", "tx-2"]  # no two fence each other
    assert [w.group_instance_id for w in workers] == ["pod-a-0", "pod-a-1", "pod-a-2"]
    assert all(w.processes == 1 and w.exactly_once and w.group_id == s.group_id for w in workers)


def test_defaults_stay_unset_and_any_port_stays_any_port(tmp_path: Path) -> None:
    argv, s = _settings(tmp_path, "--processes", "2", "--metrics-port", "0")
    w = cli.from_namespace(DetectorSettings, _as_worker(worker_argv(argv, s, 1)))
    assert (w.metrics_port, w.transactional_id, w.group_instance_id, w.processes) == (0, None, None, 1)


def test_zero_processes_means_one_per_core(tmp_path: Path) -> None:
    _, s = _settings(tmp_path, "--processes", "0")
    assert worker_count(s) == cores() >= 1


def test_one_per_core_respects_a_container_cpu_quota(tmp_path: Path) -> None:
    quota = tmp_path / "cpu.max"
    quota.write_text("150000 100000\n")  # a CPU limit of 1.5: two processes, not one per node core
    assert cores(quota) == min(2, cores(tmp_path / "absent"))
    quota.write_text("max 100000\n")
    assert cores(quota) == cores(tmp_path / "absent") >= 1
