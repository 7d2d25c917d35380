"""A service's ``/metrics`` read as numbers, and a process's memory."""

from __future__ import annotations

import urllib.error
import urllib.request

from prometheus_client.parser import text_string_to_metric_families


# ------------------------------------------------------------------------------------------ metrics
def scrape(port: int) -> dict[str, float]:
    """Flat samples of a ``/metrics`` page: ``name{k=v,...}`` -> value (empty when unreachable)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:  # noqa: S310
            text = r.read().decode()
    except OSError:
        return {}
    out: dict[str, float] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
            out[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
    return out


def total(samples: dict[str, float], name: str) -> float:
    """A metric summed over its labels."""
    return sum(v for k, v in samples.items() if k == name or k.startswith(name + "{"))


def rss_bytes(pid: int) -> int:
    """A process's resident set size, from /proc (what an OOM killer and a container limit look at)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")
