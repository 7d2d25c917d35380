"""argparse options whose defaults come from environment variables, shown in ``--help``.

Every CLI option of the three services has an environment-variable twin (containers and Kubernetes
configure through the environment); the flag wins when both are given.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from typing import Any


def add(parser: argparse.ArgumentParser | Any, flag: str, env: str, *, default: Any = None,
        type: Callable[[str], Any] = str, help: str = "", secret: bool = False, **kwargs: Any) -> None:  # noqa: A002
    """Add ``flag`` whose default is ``$env`` (converted with ``type``) or ``default``."""
    raw = os.environ.get(env)
    value = default
    if raw is not None and raw != "":
        try:
            value = type(raw)
        except (TypeError, ValueError) as exc:
            raise SystemExit(f"error: environment variable {env}={raw!r} is not valid for {flag}: {exc}") from exc
    shown = "(set)" if secret and value is not None else value
    parser.add_argument(flag, type=type, default=value, help=f"{help} [env {env}; default: {shown}]", **kwargs)


def add_flag(parser: argparse.ArgumentParser | Any, flag: str, env: str, *, help: str = "") -> None:  # noqa: A002
    """A boolean switch that ``$env`` in {1,true,yes,on} turns on."""
    on = os.environ.get(env, "").strip().lower() in {"1", "true", "yes", "on"}
    parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=on, help=f"{help} [env {env}]")


def parse_kv(items: list[str] | None, env: str | None = None) -> dict[str, str]:
    """``-X key=value`` pass-through settings (librdkafka); ``$env`` may hold ``k=v,k=v`` too."""
    pairs: list[str] = []
    if env and os.environ.get(env):
        pairs += [p for p in os.environ[env].split(",") if p.strip()]
    pairs += items or []
    out: dict[str, str] = {}
    for item in pairs:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise SystemExit(f"error: -X expects key=value, got {item!r}")
        out[key.strip()] = value.strip()
    return out
