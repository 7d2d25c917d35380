"""Hostile Kafka values for the parser and the detector: a seeded generator of many kinds of bad input.

Each value carries its kind so a run can report what it tried. Mutations start from real KDD rows, so
most values are "almost right" (the hard case for a parser), plus pure noise and JSON of every wrong shape.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterator

from core.schema import kdd99

FEATURES = kdd99().names
CATEGORICAL = kdd99().categorical

KINDS = ("random_bytes", "truncated", "huge_field", "nan_inf", "negative", "out_of_range", "wrong_delimiter",
         "invalid_utf8", "control_chars", "byte_flips", "json_wrong_shape", "empty")
_NUMERIC_POS = [i for i, f in enumerate(FEATURES) if f not in CATEGORICAL]
_RATE_OR_FLAG = [i for i, f in enumerate(FEATURES) if f.endswith("_rate") or f in ("land", "logged_in")]


def _fields(rng: random.Random, good: list[str]) -> list[str]:
    return rng.choice(good).split(",")


def _set(fields: list[str], i: int, value: str) -> bytes:
    out = list(fields)
    out[i] = value
    return ",".join(out).encode()


def _json_wrong_shape(rng: random.Random, good: list[str]) -> bytes:
    obj = dict(zip(FEATURES, _fields(rng, good), strict=True))
    choices: list[Callable[[], str]] = [
        lambda: "[]", lambda: "42", lambda: '"text"', lambda: "null", lambda: "true",
        lambda: json.dumps(list(obj.values())),
        lambda: json.dumps({k: v for k, v in obj.items() if k != rng.choice(FEATURES)}),
        lambda: json.dumps(obj | {rng.choice(FEATURES): [1, 2]}),
        lambda: json.dumps(obj | {rng.choice(FEATURES): {"nested": 1}}),
        lambda: json.dumps(obj | {rng.choice(FEATURES): None}),
        lambda: json.dumps(obj | {rng.choice(FEATURES): True}),
        lambda: json.dumps(obj | {"src_bytes": float("nan")}),  # Python writes the non-standard NaN literal
        lambda: json.dumps(obj | {"duration": 10**400}),
        lambda: json.dumps(obj | {"service": 7}),
        lambda: "[" * rng.randrange(1000, 16000),
        lambda: '{"a":' * rng.randrange(500, 3000),
        lambda: json.dumps(obj)[: rng.randrange(1, 200)],
    ]
    return rng.choice(choices)().encode()


def _make(kind: str, rng: random.Random, good: list[str]) -> bytes:  # noqa: PLR0911 - one branch per kind
    f = _fields(rng, good)
    line = ",".join(f).encode()
    if kind == "random_bytes":
        return rng.randbytes(rng.randrange(1, 600))
    if kind == "truncated":
        return line[: rng.randrange(0, len(line))]
    if kind == "huge_field":
        i = rng.randrange(len(f))
        filler = "x" if FEATURES[i] in CATEGORICAL else "9"
        return _set(f, i, filler * rng.choice([60, 400, 5000, 40_000]))
    if kind == "nan_inf":
        return _set(f, rng.choice(_NUMERIC_POS), rng.choice(["nan", "NaN", "inf", "-inf", "Infinity", "1e999"]))
    if kind == "negative":
        i = rng.choice(_NUMERIC_POS)
        return _set(f, i, "-" + (f[i] if f[i] not in ("0", "0.00") else "1"))
    if kind == "out_of_range":
        return _set(f, rng.choice(_RATE_OR_FLAG), rng.choice(["1.5", "2", "100", "1e39"])) if rng.random() < 0.8 \
            else _set(f, rng.choice(_NUMERIC_POS), "1e39")
    if kind == "wrong_delimiter":
        return rng.choice([";", "\t", "|", " ", ",,"]).join(f).encode()
    if kind == "invalid_utf8":
        pos = rng.randrange(len(line) + 1)
        return line[:pos] + rng.choice([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80"]) + line[pos:]
    if kind == "control_chars":
        pos = rng.randrange(len(line) + 1)
        return line[:pos] + rng.choice([b"\x00", b"\r", b"\n", b"\x1b[2J", b"\r\n"]) + line[pos:]
    if kind == "byte_flips":
        b = bytearray(line)
        for _ in range(rng.randrange(1, 6)):
            b[rng.randrange(len(b))] = rng.randrange(256)
        return bytes(b)
    if kind == "json_wrong_shape":
        return _json_wrong_shape(rng, good)
    if kind == "empty":
        return rng.choice([b"", b" ", b"\n", b"\t\t"])
    raise ValueError(f"unknown kind {kind}")


def hostile_values(seed: int, n: int, good: list[str]) -> Iterator[tuple[str, bytes]]:
    """``n`` (kind, value) pairs, kinds in rotation so every kind is well represented."""
    rng = random.Random(seed)
    for i in range(n):
        kind = KINDS[i % len(KINDS)]
        yield kind, _make(kind, rng, good)
