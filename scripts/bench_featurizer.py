"""Benchmark of the streaming featurizer: throughput, and state that stays flat however many hosts appear.

``python -m scripts.bench_featurizer [--connections 2000000] [--hosts 1000000]`` feeds synthetic connections
(a tenth of them arriving late by up to a minute, destination hosts drawn from ``--hosts`` distinct addresses,
so a featurizer without bounds would keep a window per host) through ``core.featurizer.Featurizer`` with its
defaults, and prints one JSON line: connections per second, and the state size and process RSS after each
fifth of the run, and what a snapshot of the final state costs (seconds, compressed size, restore time: the
detector's conn stage writes one per partition now and then). Exit 0 when the RSS at the end is within
``--rss-tolerance`` of the RSS after the first fifth.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import sys
import time
import zlib

from core.featurizer import Featurizer
from core.zeek import Conn


def rss_mib() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure_snapshot(f: Featurizer) -> dict[str, float]:
    """What the detector's conn stage pays to write this featurizer's state (JSON, zlib level 1) and to restore it:
    the state at the end of the run, records still waiting out the lateness included."""
    t0 = time.perf_counter()
    blob = zlib.compress(json.dumps(f.snapshot()).encode(), 1)
    taken = time.perf_counter() - t0
    t0 = time.perf_counter()
    Featurizer.restore(json.loads(zlib.decompress(blob)))
    return {"seconds": round(taken, 2), "zlib_mib": round(len(blob) / 2**20, 1),
            "restore_seconds": round(time.perf_counter() - t0, 2), "pending": len(f.pending), "hosts": len(f.hosts)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m scripts.bench_featurizer", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--connections", type=int, default=2_000_000, help="connections to feed (default 2,000,000)")
    p.add_argument("--hosts", type=int, default=1_000_000, help="distinct destination hosts (default 1,000,000)")
    p.add_argument("--rate", type=float, default=5_000.0, help="connections per second of event time (default 5000)")
    p.add_argument("--rss-tolerance", type=float, default=0.10, help="allowed RSS growth after the first fifth")
    args = p.parse_args(argv)
    rng = random.Random(7)
    f = Featurizer()
    states = []
    released = 0
    t0 = time.perf_counter()
    fifth = max(1, args.connections // 5)
    for i in range(args.connections):
        h = rng.randrange(args.hosts)
        ts = 1_700_000_000 + i / args.rate - (rng.random() * 60 if rng.random() < 0.1 else 0.0)
        conn = Conn(ts=ts, uid=f"C{i}", orig_h=f"10.0.{i % 250}.{i % 200}", orig_p=1024 + i % 60000,
                    resp_h=f"172.{16 + h // 65536 % 16}.{h // 256 % 256}.{h % 256}", resp_p=(80, 443, 53, 22)[i % 4],
                    proto="tcp", service=None, duration=0.1, orig_bytes=100, resp_bytes=1000,
                    conn_state=("SF", "S0", "REJ")[i % 3], missed_bytes=0, history="ShADadFf", orig_pkts=5,
                    orig_ip_bytes=400, resp_pkts=5, resp_ip_bytes=1400)
        released += len(f.offer(conn))
        if (i + 1) % fifth == 0:
            f.expire()
            states.append({"after": i + 1, "rss_mib": round(rss_mib(), 1), **f.state_size()})
            print(f"bench_featurizer: {i + 1:,} connections, {states[-1]}", file=sys.stderr)
    seconds = time.perf_counter() - t0
    snapshot = measure_snapshot(f)
    t1 = time.perf_counter()
    released += len(f.flush())
    seconds += time.perf_counter() - t1
    result = {"connections": args.connections, "distinct_hosts": args.hosts, "released": released,
              "connections_per_s": round(args.connections / seconds), "late": f.counts["late"],
              "hosts_capped": f.counts["hosts_capped"], "state": states, "snapshot": snapshot}
    print(json.dumps(result))
    growth = states[-1]["rss_mib"] / states[0]["rss_mib"] - 1
    if released != args.connections or growth > args.rss_tolerance:
        print(f"bench_featurizer: released {released} of {args.connections}; RSS growth {growth:.1%}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
