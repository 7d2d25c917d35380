"""The definition of the Zeek traffic features, as one batch computation over a whole capture (pandas, numpy).

Written apart from the streaming featurizer (``core.featurizer``), and on purpose in another style (whole
columns, sorts, cumulative sums and binary searches instead of windows that slide), so that the two agree only
if both implement the specification; the tests compare them record for record. Arrival order is the order of
the input list; for a Kafka partition, its offsets.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from core import kdd_mapping
from core.featurizer import FEATURES, HISTORY_FLAGS, HOST_WINDOW, TIME_WINDOW_S, Settings, basic
from core.zeek import Conn


def effective_times(ts: np.ndarray, lateness_s: float) -> np.ndarray:
    """``max(ts, (largest ts that arrived before) - lateness)``: late records clamped, never dropped."""
    before = np.maximum.accumulate(ts)
    bound = np.concatenate([[-np.inf], before[:-1] - lateness_s])
    return np.maximum(ts, bound)


def features(conns: Sequence[Conn], settings: Settings | None = None) -> pd.DataFrame:
    """Every connection's features, one row each, in the specification's order (``ts_eff``, then arrival);
    the ``uid`` and ``arrival`` columns say which connection a row is."""
    s = settings or Settings()
    n = len(conns)
    ts = np.array([c.ts for c in conns], dtype=np.float64)
    eff = effective_times(ts, s.lateness_s)
    order = np.lexsort((np.arange(n), eff))  # by ts_eff, then arrival
    rows = [basic(conns[i]) for i in order]
    df = pd.DataFrame(rows)
    df["uid"] = [conns[i].uid for i in order]
    df["arrival"] = order
    t = eff[order]
    host = np.array([conns[i].resp_h for i in order], dtype=object)
    port = np.array([conns[i].orig_p for i in order], dtype=np.int64)
    service = df["service"].to_numpy(dtype=object)
    serror = df["flag"].isin(kdd_mapping.SYN_ERRORS).to_numpy(dtype=np.int64)
    rerror = df["flag"].isin(kdd_mapping.REJ_ERRORS).to_numpy(dtype=np.int64)
    _time_window(df, t, host, service, serror, rerror)
    _host_window(df, t, host, service, port, serror, rerror, s)
    return df[[*FEATURES, "uid", "arrival"]]


def _in_time(t: np.ndarray, members: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For the rows ``members`` of one group (in order): their position and the first position still inside
    ``(t - 2 s, t]``."""
    tg = t[members]
    pos = np.arange(len(members))
    first = np.searchsorted(tg, tg - TIME_WINDOW_S, side="right")
    return pos, first


def _windowed(keys: np.ndarray, t: np.ndarray, flags: list[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
    """Per row: how many rows of its key are in its time window, and the sums of ``flags`` over them."""
    count = np.zeros(len(keys), dtype=np.int64)
    sums = [np.zeros(len(keys), dtype=np.int64) for _ in flags]
    for members in pd.Series(np.arange(len(keys))).groupby(pd.Series(keys, dtype=object)).indices.values():
        pos, first = _in_time(t, members)
        count[members] = pos - first + 1
        for out, flag in zip(sums, flags, strict=True):
            cs = np.concatenate([[0], np.cumsum(flag[members])])
            out[members] = cs[pos + 1] - cs[first]
    return count, sums


def _time_window(df: pd.DataFrame, t: np.ndarray, host: np.ndarray, service: np.ndarray, serror: np.ndarray,
                 rerror: np.ndarray) -> None:
    count, (h_serr, h_rerr) = _windowed(host, t, [serror, rerror])
    srv, (s_serr, s_rerr) = _windowed(service, t, [serror, rerror])
    # composite keys joined by \x1f: pandas hashes strings as C strings, so a NUL separator would cut them
    same, _ = _windowed(np.array([f"{h}\x1f{v}" for h, v in zip(host, service, strict=True)], dtype=object), t, [])
    df["count"], df["srv_count"] = count, srv
    df["serror_rate"], df["srv_serror_rate"] = h_serr / count, s_serr / srv
    df["rerror_rate"], df["srv_rerror_rate"] = h_rerr / count, s_rerr / srv
    df["same_srv_rate"], df["diff_srv_rate"] = same / count, (count - same) / count
    df["srv_diff_host_rate"] = (srv - same) / srv


def _segments(host: np.ndarray, t: np.ndarray, idle_s: float) -> np.ndarray:
    """A host's window starts again after ``idle_s`` without connections: (host, segment) labels."""
    labels = np.empty(len(host), dtype=object)
    for members in pd.Series(np.arange(len(host))).groupby(pd.Series(host, dtype=object)).indices.values():
        tg = t[members]
        gaps = np.concatenate([[False], (tg[1:] - tg[:-1]) > idle_s])
        seg = np.cumsum(gaps)
        for m, k in zip(members, seg, strict=True):
            labels[m] = f"{host[m]}\x1f{k}"
    return labels


def _last_n(groups: np.ndarray, sub: np.ndarray, window: int, flags: list[np.ndarray]
            ) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """Per row, within the last ``window`` rows of its group: how many rows, how many of those share its ``sub``
    key, and the sums of ``flags`` over the rows sharing it."""
    n_rows = len(groups)
    total = np.zeros(n_rows, dtype=np.int64)
    same = np.zeros(n_rows, dtype=np.int64)
    sums = [np.zeros(n_rows, dtype=np.int64) for _ in flags]
    for members in pd.Series(np.arange(n_rows)).groupby(pd.Series(groups, dtype=object)).indices.values():
        pos = np.arange(len(members))
        lower = np.maximum(0, pos - window + 1)
        total[members] = pos - lower + 1
        keys = pd.Series(sub[members], dtype=object)
        for sub_rows in pd.Series(np.arange(len(members))).groupby(keys).indices.values():
            p = pos[sub_rows]  # positions (in the group) of this sub key, ascending
            first = np.searchsorted(p, lower[sub_rows], side="left")
            k = np.arange(len(sub_rows))
            same[members[sub_rows]] = k - first + 1
            for out, flag in zip(sums, flags, strict=True):
                cs = np.concatenate([[0], np.cumsum(flag[members[sub_rows]])])
                out[members[sub_rows]] = cs[k + 1] - cs[first]
    return total, same, sums


def _host_window(df: pd.DataFrame, t: np.ndarray, host: np.ndarray, service: np.ndarray, port: np.ndarray,
                 serror: np.ndarray, rerror: np.ndarray, s: Settings) -> None:
    seg = _segments(host, t, s.host_idle_s)
    n, srv, (srv_serr, srv_rerr) = _last_n(seg, service, s.window, [serror, rerror])
    _, same_port, _ = _last_n(seg, port.astype(object), s.window, [])
    _, all_serr, (h_serr, h_rerr) = _last_n(seg, np.zeros(len(seg), dtype=object), s.window, [serror, rerror])
    total_s, same_host, _ = _last_n(service, host, s.window, [])
    df["dst_host_count"], df["dst_host_srv_count"] = n, srv
    df["dst_host_same_srv_rate"], df["dst_host_diff_srv_rate"] = srv / n, (n - srv) / n
    df["dst_host_same_src_port_rate"] = same_port / n
    df["dst_host_srv_diff_host_rate"] = (total_s - same_host) / total_s
    df["dst_host_serror_rate"], df["dst_host_srv_serror_rate"] = h_serr / n, srv_serr / srv
    df["dst_host_rerror_rate"], df["dst_host_srv_rerror_rate"] = h_rerr / n, srv_rerr / srv
    assert (all_serr == n).all()


__all__ = ["HISTORY_FLAGS", "HOST_WINDOW", "effective_times", "features"]
