"""Reading a conn.log file (TSV with headers, IoT-23 labelled, or JSON lines; plain or gzip) line by line.

A TSV log's ``#fields`` header names the columns of the lines after it (a file may hold several logs one after
the other, each with its own header); JSON lines name their own. Each data line comes out with the field names
that apply to it, which is what the producer puts in a record's ``zeek_fields`` header and what
``core.zeek.parse_line`` reads by.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

from core import zeek
from core.records import open_text_lines


@dataclasses.dataclass(frozen=True)
class LogLine:
    number: int  # 1-based line number in the file
    text: str
    fields: tuple[str, ...] | None  # the #fields in force (None: JSON, or a TSV file without a header)


def log_lines(path: str | Path) -> Iterator[LogLine]:
    """Every data line of the file with the field names in force; header and blank lines are not yielded.
    Raises ``core.records.RecordFormatError`` for a missing or unreadable file."""
    fields: tuple[str, ...] | None = None
    for number, raw in enumerate(open_text_lines(path), start=1):
        text = raw.decode("utf-8", "replace").rstrip("\r\n")
        if not text.strip():
            continue
        if text.startswith("#fields"):
            fields = tuple(zeek.fields_of(text))
            continue
        if text.startswith("#"):
            continue
        yield LogLine(number, text, None if text.lstrip().startswith("{") else fields)


def read_conns(path: str | Path) -> tuple[list[zeek.Conn], list[tuple[int, str]]]:
    """Every connection of a file, and (line number, reason) for each line that is not one."""
    conns: list[zeek.Conn] = []
    bad: list[tuple[int, str]] = []
    for line in log_lines(path):
        try:
            conns.append(zeek.parse_line(line.text, line.fields))
        except zeek.ZeekError as exc:
            bad.append((line.number, f"{exc.reason}: {exc}"))
    return conns, bad
