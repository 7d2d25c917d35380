"""Two CPython internals read safely, for ``core.kafka_io.read_headers`` only: whether a tuple slot is NULL, and
clearing an error a C extension left pending.

confluent-kafka can hand back a tuple whose slot is NULL (a header key it failed to decode) with the decode
error still pending. Touching that slot as an object dereferences NULL; so the slot is read as a raw pointer
through ctypes instead. The layout (``PyTupleObject``: reference count, type, size, then the items) is checked
against a live tuple on first use; on a Python whose layout differs every slot reads as NULL, so the caller
treats the batch's headers as unreadable (its records become dead letters) instead of reading a wrong address.
"""

from __future__ import annotations

import ctypes
import functools
import sys

_ITEMS = 3 * ctypes.sizeof(ctypes.c_void_p)  # offset of ob_item[0] in a PyTupleObject


@functools.cache
def layout_known() -> bool:
    """Whether this interpreter lays tuples out as CPython does (checked once, on a live tuple)."""
    if sys.implementation.name != "cpython":
        return False
    probe = (object(), object())
    first = ctypes.c_void_p.from_address(id(probe) + _ITEMS).value
    second = ctypes.c_void_p.from_address(id(probe) + _ITEMS + ctypes.sizeof(ctypes.c_void_p)).value
    return first == id(probe[0]) and second == id(probe[1])


def tuple_slot_is_null(value: object, index: int) -> bool:
    """Whether slot ``index`` of tuple ``value`` holds NULL (never dereferenced); False for anything that is not a
    tuple; True for every tuple where the layout is unknown (the caller then treats it as unreadable)."""
    if type(value) is not tuple or not 0 <= index < len(value):
        return False
    if not layout_known():
        return True
    return not ctypes.c_void_p.from_address(id(value) + _ITEMS + index * ctypes.sizeof(ctypes.c_void_p)).value


def clear_pending_error() -> None:
    """Drop an exception a C extension set but never raised (ctypes' PyDLL would raise it after the call)."""
    ctypes.pythonapi.PyErr_Clear()
