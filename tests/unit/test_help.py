"""Every command line answers ``--help``, every subcommand too (issue 31 item 18: ``python -m incidents run --help``
crashed on a ``%`` in a help string, which argparse formats with ``%``). In process: each entry point's
``main(["--help"])`` (and ``main([sub, "--help"])`` for each subcommand its parser declares) must print a usage
and exit 0."""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io

import pytest

pytestmark = pytest.mark.hostile

ENTRY_POINTS = ["detector.__main__", "producer.__main__", "incidents.__main__", "training.__main__", "core.datasets",
                "deploy.kafka.local_kafka", "scripts.bench_detector", "scripts.bench_producer", "scripts.bench_swap",
                "scripts.soak", "scripts.soak_incidents", "scripts.evaluate_incidents", "scripts.demo",
                "scripts.gpu_check", "scripts.build_images", "scripts.acl_table", "scripts.soak_bombs",
                "scripts.kdd_facts", "scripts.bench_featurizer", "scripts.demo_zeek", "scripts.bench_zeek_detector",
                "scripts.realised_fpr", "scripts.bench_scale"]


def _subcommands(module: object) -> list[str]:
    build = getattr(module, "build_parser", None)
    if build is None:
        return []
    parser: argparse.ArgumentParser = build()
    return [name for action in parser._actions if isinstance(action, argparse._SubParsersAction)
            for name in action.choices]


def _help(module: object, argv: list[str]) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as info:
        main = module.main  # type: ignore[attr-defined]
        main(argv) if main.__code__.co_argcount else _argv_main(main, argv)
    assert info.value.code in (0, None), f"{argv} exited {info.value.code}"
    return out.getvalue()


def _argv_main(main: object, argv: list[str]) -> None:
    import sys

    saved = sys.argv
    sys.argv = ["prog", *argv]
    try:
        main()  # type: ignore[operator]
    finally:
        sys.argv = saved


@pytest.mark.parametrize("name", ENTRY_POINTS)
def test_every_command_and_subcommand_answers_help(name: str) -> None:
    module = importlib.import_module(name)
    for argv in [["--help"], *([sub, "--help"] for sub in _subcommands(module))]:
        text = _help(module, argv)
        assert text.startswith("usage:"), f"{name} {argv}: {text[:200]!r}"
