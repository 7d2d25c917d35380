"""Build the product's container images with podman or docker, whichever answers, offline-friendly.

    python scripts/build_images.py                  # app (CPU), kafka, prometheus
    python scripts/build_images.py --image app --image gpu

Images: ``app`` (deploy/docker/Dockerfile: detector, producer, incidents; Keras on JAX, no TensorFlow),
``training`` (Dockerfile.training: ``python -m training`` on CPU TensorFlow), ``gpu`` (Dockerfile.gpu: the
app image on JAX's CUDA runtime; builds without a GPU, several gigabytes), ``kafka`` (the broker from the
project's Maven jars on a Debian JRE) and ``prometheus`` (Debian's package). The Dockerfiles keep public
base images as their default; where those cannot be pulled (no registry reachable), a base is made here
from Debian packages with debootstrap and imported, once per recipe. Python packages come from a
wheelhouse built on the host with the host's own pip settings (``deploy/docker/wheelhouse``, build stage
only), so the image build itself reaches no package index.

Progress goes to stderr; the last stdout line is JSON:
``{"images": [{"name": ..., "size_bytes": ..., "build_seconds": ...}], ...}``. Exit codes: 0 built,
1 a build failed, 2 no engine or no way to get a base image.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scripts.containers import REPO, Engine, EngineError, NoEngineError, find_engine  # noqa: E402

log = logging.getLogger("build_images")
WHEELHOUSE = REPO / "deploy" / "docker" / "wheelhouse"
STAGING = REPO / "build" / "images"
DEBIAN_MIRROR = os.environ.get("DEBIAN_MIRROR", "http://deb.debian.org/debian")
IMAGE_PYTHON = (3, 11)  # the Python of both bases (python:3.11-slim and Debian bookworm's python3)


@dataclasses.dataclass(frozen=True)
class Base:
    """A base image: the public one the Dockerfile names, and the Debian packages of its local stand-in."""

    key: str
    public: str
    packages: tuple[str, ...]

    @property
    def local(self) -> str:
        recipe = hashlib.sha256(" ".join(self.packages).encode()).hexdigest()[:10]
        return f"localhost/kdd-base-{self.key}:bookworm-{recipe}"


@dataclasses.dataclass(frozen=True)
class Image:
    name: str
    dockerfile: str
    base: Base
    requirements: tuple[str, ...] = ()  # deploy/docker/requirements.py's arguments (extras, renames): Python images


PYTHON_BASE = Base("python", "python:3.11-slim-bookworm", ("python3", "python3-venv", "python-is-python3",
                                                           "ca-certificates"))
INFRA_BASE = Base("infra", "debian:bookworm-slim", ("openjdk-17-jre-headless", "prometheus", "ca-certificates"))
IMAGES = {
    "app": Image("kdd-detector:cpu", "deploy/docker/Dockerfile", PYTHON_BASE, ("serving",)),
    "training": Image("kdd-training:cpu", "deploy/docker/Dockerfile.training", PYTHON_BASE,
                      ("training", "tensorflow=tensorflow-cpu")),
    "gpu": Image("kdd-detector:gpu", "deploy/docker/Dockerfile.gpu", PYTHON_BASE, ("serving-gpu",)),
    "kafka": Image("kdd-kafka:4.1.1", "deploy/kafka/Dockerfile", INFRA_BASE),
    "prometheus": Image("kdd-prometheus:local", "deploy/prometheus/Dockerfile", INFRA_BASE),
}
DEFAULT_IMAGES = ("app", "training", "kafka", "prometheus")


class NoBaseError(EngineError):
    """The public base cannot be pulled and no local one can be made."""


# ------------------------------------------------------------------------------------------- bases
def resolve_base(engine: Engine, base: Base) -> str:
    """The public base if it is here or can be pulled, else the local one (made on first use)."""
    if engine.image_exists(base.public):
        return base.public
    if engine.run("pull", base.public, check=False, timeout=600).returncode == 0:
        return base.public
    if engine.image_exists(base.local):
        return base.local
    log.info("%s cannot be pulled; making %s from Debian packages", base.public, base.local)
    make_local_base(engine, base)
    return base.local


def make_local_base(engine: Engine, base: Base) -> None:
    debootstrap = shutil.which("debootstrap")
    if debootstrap is None or os.geteuid() != 0:
        raise NoBaseError(f"{base.public} cannot be pulled and no local base can be made: debootstrap needs root "
                          "and the debootstrap package (apt-get install debootstrap). Or make the public "
                          "image pullable (a registry mirror) and rerun.")
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="kdd-rootfs-") as tmp:
        rootfs = Path(tmp) / "rootfs"
        proc = subprocess.run([debootstrap, "--variant=minbase", "--include=" + ",".join(base.packages), "bookworm",
                               str(rootfs), DEBIAN_MIRROR], capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise EngineError(f"debootstrap failed (mirror {DEBIAN_MIRROR}; set DEBIAN_MIRROR to another):\n"
                              f"{(proc.stdout + proc.stderr)[-2000:]}")
        for junk in ("var/cache/apt/archives", "var/lib/apt/lists", "usr/share/doc", "usr/share/man",
                     "usr/share/locale", "usr/share/info"):
            shutil.rmtree(rootfs / junk, ignore_errors=True)
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
        assert tar.stdout is not None
        imported = subprocess.run([engine.name, "import", "--change", "ENV LANG=C.UTF-8", "-", base.local],
                                  stdin=tar.stdout, env=engine.env, capture_output=True, check=False)
        tar.stdout.close()
        if tar.wait() != 0 or imported.returncode != 0:
            raise EngineError(f"importing the base image failed: {imported.stderr.decode()[-2000:]}")
    log.info("made %s in %.0f s", base.local, time.monotonic() - t0)


# --------------------------------------------------------------------------------------- contexts
def fill_wheelhouse(requirements: tuple[str, ...]) -> bool:
    """Wheels for every runtime requirement, through the host's pip settings. False: build online instead."""
    if sys.version_info[:2] != IMAGE_PYTHON:
        log.warning("host Python %d.%d differs from the images' %d.%d: no wheelhouse, the build uses the index",
                    *sys.version_info[:2], *IMAGE_PYTHON)
        return False
    reqs = subprocess.run([sys.executable, str(REPO / "deploy" / "docker" / "requirements.py"), *requirements,
                           str(REPO / "pyproject.toml")], capture_output=True, text=True, check=True).stdout.split()
    log.info("wheelhouse: %s (%d requirements + build tools)", WHEELHOUSE, len(reqs))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--wheel-dir", str(WHEELHOUSE), "--find-links",
                    str(WHEELHOUSE), *reqs, "setuptools>=68", "wheel"], check=True)
    return True


def kafka_context() -> Path:
    """libs/ (the launcher's broker jars), tools/ (kafka-tools, for kafka-topics.sh) and image/ (entrypoint,
    scripts, logging) in one folder."""
    from deploy.kafka import local_kafka

    context = STAGING / "kafka"
    shutil.rmtree(context, ignore_errors=True)
    shutil.copytree(local_kafka.ensure_jars(), context / "libs")
    shutil.copytree(local_kafka.ensure_tool_jars(), context / "tools")
    shutil.copytree(REPO / "deploy" / "kafka" / "image", context / "image")
    return context


def context_for(key: str) -> Path:
    if key == "kafka":
        return kafka_context()
    if key == "prometheus":
        return REPO / "deploy" / "prometheus"
    return REPO


# ------------------------------------------------------------------------------------------ builds
def build(engine: Engine, key: str, *, offline_wheels: bool, no_cache: bool) -> dict[str, object]:
    image = IMAGES[key]
    base = resolve_base(engine, image.base)
    args = ["build", "-f", str(REPO / image.dockerfile), "-t", image.name, "--build-arg", f"BASE_IMAGE={base}"]
    if engine.is_podman:
        args += ["--format", "docker"]  # keeps HEALTHCHECK (the OCI format drops it)
    if image.requirements and offline_wheels:
        args += ["--build-arg", "PIP_INDEX_OPTION=--no-index"]
    if no_cache:
        args.append("--no-cache")
    log.info("building %s (%s, base %s)", image.name, image.dockerfile, base)
    t0 = time.monotonic()
    engine.run(*args, str(context_for(key)), timeout=3600, capture=False)
    seconds = time.monotonic() - t0
    size = engine.image_size(image.name)
    log.info("built %s: %.2f GB in %.0f s", image.name, size / 1e9, seconds)
    return {"name": image.name, "size_bytes": size, "build_seconds": round(seconds, 1), "base": base}


def build_all(keys: list[str], engine_name: str | None, *, wheelhouse: bool, no_cache: bool) -> list[dict[str, object]]:
    engine = find_engine(engine_name)
    log.info("engine: %s", engine.name)
    offline: dict[tuple[str, ...], bool] = {}
    for key in keys:
        reqs = IMAGES[key].requirements
        if reqs and reqs not in offline:
            offline[reqs] = wheelhouse and fill_wheelhouse(reqs)
    # one chain per base, the chains side by side: a base is made once and its images follow it, while the other
    # base's debootstrap (network) overlaps this one's pip installs (CPU and disk); about a minute of a cold build
    chains: dict[Base, list[str]] = {}
    for key in keys:
        chains.setdefault(IMAGES[key].base, []).append(key)

    def chain(members: list[str]) -> list[dict[str, object]]:
        return [build(engine, key, offline_wheels=offline.get(IMAGES[key].requirements, False), no_cache=no_cache)
                for key in members]

    with concurrent.futures.ThreadPoolExecutor(len(chains) or 1) as pool:
        done = dict(zip((tuple(m) for m in chains.values()), pool.map(chain, chains.values()), strict=True))
    built = {key: result for members, results in done.items() for key, result in zip(members, results, strict=True)}
    return [built[key] for key in keys]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="build_images.py", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    env_images = [i for i in os.environ.get("BUILD_IMAGES", "").split(",") if i]
    parser.add_argument("--image", action="append", choices=sorted(IMAGES), default=None,
                        help=f"image to build, repeatable (default: {' '.join(DEFAULT_IMAGES)}) [env BUILD_IMAGES=a,b]")
    parser.add_argument("--engine", choices=("podman", "docker"), default=None,
                        help="container engine (default: the first that answers) [env CONTAINER_ENGINE]")
    parser.add_argument("--no-wheelhouse", action="store_true",
                        help="let pip in the build use the package index instead of a host-built wheelhouse")
    parser.add_argument("--no-cache", action="store_true", help="rebuild every layer (a cold build)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s build-images %(message)s", stream=sys.stderr)
    keys = args.image or env_images or list(DEFAULT_IMAGES)
    unknown = sorted(set(keys) - set(IMAGES))
    if unknown:
        parser.error(f"unknown image(s) {unknown}; choose from {sorted(IMAGES)}")
    try:
        built = build_all(keys, args.engine, wheelhouse=not args.no_wheelhouse, no_cache=args.no_cache)
    except (NoEngineError, NoBaseError) as exc:
        log.error("%s", exc)
        return 2
    except EngineError as exc:
        log.error("%s", exc)
        return 1
    except subprocess.CalledProcessError as exc:
        log.error("%s failed with exit code %d", " ".join(map(str, exc.cmd[:4])), exc.returncode)
        return 1
    print(json.dumps({"images": built}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
