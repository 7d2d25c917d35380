"""Print the runtime requirements of an image: the project's dependencies, one or more extras, and renames.

``pyproject.toml`` declares what a developer installs: the base dependencies every service needs, plus extras
(``serving``: Keras on JAX; ``training``: TensorFlow, scikit-learn, matplotlib, TensorBoard). An image wants
one role, and sometimes another distribution of the same module: a CPU training image installs
``tensorflow-cpu`` (the same module without the CUDA kernels, about a gigabyte smaller). pip cannot swap
distributions by itself (different names), so the image installs this list and then the project with
``--no-deps``. Standard library only: it runs in the image's build stage before anything is installed.

    python deploy/docker/requirements.py serving [pyproject.toml]
    python deploy/docker/requirements.py training tensorflow=tensorflow-cpu
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path


def requirements(pyproject: Path, extras: list[str], renames: dict[str, str]) -> list[str]:
    project = tomllib.loads(pyproject.read_text())["project"]
    deps: list[str] = list(project["dependencies"])
    for extra in extras:
        if extra not in project["optional-dependencies"]:
            raise SystemExit(f"requirements.py: no extra {extra!r} in {pyproject}; "
                             f"choose from {sorted(project['optional-dependencies'])}")
        deps += project["optional-dependencies"][extra]
    out = []
    for dep in deps:
        name = re.match(r"[A-Za-z0-9_.-]+", dep)
        if name and name.group(0).lower() in renames:
            dep = renames[name.group(0).lower()] + dep[name.end():]
        out.append(dep)
    return out


if __name__ == "__main__":
    args = sys.argv[1:]
    if not args or args[0] in ("-h", "--help"):
        print(__doc__.strip(), file=sys.stderr)
        sys.exit(2)
    extras = [e for e in args[0].split(",") if e]
    renames = dict(a.split("=", 1) for a in args[1:] if "=" in a)
    paths = [a for a in args[1:] if "=" not in a]
    print("\n".join(requirements(Path(paths[0]) if paths else Path("pyproject.toml"), extras, renames)))
