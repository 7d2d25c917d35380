"""A model store: a directory of versioned bundles and a ``current`` pointer that detectors follow.

Layout::

    STORE/
      ae-20261123T101500Z-1a2b3c4d/   a bundle (directory named by its version)
      ae-20261124T080000Z-5e6f7a8b/
      current -> ae-20261124T080000Z-5e6f7a8b    a relative symlink, switched atomically
      history.log                     one line per switch: time, from, to (what rollback reads)

Switching is ``rename(2)`` of a fresh symlink over ``current``, so a detector polling the pointer sees the
old target or the new one, never a half-written state. Promotion and rollback only move the pointer;
bundles are never modified in place, so the version an alert names always means the same model.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
from pathlib import Path

from model.bundle import MANIFEST, BundleError, read_manifest

CURRENT = "current"
HISTORY = "history.log"


class StoreError(ValueError):
    """The store or a version in it is missing or unusable; the message says what to do."""


def is_store(path: Path) -> bool:
    return (path / CURRENT).exists() or (path.is_dir() and not (path / MANIFEST).exists()
                                         and any((p / MANIFEST).exists() for p in path.iterdir() if p.is_dir()))


def resolve(path: Path) -> Path:
    """The bundle a model path means now: the path itself if it is a bundle, else the store's ``current``."""
    path = Path(path)
    if (path / MANIFEST).exists():
        return path
    pointer = path / CURRENT
    if not pointer.exists():
        raise StoreError(f"{path} has no {MANIFEST} and no '{CURRENT}' pointer: it is neither a model bundle nor a "
                         "model store; train one with `python -m training train --out DIR`, or promote a version")
    return pointer.resolve()


def versions(store: Path) -> list[str]:
    return sorted(p.name for p in Path(store).iterdir()
                  if p.is_dir() and not p.is_symlink() and (p / MANIFEST).exists())


def current_version(store: Path) -> str | None:
    pointer = Path(store) / CURRENT
    return pointer.resolve().name if pointer.exists() else None


def add(store: Path, bundle: Path) -> Path:
    """Move a bundle into the store under its version's name (not promoted; promotion verifies it)."""
    version = str(json.loads((Path(bundle) / MANIFEST).read_text())["version"])
    target = Path(store) / version
    if target.exists():
        raise StoreError(f"{target} already exists; versions are immutable")
    Path(store).mkdir(parents=True, exist_ok=True)
    shutil.move(str(bundle), str(target))
    return target


def promote(store: Path, version: str) -> tuple[str | None, str]:
    """Point ``current`` at ``version`` (a name in the store, or a path to one); returns (previous, new)."""
    store = Path(store)
    name = Path(version).name
    target = store / name
    if not (target / MANIFEST).exists():
        known = ", ".join(versions(store)) or "none"
        raise StoreError(f"{target} is not a bundle in the store {store} (versions: {known})")
    try:
        read_manifest(target)  # checksums: never point detectors at a bundle known to be corrupt
    except BundleError as exc:
        raise StoreError(f"refusing to promote {name}: {exc}") from exc
    previous = current_version(store)
    tmp = store / f".{CURRENT}.{os.getpid()}"
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(name, target_is_directory=True)
    os.replace(tmp, store / CURRENT)
    with open(store / HISTORY, "a") as fh:
        fh.write(f"{dt.datetime.now(dt.UTC).isoformat(timespec='seconds')} {previous or '-'} {name}\n")
    return previous, name


def rollback(store: Path) -> tuple[str | None, str]:
    """Point ``current`` back at the version it pointed to before the last switch."""
    lines = (Path(store) / HISTORY).read_text().splitlines() if (Path(store) / HISTORY).exists() else []
    if not lines or lines[-1].split()[1] == "-":
        raise StoreError(f"{store}: no earlier version to roll back to (see {HISTORY})")
    return promote(store, lines[-1].split()[1])
