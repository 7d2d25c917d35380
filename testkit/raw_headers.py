"""Produce a record whose header key is not valid UTF-8, as a non-librdkafka client can (issue 31 item 3).

confluent-kafka's Python API only takes ``str`` header keys, so the test kit calls the librdkafka it bundles
directly (ctypes): ``rd_kafka_header_add`` takes the key as bytes with a length. Test kit only: nothing shipped
writes such a record; the detector must survive reading one.
"""

from __future__ import annotations

import ctypes
from pathlib import Path

import confluent_kafka

END, TOPIC, VALUE, MSGFLAGS, HEADERS = 0, 1, 4, 7, 10  # rd_kafka_vtype_t
MSG_F_COPY = 0x2


def _librdkafka() -> ctypes.CDLL:
    libs = Path(confluent_kafka.__file__).resolve().parent.parent / "confluent_kafka.libs"
    found = sorted(libs.glob("librdkafka*.so*"))
    if not found:
        raise RuntimeError(f"no bundled librdkafka under {libs}: the test kit needs confluent-kafka's wheel")
    lib = ctypes.CDLL(str(found[0]))
    lib.rd_kafka_conf_new.restype = ctypes.c_void_p
    lib.rd_kafka_conf_set.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p,
                                      ctypes.c_size_t]
    lib.rd_kafka_new.restype = ctypes.c_void_p
    lib.rd_kafka_new.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t]
    lib.rd_kafka_headers_new.restype = ctypes.c_void_p
    lib.rd_kafka_headers_new.argtypes = [ctypes.c_size_t]
    lib.rd_kafka_header_add.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_ssize_t, ctypes.c_char_p,
                                        ctypes.c_ssize_t]
    lib.rd_kafka_flush.argtypes = [ctypes.c_void_p, ctypes.c_int]
    lib.rd_kafka_destroy.argtypes = [ctypes.c_void_p]
    return lib


def produce_raw(bootstrap: str, topic: str, value: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    """One record with ``headers`` exactly as given (keys as raw bytes), flushed before returning."""
    lib = _librdkafka()
    err = ctypes.create_string_buffer(512)
    conf = lib.rd_kafka_conf_new()
    if lib.rd_kafka_conf_set(conf, b"bootstrap.servers", bootstrap.encode(), err, 512) != 0:
        raise RuntimeError(err.value.decode())
    rk = lib.rd_kafka_new(0, conf, err, 512)  # RD_KAFKA_PRODUCER; conf is owned by rk from here
    if not rk:
        raise RuntimeError(err.value.decode())
    try:
        hdrs = lib.rd_kafka_headers_new(len(headers))
        for key, val in headers:
            lib.rd_kafka_header_add(hdrs, key, len(key), val, len(val))
        rc = lib.rd_kafka_producev(ctypes.c_void_p(rk), ctypes.c_int(TOPIC), ctypes.c_char_p(topic.encode()),
                                   ctypes.c_int(VALUE), ctypes.c_char_p(value), ctypes.c_size_t(len(value)),
                                   ctypes.c_int(MSGFLAGS), ctypes.c_int(MSG_F_COPY),
                                   ctypes.c_int(HEADERS), ctypes.c_void_p(hdrs), ctypes.c_int(END))
        if rc != 0:
            raise RuntimeError(f"rd_kafka_producev failed: error {rc}")
        if lib.rd_kafka_flush(rk, 30_000) != 0:
            raise RuntimeError("the raw record was not delivered within 30 s")
    finally:
        lib.rd_kafka_destroy(rk)
