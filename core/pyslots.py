"""Two CPython internals read safely, for ``core.kafka_io.read_headers`` only: whether a tuple slot is NULL, and
clearing an error a C extension left pending.

confluent-kafka can hand back a tuple whose slot is NULL (a header key it failed to decode) with the decode
error still pending. Touching that slot as an object dereferences NULL; so the slot is read as a raw pointer
through ctypes instead. The layout (``PyTupleObject``: reference count, type, size, then the items) is checked
against a live tuple at import, so a Python whose layout differs fails loudly here, not with a segfault later.
"""

from __future__ import annotations

import ctypes
import sys

_ITEMS = 3 * ctypes.sizeof(ctypes.c_void_p)  # offset of ob_item[0] in a PyTupleObject


def _check_layout() -> None:
    probe = (object(), object())
    first = ctypes.c_void_p.from_address(id(probe) + _ITEMS).value
    second = ctypes.c_void_p.from_address(id(probe) + _ITEMS + ctypes.sizeof(ctypes.c_void_p)).value
    if sys.implementation.name != "cpython" or first != id(probe[0]) or second != id(probe[1]):
        raise ImportError("core.pyslots reads CPython's tuple layout and this interpreter differs: run on CPython")


_check_layout()


def tuple_slot_is_null(value: object, index: int) -> bool:
    """Whether slot ``index`` of tuple ``value`` holds NULL (never dereferenced); False for anything else."""
    if type(value) is not tuple or not 0 <= index < len(value):
        return False
    return not ctypes.c_void_p.from_address(id(value) + _ITEMS + index * ctypes.sizeof(ctypes.c_void_p)).value


def clear_pending_error() -> None:
    """Drop an exception a C extension set but never raised (ctypes' PyDLL would raise it after the call)."""
    ctypes.pythonapi.PyErr_Clear()
