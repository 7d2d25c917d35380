"""What to replay from a Zeek conn.log: each connection's line as Zeek wrote it, its labels taken off.

The detector never sees labels: a labelled TSV line (Stratosphere's ``label``/``detailedlabel`` columns, IoT-23's
three-space-joined ``tunnel_parents   label   detailed-label``) is sent without them, its remaining column names
in the ``zeek_fields`` header (``core.zeek``), and its label as the ``label`` header, for evaluation only, like
every other data set's. JSON lines lose their label keys. Lines that are not connections are counted as
malformed and never sent, as for the other formats; each record carries its ``ts`` so the replay can keep the
capture's own pace (``--speedup``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator

from core import zeek
from core.zeek_log import log_lines
from producer.source import Record, SourceOptions, SourceStats

LABEL_FIELDS = ("label", "detailedlabel", "detailed_label", "detailed-label")


def _strip_tsv(text: str, fields: tuple[str, ...] | None) -> tuple[str, str | None, str | None]:
    """(line without label columns, its field names tab-joined, the label)."""
    names = list(fields or zeek.DEFAULT_FIELDS)
    values = text.split("\t")
    if len(values) != len(names):
        return text, "\t".join(names), None
    names, values = zeek.split_iot23(names, values)
    label = next((v for n, v in zip(names, values, strict=True) if n == "label"), None)
    kept = [(n, v) for n, v in zip(names, values, strict=True) if n not in LABEL_FIELDS]
    return "\t".join(v for _, v in kept), "\t".join(n for n, _ in kept), label


def _strip_json(text: str) -> tuple[str, str | None]:
    doc = json.loads(text)
    if not isinstance(doc, dict) or not any(k in doc for k in LABEL_FIELDS):
        return text, None
    label = doc.get("label")
    return json.dumps({k: v for k, v in doc.items() if k not in LABEL_FIELDS}), None if label is None else str(label)


def zeek_records(opts: SourceOptions, stats: SourceStats) -> Iterator[Record]:
    """Every connection of the file, in file order (``--limit`` counts records sent); loops with ``loop``."""
    sent = 0
    while True:
        for line in log_lines(opts.data):
            stats.lines_read += 1
            try:
                conn = zeek.parse_line(line.text, line.fields)
                if line.text.lstrip().startswith("{"):
                    value, label = _strip_json(line.text)
                    fields = None
                else:
                    value, fields, label = _strip_tsv(line.text, line.fields)
            except (zeek.ZeekError, ValueError) as exc:
                stats.malformed += 1
                stats.malformed_by_reason[getattr(exc, "reason", "invalid_json")] += 1
                if opts.strict:
                    raise zeek.ZeekError(getattr(exc, "reason", "invalid_json"),
                                         f"{opts.data}, line {line.number}: {exc}") from None
                continue
            if opts.limit is not None and sent >= opts.limit:
                return
            sent += 1
            yield Record(line.number - 1, value.encode(), label, fields, conn.ts)
        if not opts.loop or sent == 0:
            return
