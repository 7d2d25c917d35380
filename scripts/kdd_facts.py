"""What KDD Cup 99's released data shows about its traffic features (the facts docs/zeek-features.md cites).

``python -m scripts.kdd_facts [--data FILE]`` prints one JSON line: the largest and smallest window counts, the
flags and the number of services, and how often the features a conn.log cannot give are non-zero.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from core.records import default_data_path, read_records


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m scripts.kdd_facts", description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=default_data_path(), help="a KDD99 file (default: the shared one)")
    args = p.parse_args(argv)
    f = read_records(args.data).features
    print(json.dumps({
        "records": len(f), **{f"{c}_max": int(f[c].max()) for c in ("count", "srv_count", "dst_host_count",
                                                                      "dst_host_srv_count")},
        "count_min": int(f["count"].min()), "dst_host_count_min": int(f["dst_host_count"].min()),
        "flags": sorted(f["flag"].unique().tolist()), "services": int(f["service"].nunique()),
        "wrong_fragment_nonzero": round(float((f["wrong_fragment"] > 0).mean()), 6),
        "urgent_nonzero": round(float((f["urgent"] > 0).mean()), 8)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
