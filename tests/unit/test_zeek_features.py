"""The streaming featurizer equals the pandas reference, record for record and bit for bit (issue 30, part 2), at
lateness 0 and at the default, in arrival orders with late records, with small windows that evict; the mapping
tables; bounded state."""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path

import pandas as pd
import pytest

from core import kdd_mapping, zeek_reference
from core.featurizer import FEATURES, Featurizer, Settings
from core.zeek import Conn
from core.zeek_log import read_conns

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "zeek"
FILES = sorted(p for p in FIXTURES.iterdir() if ".log" in p.name)


def stream(conns: list[Conn], settings: Settings, batch: int = 1) -> pd.DataFrame:
    """The featurizer fed in batches of ``batch`` arrivals, its releases collected in order."""
    f = Featurizer(settings)
    arrival = {id(c): i for i, c in enumerate(conns)}
    rows = []
    for start in range(0, len(conns), batch):
        for conn in conns[start:start + batch]:
            rows += [{**feats, "uid": c.uid, "arrival": arrival[id(c)]} for c, feats in f.offer(conn)]
    rows += [{**feats, "uid": c.uid, "arrival": arrival[id(c)]} for c, feats in f.flush()]
    return pd.DataFrame(rows)[[*FEATURES, "uid", "arrival"]]


def same(a: pd.DataFrame, b: pd.DataFrame) -> None:
    pd.testing.assert_frame_equal(a.reset_index(drop=True), b.reset_index(drop=True), check_exact=True,
                                  check_dtype=False)


def shuffled(conns: list[Conn], seed: int, jitter_s: float) -> list[Conn]:
    """Arrival order as Zeek writes: by connection end, with some records held back (late) by up to jitter_s."""
    rng = random.Random(seed)
    keyed = [(c.ts + (c.duration or 0.0) + rng.random() * jitter_s * (rng.random() < 0.12), i, c)
             for i, c in enumerate(conns)]
    return [c for _, _, c in sorted(keyed)]


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
@pytest.mark.parametrize("lateness", [0.0, 60.0])
def test_stream_equals_reference_on_every_fixture(path: Path, lateness: float) -> None:
    conns, _ = read_conns(path)
    s = Settings(lateness_s=lateness)
    same(stream(conns, s, batch=7), zeek_reference.features(conns, s))


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_stream_equals_reference_with_late_records_and_evicting_windows(seed: int) -> None:
    conns, _ = read_conns(FIXTURES / "ctu-normal-40-day1.conn.log.labeled")
    arrivals = shuffled(conns, seed, jitter_s=600.0)
    for s in (Settings(lateness_s=30.0, window=5, host_idle_s=120.0), Settings(lateness_s=0.0, window=3),
              Settings()):
        for batch in (1, 50):
            same(stream(arrivals, s, batch), zeek_reference.features(arrivals, s))
    late = Featurizer(Settings(lateness_s=30.0))
    for c in arrivals:
        late.offer(c)
    assert late.counts["late"] > 0  # the order really had records behind the lateness: clamped and counted


def test_a_late_record_is_clamped_not_dropped() -> None:
    base = dict(uid="C", orig_h="10.0.0.1", orig_p=1000, resp_h="10.0.0.2", resp_p=80, proto="tcp", service="http",
                duration=0.1, orig_bytes=1, resp_bytes=2, conn_state="SF", missed_bytes=0, history="ShADdFf",
                orig_pkts=3, orig_ip_bytes=100, resp_pkts=3, resp_ip_bytes=100)
    f = Featurizer(Settings(lateness_s=10.0))
    out = f.offer(Conn(ts=1000.0, **base))
    out += f.offer(Conn(ts=1100.0, **{**base, "uid": "D"}))
    out += f.offer(Conn(ts=900.0, **{**base, "uid": "E"}))  # 200 s behind: past the lateness
    out += f.flush()
    assert [c.uid for c, _ in out] == ["C", "E", "D"] and f.counts["late"] == 1
    assert out[1][1]["count"] == 1  # E is featurized at 1090 (clamped): C is more than 2 s before it


SERVICES = [(("icmp", None, 8, 0), "eco_i"), (("icmp", None, 0, 0), "ecr_i"), (("icmp", None, 3, 1), "urp_i"),
            (("icmp", None, 42, 0), "oth_i"), (("udp", "dns", 5353, 53), "domain_u"), (("tcp", "dns", 1, 53), "domain"),
            (("tcp", "http", 5000, 8080), "http"),  # Zeek's analyzer first, whatever the port
            (("tcp", "ssl,http", 5000, 8443), "http_443"), (("tcp", None, 5000, 25), "smtp"),
            (("tcp", None, 1, 6001), "X11"), (("tcp", None, 1, 40000), "private"), (("tcp", None, 1, 999), "other"),
            (("udp", None, 1, 123), "ntp_u"), (("tcp", "ftp-data", 1, 2), "ftp_data")]


@pytest.mark.parametrize(("args", "name"), SERVICES)
def test_service_mapping(args: tuple, name: str) -> None:
    assert kdd_mapping.service(*args) == name


def test_flag_mapping() -> None:
    assert kdd_mapping.flag("SF") == "SF" and kdd_mapping.flag("RSTRH") == "RSTR" and kdd_mapping.flag(None) == "OTH"
    assert kdd_mapping.flag("SHR") == "SH" and kdd_mapping.flag("bogus") == "OTH"
    assert set(kdd_mapping.FLAG.values()) <= {"SF", "S0", "REJ", "RSTO", "RSTR", "RSTOS0", "S1", "S2", "S3", "SH",
                                              "OTH"}  # the flags KDD's data shows


def test_state_is_bounded_by_the_host_cap_and_counters_at_zero_are_deleted() -> None:
    f = Featurizer(Settings(lateness_s=0.0, max_hosts=1000))
    proto = Conn(ts=0.0, uid="C", orig_h="10.0.0.1", orig_p=1000, resp_h="10.0.0.2", resp_p=80, proto="tcp",
                 service=None, duration=None, orig_bytes=None, resp_bytes=None, conn_state="S0", missed_bytes=None,
                 history="S", orig_pkts=1, orig_ip_bytes=60, resp_pkts=0, resp_ip_bytes=0)
    for i in range(20_000):
        host = f"10.{i // 65536 % 256}.{i // 256 % 256}.{i % 256}"
        f.offer(dataclasses.replace(proto, ts=i * 0.5, uid=f"C{i}", resp_h=host))
    size = f.state_size()
    assert size["hosts"] == 1000 and f.counts["hosts_capped"] == 19_000
    assert size["window"] <= 5 and len(f.w_host) <= 5  # 2 s of traffic; counters at zero deleted


def test_records_waiting_out_the_lateness_are_bounded() -> None:
    f = Featurizer(Settings(lateness_s=3600.0, max_pending=100))
    proto = Conn(ts=0.0, uid="C", orig_h="10.0.0.1", orig_p=1000, resp_h="10.0.0.2", resp_p=80, proto="tcp",
                 service=None, duration=None, orig_bytes=None, resp_bytes=None, conn_state="SF", missed_bytes=None,
                 history="S", orig_pkts=1, orig_ip_bytes=60, resp_pkts=0, resp_ip_bytes=0)
    released = [r for i in range(1000) for r in f.offer(dataclasses.replace(proto, ts=float(i), uid=f"C{i}"))]
    assert len(f.pending) == 100 and len(released) == 900 and f.counts["pending_capped"] == 900
    assert [c.uid for c, _ in released] == [f"C{i}" for i in range(900)]  # the earliest first, in order


@pytest.mark.parametrize("cut", [1, 137, 350, 699])
def test_a_featurizer_restored_from_a_snapshot_continues_exactly(cut: int) -> None:
    """The state a restart needs (issue 30: state survives a crash): a snapshot taken mid-stream, through JSON,
    restores a featurizer whose output continues the uninterrupted one record for record."""
    import json

    conns, _ = read_conns(FIXTURES / "ctu-normal-40-day1.conn.log.labeled")
    arrivals = shuffled(conns, 5, jitter_s=600.0)
    s = Settings(lateness_s=30.0, window=7, host_idle_s=300.0)
    whole = Featurizer(s)
    expected = [(c.uid, feats) for conn in arrivals for c, feats in whole.offer(conn)]
    expected += [(c.uid, feats) for c, feats in whole.flush()]
    first = Featurizer(s)
    got = [(c.uid, feats) for conn in arrivals[:cut] for c, feats in first.offer(conn)]
    resumed = Featurizer.restore(json.loads(json.dumps(first.snapshot())), s)
    got += [(c.uid, feats) for conn in arrivals[cut:] for c, feats in resumed.offer(conn)]
    got += [(c.uid, feats) for c, feats in resumed.flush()]
    assert got == expected
