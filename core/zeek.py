"""Zeek ``conn.log`` records, in every shape Zeek and its shippers write, read into one normalised connection.

Shapes (issue 30):
- TSV lines, with the field names from the log's ``#fields`` header: by name, never by position, so newer
  Zeek's extra columns (``ip_proto``, ``community_id``) and reordered ones read the same. A line on a topic
  carries the names in the ``zeek_fields`` header (this project's producer sets it from the file's
  ``#fields``); without one, Zeek's default conn.log layout is assumed (recorded in the README).
- IoT-23 / Stratosphere ``conn.log.labeled``: the last ``#fields`` entry is ``tunnel_parents   label
  detailed-label`` and its values are joined by three spaces, not tabs: split back into three columns.
- JSON, one object per line, flat dotted keys (``id.orig_h``); an unset field is absent or ``null``
  (``json_include_unset_fields``); nested ``{"id": {"orig_h": ...}}`` objects (some shippers) are flattened.
- Envelopes: ``{"conn": {...}}`` (the zeek-kafka plugin) and ``{"message": "<line>"}`` (Filebeat, Vector,
  Fluent Bit), whose line is any of the shapes above.

Values: ``-`` (``#unset_field``) is unset (None); ``(empty)`` (``#empty_field``) is an empty string or set;
``ts`` is epoch seconds, epoch milliseconds (a number past 10^11) or ISO 8601, and must fall in
``core.timebounds``' range; addresses are parsed (IPv4 or IPv6, written canonically); ports 0-65535; counts
non-negative integers; ``duration`` a finite non-negative number. Anything else is a :class:`ZeekError` whose
``reason`` is a short code for the dead letter and whose message names the field.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

from core import jsondoc
from core.timebounds import TimeRangeError, check_ms, parse_iso_ms

UNSET, EMPTY = "-", "(empty)"
IOT23_JOIN = "   "  # IoT-23's last columns are joined by three spaces
FIELDS_HEADER = "zeek_fields"  # Kafka header: the #fields names of a TSV line, tab-separated
DEFAULT_FIELDS = ("ts", "uid", "id.orig_h", "id.orig_p", "id.resp_h", "id.resp_p", "proto", "service", "duration",
                  "orig_bytes", "resp_bytes", "conn_state", "local_orig", "local_resp", "missed_bytes", "history",
                  "orig_pkts", "orig_ip_bytes", "resp_pkts", "resp_ip_bytes", "tunnel_parents")
COUNTS = ("orig_bytes", "resp_bytes", "missed_bytes", "orig_pkts", "orig_ip_bytes", "resp_pkts", "resp_ip_bytes")
PROTOS = ("tcp", "udp", "icmp", "unknown_transport")
MAX_LINE = 64 * 1024
MAX_TEXT = 256


class ZeekError(ValueError):
    """A record that is not a usable conn.log connection; ``reason`` is the dead letter's code."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


@dataclasses.dataclass(frozen=True)
class Conn:
    """One connection, normalised: what the featurizer reads (and the fields alerts name)."""

    ts: float  # epoch seconds
    uid: str
    orig_h: str
    orig_p: int
    resp_h: str
    resp_p: int
    proto: str
    service: str | None
    duration: float | None
    orig_bytes: int | None
    resp_bytes: int | None
    conn_state: str | None
    missed_bytes: int | None
    history: str | None
    orig_pkts: int | None
    orig_ip_bytes: int | None
    resp_pkts: int | None
    resp_ip_bytes: int | None
    community_id: str | None = None
    label: str | None = None
    detailed_label: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _unset(value: Any) -> bool:
    return value is None or value == UNSET


def _text(doc: Mapping[str, Any], name: str, required: bool = False) -> str | None:
    value = doc.get(name)
    if type(value) is str and value != UNSET:  # the common case, first: 10 fields of every connection
        return "" if value == EMPTY else value[:MAX_TEXT]
    if _unset(value):
        if required:
            raise ZeekError("missing_field", f"{name} is required and unset")
        return None
    if isinstance(value, list):  # a set (JSON) written as a string for the record
        value = ",".join(map(str, value))
    if isinstance(value, bool | int | float) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        raise ZeekError("bad_field", f"{name} must be a string, got {type(value).__name__}")
    return "" if value == EMPTY else value[:MAX_TEXT]


def _count(doc: Mapping[str, Any], name: str) -> int | None:
    value = doc.get(name)
    if type(value) is int and 0 <= value < 2**63:  # the common cases, first: JSON numbers and TSV digits
        return value
    if type(value) is str and value.isascii() and value.isdigit() and len(value) < 19:
        return int(value)
    if _unset(value):
        return None
    try:
        number = int(value) if not isinstance(value, float) or value.is_integer() else None
    except (TypeError, ValueError):
        number = None
    if number is None or isinstance(value, bool) or not 0 <= number < 2**63:
        raise ZeekError("bad_field", f"{name} must be a non-negative integer, got {str(value)[:40]!r}")
    return number


def _port(doc: Mapping[str, Any], name: str) -> int:
    value = _count(doc, name)
    if value is None or value > 65_535:
        raise ZeekError("bad_field", f"{name} must be a port 0-65535, got {str(doc.get(name))[:40]!r}")
    return value


_ADDRS: dict[str, str] = {}  # address as written -> canonical: a network's hosts repeat, parsing them is slow
_ADDRS_MAX = 65_536  # bounded: random addresses (a scan, an attacker) only empty it, they cost what no cache would


def _addr(doc: Mapping[str, Any], name: str) -> str:
    value = _text(doc, name, required=True) or ""
    found = _ADDRS.get(value)
    if found is not None:
        return found
    try:
        found = str(ipaddress.ip_address(value))
    except ValueError:
        raise ZeekError("bad_field", f"{name} is not an IP address: {str(value)[:60]!r}") from None
    if len(_ADDRS) >= _ADDRS_MAX:
        _ADDRS.clear()
    _ADDRS[value] = found
    return found


def _duration(doc: Mapping[str, Any]) -> float | None:
    value = doc.get("duration")
    if _unset(value):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if isinstance(value, bool) or not math.isfinite(number) or number < 0:
        raise ZeekError("bad_field", f"duration must be a finite number of seconds >= 0, got {str(value)[:40]!r}")
    return number


def _ts(value: Any) -> float:
    """Epoch seconds from seconds, milliseconds (past 10^11: year 5138 in seconds) or ISO 8601."""
    try:
        if isinstance(value, str):
            try:
                number = float(value)
            except ValueError:
                return parse_iso_ms(value, "ts") / 1000
        elif isinstance(value, int | float) and not isinstance(value, bool):
            number = float(value)
        else:
            raise ZeekError("missing_field" if value is None else "bad_field", f"ts must be a time, got {value!r:.40}")
        ms = number if abs(number) >= 1e11 else number * 1000
        check_ms(ms, "ts")
        return ms / 1000
    except TimeRangeError as exc:
        raise ZeekError("bad_time", str(exc)) from None


def conn_from_fields(doc: Mapping[str, Any]) -> Conn:
    """A connection from named fields (already split: TSV columns by name, or a JSON object)."""
    proto = (_text(doc, "proto", required=True) or "").lower()
    if proto not in PROTOS:
        raise ZeekError("bad_field", f"proto must be one of {', '.join(PROTOS)}, got {proto[:20]!r}")
    label = _text(doc, "label")
    return Conn(ts=_ts(doc.get("ts")), uid=_text(doc, "uid", required=True) or "", orig_h=_addr(doc, "id.orig_h"),
                orig_p=_port(doc, "id.orig_p"), resp_h=_addr(doc, "id.resp_h"), resp_p=_port(doc, "id.resp_p"),
                proto=proto, service=_text(doc, "service"), duration=_duration(doc),
                conn_state=_text(doc, "conn_state"), history=_text(doc, "history"),
                community_id=_text(doc, "community_id"), label=label,
                detailed_label=_text(doc, "detailed_label") or _text(doc, "detailedlabel")
                or _text(doc, "detailed-label"),
                **{name: _count(doc, name) for name in COUNTS})


def split_iot23(fields: Sequence[str], values: Sequence[str]) -> tuple[list[str], list[str]]:
    """IoT-23's layout: a field name holding three names joined by three spaces, and its value likewise."""
    if not any(IOT23_JOIN in name for name in fields):  # the common layout: nothing to split
        return list(fields), list(values)
    names: list[str] = []
    out: list[str] = []
    for name, value in zip(fields, values, strict=True):
        if IOT23_JOIN in name:
            parts = name.split(IOT23_JOIN)
            got = value.split(IOT23_JOIN)
            if len(got) != len(parts):
                raise ZeekError("field_count", f"{name!r} holds {len(parts)} columns, its value {len(got)}")
            names += parts
            out += got
        else:
            names.append(name)
            out.append(value)
    return names, out


def parse_tsv(line: str, fields: Sequence[str] | None = None) -> Conn:
    """One TSV data line; ``fields`` are the log's ``#fields`` names (default: Zeek's conn.log layout)."""
    names = list(fields) if fields else list(DEFAULT_FIELDS)
    values = line.rstrip("\r\n").split("\t")
    if len(values) != len(names):
        raise ZeekError("field_count", f"expected {len(names)} tab-separated fields ({FIELDS_HEADER} or the "
                        f"default conn.log layout), found {len(values)}")
    names, values = split_iot23(names, values)
    return conn_from_fields(dict(zip(names, values, strict=True)))


def _flatten(doc: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in doc.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def parse_doc(doc: Any, fields: Sequence[str] | None = None, depth: int = 0) -> Conn:
    """A decoded JSON record: a conn object, or an envelope around one (``conn``, ``message``)."""
    if not isinstance(doc, dict):
        raise ZeekError("not_an_object", f"a conn record is a JSON object, got {type(doc).__name__}")
    if depth > 2:
        raise ZeekError("bad_envelope", "envelopes nested more than twice")
    if isinstance(doc.get("conn"), dict) and "ts" not in doc:
        return parse_doc(doc["conn"], fields, depth + 1)
    if "message" in doc and "ts" not in doc:
        message = doc["message"]
        if isinstance(message, str):
            return parse_line(message, fields, depth + 1)
        return parse_doc(message, fields, depth + 1)
    return conn_from_fields(_flatten(doc))


def parse_line(line: str, fields: Sequence[str] | None = None, depth: int = 0) -> Conn:
    """A record's text: JSON (possibly an envelope) or a TSV line; a ``#`` header line is ``header_line``."""
    if len(line) > MAX_LINE:
        raise ZeekError("oversized", f"a record of {len(line)} characters is over the {MAX_LINE} limit")
    if depth > 2:
        raise ZeekError("bad_envelope", "envelopes nested more than twice")
    text = line.strip("\r\n")
    if text.startswith("#"):
        raise ZeekError("header_line", f"a log header line, not a connection: {text[:60]!r}")
    if text.lstrip()[:1] in ("{", "[", '"'):  # JSON (a TSV line starts with its ts)
        try:
            doc = jsondoc.loads(text)
        except ValueError as exc:
            raise ZeekError("invalid_json", f"not JSON: {str(exc)[:200]}") from None
        return parse_doc(doc, fields, depth)
    return parse_tsv(text, fields)


def parse_value(value: bytes | None, fields: Sequence[str] | None = None) -> Conn:
    """A Kafka record's value (UTF-8 text of any shape above)."""
    if not value:
        raise ZeekError("empty", "an empty record")
    if len(value) > MAX_LINE:
        raise ZeekError("oversized", f"a record of {len(value)} bytes is over the {MAX_LINE} limit")
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError:
        raise ZeekError("not_utf8", "the record is not UTF-8 text") from None
    return parse_line(text, fields)


def fields_of(header_line: str) -> list[str]:
    """The names of a ``#fields`` header line."""
    return header_line.rstrip("\r\n").split("\t")[1:]


def to_json_line(conn: Conn) -> str:
    """A connection as Zeek's JSON writer would write it (flat dotted keys; None left out)."""
    d = conn.to_dict()
    out: dict[str, Any] = {"ts": d["ts"], "uid": d["uid"], "id.orig_h": d["orig_h"], "id.orig_p": d["orig_p"],
                           "id.resp_h": d["resp_h"], "id.resp_p": d["resp_p"]}
    out |= {k: v for k, v in d.items() if k not in ("ts", "uid", "orig_h", "orig_p", "resp_h", "resp_p")
            and v is not None}
    return json.dumps(out, separators=(",", ":"))
