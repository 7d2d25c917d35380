"""Finding the KDD99 10% file, and fetching it from its public home when it is nowhere here.

Looked for, in order: the data variable (``DATA_ENV``: any path the user gives), ``../shared/data`` beside
the clone, the cache (``$XDG_CACHE_HOME/kdd-stream-detector/data``, outside the clone, so a new clone does not
fetch again). When
none has it, it is downloaded from the UCI KDD archive (the data set's canonical home; scikit-learn's mirror
after it), with progress, into the cache, and kept only if its sha256 is the known one: a truncated or
altered download is deleted and reported, never used. Where that is impossible (no network), the error says
exactly what to do: the URL, the checksum and the variable.

Standard library only: ``scripts/demo`` runs this with the system Python before any package is installed.
UNSW-NB15 is not fetched: its licence asks users to obtain it from UNSW (see the README).

``python -m core.datasets [locate]`` prints the file's path (fetching it if needed): exit 0; 2 when it cannot
be found or fetched, with the reason on stderr.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import os
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

DATA_ENV = "KDD_DATA"
URL_ENV = "KDD_DOWNLOAD_URL"  # overrides the download location (a mirror, or a local server in tests)
_REPO_ROOT = Path(__file__).resolve().parents[1]


@dataclasses.dataclass(frozen=True)
class Dataset:
    name: str
    filename: str
    sha256: str
    urls: tuple[str, ...]


KDD99_10 = Dataset(
    name="the KDD Cup 1999 10% file",
    filename="kddcup.data_10_percent.gz",
    sha256="8045aca0d84e70e622d1148d7df782496f6333bf6eb979a1b0837c42a9fd9561",
    urls=("http://kdd.ics.uci.edu/databases/kddcup99/kddcup.data_10_percent.gz",  # the UCI KDD archive
          "https://ndownloader.figshare.com/files/5976042"),  # scikit-learn's mirror of the same bytes
)


class DataUnavailable(RuntimeError):
    """The data file is not here and could not be fetched; the message says what to do."""


def cache_dir() -> Path:
    root = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    return Path(root) / "kdd-stream-detector" / "data"


def shared_path(ds: Dataset = KDD99_10) -> Path:
    return (_REPO_ROOT / ".." / "shared" / "data" / ds.filename).resolve()


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def locate(ds: Dataset = KDD99_10, *, fetch: bool = True, progress: bool = True) -> Path:
    """The data file's path: the user's, the shared copy, the cached one, or a fresh verified download."""
    env = os.environ.get(DATA_ENV)
    if env:
        if not Path(env).is_file():
            raise DataUnavailable(f"{DATA_ENV}={env} is not a file; point it at {ds.name} ({ds.filename})")
        return Path(env)
    for candidate in (shared_path(ds), cache_dir() / ds.filename):
        if candidate.is_file():
            return candidate
    if not fetch:
        raise DataUnavailable(_what_to_do(ds, "it is not here"))
    return download(ds, progress=progress)


def download(ds: Dataset = KDD99_10, *, progress: bool = True) -> Path:
    """Fetch ``ds`` into the cache, verified; raise :class:`DataUnavailable` naming the URL, checksum and variable."""
    urls = (os.environ[URL_ENV],) if os.environ.get(URL_ENV) else ds.urls
    dest = cache_dir() / ds.filename
    dest.parent.mkdir(parents=True, exist_ok=True)
    failures = []
    for url in urls:
        part = dest.with_name(dest.name + f".part-{os.getpid()}")
        try:
            _fetch(url, part, progress)
            got = sha256_of(part)
            if got != ds.sha256:
                failures.append(f"{url}: sha256 {got} is not the expected one (a truncated or altered file)")
                continue
            part.replace(dest)
            return dest
        except (urllib.error.URLError, OSError, TimeoutError) as exc:
            failures.append(f"{url}: {getattr(exc, 'reason', exc)}")
        finally:
            part.unlink(missing_ok=True)
    raise DataUnavailable(_what_to_do(ds, "downloading it failed (" + "; ".join(failures) + ")"))


def _fetch(url: str, dest: Path, progress: bool) -> None:
    with urllib.request.urlopen(url, timeout=30) as response, open(dest, "wb") as out:  # noqa: S310 - fixed URLs
        total = int(response.headers.get("Content-Length") or 0)
        done, shown = 0, 0.0
        tty = sys.stderr.isatty()  # a terminal gets one updating line; a log a line every 5 s
        start = "\r" if tty else ""
        while block := response.read(1 << 16):
            out.write(block)
            done += len(block)
            if progress and time.monotonic() - shown > (0.5 if tty else 5.0):
                shown = time.monotonic()
                of = f" of {total / 2**20:.1f}" if total else ""
                print(f"{start}downloading {url}: {done / 2**20:.1f}{of} MiB", end="" if tty else "\n",
                      file=sys.stderr, flush=True)
        if progress:
            print(f"{start}downloaded {url}: {done / 2**20:.1f} MiB", file=sys.stderr, flush=True)


def _what_to_do(ds: Dataset, why: str) -> str:
    return (f"{ds.name} ({ds.filename}) is needed and {why}. Download it from {ds.urls[0]} (or {ds.urls[1]}), "
            f"check that its sha256 is {ds.sha256}, and either put it at {cache_dir() / ds.filename} or set "
            f"{DATA_ENV}=/path/to/{ds.filename} (any KDD99-format file works; {URL_ENV} sets another download "
            "location).")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m core.datasets", description=__doc__.split("\n\n")[0])
    parser.add_argument("command", nargs="?", default="locate", choices=["locate"],
                        help="print the KDD99 10%% file's path, fetching and verifying it when needed")
    parser.add_argument("--no-fetch", action="store_true", help="only look; never download")
    args = parser.parse_args(argv)
    try:
        print(locate(fetch=not args.no_fetch))
    except DataUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
