"""KDD-style traffic features from a stream of Zeek connections, exactly as ``core.zeek_reference`` defines them.

The specification (docs/zeek-features.md has the whole of it; the pandas reference is the definition):

Order. Zeek writes a connection when it ends, so records arrive out of order. Record *j*'s effective time is
``ts_eff = max(ts, M - lateness)`` where M is the largest ``ts`` among the records that arrived before it: a
record more than ``lateness`` behind the stream is clamped to that bound and counted (``late``), never dropped.
Records are featurized in order of ``(ts_eff, arrival)``. Once a record has arrived, no later one can sort
before anything at or below ``M - lateness``, so those are released: the stream's output order is the
reference's sort, whatever the batches.

Features of a released connection (its destination host h, KDD service s):
- basic: duration, protocol_type, service, flag, src_bytes, dst_bytes, land (``core.kdd_mapping``);
- time window, the connections released with ``ts_eff`` in ``(t - 2 s, t]`` (itself included): count (to h),
  srv_count (to s), serror/rerror rates of each, same_srv_rate and diff_srv_rate (among count),
  srv_diff_host_rate (among srv_count);
- host window, the last ``window`` connections to h (255: the largest dst_host_count in KDD's released data),
  a host's window starting again after ``host_idle_s`` without connections: dst_host_count, dst_host_srv_count,
  same/diff service rates, same source port rate, serror/rerror rates, and the same for h's connections to s;
  the service window (the last ``window`` connections to s): dst_host_srv_diff_host_rate;
- conn.log extras: packets, IP bytes, missed bytes and history letters.

State is bounded: at most ``max_pending`` records wait out the lateness (lateness x rate: past the cap the
earliest is released early, counted), the time window holds 2 s of traffic (at most ``max_window``
connections; past it the oldest leave early, counted), hosts idle for ``host_idle_s`` are forgotten, at most
``max_hosts`` are kept (the least recently seen forgotten first, counted), and every counter that reaches zero is
deleted. While no cap is hit, the output equals the reference record for record.
"""

from __future__ import annotations

import collections
import dataclasses
import heapq
from collections import Counter, OrderedDict, deque
from typing import Any

from core import kdd_mapping
from core.zeek import Conn

TIME_WINDOW_S = 2.0
HOST_WINDOW = 255
HISTORY_FLAGS = ("S", "h", "A", "D", "d", "F", "f", "R", "r", "^")
BASIC = ("duration", "protocol_type", "service", "flag", "src_bytes", "dst_bytes", "land")
TIME = ("count", "srv_count", "serror_rate", "srv_serror_rate", "rerror_rate", "srv_rerror_rate", "same_srv_rate",
        "diff_srv_rate", "srv_diff_host_rate")
HOST = ("dst_host_count", "dst_host_srv_count", "dst_host_same_srv_rate", "dst_host_diff_srv_rate",
        "dst_host_same_src_port_rate", "dst_host_srv_diff_host_rate", "dst_host_serror_rate",
        "dst_host_srv_serror_rate", "dst_host_rerror_rate", "dst_host_srv_rerror_rate")
EXTRA = ("orig_pkts", "resp_pkts", "orig_ip_bytes", "resp_ip_bytes", "missed_bytes",
         *(f"history_{'orig' if c.isupper() or c == '^' else 'resp'}_{c.lower() if c != '^' else 'flipped'}"
           for c in HISTORY_FLAGS))
FEATURES = (*BASIC, *TIME, *HOST, *EXTRA)


@dataclasses.dataclass(frozen=True)
class Settings:
    lateness_s: float = 60.0
    window: int = HOST_WINDOW
    host_idle_s: float = 3600.0
    max_hosts: int = 100_000
    max_window: int = 1_000_000
    max_pending: int = 1_000_000  # records waiting out the lateness; past it the earliest is released early


def basic(conn: Conn) -> dict[str, Any]:
    """The basic and extra features of one connection (no state)."""
    history = conn.history or ""
    out: dict[str, Any] = {
        "duration": conn.duration or 0.0, "protocol_type": conn.proto,
        "service": kdd_mapping.service(conn.proto, conn.service, conn.orig_p, conn.resp_p),
        "flag": kdd_mapping.flag(conn.conn_state), "src_bytes": conn.orig_bytes or 0,
        "dst_bytes": conn.resp_bytes or 0,
        "land": int(conn.orig_h == conn.resp_h and conn.orig_p == conn.resp_p),
        "orig_pkts": conn.orig_pkts or 0, "resp_pkts": conn.resp_pkts or 0,
        "orig_ip_bytes": conn.orig_ip_bytes or 0, "resp_ip_bytes": conn.resp_ip_bytes or 0,
        "missed_bytes": conn.missed_bytes or 0,
    }
    for c, name in zip(HISTORY_FLAGS, EXTRA[5:], strict=True):
        out[name] = int(c in history)
    return out


class _Host:
    """One destination host's window: its last connections and the counts over them."""

    __slots__ = ("entries", "services", "ports", "serrors", "rerrors", "srv_serrors", "srv_rerrors", "last")

    def __init__(self) -> None:
        self.entries: deque[tuple[str, int, int, int]] = deque()
        self.services: Counter[str] = Counter()
        self.ports: Counter[int] = Counter()
        self.serrors = self.rerrors = 0
        self.srv_serrors: Counter[str] = Counter()
        self.srv_rerrors: Counter[str] = Counter()
        self.last = 0.0

    def add(self, entry: tuple[str, int, int, int], window: int) -> None:
        self.entries.append(entry)
        self._count(entry, 1)
        if len(self.entries) > window:
            self._count(self.entries.popleft(), -1)

    def _count(self, entry: tuple[str, int, int, int], n: int) -> None:
        service, port, serror, rerror = entry
        _bump(self.services, service, n)
        _bump(self.ports, port, n)
        self.serrors += n * serror
        self.rerrors += n * rerror
        if serror:
            _bump(self.srv_serrors, service, n)
        if rerror:
            _bump(self.srv_rerrors, service, n)


def _bump(counter: Counter[Any], key: Any, n: int) -> None:
    value = counter[key] + n
    if value:
        counter[key] = value
    else:
        del counter[key]  # a counter at zero is deleted: state is what the window holds


class Featurizer:
    """One ordered stream (one input partition): offer connections as they arrive, get them back featurized in
    the specification's order."""

    def __init__(self, settings: Settings | None = None) -> None:
        self.s = settings or Settings()
        self.max_ts = float("-inf")
        self.released_t = float("-inf")  # effective time of the last released record: time never runs back
        self.arrived = 0
        self.pending: list[tuple[float, int, Conn]] = []
        self.window: deque[tuple[float, str, str, int, int]] = deque()  # (ts_eff, host, service, serror, rerror)
        self.w_host: Counter[str] = Counter()
        self.w_srv: Counter[str] = Counter()
        self.w_host_srv: Counter[tuple[str, str]] = Counter()
        self.w_host_serror: Counter[str] = Counter()
        self.w_host_rerror: Counter[str] = Counter()
        self.w_srv_serror: Counter[str] = Counter()
        self.w_srv_rerror: Counter[str] = Counter()
        self.hosts: OrderedDict[str, _Host] = OrderedDict()  # least recently seen first
        self.services: dict[str, tuple[deque[str], Counter[str]]] = {}
        self.counts: Counter[str] = Counter()  # late, hosts_capped, window_capped, hosts_expired

    # ------------------------------------------------------------------ order
    def offer(self, conn: Conn) -> list[tuple[Conn, dict[str, Any]]]:
        """Take one arriving connection; return those now released, featurized, in order."""
        return [(c, f) for _, c, f in self.offer_seq(conn)]

    def flush(self) -> list[tuple[Conn, dict[str, Any]]]:
        """Release everything pending (the end of a file, or an input idle past the lateness)."""
        return [(c, f) for _, c, f in self.flush_seq()]

    def offer_seq(self, conn: Conn) -> list[tuple[int, Conn, dict[str, Any]]]:
        """:meth:`offer`, each released connection with its arrival number (``arrived`` before it was offered):
        what a caller that keeps something per record (the detector: its Kafka coordinates) finds it by."""
        ts_eff = conn.ts
        bound = self.max_ts - self.s.lateness_s
        if conn.ts < bound:
            ts_eff = bound
            self.counts["late"] += 1
        self.max_ts = max(self.max_ts, conn.ts)
        heapq.heappush(self.pending, (ts_eff, self.arrived, conn))
        self.arrived += 1
        out = self._release(self.max_ts - self.s.lateness_s)
        while len(self.pending) > self.s.max_pending:  # lateness x rate past the cap: the earliest goes now
            self.counts["pending_capped"] += 1
            out += self._release(self.pending[0][0])
        return out

    def flush_seq(self) -> list[tuple[int, Conn, dict[str, Any]]]:
        return self._release(float("inf"))

    def _release(self, upto: float) -> list[tuple[int, Conn, dict[str, Any]]]:
        out = []
        while self.pending and self.pending[0][0] <= upto:
            ts_eff, seq, conn = heapq.heappop(self.pending)
            self.released_t = max(self.released_t, ts_eff)
            out.append((seq, conn, self._features(conn, self.released_t)))
        return out

    # ------------------------------------------------------------------ features
    def _features(self, conn: Conn, t: float) -> dict[str, Any]:
        f = basic(conn)
        h, s = conn.resp_h, f["service"]
        serror, rerror = int(f["flag"] in kdd_mapping.SYN_ERRORS), int(f["flag"] in kdd_mapping.REJ_ERRORS)
        f.update(self._time(t, h, s, serror, rerror))
        f.update(self._host(t, h, s, conn.orig_p, serror, rerror))
        return f

    def _time(self, t: float, h: str, s: str, serror: int, rerror: int) -> dict[str, Any]:
        edge = t - TIME_WINDOW_S
        while self.window and (self.window[0][0] <= edge or len(self.window) >= self.s.max_window):
            if self.window[0][0] > edge:
                self.counts["window_capped"] += 1
            self._window_count(*self.window.popleft()[1:], -1)
        self.window.append((t, h, s, serror, rerror))
        self._window_count(h, s, serror, rerror, 1)
        count, srv, same = self.w_host[h], self.w_srv[s], self.w_host_srv[(h, s)]
        return {"count": count, "srv_count": srv, "serror_rate": self.w_host_serror[h] / count,
                "srv_serror_rate": self.w_srv_serror[s] / srv, "rerror_rate": self.w_host_rerror[h] / count,
                "srv_rerror_rate": self.w_srv_rerror[s] / srv, "same_srv_rate": same / count,
                "diff_srv_rate": (count - same) / count, "srv_diff_host_rate": (srv - same) / srv}

    def _window_count(self, h: str, s: str, serror: int, rerror: int, n: int) -> None:
        _bump(self.w_host, h, n)
        _bump(self.w_srv, s, n)
        _bump(self.w_host_srv, (h, s), n)
        if serror:
            _bump(self.w_host_serror, h, n)
            _bump(self.w_srv_serror, s, n)
        if rerror:
            _bump(self.w_host_rerror, h, n)
            _bump(self.w_srv_rerror, s, n)

    def _host(self, t: float, h: str, s: str, port: int, serror: int, rerror: int) -> dict[str, Any]:
        host = self.hosts.pop(h, None)
        if host is not None and t - host.last > self.s.host_idle_s:
            host = None  # idle too long: its window starts again
            self.counts["hosts_expired"] += 1
        if host is None:
            host = _Host()
            while len(self.hosts) >= self.s.max_hosts:
                self.hosts.popitem(last=False)
                self.counts["hosts_capped"] += 1
        host.last = t
        self.hosts[h] = host  # most recently seen last
        host.add((s, port, serror, rerror), self.s.window)
        hosts_of, per_host = self.services.setdefault(s, (collections.deque(), Counter()))
        hosts_of.append(h)
        per_host[h] += 1
        if len(hosts_of) > self.s.window:
            _bump(per_host, hosts_of.popleft(), -1)
        n, srv = len(host.entries), host.services[s]
        total_s = len(hosts_of)
        return {"dst_host_count": n, "dst_host_srv_count": srv, "dst_host_same_srv_rate": srv / n,
                "dst_host_diff_srv_rate": (n - srv) / n, "dst_host_same_src_port_rate": host.ports[port] / n,
                "dst_host_srv_diff_host_rate": (total_s - per_host[h]) / total_s,
                "dst_host_serror_rate": host.serrors / n, "dst_host_srv_serror_rate": host.srv_serrors[s] / srv,
                "dst_host_rerror_rate": host.rerrors / n, "dst_host_srv_rerror_rate": host.srv_rerrors[s] / srv}

    def expire(self) -> int:
        """Forget hosts idle past ``host_idle_s`` of stream time (memory only: their window would start again
        anyway); returns how many. Call it now and then (the detector does, between batches)."""
        horizon = self.max_ts - self.s.lateness_s - self.s.host_idle_s
        gone = [h for h, host in self.hosts.items() if host.last < horizon]
        for h in gone:
            del self.hosts[h]
        return len(gone)

    def snapshot(self) -> dict[str, Any]:
        """Everything the featurizer holds, as plain data (JSON-able): the windows themselves; every count is
        derived from them again by :meth:`restore`, so a snapshot cannot hold counts that disagree."""
        return {"max_ts": self.max_ts, "released_t": self.released_t, "arrived": self.arrived,
                "pending": [[t, seq, list(dataclasses.astuple(c))] for t, seq, c in sorted(self.pending)],
                "window": [list(e) for e in self.window],
                "hosts": [[h, host.last, [list(e) for e in host.entries]] for h, host in self.hosts.items()],
                "services": [[s, list(hosts)] for s, (hosts, _) in self.services.items()],
                "counts": dict(self.counts)}

    @classmethod
    def restore(cls, snap: dict[str, Any], settings: Settings | None = None) -> Featurizer:
        """A featurizer that continues exactly where the one that took ``snap`` was."""
        f = cls(settings)
        f.max_ts, f.released_t, f.arrived = float(snap["max_ts"]), float(snap["released_t"]), int(snap["arrived"])
        f.pending = [(float(t), int(seq), Conn(*c)) for t, seq, c in snap["pending"]]
        heapq.heapify(f.pending)
        for t, h, s, serror, rerror in snap["window"]:
            f.window.append((float(t), h, s, int(serror), int(rerror)))
            f._window_count(h, s, int(serror), int(rerror), 1)
        for h, last, entries in snap["hosts"]:
            host = _Host()
            host.last = float(last)
            for service, port, serror, rerror in entries:
                host.add((service, int(port), int(serror), int(rerror)), f.s.window)
            f.hosts[h] = host
        for s, hosts in snap["services"]:
            f.services[s] = (collections.deque(hosts), Counter(hosts))
        f.counts.update(snap["counts"])
        return f

    def state_size(self) -> dict[str, int]:
        return {"hosts": len(self.hosts), "host_entries": sum(len(x.entries) for x in self.hosts.values()),
                "window": len(self.window), "pending": len(self.pending), "services": len(self.services)}
