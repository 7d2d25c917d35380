"""The container engine the build script and the container tests drive: podman or docker, whichever answers.

Both CLIs take the same verbs for what this project does (build, run, exec, inspect, rm), so one thin wrapper
serves both. On podman it names ``deploy/podman/containers.conf`` in ``CONTAINERS_CONF`` unless the caller
set one: the two settings there are what podman needs in sandboxes like the development machines
(``../shared/CONTAINERS.md``) and are harmless elsewhere.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PODMAN_CONF = REPO / "deploy" / "podman" / "containers.conf"
ENGINE_ENV = "CONTAINER_ENGINE"


class EngineError(RuntimeError):
    """An engine command failed."""


class NoEngineError(EngineError):
    """Neither podman nor docker answers: nothing to build or run containers with."""


@dataclasses.dataclass(frozen=True)
class Engine:
    name: str
    env: dict[str, str]

    @property
    def is_podman(self) -> bool:
        return self.name == "podman"

    def run(self, *args: str, check: bool = True, timeout: float | None = 600, stdin: bytes | None = None,
            capture: bool = True) -> subprocess.CompletedProcess[bytes]:
        # Uncaptured output (builds) goes to stderr: stdout stays for the callers' results.
        out = subprocess.PIPE if capture else sys.stderr
        proc = subprocess.run([self.name, *args], env=self.env, input=stdin, timeout=timeout, check=False,
                              stdout=out, stderr=subprocess.PIPE if capture else None)
        if check and proc.returncode != 0:
            tail = ((proc.stdout or b"") + (proc.stderr or b"")).decode(errors="replace")[-3000:]
            raise EngineError(f"{self.name} {' '.join(args[:2])} failed with exit code {proc.returncode}:\n{tail}")
        return proc

    def text(self, *args: str, timeout: float | None = 120) -> str:
        return self.run(*args, timeout=timeout).stdout.decode().strip()

    def image_exists(self, ref: str) -> bool:
        return self.run("image", "inspect", ref, check=False, timeout=60).returncode == 0

    def image_size(self, ref: str) -> int:
        return int(self.text("image", "inspect", "--format", "{{.Size}}", ref))

    def inspect(self, ref: str) -> dict[str, object]:
        return json.loads(self.text("inspect", ref))[0]

    def remove(self, *containers: str) -> None:
        """Remove containers if they exist (tests call it before and after, so reruns start clean)."""
        for name in containers:
            self.run("rm", "--force", name, check=False, timeout=120)

    def health_check(self, container: str) -> bool:
        """Run the image's HEALTHCHECK now. podman runs it on demand (it has no timer without systemd); docker
        runs it on its own schedule, so there the last recorded status is read."""
        if self.is_podman:
            return self.run("healthcheck", "run", container, check=False, timeout=60).returncode == 0
        return self.text("inspect", "--format", "{{.State.Health.Status}}", container) == "healthy"

    def volume_path(self, volume: str) -> Path:
        """Where a named volume lives on this host (rootful engines; the tests read bundles from it)."""
        return Path(self.text("volume", "inspect", "--format", "{{.Mountpoint}}", volume))

    def compose(self) -> list[str]:
        """The Compose CLI that goes with this engine."""
        if self.is_podman:
            venv_bin = str(Path(sys.executable).parent)
            found = shutil.which("podman-compose") or shutil.which("podman-compose", path=venv_bin)
            if found is None:
                raise NoEngineError("podman-compose is not installed; run scripts/setup.sh (it is a dev dependency)")
            return [found]
        return ["docker", "compose"]

    def logs(self, container: str, tail: int = 60) -> str:
        proc = self.run("logs", "--tail", str(tail), container, check=False, timeout=60)
        return ((proc.stdout or b"") + (proc.stderr or b"")).decode(errors="replace")


def _answers(name: str, env: dict[str, str]) -> bool:
    if shutil.which(name) is None:
        return False
    try:
        return subprocess.run([name, "info"], env=env, capture_output=True, timeout=60,
                              check=False).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def find_engine(preferred: str | None = None) -> Engine:
    """The first of podman, docker (or only ``preferred`` / ``$CONTAINER_ENGINE``) whose ``info`` answers."""
    env = dict(os.environ)
    env.setdefault("CONTAINERS_CONF", str(PODMAN_CONF))
    wanted = preferred or os.environ.get(ENGINE_ENV)
    names = [wanted] if wanted else ["podman", "docker"]
    for name in names:
        if _answers(name, env):
            return Engine(name, env)
    raise NoEngineError(
        f"no container engine answers ({' or '.join(names)} info failed). Install podman (apt-get install podman "
        f"runc) or start a Docker engine; choose one with {ENGINE_ENV}=podman|docker."
    )
