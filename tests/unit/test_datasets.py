"""Fetching the KDD99 file as a new user's demo does, against a local HTTP server (these machines have no
internet): a good download is verified and cached, a corrupt or truncated one is deleted and reported, and
without data or network the demo ends with exit 2, the URL, the checksum and the variable, no traceback."""

from __future__ import annotations

import gzip
import hashlib
import http.server
import os
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from core import datasets
from deploy.kafka.local_kafka import free_port

REPO = Path(__file__).resolve().parents[2]
BODY = gzip.compress(b"0,tcp,http,SF,181,5450,0,0,0,0,0,1,0,0,0,0,0,0,0,0,0,0,8,8,0,0,0,0,1,0,0,9,9,1,0,0.11,"
                     b"0,0,0,0,0,normal.\n")


@pytest.fixture()
def server() -> Iterator[tuple[str, dict[str, bytes]]]:
    """A local HTTP server; the test sets what each path serves."""
    files: dict[str, bytes] = {}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
            body = files.get(self.path)
            if body is None:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_args: object) -> None:
            return

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", files
    finally:
        httpd.shutdown()


@pytest.fixture()
def dataset(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> datasets.Dataset:
    """A stand-in for the KDD99 file (its sha256 is BODY's), with an empty cache and no KDD_DATA."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv(datasets.DATA_ENV, raising=False)
    monkeypatch.delenv(datasets.URL_ENV, raising=False)
    return datasets.Dataset("a test file", "test_file.gz", hashlib.sha256(BODY).hexdigest(),
                            ("http://127.0.0.1:9/none", "http://127.0.0.1:9/mirror"))


def test_a_good_download_is_verified_and_cached(server: tuple[str, dict[str, bytes]], dataset: datasets.Dataset,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    url, files = server
    files["/kdd.gz"] = BODY
    monkeypatch.setenv(datasets.URL_ENV, f"{url}/kdd.gz")
    path = datasets.locate(dataset)
    assert path == datasets.cache_dir() / dataset.filename and path.read_bytes() == BODY
    files.clear()  # found in the cache from now on: no second download
    assert datasets.locate(dataset) == path
    assert not list(path.parent.glob("*.part-*"))


@pytest.mark.parametrize("body", [BODY[:-7], BODY[:10] + b"X" + BODY[11:]], ids=["truncated", "altered"])
def test_a_corrupt_download_is_deleted_and_reported(server: tuple[str, dict[str, bytes]], dataset: datasets.Dataset,
                                                    monkeypatch: pytest.MonkeyPatch, body: bytes) -> None:
    url, files = server
    files["/kdd.gz"] = body
    monkeypatch.setenv(datasets.URL_ENV, f"{url}/kdd.gz")
    with pytest.raises(datasets.DataUnavailable, match="is not the expected one") as err:
        datasets.locate(dataset)
    assert dataset.sha256 in str(err.value) and datasets.DATA_ENV in str(err.value)
    assert not any(datasets.cache_dir().iterdir())  # nothing half-written is left to be used later


def test_no_network_names_the_url_the_checksum_and_the_variable(dataset: datasets.Dataset) -> None:
    with pytest.raises(datasets.DataUnavailable) as err:
        datasets.locate(dataset)
    message = str(err.value)
    for needed in (dataset.urls[0], dataset.sha256, datasets.DATA_ENV, str(datasets.cache_dir())):
        assert needed in message


def test_a_demo_from_a_plain_clone_without_data_or_network_exits_2_and_says_what_to_do(tmp_path: Path) -> None:
    """A clone with nothing beside it: no ../shared, an empty cache, downloads refused. The demo stops before
    installing anything, with exit 2 and the instructions, not a traceback."""
    clone = tmp_path / "clone"
    shutil.copytree(REPO / "scripts", clone / "scripts", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(REPO / "core", clone / "core", ignore=shutil.ignore_patterns("__pycache__"))
    env = {k: v for k, v in os.environ.items() if k != datasets.DATA_ENV}
    env |= {"XDG_CACHE_HOME": str(tmp_path / "cache"), datasets.URL_ENV: f"http://127.0.0.1:{free_port()}/kdd.gz"}
    result = subprocess.run(["bash", "scripts/demo"], cwd=clone, env=env, capture_output=True, text=True,
                            timeout=120)
    out = result.stdout + result.stderr
    assert result.returncode == 2, out
    assert "Traceback" not in out and datasets.KDD99_10.sha256 in out and "KDD_DATA=" in out, out
    assert datasets.KDD99_10.urls[0] in out
    assert not (clone / ".venv").exists()  # nothing installed for a demo that cannot run
