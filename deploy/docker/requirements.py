"""Print the project's runtime requirements for an image, with TensorFlow replaced by the named package.

``pyproject.toml`` names ``tensorflow``, which is what a developer installs. A CPU image wants
``tensorflow-cpu`` (the same module without the CUDA kernels, about a gigabyte smaller installed) and a GPU
image ``tensorflow[and-cuda]``. The two distributions cannot be swapped by pip itself (different names), so
the image installs this list and then the project with ``--no-deps``. Standard library only: it runs in the
image's build stage before anything is installed.

    python deploy/docker/requirements.py tensorflow-cpu [pyproject.toml]
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path


def requirements(pyproject: Path, tensorflow_package: str) -> list[str]:
    deps: list[str] = tomllib.loads(pyproject.read_text())["project"]["dependencies"]
    out = []
    for dep in deps:
        name = re.match(r"[A-Za-z0-9_.-]+", dep)
        if name and name.group(0).lower() == "tensorflow":
            dep = tensorflow_package + dep[name.end():]
        out.append(dep)
    return out


if __name__ == "__main__":
    if len(sys.argv) not in (2, 3) or sys.argv[1] in ("-h", "--help"):
        print(__doc__.strip(), file=sys.stderr)
        sys.exit(2)
    path = Path(sys.argv[2]) if len(sys.argv) == 3 else Path("pyproject.toml")
    print("\n".join(requirements(path, sys.argv[1])))
